//! The shuffled reader: reproducible, a permutation, and mixing across shards.

mod common;

use common::{HOOK, value, write_store};
use monoscope_store::{Dtype, SequentialOptions, ShuffleOptions, Store};

const SHARD: usize = 100;
const SHARDS: usize = 10;
const D: usize = 3;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec(&[HOOK], D, Dtype::F32, SHARD);
    write_store(dir.path(), &spec, 0, &[SHARD * SHARDS]);
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// The rows in the order the reader yields them, checking each row's values against its id.
fn order(store: &Store, options: ShuffleOptions) -> Vec<u32> {
    let mut rows = Vec::new();
    for batch in store
        .shuffled(ShuffleOptions {
            with_tokens: true,
            ..options
        })
        .unwrap()
    {
        let batch = batch.unwrap();
        for (i, &row) in batch.token_ids.as_ref().unwrap().iter().enumerate() {
            let want: Vec<f32> = (0..D).map(|j| value(row as u64, 0, j)).collect();
            assert_eq!(
                &batch.activations[i * D..(i + 1) * D],
                &want[..],
                "row {row}"
            );
        }
        rows.extend(batch.token_ids.unwrap());
    }
    rows
}

fn options(seed: u64, buffer_rows: usize) -> ShuffleOptions {
    ShuffleOptions {
        buffer_rows,
        ..ShuffleOptions::new(HOOK, 64, seed)
    }
}

#[test]
fn same_seed_same_order_and_different_seed_different_order() {
    let (_dir, store) = store();
    let a = order(&store, options(7, 350));
    assert_eq!(a, order(&store, options(7, 350)));
    // Prefetch depth and thus decode timing must not change the order.
    assert_eq!(
        a,
        order(
            &store,
            ShuffleOptions {
                prefetch_shards: 1,
                ..options(7, 350)
            }
        )
    );
    assert_ne!(a, order(&store, options(8, 350)));
}

#[test]
fn every_row_comes_out_exactly_once() {
    let (_dir, store) = store();
    for buffer in [1, 37, 350, 5000] {
        let mut rows = order(&store, options(3, buffer));
        rows.sort_unstable();
        assert_eq!(
            rows,
            (0..(SHARD * SHARDS) as u32).collect::<Vec<_>>(),
            "buffer {buffer}"
        );
    }
}

#[test]
fn rows_of_different_shards_interleave() {
    let (_dir, store) = store();
    let rows = order(&store, options(11, 3 * SHARD));
    let first_batch: std::collections::BTreeSet<u32> =
        rows[..64].iter().map(|r| r / SHARD as u32).collect();
    assert!(
        first_batch.len() >= 3,
        "first batch drew from shards {first_batch:?}"
    );
    // Not just shard-level: the output is no longer in store order within a shard either.
    let sorted_runs = rows.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(
        sorted_runs < rows.len() / 10,
        "{sorted_runs} consecutive pairs"
    );
}

#[test]
fn a_one_row_buffer_only_permutes_shards_as_the_docs_say() {
    let (_dir, store) = store();
    let rows = order(&store, options(5, 1));
    for chunk in rows.chunks(SHARD) {
        let shard = chunk[0] / SHARD as u32;
        let want: Vec<u32> = (shard * SHARD as u32..(shard + 1) * SHARD as u32).collect();
        assert_eq!(chunk, &want[..]);
    }
    assert_ne!(
        rows,
        (0..(SHARD * SHARDS) as u32).collect::<Vec<_>>(),
        "shard order is permuted"
    );
}

#[test]
fn a_buffer_holding_the_store_is_uniform() {
    // Where does row 0 land? Over 400 seeds each of 10 equal bins of output positions should
    // get about 40; a shuffle that favoured early positions would crowd the first bins.
    let (_dir, store) = store();
    let n = SHARD * SHARDS;
    let mut bins = [0usize; 10];
    for seed in 0..400 {
        let rows = order(&store, options(seed, n));
        let at = rows.iter().position(|&r| r == 0).unwrap();
        bins[at * 10 / n] += 1;
    }
    assert!(bins.iter().all(|&b| (15..=70).contains(&b)), "{bins:?}");
}

#[test]
fn sequential_batches_cross_shard_boundaries_in_order() {
    let (_dir, store) = store();
    let options = SequentialOptions {
        with_tokens: true,
        ..SequentialOptions::new(HOOK, 64)
    };
    let batches: Vec<_> = store
        .sequential(options)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(batches.len(), (SHARD * SHARDS).div_ceil(64));
    let rows: Vec<u32> = batches
        .into_iter()
        .flat_map(|b| b.token_ids.unwrap())
        .collect();
    assert_eq!(rows, (0..(SHARD * SHARDS) as u32).collect::<Vec<_>>());
}

#[test]
fn unknown_hook_lists_the_known_ones() {
    let (_dir, store) = store();
    let err = store
        .shuffled(ShuffleOptions::new("blocks.9.hook_mlp_out", 8, 0))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(
            "unknown hook `blocks.9.hook_mlp_out` (the store has: blocks.0.hook_resid_post)"
        ),
        "{msg}"
    );
}
