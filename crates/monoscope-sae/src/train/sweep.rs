//! Several SAEs trained on one stream: each batch goes to every trainer in turn (one capture
//! pass feeds a whole hyper-parameter sweep, as SAELens's multi-SAE runner and sparsify's
//! `init_seeds` do).

use super::trainer::Trainer;
use crate::{SaeError, StepMetrics};

/// Trainers that share an input stream. Finished trainers are skipped.
#[derive(Debug, Default)]
pub struct Sweep {
    pub trainers: Vec<Trainer>,
}

impl Sweep {
    pub fn new(trainers: Vec<Trainer>) -> Self {
        Sweep { trainers }
    }

    /// Feeds one batch to every unfinished trainer; returns each trainer's report, if any
    /// (index-aligned with `trainers`).
    pub fn step(&mut self, rows: &[f32]) -> Result<Vec<Option<StepMetrics>>, SaeError> {
        self.trainers
            .iter_mut()
            .map(|t| {
                if t.is_finished() {
                    Ok(None)
                } else {
                    t.step(rows)
                }
            })
            .collect()
    }

    pub fn is_finished(&self) -> bool {
        self.trainers.iter().all(Trainer::is_finished)
    }
}
