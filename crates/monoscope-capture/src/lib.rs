//! The capture stage: run a language model over a corpus and keep its activations.
//!
//! - [`corpus`]: documents from plain text files and directories (one document per file or per
//!   blank-line-separated paragraph), JSONL with a configurable text field, and the Wikipedia
//!   summaries JSON of the default corpus.
//! - [`windows`]: documents tokenized (BOS prepended where the model uses one), shuffled by a
//!   seed, split into disjoint parts for `shard = "i/N"`, and packed into fixed-length context
//!   windows that record each token's document id and position.
//! - [`stage`]: the `capture` stage: batched forward passes with the requested hooks (stopping
//!   after the deepest), streaming batches downstream and/or writing an activation store, and
//!   resuming an interrupted store from its last complete shard.
//! - `replay`: a rerun for a stream consumer sends a finished store's rows instead of
//!   computing them again.
//! - [`CaptureError`]: the one error type.

pub mod corpus;
mod error;
mod parts;
mod replay;
pub mod stage;
pub mod windows;

pub use corpus::{CorpusFormat, Document, ParagraphSplit, read_corpus};
pub use error::CaptureError;
pub use stage::{Capture, CaptureConfig};
pub use windows::{PartSpec, Window, WindowPlan, plan_windows};
