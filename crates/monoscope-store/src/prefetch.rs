//! Decoding shards ahead of the consumer, in parallel, delivered in order.
//!
//! Up to `ahead` shards are in flight on rayon's pool at once; the consumer receives them in
//! the requested order whatever order they finish in, so what a reader yields never depends on
//! thread timing (the shuffled reader's output is a function of its seed alone).

use std::collections::HashMap;
use std::sync::mpsc;

use crate::error::Result;
use crate::store::Store;

/// One shard decoded for one hook.
#[derive(Debug)]
pub struct Decoded {
    pub rows: usize,
    /// `[rows, d_model]`, dequantised.
    pub activations: Vec<f32>,
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
}

fn decode(store: &Store, shard: usize, hook: usize, with_tokens: bool) -> Result<Decoded> {
    let mut reader = store.open_shard(shard)?;
    let token_ids = if with_tokens {
        Some(reader.ids(0)?)
    } else {
        None
    };
    Ok(Decoded {
        rows: reader.rows(),
        activations: reader.activations(hook)?,
        token_ids,
    })
}
