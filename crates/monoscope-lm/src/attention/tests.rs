use super::*;
use crate::layers::{AttnExtras, attention_generic};
use crate::rope::RopeFrequencies;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

fn assert_close(what: &str, fused: Tensor<2>, generic: Tensor<2>) {
    assert_eq!(fused.dims(), generic.dims(), "{what}: shapes");
    let (a, b) = (host_vec(fused), host_vec(generic));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * y.abs().max(1.0),
            "{what}[{i}]: fused {x} vs generic {y}"
        );
    }
}

/// One call of both paths on the same projection, flags and (separate copies of) the cache.
struct Step<'a> {
    flags: &'a [Vec<bool>],
    seed: u64,
}

/// Runs the steps through both kernels, each extending its own cache (when `cached`), and
/// compares outputs and caches after every step. Without padding no mask is passed.
fn compare(s: AttnShape, rope: bool, steps: &[Step], cached: bool) {
    let device = Device::flex();
    let (h, kv, hd) = (s.n_heads, s.n_kv_heads, s.head_dim);
    let b = steps[0].flags.len();
    let mut caches: (Option<LayerCache>, Option<LayerCache>) = (None, None);
    let mut past: Vec<Vec<bool>> = vec![Vec::new(); b];
    for (n, step) in steps.iter().enumerate() {
        let t = step.flags[0].len();
        let qkv = values(b * t * (h + 2 * kv) * hd, step.seed);
        let qkv = Tensor::<2>::from_data(TensorData::new(qkv, [b * t, (h + 2 * kv) * hd]), &device);
        let mut positions = Vec::new();
        for (p, f) in past.iter().zip(step.flags) {
            let mut pos = p.iter().filter(|&&v| v).count();
            for &valid in f {
                positions.push(pos);
                pos += usize::from(valid);
            }
        }
        let rope = rope.then(|| {
            Rope::new(
                &positions,
                b,
                t,
                &RopeFrequencies::new(hd, 10000.0, None, 0),
                &device,
            )
        });
        let keys: Vec<Vec<bool>> = past
            .iter()
            .zip(step.flags)
            .map(|(p, f)| p.iter().chain(f).copied().collect())
            .collect();
        let n_keys = keys[0].len();
        let padding: Vec<bool> = keys
            .iter()
            .flat_map(|row| (0..t).flat_map(move |_| row.iter().map(|&v| !v)))
            .collect();
        let any_pad = padding.iter().any(|&p| p);
        let mask =
            Tensor::<4, Bool>::from_data(TensorData::new(padding, [b, 1, t, n_keys]), &device);
        let fused_out = fused(
            qkv.clone(),
            b,
            t,
            s,
            rope.as_ref(),
            any_pad.then_some(keys.as_slice()),
            cached.then_some(&mut caches.0),
        );
        let generic_out = attention_generic(
            qkv,
            b,
            t,
            s,
            rope.as_ref(),
            any_pad.then_some(&mask),
            AttnExtras::default(),
            cached.then_some(&mut caches.1),
        );
        assert_close(&format!("step {n} output"), fused_out, generic_out);
        if !cached {
            assert!(steps.len() == 1, "steps after the first need a cache");
            return;
        }
        let (f, g) = (caches.0.clone().unwrap(), caches.1.clone().unwrap());
        assert_eq!(f.k.dims(), [b, kv, n_keys, hd]);
        let flat = |t: Tensor<4>| t.reshape([b * kv * n_keys, hd]);
        assert_close(&format!("step {n} keys"), flat(f.k), flat(g.k));
        assert_close(&format!("step {n} values"), flat(f.v), flat(g.v));
        past = keys;
    }
}

#[test]
fn fused_attention_matches_generic_with_padding_and_cache() {
    // Three query heads per key head; head_dim 12 exercises the dot product's tail.
    let s = AttnShape {
        n_heads: 6,
        n_kv_heads: 2,
        head_dim: 12,
    };
    let (t, f) = (true, false);
    let prompt = [
        vec![t, t, t, t, t],
        vec![f, f, t, t, t],
        vec![f, f, f, f, t],
    ];
    // Padding in the middle of a row (a shared prefix, then a left-padded suffix) and a row
    // whose first queries see no valid key at all.
    let suffix = [vec![t, t, t], vec![f, t, t], vec![f, f, t]];
    let one = [vec![t], vec![t], vec![t]];
    for (rope, cached) in [(true, true), (false, true), (true, false)] {
        let steps = [
            Step {
                flags: &prompt,
                seed: 1,
            },
            Step {
                flags: &suffix,
                seed: 2,
            },
            Step {
                flags: &one,
                seed: 3,
            },
        ];
        let n = if cached { steps.len() } else { 1 };
        compare(s, rope, &steps[..n], cached);
    }
}

#[test]
fn fused_attention_matches_generic_without_padding() {
    let s = AttnShape {
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 16,
    };
    let rows = vec![vec![true; 9]; 2];
    let more = vec![vec![true; 2]; 2];
    let steps = [
        Step {
            flags: &rows,
            seed: 7,
        },
        Step {
            flags: &more,
            seed: 8,
        },
    ];
    compare(s, true, &steps[..1], false);
    compare(s, true, &steps, true);
}

#[test]
fn fused_attention_matches_generic_at_model_head_size() {
    // head_dim 64 and 45 keys: the kernel's runs of 32 keys and 32 dimensions, then its
    // shorter ones.
    let s = AttnShape {
        n_heads: 3,
        n_kv_heads: 1,
        head_dim: 64,
    };
    let (t, f) = (true, false);
    let mut row = vec![t; 45];
    row[..3].fill(f);
    let rows = [vec![t; 45], row];
    let more = [vec![t; 2], vec![t, t]];
    let steps = [
        Step {
            flags: &rows,
            seed: 11,
        },
        Step {
            flags: &more,
            seed: 12,
        },
    ];
    compare(s, true, &steps[..1], false);
    compare(s, true, &steps, true);
}

/// The arithmetic `kernel::attend` must reproduce, in f64 from untransposed keys.
fn naive_attend(q: &[f32], keys: &[f32], values: &[f32], valid: &[bool], n: usize) -> Vec<f32> {
    let hd = q.len();
    let scale = 1.0 / (hd as f64).sqrt();
    let scores: Vec<Option<f64>> = (0..n)
        .map(|j| {
            valid[j].then(|| {
                let k = &keys[j * hd..(j + 1) * hd];
                q.iter()
                    .zip(k)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    * scale
            })
        })
        .collect();
    let Some(max) = scores.iter().flatten().copied().reduce(f64::max) else {
        return vec![0.0; hd];
    };
    let p: Vec<f64> = scores
        .iter()
        .map(|s| s.map_or(0.0, |s| (s - max).exp()))
        .collect();
    let sum: f64 = p.iter().sum();
    (0..hd)
        .map(|d| {
            let y: f64 = (0..n).map(|j| p[j] * values[j * hd + d] as f64).sum();
            (y / sum) as f32
        })
        .collect()
}

#[test]
fn attend_kernels_match_naive_attention() {
    // Head sizes through each run of dimensions (64, 32, 8, the rest); key counts around the
    // kernel's runs of 8 and 32; some keys invalid, and a prefix with none valid.
    for (hd, n_keys) in [(64, 70), (96, 40), (12, 9), (20, 33)] {
        let keys = values(n_keys * hd, 21 + hd as u64);
        let vals = values(n_keys * hd, 22 + hd as u64);
        let q = values(hd, 23);
        let valid: Vec<bool> = (0..n_keys).map(|j| j >= 2 && j % 7 != 3).collect();
        let stride = n_keys.next_multiple_of(8);
        let mut kt = vec![0.0f32; hd * stride];
        for j in 0..n_keys {
            for d in 0..hd {
                kt[d * stride + j] = keys[j * hd + d];
            }
        }
        let cx = kernel::Context {
            keys: kernel::KeysT { kt: &kt, stride },
            values: Strided::new(&vals, hd),
            valid: Some(&valid),
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let mut scores = vec![0.0f32; stride];
        for n in [1, 2, 3, 8, 9, 31, 32, 33, n_keys] {
            let n = n.min(n_keys);
            let want = naive_attend(&q, &keys, &vals, &valid, n);
            let (mut fast, mut slow) = (vec![f32::NAN; hd], vec![f32::NAN; hd]);
            kernel::attend(&cx, &q, n, &mut scores, &mut fast);
            kernel::attend_portable(&cx, &q, n, &mut scores, &mut slow);
            for (what, got) in [("best", &fast), ("portable", &slow)] {
                for (d, (x, y)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                        "{what} hd {hd} n {n} [{d}]: {x} vs {y}"
                    );
                }
            }
        }
    }
}
