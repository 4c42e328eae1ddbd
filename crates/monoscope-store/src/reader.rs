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
//! - Memory: the buffer holds `buffer_rows × d_model` values in the stored dtype (2 bytes each
//!   for f16 and bf16, widened to f32 only as they are drawn), plus the decompressed shards in
//!   flight.
//!
//! The same seed gives the same order on every machine and thread count: shards are decoded in
//! parallel but delivered in order, and all randomness comes from one generator. How rows are
//! held in the buffer (packed in the stored dtype) is no part of the order: which row comes
//! out where depends only on the seed, `buffer_rows` and the shards' row counts.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

pub use crate::batch::Batch;
use crate::error::{Result, StoreError};
use crate::planes;
use crate::prefetch::{Decoded, Prefetch};
use crate::shuffle::ShuffleBuffer;
use crate::spec::Dtype;
use crate::store::Store;

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
    input: Input,
    d_model: usize,
    dtype: Dtype,
    batch_size: usize,
    with_tokens: bool,
    shuffle: Option<ShuffleBuffer>,
    failed: bool,
}

/// The rows of the shards in reading order.
#[derive(Debug)]
struct Input {
    source: Prefetch,
    /// The shard rows are currently taken from, and the next row in it.
    current: Option<Decoded>,
    cursor: usize,
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
        Ok(self.reader(source, options.batch_size, options.with_tokens, None))
    }

    /// Batches of `options.hook` in a seeded shuffled order (see [`crate::reader`]).
    pub fn shuffled(&self, options: ShuffleOptions) -> Result<BatchReader> {
        let hook = self.hook_index(&options.hook)?;
        self.check_batch_size(options.batch_size)?;
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut order = self.shard_order(options.shards.clone())?;
        order.shuffle(&mut rng);
        let rows_in: u64 = order
            .iter()
            .map(|&i| self.shard_rows(i).end - self.shard_rows(i).start)
            .sum();
        let shuffle = ShuffleBuffer::new(
            rng,
            options.buffer_rows,
            rows_in as usize,
            self.d_model(),
            self.manifest().dtype,
            self.recycled(),
        );
        let source = Prefetch::new(
            self.clone(),
            hook,
            options.with_tokens,
            order,
            options.prefetch_shards,
        );
        Ok(self.reader(
            source,
            options.batch_size,
            options.with_tokens,
            Some(shuffle),
        ))
    }

    fn reader(
        &self,
        source: Prefetch,
        batch_size: usize,
        with_tokens: bool,
        shuffle: Option<ShuffleBuffer>,
    ) -> BatchReader {
        BatchReader {
            input: Input {
                source,
                current: None,
                cursor: 0,
            },
            d_model: self.d_model(),
            dtype: self.manifest().dtype,
            batch_size,
            with_tokens,
            shuffle,
            failed: false,
        }
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

impl Input {
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
                    if let Some(done) = self.current.replace(shard?) {
                        self.source.recycle(done);
                    }
                    self.cursor = 0;
                }
            }
        }
    }

    /// The current shard and the index in it of the next row, which is taken (after
    /// `ready()` returned true).
    fn take_row(&mut self) -> (&Decoded, usize) {
        self.cursor += 1;
        (self.current.as_ref().expect("ready"), self.cursor - 1)
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        if let Some(shard) = self.current.take() {
            self.source.recycle(shard);
        }
    }
}

impl BatchReader {
    fn next_sequential(&mut self) -> Result<Option<Batch>> {
        let d = self.d_model;
        let mut batch = self.empty_batch();
        while batch.rows < self.batch_size && self.input.ready()? {
            self.reserve(&mut batch);
            let (shard, cursor) = (
                self.input.current.as_ref().expect("ready"),
                self.input.cursor,
            );
            let take = (self.batch_size - batch.rows).min(shard.rows - cursor);
            let rows = cursor..cursor + take;
            planes::dequantise_into(
                &shard.planes,
                shard.rows * d,
                rows.start * d..rows.end * d,
                self.dtype,
                &mut batch.activations,
            );
            if let (Some(out), Some(tokens)) = (&mut batch.token_ids, &shard.token_ids) {
                out.extend_from_slice(&tokens[rows]);
            }
            batch.rows += take;
            self.input.cursor += take;
        }
        Ok((batch.rows > 0).then_some(batch))
    }

    fn next_shuffled(&mut self) -> Result<Option<Batch>> {
        let mut batch = self.empty_batch();
        let (input, s) = (&mut self.input, self.shuffle.as_mut().expect("shuffled"));
        // Fill the buffer before the first draw (and keep it full while input remains).
        while !s.is_full() && input.ready()? {
            let (shard, r) = input.take_row();
            s.push(shard, r);
        }
        if !s.is_empty() {
            reserve(&mut batch, self.batch_size, self.d_model);
        }
        while batch.rows < self.batch_size && !s.is_empty() {
            let j = s.draw();
            s.emit(j, &mut batch);
            if input.ready()? {
                let (shard, r) = input.take_row();
                s.put(j, shard, r);
            } else {
                s.remove(j);
            }
        }
        Ok((batch.rows > 0).then_some(batch))
    }

    fn reserve(&self, batch: &mut Batch) {
        reserve(batch, self.batch_size, self.d_model);
    }

    /// A batch with no room yet: see [`reserve`].
    fn empty_batch(&self) -> Batch {
        Batch {
            rows: 0,
            d_model: self.d_model,
            activations: Vec::new(),
            token_ids: self
                .with_tokens
                .then(|| Vec::with_capacity(self.batch_size)),
        }
    }
}

/// Room for a whole batch in `batch`, once. Called only when a decoded shard has rows: the
/// manifest alone can claim any width, but a shard's decoded planes hold `d_model` values per
/// row, so only then is the width known to be real.
fn reserve(batch: &mut Batch, batch_size: usize, d_model: usize) {
    if batch.activations.capacity() == 0 {
        batch
            .activations
            .reserve(batch_size.saturating_mul(d_model));
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
