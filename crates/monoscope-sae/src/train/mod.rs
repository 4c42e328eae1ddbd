//! Training: configuration, the hand-written forward/backward passes, Adam and schedule-free
//! sign descent, the trainer with its schedules, metrics and checkpoints, and [`fit`]: one or
//! more SAEs trained over one stream of batches, with periodic checkpoints and resuming.

mod adam;
mod checkpoint;
mod config;
pub mod fit;
pub(crate) mod grad;
mod params;
mod signum;
mod trainer;

pub use config::{
    AdamConfig, ArchConfig, AuxKConfig, BDecInit, Optimizer, REFERENCE_BATCH, TrainConfig,
    UNIT_DECODER_ENCODER_NORM, default_lr,
};
pub use fit::{Batches, FitMember, FitObserver, FitOptions, Fitted, Position, Unobserved, fit};
pub use trainer::Trainer;
