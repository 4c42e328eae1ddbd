//! Buffers handed on from the readers of a store to its next readers.
//!
//! A reader's big buffers are the decompressed shards in flight (10–20 MB each) and the shuffle
//! buffer (up to hundreds of MB). Fresh from the system, every page of them is a fault and a
//! page to zero: for the quickstart store, about a third of the CPU time of a shuffled f32
//! read (and first touches of memory are slower still in a VM). Training reads the same store
//! epoch after epoch, so a [`crate::Store`] keeps what its finished readers used and the next
//! reader starts warm. What is kept never exceeds what was in use at once, and goes with the
//! last clone of the store.

use std::sync::Mutex;

use crate::pages::Words;

#[derive(Debug, Default)]
pub struct Recycled {
    bytes: Mutex<Vec<Vec<u8>>>,
    words: Mutex<Option<Words>>,
}

impl Recycled {
    /// A byte buffer, empty, with whatever capacity it had.
    pub fn take_bytes(&self) -> Vec<u8> {
        let mut b = self
            .bytes
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        b.clear();
        b
    }

    pub fn give_bytes(&self, buffer: Vec<u8>) {
        // Buffers are made only when none is free, so there are never more than were in use
        // at one time.
        if let Ok(mut p) = self.bytes.lock() {
            p.push(buffer);
        }
    }

    /// At least `len` words, of unspecified contents (the caller writes before it reads).
    pub fn take_words(&self, len: usize) -> Words {
        let spare = self.words.lock().ok().and_then(|mut w| w.take());
        match spare {
            Some(words) if words.len() >= len => words,
            // Too small: dropped rather than kept beside a bigger one.
            _ => Words::zeroed(len),
        }
    }

    pub fn give_words(&self, words: Words) {
        if let Ok(mut spare) = self.words.lock()
            && spare.as_ref().is_none_or(|s| s.len() < words.len())
        {
            *spare = Some(words);
        }
    }
}
