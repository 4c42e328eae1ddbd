//! Training: configuration, the hand-written forward/backward passes, Adam and schedule-free
//! sign descent, the trainer with its schedules, metrics and checkpoints, and [`fit`]: one or
//! more SAEs trained over one stream of batches, with periodic checkpoints and resuming.
//!
//! Where a trainer computes is its [`Compute`]: the host kernels (`grad`, `adam`, `signum`)
//! or the same algorithms on burn tensors on a device (`device`), behind one engine
//! (`engine`); the trainer's bookkeeping is shared.

mod adam;
mod checkpoint;
mod compute;
mod config;
mod device;
mod engine;
pub mod fit;
pub(crate) mod grad;
mod params;
mod signum;
mod trainer;

pub use compute::Compute;
pub use config::{
    AdamConfig, ArchConfig, AuxKConfig, BDecInit, Optimizer, REFERENCE_BATCH, TrainConfig,
    UNIT_DECODER_ENCODER_NORM, default_lr,
};
pub use fit::{
    Batches, FitMember, FitObserver, FitOptions, Fitted, Position, Unobserved, fit, fit_on,
};
pub use trainer::Trainer;
