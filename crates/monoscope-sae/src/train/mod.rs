//! Training: configuration, the hand-written forward/backward passes, Adam, the trainer with
//! its schedules, metrics and checkpoints, and sweeps of several SAEs over one stream.

mod adam;
mod checkpoint;
mod config;
pub(crate) mod grad;
mod params;
mod sweep;
mod trainer;

pub use config::{AdamConfig, ArchConfig, AuxKConfig, BDecInit, TrainConfig};
pub use sweep::Sweep;
pub use trainer::Trainer;
