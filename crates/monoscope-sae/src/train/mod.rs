//! Training: configuration, the hand-written forward/backward passes, Adam and schedule-free
//! sign descent, the trainer with its schedules, metrics and checkpoints, and sweeps of
//! several SAEs over one stream.

mod adam;
mod checkpoint;
mod config;
pub(crate) mod grad;
mod params;
mod signum;
mod sweep;
mod trainer;

pub use config::{
    AdamConfig, ArchConfig, AuxKConfig, BDecInit, Optimizer, REFERENCE_BATCH, TrainConfig,
    UNIT_DECODER_ENCODER_NORM, default_lr,
};
pub use sweep::Sweep;
pub use trainer::Trainer;
