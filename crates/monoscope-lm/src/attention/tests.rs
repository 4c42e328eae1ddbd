use super::*;
use crate::layers::attention_generic;

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
        let rope = rope.then(|| Rope::new(&positions, b, t, hd, 10000.0, &device));
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
