//! Fuzzing the store's readers with hostile versions of a valid store written by
//! `StoreWriter`. Each case edits the manifest (sizes, counts, names, checksums), the shard
//! headers (rows, width, dtype, column table, at their byte offsets), or any byte of a shard;
//! and, so that the edits get past the checksums to the code behind them, may put the shards'
//! checksums right again, or resize a shard or the width consistently everywhere they are
//! recorded. Then it opens the store and reads it every way there is: `info`, `verify`,
//! `rows`, the sequential and the shuffled readers. Property: no panic and no abort; an error
//! names the store or the shard; and no single allocation exceeds `ALLOCATION_BOUND`.
//!
//! Cases: `MONOSCOPE_FUZZ_CASES`, by default
//! `monoscope_formats::testing::fuzz::DEFAULT_CASES`.

mod common;

use std::path::Path;

use common::write_store;
use monoscope_formats::testing::fuzz::{
    self, ALLOCATION_BOUND, ByteEdit, CountingAllocator, EXTREMES, JsonEdit, largest_allocation,
    serial,
};
use monoscope_store::{Dtype, SequentialOptions, ShuffleOptions, Store, StoreError, info, verify};
use proptest::prelude::*;
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_64;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const HOOKS: [&str; 2] = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"];
/// Shard header: fixed part, then one column entry of this many bytes per column.
const FIXED: usize = 32;
const ENTRY: usize = 40;

/// An edit of the store: to the manifest, to a shard's bytes, or one that keeps the store's
/// records consistent with each other.
#[derive(Debug, Clone)]
enum StoreEdit {
    Manifest(JsonEdit),
    /// An edit of shard `shard` (modulo the shard count).
    Shard {
        shard: usize,
        edit: ByteEdit,
    },
    /// Shard `shard` claims `rows` rows in its header and in the manifest, with every column's
    /// decoded size to match.
    Rows {
        shard: usize,
        rows: u64,
    },
    /// The store claims width `d_model` in the manifest and in every shard header, with every
    /// hook column's decoded size to match.
    Width {
        d_model: u64,
    },
    /// The frame checksums in every shard header, the header checksums and file sizes in the
    /// manifest, recomputed from the bytes as they now are.
    Rechecksum,
}

fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => proptest::sample::select(EXTREMES.to_vec()),
        2 => 0u64..64,
        1 => any::<u64>(),
    ]
}

/// The integer fields of a shard header with `columns` columns: (offset, width).
fn header_fields(columns: usize) -> Vec<(usize, usize)> {
    let mut fields = vec![(8, 4), (12, 4), (16, 8), (24, 4), (28, 1), (29, 1), (30, 2)];
    for c in 0..columns {
        let e = FIXED + ENTRY * c;
        fields.extend([
            (e, 8),
            (e + 8, 8),
            (e + 16, 8),
            (e + 24, 8),
            (e + 32, 4),
            (e + 36, 4),
        ]);
    }
    fields
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => extreme().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => prop_oneof![
            Just(""), Just("f32"), Just("bf16"), Just("shard-000000.mss"), Just("../x.mss"),
            Just("0123456789abcdef"), Just("İ\u{212A}"),
        ]
        .prop_map(Value::from),
        1 => prop_oneof![Just(Value::Null), Just(Value::Bool(true)), Just(Value::Array(vec![]))],
    ]
}

fn store_edit(columns: usize, shard_len: usize) -> impl Strategy<Value = StoreEdit> {
    let field = proptest::sample::select(header_fields(columns));
    let at = 0..shard_len;
    let byte_edit = prop_oneof![
        6 => (field, extreme()).prop_map(|((at, width), value)| ByteEdit::Int { at, width, value }),
        1 => (at.clone(), any::<u8>()).prop_map(|(at, bit)| ByteEdit::Flip { at, bit }),
        1 => (at.clone(), any::<u8>()).prop_map(|(at, value)| ByteEdit::Byte { at, value }),
        1 => at.clone().prop_map(|len| ByteEdit::Truncate { len }),
        1 => (at.clone(), at.clone(), 1usize..32)
            .prop_map(|(from, to, len)| ByteEdit::Splice { from, to, len }),
        1 => (at.clone(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| ByteEdit::Insert { at, bytes }),
        1 => (at, 1usize..32).prop_map(|(at, len)| ByteEdit::Remove { at, len }),
    ];
    prop_oneof![
        4 => (any::<usize>(), json_value())
            .prop_map(|(pick, value)| StoreEdit::Manifest(JsonEdit::Set { pick, value })),
        1 => any::<usize>().prop_map(|pick| StoreEdit::Manifest(JsonEdit::Remove { pick })),
        6 => (any::<usize>(), byte_edit).prop_map(|(shard, edit)| StoreEdit::Shard { shard, edit }),
        2 => (any::<usize>(), extreme()).prop_map(|(shard, rows)| StoreEdit::Rows { shard, rows }),
        2 => extreme().prop_map(|d_model| StoreEdit::Width { d_model }),
        3 => Just(StoreEdit::Rechecksum),
    ]
}

/// A store's files in memory.
#[derive(Clone)]
struct Files {
    manifest: Value,
    shards: Vec<(String, Vec<u8>)>,
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    if let Some(slot) = bytes.get_mut(at..at + 8) {
        slot.copy_from_slice(&v.to_le_bytes());
    }
}

fn get_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn column_count(bytes: &[u8]) -> usize {
    bytes
        .get(30..32)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize)
}

/// Each column's decoded size, for `rows` rows of `d_model` values of `dtype_size` bytes,
/// written into a shard's column table (the first three columns are the u32 ids).
fn set_decoded_sizes(bytes: &mut [u8], rows: u64, d_model: u64, dtype_size: u64) {
    for c in 0..column_count(bytes) {
        let per_row = if c < 3 {
            4
        } else {
            d_model.wrapping_mul(dtype_size)
        };
        put_u64(bytes, FIXED + ENTRY * c + 16, rows.wrapping_mul(per_row));
    }
}

impl Files {
    /// The manifest's entry of shard `i`, while the edits left it an object.
    fn entry(&mut self, i: usize) -> Option<&mut serde_json::Map<String, Value>> {
        self.manifest.get_mut("shards")?.get_mut(i)?.as_object_mut()
    }

    fn dtype_size(&self) -> u64 {
        if self.manifest["dtype"] == "f32" {
            4
        } else {
            2
        }
    }

    fn apply(&mut self, edit: &StoreEdit) {
        let n = self.shards.len();
        match edit {
            StoreEdit::Manifest(e) => e.apply(&mut self.manifest),
            StoreEdit::Shard { shard, edit } => edit.apply(&mut self.shards[shard % n].1),
            StoreEdit::Rows { shard, rows } => {
                let i = shard % n;
                let d = self.manifest["d_model"].as_u64().unwrap_or(1);
                let size = self.dtype_size();
                let bytes = &mut self.shards[i].1;
                put_u64(bytes, 16, *rows);
                set_decoded_sizes(bytes, *rows, d, size);
                if let Some(entry) = self.entry(i) {
                    entry.insert("rows".into(), (*rows).into());
                }
                let total = self.manifest["shards"].as_array().map(|s| {
                    s.iter()
                        .map(|e| e["rows"].as_u64().unwrap_or(0))
                        .fold(0u64, u64::wrapping_add)
                });
                self.manifest["rows"] = total.unwrap_or(0).into();
            }
            StoreEdit::Width { d_model } => {
                self.manifest["d_model"] = (*d_model).into();
                let size = self.dtype_size();
                for (_, bytes) in &mut self.shards {
                    if let Some(slot) = bytes.get_mut(24..28) {
                        slot.copy_from_slice(&(*d_model as u32).to_le_bytes());
                    }
                    let rows = get_u64(bytes, 16).unwrap_or(0);
                    set_decoded_sizes(bytes, rows, *d_model, size);
                }
            }
            StoreEdit::Rechecksum => {
                for i in 0..n {
                    let bytes = &mut self.shards[i].1;
                    let columns = column_count(bytes);
                    for c in 0..columns {
                        let e = FIXED + ENTRY * c;
                        let (Some(offset), Some(len)) = (get_u64(bytes, e), get_u64(bytes, e + 8))
                        else {
                            continue;
                        };
                        let frame = usize::try_from(offset)
                            .ok()
                            .zip(usize::try_from(len).ok())
                            .and_then(|(o, l)| bytes.get(o..o.checked_add(l)?));
                        if let Some(frame) = frame {
                            let sum = xxh3_64(frame);
                            put_u64(bytes, e + 24, sum);
                        }
                    }
                    let header_len = bytes
                        .get(12..16)
                        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
                    let header = &bytes[..header_len.min(bytes.len())];
                    let (checksum, size) = (xxh3_64(header), bytes.len() as u64);
                    if let Some(entry) = self.entry(i) {
                        entry.insert("checksum".into(), format!("{checksum:016x}").into());
                        entry.insert("compressed_bytes".into(), size.into());
                    }
                }
            }
        }
    }

    fn write(&self, dir: &Path) {
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap();
        }
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join("manifest.json"), self.manifest.to_string()).unwrap();
        for (name, bytes) in &self.shards {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// Reads the store every way there is; the messages of the errors met on the way.
fn read_everything(dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let mut note = |r: Result<(), StoreError>| {
        if let Err(e) = r {
            errors.push(e.to_string());
        }
    };
    note(info(dir).map(drop));
    note(verify(dir).map(drop));
    let store = match Store::open(dir) {
        Ok(s) => s,
        Err(e) => {
            note(Err(e));
            return errors;
        }
    };
    let rows = store.row_count();
    note(store.rows(0..rows.min(64)).map(drop));
    note(store.rows(rows.saturating_sub(3)..rows).map(drop));
    let Some(hook) = store.manifest().hooks.first().cloned() else {
        return errors;
    };
    let sequential = SequentialOptions {
        with_tokens: true,
        ..SequentialOptions::new(hook.clone(), 5)
    };
    note(
        store
            .sequential(sequential)
            .and_then(|mut r| r.try_for_each(|b| b.map(drop))),
    );
    let shuffled = ShuffleOptions {
        with_tokens: true,
        buffer_rows: 7,
        ..ShuffleOptions::new(hook, 3, 11)
    };
    note(
        store
            .shuffled(shuffled)
            .and_then(|mut r| r.try_for_each(|b| b.map(drop))),
    );
    errors
}

#[test]
fn shards_and_manifests() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let valid_dir = tmp.path().join("valid");
    let spec = common::spec(&HOOKS, 4, Dtype::F16, 8);
    write_store(&valid_dir, &spec, 0, &[20]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(valid_dir.join("manifest.json")).unwrap()).unwrap();
    let shards: Vec<(String, Vec<u8>)> = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["file"].as_str().unwrap().to_string();
            let bytes = std::fs::read(valid_dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect();
    let valid = Files { manifest, shards };
    // The store as written reads without error: the edits start from a working store.
    assert_eq!(read_everything(&valid_dir), Vec::<String>::new());

    let shard_len = valid.shards.iter().map(|(_, b)| b.len()).max().unwrap();
    let columns = 3 + HOOKS.len();
    let dir = tmp.path().join("case");
    let dir_name = dir.display().to_string();
    let edits = proptest::collection::vec(store_edit(columns, shard_len), 1..5);
    let mut runner = fuzz::runner(256);
    runner
        .run(&edits, |edits| {
            let mut files = valid.clone();
            for e in &edits {
                files.apply(e);
            }
            files.write(&dir);
            let names: Vec<String> = files.manifest["shards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["file"].as_str().map(|f| format!("shard {f}")))
                .collect();
            let (errors, largest) = largest_allocation(|| read_everything(&dir));
            for message in errors {
                prop_assert!(
                    message.contains(&dir_name) || names.iter().any(|n| message.contains(n)),
                    "error names neither the store nor a shard: {message}"
                );
            }
            prop_assert!(
                largest <= ALLOCATION_BOUND,
                "an allocation of {largest} bytes (bound {ALLOCATION_BOUND})"
            );
            Ok(())
        })
        .unwrap();
}
