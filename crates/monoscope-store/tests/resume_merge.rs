//! Interrupted writes resume to byte-identical stores; part stores merge into the whole.

mod common;

use common::{HOOK, batch, dir_bytes, write_store};
use monoscope_store::{Dtype, Store, StoreWriter, merge, slice_batch};

const HOOKS: [&str; 2] = [HOOK, "blocks.1.hook_resid_post"];
const BATCH: usize = 23;
const BATCHES: usize = 17;

fn spec() -> monoscope_store::StoreSpec {
    common::spec(&HOOKS, 6, Dtype::Bf16, 50)
}

/// Writes the first `stop` batches, then drops the writer without `finish` (as a kill would),
/// leaving also a half-written temporary as a kill during a shard write does.
fn interrupted(dir: &std::path::Path, stop: usize) {
    let mut writer = StoreWriter::create(dir, spec()).unwrap();
    for i in 0..stop {
        writer
            .write_batch(&batch(&spec(), (i * BATCH) as u64, BATCH))
            .unwrap();
    }
    drop(writer);
    std::fs::write(dir.join(".shard-000099.mss.tmp-4242"), b"half a shard").unwrap();
}

/// Resumes like a capture would: replays its deterministic input, skipping stored rows.
fn resume(dir: &std::path::Path) -> u64 {
    let mut writer = StoreWriter::resume(dir, spec()).unwrap();
    let stored = writer.rows_stored();
    for i in 0..BATCHES {
        let (start, end) = ((i * BATCH) as u64, ((i + 1) * BATCH) as u64);
        if end <= stored {
            continue;
        }
        let b = batch(&spec(), start, BATCH);
        let skip = stored.saturating_sub(start) as usize;
        writer.write_batch(&slice_batch(&b, skip..BATCH)).unwrap();
    }
    writer.finish().unwrap();
    stored
}

#[test]
fn a_resumed_store_is_byte_identical_to_an_uninterrupted_one() {
    let clean = tempfile::tempdir().unwrap();
    write_store(clean.path(), &spec(), 0, &[BATCH; BATCHES]);
    let want = dir_bytes(clean.path());
    assert!(want.contains_key("manifest.json") && !want.contains_key("progress.json"));

    // Interrupted before any shard, mid-shard (9 × 23 = 207 rows: 4 shards stored, 7
    // buffered), and with everything written but the manifest.
    for (stop, stored) in [(0, 0), (1, 0), (9, 200), (BATCHES, 350)] {
        let dir = tempfile::tempdir().unwrap();
        interrupted(dir.path(), stop);
        assert!(
            Store::open(dir.path())
                .unwrap_err()
                .to_string()
                .contains("no manifest.json")
        );
        assert_eq!(
            resume(dir.path()),
            stored,
            "rows stored after {stop} batches"
        );
        assert_eq!(dir_bytes(dir.path()), want, "resumed after {stop} batches");
    }
}

#[test]
fn resuming_needs_the_same_spec_and_an_unfinished_store() {
    let dir = tempfile::tempdir().unwrap();
    interrupted(dir.path(), 3);
    let other = monoscope_store::StoreSpec {
        dtype: Dtype::F16,
        ..spec()
    };
    let msg = StoreWriter::resume(dir.path(), other)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot resume: dtype differs: the interrupted store was written with \"bf16\", now \"f16\""), "{msg}");

    let meta = monoscope_store::StoreSpec {
        metadata: serde_json::json!({"corpus": "other"}),
        ..spec()
    };
    let msg = StoreWriter::resume(dir.path(), meta)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("metadata differs"), "{msg}");

    resume(dir.path());
    let msg = StoreWriter::resume(dir.path(), spec())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("nothing to resume: no progress.json (the store is already finished)"),
        "{msg}"
    );
}

#[test]
fn resuming_over_a_damaged_shard_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    interrupted(dir.path(), 9);
    let path = dir.path().join("shard-000002.mss");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = StoreWriter::resume(dir.path(), spec())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("shard shard-000002.mss: truncated"), "{msg}");
}

#[test]
fn merged_parts_hold_the_rows_of_a_store_written_in_one_go() {
    let whole = tempfile::tempdir().unwrap();
    write_store(whole.path(), &spec(), 0, &[BATCH; BATCHES]);
    let total = (BATCH * BATCHES) as u64;

    let root = tempfile::tempdir().unwrap();
    let parts: Vec<_> = (0..3)
        .map(|i| root.path().join(format!("part-{i}")))
        .collect();
    let splits = [0, 120, 121, total];
    for (i, part) in parts.iter().enumerate() {
        let spec = monoscope_store::StoreSpec {
            metadata: serde_json::json!({"shard": format!("{i}/3")}),
            ..spec()
        };
        let (start, end) = (splits[i], splits[i + 1]);
        write_store(part, &spec, start, &[(end - start) as usize]);
    }
    let out = root.path().join("merged");
    let manifest = merge(&parts, &out).unwrap();
    assert_eq!(manifest.rows, total);
    assert_eq!(manifest.metadata["parts"][2]["shard"], "2/3");
    let names: Vec<&str> = manifest.shards.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "shard-000000.mss",
            "shard-000001.mss",
            "shard-000002.mss",
            "shard-000003.mss"
        ]
    );

    monoscope_store::verify(&out).unwrap();
    let merged = Store::open(&out).unwrap().rows(0..total).unwrap();
    assert_eq!(
        merged,
        Store::open(whole.path()).unwrap().rows(0..total).unwrap()
    );
    // The parts are untouched.
    assert_eq!(Store::open(&parts[2]).unwrap().row_count(), total - 121);

    let msg = merge(&parts, &out).unwrap_err().to_string();
    assert!(msg.contains("already holds a store"), "{msg}");
}

#[test]
fn merging_incompatible_parts_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    write_store(&a, &spec(), 0, &[10]);
    write_store(
        &b,
        &monoscope_store::StoreSpec {
            d_model: 7,
            ..spec()
        },
        0,
        &[10],
    );
    let msg = merge(&[&a, &b], &root.path().join("out"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("does not match part") && msg.contains("d_model: 7 vs 6"),
        "{msg}"
    );
    assert!(!root.path().join("out").exists());
}
