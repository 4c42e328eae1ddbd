//! Causal grouped-query attention as one host kernel for the CPU (`flex`) device.
//!
//! burn's attention is generic: Q, K and V must first be swapped to `[batch, heads, seq,
//! head_dim]` (three copies), RoPE is half a dozen whole-tensor passes plus a concatenation,
//! every score of the `[seq, past + seq]` square is computed and then masked (causal and
//! padding alike), and the output is swapped back (a fourth copy). Here the fused projection's
//! `[rows, (heads + 2 kv_heads) head_dim]` output is rotated in place and read where it lies:
//! each query scores only the keys at or before it, skips padding keys, and writes its head's
//! slice of the `[rows, heads head_dim]` matrix that the output projection multiplies.
//!
//! Semantics are those of the generic path in `crate::layers`, which stays the reference and
//! the path of every other device: causality is aligned to the end of the keys (cached
//! columns come first), a key flagged invalid is ignored, and a query with no valid key at or
//! before it (left padding) outputs zeros.

use burn::prelude::*;
use rayon::prelude::*;

use crate::fused::host_vec;

mod kernel;
mod parts;

pub(crate) use parts::{AttnShape, LayerCache, Rope};

use kernel::Strided;

/// Attention of the projection `qkv[batch * seq, (n_heads + 2 n_kv_heads) head_dim]` (Q | K |
/// V per row, before RoPE), returning `[batch * seq, n_heads head_dim]` before the output
/// projection. `keys_valid[row]` flags the `past + seq` key columns (`None`: all valid).
/// Extends `cache` like the generic path. The caller has checked `fused::on_host`.
pub(crate) fn fused(
    qkv: Tensor<2>,
    batch: usize,
    seq: usize,
    s: AttnShape,
    rope: Option<&Rope>,
    keys_valid: Option<&[Vec<bool>]>,
    cache: Option<&mut Option<LayerCache>>,
) -> Tensor<2> {
    let device = qkv.device();
    let mut out = Vec::new();
    fused_host(
        &mut host_vec(qkv),
        Call {
            batch,
            seq,
            shape: s,
            rope,
            keys_valid,
            device: &device,
        },
        cache,
        &mut out,
    );
    Tensor::from_data(
        TensorData::new(out, [batch * seq, s.n_heads * s.head_dim]),
        &device,
    )
}

/// What [`fused_host`] needs besides the projection and the cache.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub batch: usize,
    pub seq: usize,
    pub shape: AttnShape,
    pub rope: Option<&'a Rope>,
    /// Per row, `past + seq` flags (`None`: all keys valid).
    pub keys_valid: Option<&'a [Vec<bool>]>,
    /// Where the cache's tensors live.
    pub device: &'a Device,
}

/// [`fused`] on host buffers, row-major as there, for callers that keep activations on the
/// host between kernels: rotates `qkv` in place and replaces the contents of `out`.
pub(crate) fn fused_host(
    qkv: &mut [f32],
    call: Call,
    cache: Option<&mut Option<LayerCache>>,
    out: &mut Vec<f32>,
) {
    let Call {
        batch,
        seq,
        shape: s,
        rope,
        keys_valid,
        device,
    } = call;
    let (h, kv, hd) = (s.n_heads, s.n_kv_heads, s.head_dim);
    let width = (h + 2 * kv) * hd;
    assert_eq!(qkv.len(), batch * seq * width, "qkv is not [rows, width]");
    if let Some(rope) = rope {
        rotate(qkv, width, h + kv, hd, rope);
    }

    // Keys and values of one (row, kv head) as a strided sequence of `head_dim` vectors:
    // straight from the projection without a cache, else from the concatenated cache.
    let (joined, slot) = match cache {
        Some(slot) => (
            Some(join_cache(qkv, batch, seq, s, slot.take())),
            Some(slot),
        ),
        None => (None, None),
    };
    let n_keys = joined
        .as_ref()
        .map_or(seq, |(k, _)| k.len() / (batch * kv * hd));
    let past = n_keys - seq;

    out.clear();
    out.resize(batch * seq * h * hd, 0.0);
    let qkv = &*qkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let stride = n_keys.next_multiple_of(8);
    out.par_chunks_mut(seq * h * hd)
        .enumerate()
        .for_each(|(row, out)| {
            let mut scores = vec![0.0f32; stride];
            // Padding columns stay zero: finite, and never read as scores.
            let mut kt = vec![0.0f32; hd * stride];
            let valid = keys_valid.map(|v| v[row].as_slice());
            for kvh in 0..kv {
                let (keys, values) = match &joined {
                    Some((k, v)) => {
                        let at = (row * kv + kvh) * n_keys * hd;
                        (
                            Strided::new(&k[at..at + n_keys * hd], hd),
                            Strided::new(&v[at..at + n_keys * hd], hd),
                        )
                    }
                    None => {
                        let rows = &qkv[row * seq * width..(row + 1) * seq * width];
                        (
                            Strided::new(&rows[(h + kvh) * hd..], width),
                            Strided::new(&rows[(h + kv + kvh) * hd..], width),
                        )
                    }
                };
                // Transposed once per key head, then shared by its query heads.
                for j in 0..n_keys {
                    for (d, &x) in keys.at(j, hd).iter().enumerate() {
                        kt[d * stride + j] = x;
                    }
                }
                let cx = kernel::Context {
                    keys: kernel::KeysT { kt: &kt, stride },
                    values,
                    valid,
                    scale,
                };
                for head in kvh * (h / kv)..(kvh + 1) * (h / kv) {
                    let queries = Strided::new(&qkv[row * seq * width + head * hd..], width);
                    for i in 0..seq {
                        // Causality aligned to the end of the keys: query `i` sees
                        // `past + i + 1` of them.
                        let o = &mut out[i * h * hd + head * hd..][..hd];
                        kernel::attend(&cx, queries.at(i, hd), past + i + 1, &mut scores, o);
                    }
                }
            }
        });
    if let (Some((k, v)), Some(slot)) = (joined, slot) {
        let dims = [batch, kv, n_keys, hd];
        *slot = Some(LayerCache {
            k: Tensor::from_data(TensorData::new(k, dims), device),
            v: Tensor::from_data(TensorData::new(v, dims), device),
        });
    }
}

/// RoPE in place on the first `heads` head vectors (Q and K) of every row, with the same
/// arithmetic as `Rope::apply`.
fn rotate(qkv: &mut [f32], width: usize, heads: usize, hd: usize, rope: &Rope) {
    let half = hd / 2;
    let (cos, sin) = rope.host();
    qkv.par_chunks_mut(width)
        .zip(cos.par_chunks(half).zip(sin.par_chunks(half)))
        .for_each(|(row, (c, s))| {
            for x in row[..heads * hd].chunks_exact_mut(hd) {
                let (x1, x2) = x.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (x1[i], x2[i]);
                    x1[i] = a * c[i] - b * s[i];
                    x2[i] = a * s[i] + b * c[i];
                }
            }
        });
}

/// The cache's keys and values `[batch, kv_heads, past + seq, head_dim]` with this call's
/// (rotated) ones appended.
fn join_cache(
    qkv: &[f32],
    batch: usize,
    seq: usize,
    s: AttnShape,
    past: Option<LayerCache>,
) -> (Vec<f32>, Vec<f32>) {
    let (h, kv, hd) = (s.n_heads, s.n_kv_heads, s.head_dim);
    let width = (h + 2 * kv) * hd;
    let (pk, pv, p) = match past {
        Some(c) => {
            let p = c.k.dims()[2];
            (host_vec(c.k), host_vec(c.v), p)
        }
        None => (Vec::new(), Vec::new(), 0),
    };
    let n = p + seq;
    let mut k = vec![0.0f32; batch * kv * n * hd];
    let mut v = vec![0.0f32; batch * kv * n * hd];
    for (dst, src, first) in [(&mut k, &pk, h), (&mut v, &pv, h + kv)] {
        for (seq_block, dst) in dst.chunks_mut(n * hd).enumerate() {
            let (row, kvh) = (seq_block / kv, seq_block % kv);
            dst[..p * hd].copy_from_slice(&src[seq_block * p * hd..(seq_block + 1) * p * hd]);
            for i in 0..seq {
                let at = (row * seq + i) * width + (first + kvh) * hd;
                dst[(p + i) * hd..(p + i + 1) * hd].copy_from_slice(&qkv[at..at + hd]);
            }
        }
    }
    (k, v)
}

#[cfg(test)]
mod tests;
