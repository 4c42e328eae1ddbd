//! The vocabulary every monoscope stage speaks.
//!
//! A pipeline is a graph of *stages* (capture, train, autointerp-label, cluster, steer, and any
//! plugin's). This crate defines what a stage is and what flows between stages; the executor
//! (`monoscope-exec`) and the pipeline loader (`monoscope-config`) build on it.
//!
//! - [`Stage`]: the trait a stage kind implements, with its typed [`Stage::Config`] and its
//!   [`StageDescription`] (kind name, one-line doc, named and typed [`PortSpec`]s).
//! - [`StageContext`]: what a running stage receives: its input and output ports, run directory,
//!   seed, [`Progress`] handle and [`CancelToken`].
//! - [`Message`]: what flows on a channel: a stream item ([`ActivationBatch`]) or an [`Artifact`]
//!   (a file or directory with its [`ArtifactKind`] and metadata).
//! - [`Registry`]: every stage kind known to this process: the built-in ones, registered at link
//!   time with [`register_stage!`], plus those added at run time (plugins).
//! - [`StageError`]: the one error type a stage returns.
//! - [`port_names`]: the port names of the built-in stages.
//! - [`atomic`]: write-to-temporary-then-rename helpers; every artifact is written through them.
//! - [`fault`]: the fault points of the crash and full-disk tests.
//! - [`fingerprint`]: stable hashes of configs, used to decide whether a stage can be skipped.
//! - [`DeviceSpec`]: the `device` setting's value (`cpu`, `cuda:1`, `wgpu`, …), given to each
//!   running stage in [`StageContext::device`].
//! - [`Work`]: which share of its work a run does (`parts = N`: one part, or the merge of them).
//! - [`retain_freed_memory`]: the binaries' allocator setting (freed memory kept for reuse).

pub use monoscope_artifacts::{atomic, fault};
mod cancel;
mod context;
mod device;
mod error;
pub mod fingerprint;
mod memory;
mod message;
pub mod port_names;
mod ports;
mod progress;
mod registry;
mod stage;
mod work;

pub use cancel::CancelToken;
pub use context::{InputPort, OutputPort, StageContext};
pub use device::{DeviceSpec, DeviceSpecError};
pub use error::StageError;
pub use memory::retain_freed_memory;
pub use message::{ActivationBatch, Artifact, Message};
pub use ports::{ArtifactKind, PortSpec, PortType, StreamKind};
pub use progress::Progress;
pub use registry::{Registry, RegistryError, StageOrigin, StageRegistration, closest_name};
pub use stage::{
    ConfigureError, ConfiguredStage, Stage, StageConfig, StageDescription, StageFactory,
    TypedFactory,
};
pub use work::{PARTS_DIR, Work, part_dir};

// Re-exported so that `register_stage!` works in crates that do not depend on inventory.
#[doc(hidden)]
pub use inventory;
