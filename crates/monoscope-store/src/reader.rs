//! Batch readers for training: sequential, and shuffled through a seeded shuffle buffer.
//!
//! # Why the shuffled reader is a real shuffle, and where it stops being one
//!
//! The reader permutes the shard order with a ChaCha8 generator seeded by
//! [`ShuffleOptions::seed`], streams the rows of the shards in that order into a buffer of
//! [`ShuffleOptions::buffer_rows`] rows, and produces each output row by drawing a slot of the
//! buffer uniformly at random, emitting it and refilling that slot with the next incoming row
//! (once the input is exhausted the last row moves into the slot instead).
//!
//! - With a buffer that holds the whole store, the first draw happens after every row is in the
//!   buffer, and each draw picks uniformly among the rows not yet emitted: the output is a
//!   uniformly random permutation of the store.
//! - With a smaller buffer, every row still comes out exactly once, but a row can only be
//!   emitted once it has entered the buffer: the `k`-th output row comes from the first
//!   `buffer_rows + k` rows of the permuted shard order. Rows of one shard are therefore spread
//!   over roughly `buffer_rows` outputs after their shard enters; a buffer of one shard mostly
//!   drains one shard at a time (consecutive documents stay correlated). Use a buffer of
//!   several shards (≥ 4 is a good floor; the default is 65,536 rows, eight shards of the
//!   default size) so that each batch mixes rows from several random places of the corpus.
//! - Shard order is a permutation, so two epochs with different seeds visit shards in
//!   different orders; rows within a shard remain in the buffer's reach of each other only.
//! - Memory: the buffer holds `buffer_rows × d_model` f32, plus the decoded shards in flight.
//!
//! The same seed gives the same order on every machine and thread count: shards are decoded in
//! parallel but delivered in order, and all randomness comes from one generator.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, StoreError};
use crate::prefetch::{Decoded, Prefetch};
use crate::store::Store;

/// One batch of rows for one hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub d_model: usize,
    /// Row-major `[rows, d_model]`, dequantised to f32.
    pub activations: Vec<f32>,
    /// The token id of each row, when asked for.
    pub token_ids: Option<Vec<u32>>,
}

/// Options of [`Store::sequential`].
#[derive(Debug, Clone)]
pub struct SequentialOptions {
    pub hook: String,
    /// Rows per batch; the last batch may be shorter.
    pub batch_size: usize,
    pub with_tokens: bool,
    /// Read only these shards (all when `None`).
    pub shards: Option<std::ops::Range<usize>>,
    /// Shards decoded ahead of the consumer (in parallel on rayon's pool).
    pub prefetch_shards: usize,
}

impl SequentialOptions {
    pub fn new(hook: impl Into<String>, batch_size: usize) -> Self {
        SequentialOptions {
            hook: hook.into(),
            batch_size,
            with_tokens: false,
            shards: None,
            prefetch_shards: default_prefetch(),
        }
    }
}

/// Options of [`Store::shuffled`].
#[derive(Debug, Clone)]
pub struct ShuffleOptions {
    pub hook: String,
    /// Rows per batch; the last batch may be shorter.
    pub batch_size: usize,
    pub with_tokens: bool,
    /// Read only these shards (all when `None`), e.g. to hold the last ones out for evaluation.
    pub shards: Option<std::ops::Range<usize>>,
    pub seed: u64,
    /// Rows held in the shuffle buffer (see the module docs for how this bounds the mixing).
    pub buffer_rows: usize,
    pub prefetch_shards: usize,
}

impl ShuffleOptions {
    pub fn new(hook: impl Into<String>, batch_size: usize, seed: u64) -> Self {
        ShuffleOptions {
            hook: hook.into(),
            batch_size,
            with_tokens: false,
            shards: None,
            seed,
            buffer_rows: 65_536,
            prefetch_shards: default_prefetch(),
        }
    }
}

/// Two shards per thread: one being decoded, one ready.
fn default_prefetch() -> usize {
    2 * rayon::current_num_threads()
}

/// An iterator of [`Batch`]es. After an error it yields nothing more.
///
/// Do not drive it from inside a one-thread rayon pool: it waits for shards decoded on that pool.
#[derive(Debug)]
pub struct BatchReader {
    source: Prefetch,
    d_model: usize,
    batch_size: usize,
    with_tokens: bool,
    /// The shard rows are currently taken from, and the next row in it.
    current: Option<Decoded>,
    cursor: usize,
    shuffle: Option<Shuffle>,
    failed: bool,
}

#[derive(Debug)]
struct Shuffle {
    rng: ChaCha8Rng,
    capacity: usize,
    /// `[len, d_model]` rows waiting to be drawn, and their tokens.
    activations: Vec<f32>,
    token_ids: Vec<u32>,
}

impl Store {
    /// Batches of `options.hook` in store order.
    pub fn sequential(&self, options: SequentialOptions) -> Result<BatchReader> {
        let hook = self.hook_index(&options.hook)?;
        self.check_batch_size(options.batch_size)?;
        let order = self.shard_order(options.shards.clone())?;
        let source = Prefetch::new(
            self.clone(),
            hook,
            options.with_tokens,
            order,
            options.prefetch_shards,
        );
        Ok(BatchReader::new(
            source,
            self.d_model(),
            options.batch_size,
            options.with_tokens,
            None,
        ))
    }

    /// Batches of `options.hook` in a seeded shuffled order (see [`crate::reader`]).
    pub fn shuffled(&self, options: ShuffleOptions) -> Result<BatchReader> {
        let hook = self.hook_index(&options.hook)?;
        self.check_batch_size(options.batch_size)?;
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut order = self.shard_order(options.shards.clone())?;
        order.shuffle(&mut rng);
        let source = Prefetch::new(
            self.clone(),
            hook,
            options.with_tokens,
            order,
            options.prefetch_shards,
        );
        let shuffle = Shuffle {
            rng,
            capacity: options.buffer_rows.max(1),
            activations: Vec::new(),
            token_ids: Vec::new(),
        };
        Ok(BatchReader::new(
            source,
            self.d_model(),
            options.batch_size,
            options.with_tokens,
            Some(shuffle),
        ))
    }

    /// The shard indices to read, checked against the store.
    fn shard_order(&self, shards: Option<std::ops::Range<usize>>) -> Result<Vec<usize>> {
        let all = 0..self.shard_count();
        let range = shards.unwrap_or(all.clone());
        if range.start > range.end || range.end > all.end {
            return Err(StoreError::InvalidSpec {
                path: self.dir().into(),
                reason: format!(
                    "shards {range:?} out of range: the store has {} shards",
                    all.end
                ),
            });
        }
        Ok(range.collect())
    }

    fn check_batch_size(&self, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(StoreError::InvalidSpec {
                path: self.dir().into(),
                reason: "batch_size must be at least 1".into(),
            });
        }
        Ok(())
    }
}

impl BatchReader {
    fn new(
        source: Prefetch,
        d_model: usize,
        batch_size: usize,
        with_tokens: bool,
        shuffle: Option<Shuffle>,
    ) -> Self {
        BatchReader {
            source,
            d_model,
            batch_size,
            with_tokens,
            current: None,
            cursor: 0,
            shuffle,
            failed: false,
        }
    }

    /// Makes `current` a shard with rows left; `Ok(false)` when the input is exhausted.
    fn ready(&mut self) -> Result<bool> {
        loop {
            if let Some(shard) = &self.current
                && self.cursor < shard.rows
            {
                return Ok(true);
            }
            match self.source.next_shard() {
                None => return Ok(false),
                Some(shard) => {
                    self.current = Some(shard?);
                    self.cursor = 0;
                }
            }
        }
    }

    fn next_sequential(&mut self) -> Result<Option<Batch>> {
        let d = self.d_model;
        let mut batch = self.empty_batch();
        while batch.rows < self.batch_size && self.ready()? {
            let shard = self.current.as_ref().expect("ready");
            let take = (self.batch_size - batch.rows).min(shard.rows - self.cursor);
            let rows = self.cursor..self.cursor + take;
            batch
                .activations
                .extend_from_slice(&shard.activations[rows.start * d..rows.end * d]);
            if let (Some(out), Some(tokens)) = (&mut batch.token_ids, &shard.token_ids) {
                out.extend_from_slice(&tokens[rows]);
            }
            batch.rows += take;
            self.cursor += take;
        }
        Ok((batch.rows > 0).then_some(batch))
    }

    fn next_shuffled(&mut self) -> Result<Option<Batch>> {
        let d = self.d_model;
        let mut batch = self.empty_batch();
        // Fill the buffer before the first draw (and keep it full while input remains).
        while self.buffered() < self.shuffle.as_ref().expect("shuffled").capacity && self.ready()? {
            let r = self.advance();
            let shard = self.current.as_ref().expect("ready");
            let s = self.shuffle.as_mut().expect("shuffled");
            s.activations
                .extend_from_slice(&shard.activations[r * d..(r + 1) * d]);
            s.token_ids
                .push(shard.token_ids.as_ref().map_or(0, |t| t[r]));
        }
        while batch.rows < self.batch_size && self.buffered() > 0 {
            let len = self.buffered();
            let j = self
                .shuffle
                .as_mut()
                .expect("shuffled")
                .rng
                .random_range(0..len);
            let s = self.shuffle.as_ref().expect("shuffled");
            batch
                .activations
                .extend_from_slice(&s.activations[j * d..(j + 1) * d]);
            if let Some(out) = &mut batch.token_ids {
                out.push(s.token_ids[j]);
            }
            batch.rows += 1;
            if self.ready()? {
                let r = self.advance();
                let shard = self.current.as_ref().expect("ready");
                let s = self.shuffle.as_mut().expect("shuffled");
                s.activations[j * d..(j + 1) * d]
                    .copy_from_slice(&shard.activations[r * d..(r + 1) * d]);
                s.token_ids[j] = shard.token_ids.as_ref().map_or(0, |t| t[r]);
            } else {
                let s = self.shuffle.as_mut().expect("shuffled");
                s.activations.copy_within((len - 1) * d..len * d, j * d);
                s.activations.truncate((len - 1) * d);
                s.token_ids.swap_remove(j);
            }
        }
        Ok((batch.rows > 0).then_some(batch))
    }

    fn buffered(&self) -> usize {
        self.shuffle.as_ref().map_or(0, |s| s.token_ids.len())
    }

    /// The index in `current` of the next input row (after `ready()` returned true).
    fn advance(&mut self) -> usize {
        self.cursor += 1;
        self.cursor - 1
    }

    fn empty_batch(&self) -> Batch {
        Batch {
            rows: 0,
            d_model: self.d_model,
            activations: Vec::with_capacity(self.batch_size * self.d_model),
            token_ids: self
                .with_tokens
                .then(|| Vec::with_capacity(self.batch_size)),
        }
    }
}

impl Iterator for BatchReader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.failed {
            return None;
        }
        let next = if self.shuffle.is_some() {
            self.next_shuffled()
        } else {
            self.next_sequential()
        };
        match next {
            Ok(batch) => batch.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
