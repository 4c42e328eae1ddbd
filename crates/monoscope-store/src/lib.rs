//! The activation store: captured residual-stream activations on disk, compressed, checksummed
//! and fast to read back in order, shuffled, or by row range.
//!
//! A store is a directory with a `manifest.json` and zstd-compressed shard files; the exact
//! bytes are in [`mod@format`]. Activations are stored as f32, f16 or bf16 (chosen at creation) and
//! always read back as f32.
//!
//! - Writing: [`StoreWriter`] takes [`monoscope_core::ActivationBatch`]es, writes full shards
//!   atomically as they fill, and the manifest last; [`StoreWriter::resume`] continues an
//!   interrupted write so that the result is byte-identical to an uninterrupted one.
//! - Reading: [`Store::open`], then [`Store::sequential`] or [`Store::shuffled`] for training
//!   batches of one hook (shards decoded in parallel ahead of the consumer; why the shuffle is
//!   one and where it stops being one is in [`reader`]), and [`Store::rows`] for a row range
//!   with its tokens, documents and positions (dashboards).
//! - Tools for the CLI: [`info`], [`verify`], [`export()`] (`.npy` / `.safetensors`), and
//!   [`merge()`] of part stores written by the jobs of a cluster capture (see [`mod@merge`] for
//!   running a capture on Slurm or Kubernetes).
//! - Errors: one [`StoreError`], whose messages name the file or shard and what mismatched.

mod batch;
mod error;
mod export;
pub mod format;
mod inspect;
mod manifest;
pub mod merge;
mod pages;
mod planes;
mod prefetch;
pub mod reader;
mod recycle;
mod shard;
mod shuffle;
mod spec;
mod store;
mod writer;

pub use error::{Result, StoreError};
pub use export::{export, npy_header};
pub use inspect::{StoreInfo, VerifyReport, info, verify};
pub use manifest::{MANIFEST_FILE, Manifest, ShardEntry};
pub use merge::merge;
/// Re-exported: the unit of writing, so that users need not depend on `monoscope-core`.
pub use monoscope_core::ActivationBatch;
pub use reader::{Batch, BatchReader, SequentialOptions, ShuffleOptions};
pub use shard::shard_file_name;
pub use spec::{Dtype, ModelIdentity, StoreSpec};
pub use store::Store;
pub use writer::{PROGRESS_FILE, StoreWriter, slice_batch};
