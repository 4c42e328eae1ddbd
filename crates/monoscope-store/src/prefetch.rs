//! Decoding shards ahead of the consumer, in parallel, delivered in order.
//!
//! Up to `ahead` shards are in flight on rayon's pool at once; the consumer receives them in
//! the requested order whatever order they finish in, so what a reader yields never depends on
//! thread timing (the shuffled reader's output is a function of its seed alone).
//!
//! Shards are handed over decompressed but not dequantised: as byte planes of the stored
//! dtype. The consumer converts only what it copies anyway (a batch's rows, or a row entering
//! the shuffle buffer), which saves a whole pass over the data and, for f16 and bf16, half the
//! bytes moved. The plane buffers go round (see [`crate::recycle`]) rather than being allocated
//! per shard: a fresh 10–20 MB buffer is thousands of page faults, each with a page to zero.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use crate::error::{Result, StoreError};
use crate::store::Store;

/// One shard decompressed for one hook.
#[derive(Debug)]
pub struct Decoded {
    pub rows: usize,
    /// The `[rows, d_model]` activations as byte planes of the stored dtype (see
    /// [`crate::format`]); [`crate::planes`] reads rows out of them.
    pub planes: Vec<u8>,
    pub token_ids: Option<Vec<u32>>,
}

type Done = (usize, Result<Decoded>);

#[derive(Debug)]
pub struct Prefetch {
    store: Store,
    hook: usize,
    with_tokens: bool,
    order: Vec<usize>,
    ahead: usize,
    submitted: usize,
    delivered: usize,
    /// Finished out of order, waiting for their turn (keyed by position in `order`).
    pending: HashMap<usize, Result<Decoded>>,
    tx: mpsc::Sender<Done>,
    rx: mpsc::Receiver<Done>,
}

impl Prefetch {
    pub fn new(
        store: Store,
        hook: usize,
        with_tokens: bool,
        order: Vec<usize>,
        ahead: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        Prefetch {
            store,
            hook,
            with_tokens,
            order,
            ahead: ahead.max(1),
            submitted: 0,
            delivered: 0,
            pending: HashMap::new(),
            tx,
            rx,
        }
    }

    /// The next shard in order, or `None` when all have been delivered.
    pub fn next_shard(&mut self) -> Option<Result<Decoded>> {
        while self.submitted < self.order.len() && self.submitted - self.delivered < self.ahead {
            let (k, shard) = (self.submitted, self.order[self.submitted]);
            let (store, tx) = (self.store.clone(), self.tx.clone());
            let (hook, with_tokens) = (self.hook, self.with_tokens);
            let name = store.manifest().shards[shard].file.clone();
            spawn_caught(tx, k, name, move || {
                decode(&store, shard, hook, with_tokens)
            });
            self.submitted += 1;
        }
        if self.delivered == self.order.len() {
            return None;
        }
        loop {
            if let Some(done) = self.pending.remove(&self.delivered) {
                self.delivered += 1;
                return Some(done);
            }
            let (k, done) = self.rx.recv().expect("a sender is held by self");
            self.pending.insert(k, done);
        }
    }

    /// Takes back a shard the consumer is done with, for its buffer to be reused.
    pub fn recycle(&self, shard: Decoded) {
        self.store.recycled().give_bytes(shard.planes);
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Shards decoded but never delivered (the reader was dropped early).
        for (_, done) in self.pending.drain() {
            if let Ok(shard) = done {
                self.store.recycled().give_bytes(shard.planes);
            }
        }
    }
}

/// Runs `work` on rayon's pool and sends its result as item `k`. A panic in it is caught and
/// sent as an error naming `shard`: on a rayon thread an uncaught panic aborts the process.
fn spawn_caught(
    tx: mpsc::Sender<Done>,
    k: usize,
    shard: String,
    work: impl FnOnce() -> Result<Decoded> + Send + 'static,
) {
    rayon::spawn(move || {
        // Nothing `work` touches is observed after a panic: its buffers are dropped with it.
        let done = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(StoreError::DecodePanicked { shard, message })
        });
        // The receiver is gone only when the reader was dropped: nothing to report to.
        let _ = tx.send((k, done));
    });
}

fn decode(store: &Store, shard: usize, hook: usize, with_tokens: bool) -> Result<Decoded> {
    let pool = store.recycled();
    let mut reader = store.open_shard(shard)?;
    let token_ids = if with_tokens {
        Some(reader.ids(0)?)
    } else {
        None
    };
    let (mut frame, mut planes) = (pool.take_bytes(), pool.take_bytes());
    let done = reader.activation_planes_into(hook, &mut frame, &mut planes);
    pool.give_bytes(frame);
    if let Err(e) = done {
        pool.give_bytes(planes);
        return Err(e);
    }
    Ok(Decoded {
        rows: reader.rows(),
        planes,
        token_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a panic while decoding on rayon's pool aborted the whole process; it must
    /// arrive as an error naming the shard.
    #[test]
    fn a_panic_while_decoding_arrives_as_an_error() {
        let (tx, rx) = mpsc::channel();
        spawn_caught(tx, 3, "shard-000007.mss".into(), || {
            panic!("planted: block count mismatch")
        });
        let (k, done) = rx.recv().unwrap();
        assert_eq!(k, 3);
        let message = done.unwrap_err().to_string();
        assert!(
            message.contains("shard shard-000007.mss")
                && message.contains("planted: block count mismatch"),
            "{message}"
        );
    }
}
