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
use crate::layers::{AttnShape, LayerCache, Rope};

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
    let (h, kv, hd) = (s.n_heads, s.n_kv_heads, s.head_dim);
    let width = (h + 2 * kv) * hd;
    let mut qkv = host_vec(qkv);
    debug_assert_eq!(qkv.len(), batch * seq * width);
    if let Some(rope) = rope {
        rotate(&mut qkv, width, h + kv, hd, rope);
    }

    // Keys and values of one (row, kv head) as a strided sequence of `head_dim` vectors:
    // straight from the projection without a cache, else from the concatenated cache.
    let (joined, slot) = match cache {
        Some(slot) => (
            Some(join_cache(&qkv, batch, seq, s, slot.take())),
            Some(slot),
        ),
        None => (None, None),
    };
    let n_keys = joined
        .as_ref()
        .map_or(seq, |(k, _)| k.len() / (batch * kv * hd));
    let past = n_keys - seq;

    let mut out = vec![0.0f32; batch * seq * h * hd];
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(seq * h * hd)
        .enumerate()
        .for_each(|(row, out)| {
            let mut scores = vec![0.0f32; n_keys];
            let valid = keys_valid.map(|v| v[row].as_slice());
            for head in 0..h {
                let kvh = head / (h / kv);
                let (keys, values) = match &joined {
                    Some((k, v)) => {
                        let at = (row * kv + kvh) * n_keys * hd;
                        (
                            Strided::new(&k[at..at + n_keys * hd], hd, hd),
                            Strided::new(&v[at..at + n_keys * hd], hd, hd),
                        )
                    }
                    None => {
                        let rows = &qkv[row * seq * width..(row + 1) * seq * width];
                        (
                            Strided::new(&rows[(h + kvh) * hd..], width, hd),
                            Strided::new(&rows[(h + kv + kvh) * hd..], width, hd),
                        )
                    }
                };
                let job = HeadJob {
                    queries: Strided::new(&qkv[row * seq * width + head * hd..], width, hd),
                    keys,
                    values,
                    seq,
                    past,
                    valid,
                    scale,
                };
                job.run_best(&mut scores, &mut out[head * hd..], h * hd);
            }
        });
    if let (Some((k, v)), Some(slot)) = (joined, slot) {
        let dims = [batch, kv, n_keys, hd];
        *slot = Some(LayerCache {
            k: Tensor::from_data(TensorData::new(k, dims), &device),
            v: Tensor::from_data(TensorData::new(v, dims), &device),
        });
    }
    Tensor::from_data(TensorData::new(out, [batch * seq, h * hd]), &device)
}

/// Vectors of `len` values at a fixed stride.
#[derive(Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    stride: usize,
    len: usize,
}

impl<'a> Strided<'a> {
    fn new(data: &'a [f32], stride: usize, len: usize) -> Self {
        Self { data, stride, len }
    }

    #[inline(always)]
    fn at(&self, j: usize, len: usize) -> &'a [f32] {
        &self.data[j * self.stride..j * self.stride + len]
    }
}

/// The queries of one (batch row, head) against their keys and values.
struct HeadJob<'a> {
    /// `seq` query vectors.
    queries: Strided<'a>,
    /// `past + seq` key and value vectors.
    keys: Strided<'a>,
    values: Strided<'a>,
    seq: usize,
    past: usize,
    /// Per key, whether it is a real token (`None`: all are).
    valid: Option<&'a [bool]>,
    scale: f32,
}

impl HeadJob<'_> {
    /// [`HeadJob::run`] compiled for AVX2 + FMA when the CPU has them: the crate is built for
    /// baseline x86-64 (SSE2), where the dot products run at half the vector width.
    fn run_best(&self, scores: &mut [f32], out: &mut [f32], out_stride: usize) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were just detected.
            unsafe { self.run_avx2(scores, out, out_stride) };
            return;
        }
        self.run(scores, out, out_stride);
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, scores: &mut [f32], out: &mut [f32], out_stride: usize) {
        self.run(scores, out, out_stride);
    }

    /// Query `i`'s output goes to `out[i * out_stride..][..head_dim]`.
    #[inline(always)]
    fn run(&self, scores: &mut [f32], out: &mut [f32], out_stride: usize) {
        for i in 0..self.seq {
            let q = self.queries.at(i, self.head_dim());
            let o = &mut out[i * out_stride..i * out_stride + self.head_dim()];
            self.attend(q, self.past + i + 1, scores, o);
        }
    }

    fn head_dim(&self) -> usize {
        self.keys.len
    }

    /// One query against keys `0..n` (those after it are never scored): softmax-weighted
    /// values into `out`, zeros when no key is valid.
    #[inline(always)]
    fn attend(&self, q: &[f32], n: usize, scores: &mut [f32], out: &mut [f32]) {
        let hd = q.len();
        let scores = &mut scores[..n];
        let mut j = 0;
        // Four keys at a time: four independent sums hide the adds' latency.
        while j + 4 <= n {
            let k = std::array::from_fn(|r| self.keys.at(j + r, hd));
            let d = dot4(q, k);
            scores[j..j + 4].copy_from_slice(&d);
            j += 4;
        }
        // The last few keys one at a time (four copies of the same key).
        for (jj, s) in scores.iter_mut().enumerate().skip(j) {
            *s = dot4(q, [self.keys.at(jj, hd); 4])[0];
        }
        let mut max = f32::NEG_INFINITY;
        for (j, s) in scores.iter_mut().enumerate() {
            *s = if self.valid.is_none_or(|v| v[j]) {
                *s * self.scale
            } else {
                f32::NEG_INFINITY
            };
            max = max.max(*s);
        }
        out.fill(0.0);
        if max == f32::NEG_INFINITY {
            return;
        }
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            // The polynomial exp saturates at e^-87 rather than 0, so masked keys are zeroed
            // here.
            *s = if s.is_finite() {
                crate::fused::exp(*s - max)
            } else {
                0.0
            };
            sum += *s;
        }
        for (j, &p) in scores.iter().enumerate() {
            if p != 0.0 {
                for (o, &v) in out.iter_mut().zip(self.values.at(j, hd)) {
                    *o += p * v;
                }
            }
        }
        let inv = 1.0 / sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// `q · k[r]` for four keys, each summed in eight lanes so that it vectorises (one running
/// sum is a dependency chain the compiler may not reorder).
#[inline(always)]
fn dot4(q: &[f32], k: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0.0f32; 8]; 4];
    let whole = q.len() / 8 * 8;
    for c in (0..whole).step_by(8) {
        let qc: &[f32; 8] = q[c..c + 8].try_into().expect("8 values");
        for (acc, k) in acc.iter_mut().zip(k) {
            let kc: &[f32; 8] = k[c..c + 8].try_into().expect("8 values");
            for l in 0..8 {
                acc[l] += qc[l] * kc[l];
            }
        }
    }
    std::array::from_fn(|r| {
        let tail: f32 = (whole..q.len()).map(|i| q[i] * k[r][i]).sum();
        acc[r].iter().sum::<f32>() + tail
    })
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
