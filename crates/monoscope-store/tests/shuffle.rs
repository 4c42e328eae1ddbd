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

/// The algorithm the module docs describe, on row numbers alone: shard order permuted, then
/// draws from a buffer refilled in place (or emptied by moving its last row) once the input
/// runs out.
fn reference(seed: u64, buffer_rows: usize) -> Vec<u32> {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut shards: Vec<u32> = (0..SHARDS as u32).collect();
    shards.shuffle(&mut rng);
    let shard = SHARD as u32;
    let mut input = shards.into_iter().flat_map(|s| s * shard..(s + 1) * shard);
    let mut buffer: Vec<u32> = input.by_ref().take(buffer_rows.max(1)).collect();
    let mut out = Vec::new();
    while !buffer.is_empty() {
        let j = rng.random_range(0..buffer.len());
        out.push(buffer[j]);
        match input.next() {
            Some(row) => buffer[j] = row,
            None => {
                buffer.swap_remove(j);
            }
        }
    }
    out
}

#[test]
fn the_order_is_the_documented_algorithms_in_every_dtype() {
    // How the buffer holds rows (packed in the stored dtype) must show neither in the order
    // nor in the values, which must be those random access reads.
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        let dir = tempfile::tempdir().unwrap();
        let spec = common::spec(&[HOOK], D, dtype, SHARD);
        write_store(dir.path(), &spec, 0, &[SHARD * SHARDS]);
        let store = Store::open(dir.path()).unwrap();
        let all = store
            .rows(0..store.row_count())
            .unwrap()
            .hooks
            .remove(HOOK)
            .unwrap();
        for (seed, buffer) in [(7, 350), (1, 1), (2, 5000)] {
            let options = ShuffleOptions {
                with_tokens: true,
                ..options(seed, buffer)
            };
            let mut rows = Vec::new();
            for batch in store.shuffled(options).unwrap() {
                let batch = batch.unwrap();
                for (i, &row) in batch.token_ids.as_ref().unwrap().iter().enumerate() {
                    let r = row as usize;
                    let (got, want) = (&batch.activations[i * D..][..D], &all[r * D..][..D]);
                    assert_eq!(got, want, "{dtype} row {row}");
                }
                rows.extend(batch.token_ids.unwrap());
            }
            assert_eq!(rows, reference(seed, buffer), "{dtype} seed {seed}");
        }
    }
}

#[test]
fn readers_after_one_dropped_early_are_unaffected_by_its_buffers() {
    // A store hands its readers' buffers on to the next; stale rows must never show.
    let (_dir, store) = store();
    let mut first = store.shuffled(options(9, 350)).unwrap();
    first.next().unwrap().unwrap();
    drop(first);
    let mut sequential = store.sequential(SequentialOptions::new(HOOK, 64)).unwrap();
    sequential.next().unwrap().unwrap();
    drop(sequential);
    assert_eq!(order(&store, options(7, 350)), reference(7, 350));
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
