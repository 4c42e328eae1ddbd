//! The on-disk format, version 1, byte by byte.
//!
//! # Directory
//!
//! ```text
//! store/
//!   manifest.json        written last, atomically: its presence means "complete"
//!   shard-000000.mss     shards, numbered from 0 in row order
//!   shard-000001.mss
//!   progress.json        only while a writer is running or after it was interrupted
//! ```
//!
//! Rows are tokens. Row `r` of the store is row `r - first_row(s)` of the shard `s` that holds
//! it, where `first_row(s)` is the sum of the `rows` of the shards before `s` in the manifest.
//!
//! # `manifest.json`
//!
//! A JSON object (unknown keys are an error):
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `format` | string | `"monoscope-activation-store"` |
//! | `format_version` | integer | `1` |
//! | `model` | `{name, sha256}` | the model that produced the activations |
//! | `hooks` | array of strings | hook names, sorted, distinct; the order of hook columns |
//! | `d_model` | integer | values per row per hook |
//! | `dtype` | `"f32"`, `"f16"` or `"bf16"` | how activations are stored |
//! | `context_length` | integer | tokens per capture window (informational) |
//! | `rows` | integer | total rows; equals the sum of the shards' `rows` |
//! | `shards` | array | per shard, in row order: `file` (plain file name), `rows`, `compressed_bytes` (file size), `uncompressed_bytes` (sum of decoded column sizes), `checksum` (16 lowercase hex digits: xxh3-64 of the shard header) |
//! | `metadata` | any JSON | capture settings, free-form |
//!
//! # `progress.json`
//!
//! `{"spec": StoreSpec, "shards": [shard entries as in the manifest]}`: the writer's spec and
//! the shards completed so far, rewritten atomically after every shard and deleted by `finish`.
//!
//! # Shard file (`*.mss`)
//!
//! All integers little-endian. A header, then one zstd frame per column, back to back.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MONOSHRD` |
//! | 8 | 4 | u32 shard format version = 1 |
//! | 12 | 4 | u32 header length `H` in bytes (everything up to the first frame) |
//! | 16 | 8 | u64 rows `n` |
//! | 24 | 4 | u32 `d_model` |
//! | 28 | 1 | u8 dtype: 0 f32, 1 f16, 2 bf16 |
//! | 29 | 1 | reserved, 0 |
//! | 30 | 2 | u16 column count `C` = 3 + number of hooks |
//! | 32 | 40·C | column table, one entry per column (below) |
//! | 32 + 40·C | Σ name lengths | column names, UTF-8, concatenated in column order |
//! | `H` | … | the frames |
//!
//! Column table entry (40 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | u64 offset of the column's frame from the start of the file |
//! | 8 | 8 | u64 compressed length (bytes of the frame) |
//! | 16 | 8 | u64 uncompressed length: `n·4` for id columns, `n·d_model·size(dtype)` for hooks |
//! | 24 | 8 | u64 xxh3-64 (seed 0) of the compressed frame |
//! | 32 | 4 | u32 element size in bytes (4 for ids, 4 or 2 for activations) |
//! | 36 | 4 | u32 length of the column's name |
//!
//! Columns, in order: `token_ids`, `doc_ids`, `positions` (u32 each), then one column per hook
//! named by the hook, in the manifest's hook order, holding the row-major `[n, d_model]`
//! activations in the store's dtype (f32, IEEE binary16, or bfloat16: the top 16 bits of an
//! f32, rounded to nearest even).
//!
//! Each column is one zstd frame (with its content size) of the column's values laid out as
//! *byte planes*: for `m` values of `e` bytes (little-endian), plane `b` (`0 ≤ b < e`) is byte
//! `b` of each of the `m` values in order, and the planes are concatenated. Grouping the
//! near-constant sign/exponent bytes compresses float data far better than zstd alone.
//!
//! # Integrity
//!
//! The manifest's `checksum` is the xxh3-64 of the header's `H` bytes; the header holds the
//! xxh3-64 of each compressed frame. A reader checks the file size against
//! `compressed_bytes` (truncation), the header's rows, d_model, dtype and column names against
//! the manifest (a shard from another store), the header checksum, and then the checksum of
//! every frame it reads before decompressing it. Every byte of a shard is thus covered, while a
//! reader that wants one hook reads (and decompresses) only that hook's frame. Corruption is
//! reported as an error naming the shard and never decoded into numbers.
//!
//! # Determinism
//!
//! Shard bytes depend only on the rows, the spec, the zstd version and the writer's fixed
//! compression parameters (each frame is compressed single-threaded at the spec's level; hook
//! columns with a minimum match of 7 bytes and match tables of 2^10 entries, which suits their
//! near-random byte planes better than the level's defaults), and the manifest records no
//! times or paths. Writing the same rows twice, or resuming an interrupted write, gives
//! byte-identical stores. The parameters are not part of the format: readers take any zstd
//! frame, so stores written with other parameters (as before 2026-11-30) read the same.
