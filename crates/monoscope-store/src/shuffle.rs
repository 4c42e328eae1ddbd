//! The shuffle buffer of [`crate::reader`]: rows waiting to be drawn, held compactly.
//!
//! A row is stored in the store's dtype, joined from its shard's byte planes as it enters (2
//! bytes a value for f16 and bf16, not the 4 of f32), and widened to f32 only as it is drawn
//! into a batch. Each row is thus copied once in and once out, which is the least a buffer of
//! rows can do; the buffer itself is allocated at its final size, or taken over from the
//! store's previous reader.

use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::batch::Batch;
use crate::pages::Words;
use crate::planes;
use crate::prefetch::Decoded;
use crate::recycle::Recycled;
use crate::spec::Dtype;

#[derive(Debug)]
pub struct ShuffleBuffer {
    rng: ChaCha8Rng,
    capacity: usize,
    d_model: usize,
    dtype: Dtype,
    /// `u32` words per row.
    words: usize,
    /// `[capacity, words]`; the first `len()` rows are live.
    slots: Words,
    /// The token id of each live row.
    token_ids: Vec<u32>,
    /// Where `slots` goes when the reader is dropped.
    recycled: Arc<Recycled>,
}

impl ShuffleBuffer {
    /// A buffer of `capacity` rows (at least one) drawing with `rng`; `rows_in` is how many
    /// rows will ever enter, which bounds the allocation for small stores.
    pub fn new(
        rng: ChaCha8Rng,
        capacity: usize,
        rows_in: usize,
        d_model: usize,
        dtype: Dtype,
        recycled: &Arc<Recycled>,
    ) -> Self {
        let capacity = capacity.max(1);
        let words = planes::joined_words(d_model, dtype);
        ShuffleBuffer {
            rng,
            capacity,
            d_model,
            dtype,
            words,
            // A slot is always written before it is read: a recycled buffer needs no clearing.
            slots: recycled.take_words(capacity.min(rows_in) * words),
            token_ids: Vec::with_capacity(capacity.min(rows_in)),
            recycled: recycled.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    /// Appends row `r` of `shard` (the buffer is not full).
    pub fn push(&mut self, shard: &Decoded, r: usize) {
        let j = self.len();
        self.token_ids.push(0);
        self.put(j, shard, r);
    }

    /// A live slot drawn uniformly at random.
    pub fn draw(&mut self) -> usize {
        self.rng.random_range(0..self.len())
    }

    /// Appends the row in slot `j` to `batch` (as f32, with its token when asked for).
    pub fn emit(&self, j: usize, batch: &mut Batch) {
        let row = &self.slots[j * self.words..(j + 1) * self.words];
        planes::widen_into(row, self.d_model, self.dtype, &mut batch.activations);
        if let Some(out) = &mut batch.token_ids {
            out.push(self.token_ids[j]);
        }
        batch.rows += 1;
    }

    /// Refills slot `j` with row `r` of `shard`.
    pub fn put(&mut self, j: usize, shard: &Decoded, r: usize) {
        let d = self.d_model;
        let row = &mut self.slots[j * self.words..(j + 1) * self.words];
        planes::join_into(
            &shard.planes,
            shard.rows * d,
            r * d..(r + 1) * d,
            self.dtype,
            row,
        );
        self.token_ids[j] = shard.token_ids.as_ref().map_or(0, |t| t[r]);
    }

    /// Empties slot `j` by moving the last live row into it.
    pub fn remove(&mut self, j: usize) {
        let last = self.len() - 1;
        let w = self.words;
        self.slots.copy_within(last * w..(last + 1) * w, j * w);
        self.token_ids.swap_remove(j);
    }
}

impl Drop for ShuffleBuffer {
    fn drop(&mut self) {
        self.recycled.give_words(std::mem::take(&mut self.slots));
    }
}
