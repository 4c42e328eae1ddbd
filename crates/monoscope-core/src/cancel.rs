use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared flag that asks every stage of a run to stop.
///
/// Stages check it at batch boundaries; the ports check it while blocked on a full or empty
/// channel, so a stage waiting on a neighbour still notices a cancellation promptly.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(StageError::Cancelled)` once cancelled: the idiomatic check inside a stage loop.
    pub fn check(&self) -> Result<(), crate::StageError> {
        if self.is_cancelled() {
            Err(crate::StageError::Cancelled)
        } else {
            Ok(())
        }
    }
}
