//! Every way a store can be damaged or misused gives an error that names the file or shard and
//! what is wrong, and never yields numbers.

mod common;

use std::path::Path;

use common::{HOOK, batch, write_store};
use monoscope_store::{Dtype, SequentialOptions, Store, StoreError, StoreWriter, verify};

const SHARD: &str = "shard-000001.mss";

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_store(
        dir.path(),
        &common::spec(&[HOOK], 4, Dtype::F16, 20),
        0,
        &[50],
    );
    dir
}

/// Reads every batch of the store, returning the first error's message.
fn read_error(dir: &Path) -> String {
    let store = match Store::open(dir) {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    let hook = store.manifest().hooks[0].clone();
    for b in store.sequential(SequentialOptions::new(hook, 7)).unwrap() {
        if let Err(e) = b {
            return e.to_string();
        }
    }
    panic!("the damaged store read without error");
}

fn u64_at(bytes: &[u8], at: usize) -> usize {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{p}` not in: {msg}");
    }
}

#[test]
fn a_flipped_byte_in_the_activations_is_caught() {
    let dir = store();
    let path = dir.path().join(SHARD);
    let mut bytes = std::fs::read(&path).unwrap();
    // Column 3 is the hook; its table entry starts at 32 + 40 * 3.
    let (offset, len) = (u64_at(&bytes, 152), u64_at(&bytes, 160));
    bytes[offset + len / 2] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let msg = read_error(dir.path());
    assert_contains(
        &msg,
        &[
            "shard shard-000001.mss: corrupted",
            &format!("column `{HOOK}`"),
        ],
    );
    let msg = verify(dir.path()).unwrap_err().to_string();
    assert_contains(
        &msg,
        &[
            "1 of 3 shards failed verification",
            "shard shard-000001.mss: corrupted",
        ],
    );
    // Rows outside the damaged shard are still readable.
    Store::open(dir.path()).unwrap().rows(0..20).unwrap();
}

#[test]
fn a_flipped_byte_in_the_header_is_caught() {
    let dir = store();
    let path = dir.path().join(SHARD);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[32 + 24] ^= 1; // the token column's frame checksum, inside the header
    std::fs::write(&path, &bytes).unwrap();
    let msg = read_error(dir.path());
    assert_contains(
        &msg,
        &["shard shard-000001.mss: corrupted: checksum of the header"],
    );
}

#[test]
fn a_truncated_shard_is_reported_with_its_sizes() {
    let dir = store();
    let path = dir.path().join(SHARD);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let want = format!(
        "shard shard-000001.mss: truncated: {} bytes on disk, the manifest says {}",
        bytes.len() - 10,
        bytes.len()
    );
    assert_contains(&read_error(dir.path()), &[&want]);
    assert_contains(&verify(dir.path()).unwrap_err().to_string(), &[&want]);
}

#[test]
fn a_missing_shard_is_named() {
    let dir = store();
    std::fs::remove_file(dir.path().join(SHARD)).unwrap();
    assert_contains(
        &read_error(dir.path()),
        &["shard shard-000001.mss: missing"],
    );
    assert_contains(
        &verify(dir.path()).unwrap_err().to_string(),
        &["shard shard-000001.mss: missing"],
    );
}

#[test]
fn manifest_and_shard_disagreeing_on_rows_d_model_dtype_or_hooks() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 4] = [
        ("row count: shard has 20, manifest says 21", |m| {
            m["shards"][0]["rows"] = 21.into();
            m["rows"] = 51.into();
        }),
        ("d_model: shard has 4, manifest says 5", |m| {
            m["d_model"] = 5.into()
        }),
        ("dtype: shard has f16, manifest says bf16", |m| {
            m["dtype"] = "bf16".into()
        }),
        (
            "columns (ids and hooks): shard has token_ids, doc_ids, positions, blocks.0.hook_resid_post",
            |m| {
                m["hooks"] = serde_json::json!(["blocks.1.hook_resid_post"]);
            },
        ),
    ];
    for (want, edit) in cases {
        let dir = store();
        edit_manifest(dir.path(), edit);
        let msg = read_error(dir.path());
        assert_contains(
            &msg,
            &["shard shard-000000.mss: does not match the manifest", want],
        );
    }
}

#[test]
fn a_shard_from_another_store_is_a_mismatch_not_garbage() {
    let dir = store();
    let other = tempfile::tempdir().unwrap();
    write_store(
        other.path(),
        &common::spec(&[HOOK], 6, Dtype::F16, 20),
        0,
        &[50],
    );
    std::fs::copy(other.path().join(SHARD), dir.path().join(SHARD)).unwrap();
    edit_manifest(dir.path(), |m| {
        let size = std::fs::metadata(other.path().join(SHARD)).unwrap().len();
        m["shards"][1]["compressed_bytes"] = size.into();
    });
    assert_contains(
        &read_error(dir.path()),
        &[
            "shard shard-000001.mss: does not match the manifest: d_model: shard has 6, manifest says 4",
        ],
    );
}

#[test]
fn missing_or_garbled_manifest() {
    let dir = store();
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, b"{\"format\": ").unwrap();
    assert_contains(
        &read_error(dir.path()),
        &["manifest.json: garbled manifest: EOF"],
    );
    std::fs::remove_file(&path).unwrap();
    assert_contains(&read_error(dir.path()), &["no manifest.json"]);
    assert!(matches!(
        verify(dir.path()),
        Err(StoreError::ManifestMissing { .. })
    ));

    let dir = store();
    edit_manifest(dir.path(), |m| m["rows"] = 49.into());
    assert_contains(
        &read_error(dir.path()),
        &["inconsistent manifest: rows is 49 but the shards hold 50"],
    );
    let dir = store();
    edit_manifest(dir.path(), |m| {
        m["shards"][0]["file"] = "../escape.mss".into()
    });
    assert_contains(
        &read_error(dir.path()),
        &["shard file name `../escape.mss` is not a plain file name"],
    );
}

#[test]
fn batches_that_do_not_fit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec(&[HOOK], 4, Dtype::F32, 20);
    let mut writer = StoreWriter::create(dir.path(), spec.clone()).unwrap();

    let wide = batch(&common::spec(&[HOOK], 5, Dtype::F32, 20), 0, 3);
    assert_contains(
        &writer.write_batch(&wide).unwrap_err().to_string(),
        &["d_model: store has 4, batch has 5"],
    );

    let other = batch(
        &common::spec(&[HOOK, "blocks.1.hook_resid_post"], 4, Dtype::F32, 20),
        0,
        3,
    );
    let msg = writer.write_batch(&other).unwrap_err().to_string();
    assert_contains(
        &msg,
        &[
            "hooks: store has blocks.0.hook_resid_post, batch has blocks.0.hook_resid_post, blocks.1.hook_resid_post",
        ],
    );

    let mut short = batch(&spec, 0, 3);
    short.hooks.get_mut(HOOK).unwrap().pop();
    assert_contains(
        &writer.write_batch(&short).unwrap_err().to_string(),
        &[
            "values of hook `blocks.0.hook_resid_post` (rows × d_model): store has 3 × 4 = 12, batch has 11",
        ],
    );

    let mut ragged = batch(&spec, 0, 3);
    ragged.positions.pop();
    assert_contains(
        &writer.write_batch(&ragged).unwrap_err().to_string(),
        &["length of positions: store has 3, batch has 2"],
    );

    // Nothing of the refused batches was kept.
    assert_eq!(writer.rows_written(), 0);
}

#[test]
fn creating_over_an_existing_store_is_refused() {
    let dir = store();
    let err =
        StoreWriter::create(dir.path(), common::spec(&[HOOK], 4, Dtype::F16, 20)).unwrap_err();
    assert_contains(&err.to_string(), &["already holds a store or other files"]);
}

// Sizes read from a store are checked against the bytes that back them before anything is
// allocated or computed from them: each test below is a crafted store that made a reader
// panic on an overflow or abort on an allocation it could not make.

/// Rewrites the header of shard `SHARD` with `edit`, then records the header's new checksum in
/// the manifest, so that the edit reaches the checks behind the checksum.
fn edit_header(dir: &Path, edit: impl FnOnce(&mut [u8])) {
    let path = dir.join(SHARD);
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    edit(&mut bytes[..header_len]);
    let checksum = xxhash_rust::xxh3::xxh3_64(&bytes[..header_len]);
    std::fs::write(&path, &bytes).unwrap();
    edit_manifest(dir, |m| {
        m["shards"][1]["checksum"] = format!("{checksum:016x}").into()
    });
}

/// Shard `SHARD` claims `rows` rows, in its header and in the manifest, with every column's
/// decoded size to match (the test store: one hook of 4 f16 values a row).
fn claim_rows(dir: &Path, rows: u64) {
    edit_header(dir, |h| {
        h[16..24].copy_from_slice(&rows.to_le_bytes());
        for (c, per_row) in [4u64, 4, 4, 8].into_iter().enumerate() {
            let at = 32 + 40 * c + 16;
            h[at..at + 8].copy_from_slice(&(rows * per_row).to_le_bytes());
        }
    });
    edit_manifest(dir, |m| {
        m["shards"][1]["rows"] = rows.into();
        m["rows"] = (rows + 30).into();
    });
}

/// Regression: the shards' row counts were summed unchecked (a panic on overflow).
#[test]
fn row_counts_that_overflow_are_refused() {
    let dir = store();
    edit_manifest(dir.path(), |m| {
        m["shards"][0]["rows"] = u64::MAX.into();
        m["rows"] = 3.into();
    });
    assert_contains(
        &read_error(dir.path()),
        &["manifest.json: inconsistent manifest: the shards' rows add up past 2^64"],
    );
}

/// Regression: a shard claiming 2^40 rows, consistently in its header and the manifest, had
/// a buffer of that many rows reserved before decoding (the process aborted).
#[test]
fn more_rows_than_a_shard_can_decode_to_are_refused() {
    let dir = store();
    claim_rows(dir.path(), 1 << 40);
    assert_contains(
        &read_error(dir.path()),
        &[
            "manifest.json: inconsistent manifest: shard shard-000001.mss: rows 1099511627776 of 20 bytes each cannot decode",
            "zstd expands at most 32768×",
        ],
    );
}

/// Regression: a column claiming more decoded bytes than its frame can hold had them reserved
/// before zstd found the frame short. The claim here passes the manifest's bound for the whole
/// shard but not the token column's own.
#[test]
fn a_column_claiming_more_than_its_frame_can_decode_to_is_refused() {
    let dir = store();
    let bytes = std::fs::read(dir.path().join(SHARD)).unwrap();
    let token_frame = u64_at(&bytes, 32 + 8) as u64;
    let rows = token_frame * 32768 / 4 + 1;
    assert!(
        rows * 20 <= bytes.len() as u64 * 32768,
        "the shard bound must pass"
    );
    claim_rows(dir.path(), rows);
    assert_contains(
        &read_error(dir.path()),
        &[
            "shard shard-000001.mss: unreadable column `token_ids`",
            "cannot come from a frame of",
        ],
    );
}

/// Regression: an empty store claiming rows of 2^40 values had a batch of that width reserved
/// before any shard vouched for it (the process aborted); it reads as the empty store it is.
#[test]
fn an_empty_store_of_any_width_reads_nothing() {
    let dir = store();
    edit_manifest(dir.path(), |m| {
        m["shards"] = serde_json::json!([]);
        m["rows"] = 0.into();
        m["d_model"] = (1u64 << 40).into();
    });
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store
            .sequential(SequentialOptions::new(HOOK, 7))
            .unwrap()
            .count(),
        0
    );
    let shuffled = monoscope_store::ShuffleOptions::new(HOOK, 7, 1);
    assert_eq!(store.shuffled(shuffled).unwrap().count(), 0);
}

/// Regression: resuming summed the row counts of `progress.json` unchecked (a panic).
#[test]
fn resuming_from_progress_whose_rows_overflow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec(&[HOOK], 4, Dtype::F16, 20);
    drop(StoreWriter::create(dir.path(), spec.clone()).unwrap());
    let path = dir.path().join("progress.json");
    let mut progress: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = |file: &str, rows: u64| {
        serde_json::json!({"file": file, "rows": rows, "compressed_bytes": 1,
            "uncompressed_bytes": 1, "checksum": "0000000000000000"})
    };
    progress["shards"] = serde_json::json!([
        entry("shard-000000.mss", u64::MAX),
        entry("shard-000001.mss", 2)
    ]);
    std::fs::write(&path, progress.to_string()).unwrap();
    let msg = StoreWriter::resume(dir.path(), spec)
        .unwrap_err()
        .to_string();
    assert_contains(
        &msg,
        &["progress.json: inconsistent manifest: the shards' rows add up past 2^64"],
    );
}
