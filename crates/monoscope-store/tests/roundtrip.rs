//! Whatever goes in comes out: every shape, shard size, batching and dtype, read sequentially
//! and by row range.

mod common;

use common::{batch, tolerance, value, write_store};
use monoscope_store::{Dtype, SequentialOptions, Store};
use proptest::prelude::*;

fn dtype() -> impl Strategy<Value = Dtype> {
    prop_oneof![Just(Dtype::F32), Just(Dtype::F16), Just(Dtype::Bf16)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trip(
        batches in prop::collection::vec(0usize..40, 0..8),
        d_model in 1usize..24,
        hook_count in 1usize..4,
        rows_per_shard in 1usize..64,
        read_batch in 1usize..50,
        dtype in dtype(),
        range in (0u64..400, 0u64..400),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..hook_count).map(|i| format!("blocks.{i}.hook_resid_post")).collect();
        let hooks: Vec<&str> = names.iter().map(String::as_str).collect();
        let spec = common::spec(&hooks, d_model, dtype, rows_per_shard);
        let manifest = write_store(dir.path(), &spec, 0, &batches);
        let total: usize = batches.iter().sum();
        prop_assert_eq!(manifest.rows, total as u64);
        prop_assert_eq!(manifest.shards.len(), total.div_ceil(rows_per_shard));

        let store = Store::open(dir.path()).unwrap();
        for (h, hook) in hooks.iter().enumerate() {
            let options = SequentialOptions { with_tokens: true, ..SequentialOptions::new(*hook, read_batch) };
            let mut row = 0u64;
            for b in store.sequential(options).unwrap() {
                let b = b.unwrap();
                prop_assert!(b.rows == read_batch || row + b.rows as u64 == total as u64);
                for (i, token) in b.token_ids.unwrap().into_iter().enumerate() {
                    prop_assert_eq!(token as u64, row + i as u64);
                    for j in 0..d_model {
                        let (want, got) = (value(row + i as u64, h, j), b.activations[i * d_model + j]);
                        prop_assert!((want - got).abs() <= tolerance(dtype, want), "{} vs {}", want, got);
                    }
                }
                row += b.rows as u64;
            }
            prop_assert_eq!(row, total as u64);
        }

        let (a, b) = (range.0.min(range.1).min(total as u64), range.0.max(range.1).min(total as u64));
        let got = store.rows(a..b).unwrap();
        let want = batch(&spec, a, (b - a) as usize);
        prop_assert_eq!(&got.token_ids, &want.token_ids);
        prop_assert_eq!(&got.doc_ids, &want.doc_ids);
        prop_assert_eq!(&got.positions, &want.positions);
        for (hook, values) in &want.hooks {
            let read = &got.hooks[hook];
            prop_assert_eq!(read.len(), values.len());
            for (w, g) in values.iter().zip(read) {
                prop_assert!((w - g).abs() <= tolerance(dtype, *w), "{}: {} vs {}", hook, w, g);
            }
        }
    }
}

#[test]
fn rows_out_of_range_is_an_error_naming_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec(&[common::HOOK], 4, Dtype::F32, 8);
    write_store(dir.path(), &spec, 0, &[10]);
    let err = Store::open(dir.path())
        .unwrap()
        .rows(5..11)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rows 5..11 are out of range (the store has 10 rows)"),
        "{err}"
    );
}

#[test]
fn f16_saturates_and_bf16_keeps_the_range_of_massive_activations() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, want) in [(Dtype::F16, f32::INFINITY), (Dtype::Bf16, 1.0e5)] {
        let path = dir.path().join(dtype.to_string());
        let spec = common::spec(&[common::HOOK], 1, dtype, 8);
        let mut b = batch(&spec, 0, 1);
        b.hooks.get_mut(common::HOOK).unwrap()[0] = 1.0e5;
        let mut w = monoscope_store::StoreWriter::create(&path, spec).unwrap();
        w.write_batch(&b).unwrap();
        w.finish().unwrap();
        let got = Store::open(&path).unwrap().rows(0..1).unwrap().hooks[common::HOOK][0];
        assert!(
            (got - want).abs() <= want.abs() / 256.0 || got == want,
            "{dtype}: {got}"
        );
    }
}
