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
use std::sync::mpsc;

use crate::error::Result;
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
            rayon::spawn(move || {
                // The receiver is gone only when the reader was dropped: nothing to report to.
                let _ = tx.send((k, decode(&store, shard, hook, with_tokens)));
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
