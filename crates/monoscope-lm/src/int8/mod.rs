//! Integer matrix products for the CPU (`flex`) device: `y[m, n] = x[m, k] · W[k, n] + b`
//! with `W` quantised to int8 once at load (one scale per output feature) and `x` quantised
//! per row on the fly.
//!
//! Why integers: on the 2-core AVX2 machines this runs on, fp32 FMA retires 16 multiply-adds
//! per cycle per core, while `vpmaddwd` (16-bit × 16-bit, adjacent pairs summed into 32 bits)
//! retires 32 from the same two multiply pipes. The weights are int8 values widened to 16 bits
//! at packing (so every product fits `vpmaddwd` without the saturation that u8 × i8
//! `vpmaddubsw` risks), and activations get as many bits as the i32 accumulator allows for
//! `k` (≥ 13 bits for `k` ≤ 2048), so nearly all of the error is the weights' int8 rounding.
//!
//! Layout: output features come in groups of [`NR`] = 16 (two 8-lane i32 vectors); within a
//! group, for each pair of input features `2j, 2j+1`, the 16 features' two weights are stored
//! adjacently (`[group][j][feature][2]`), which is the operand order `vpmaddwd` multiplies a
//! broadcast activation pair against. Rows come in micro-tiles of [`MR`] = 4: one kernel call
//! computes a 4 × 16 tile over the whole of `k` in 8 vector accumulators.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod portable;
mod quant;

use std::mem::MaybeUninit;

use monoscope_formats::HostData;
use rayon::prelude::*;

use quant::quantize_rows;
pub(crate) use quant::{QuantRows, quantize_rows_into, quantize_rows_with};

/// Rows per micro-tile.
pub(crate) const MR: usize = 4;
/// Output features per group (two 8-lane vectors).
pub(crate) const NR: usize = 16;
/// Largest quantised weight magnitude (int8, symmetric).
const W_MAX: i32 = 127;
/// 8 output features × 2 adjacent input features of int8 weights widened to i16, ordered
/// `[feature][input]`: one `vpmaddwd` operand, aligned so that it loads as one vector.
#[repr(C, align(32))]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Lanes(pub [i16; 16]);

/// Lanes per pair of input features in a group.
const LANES_PER_PAIR: usize = NR / 8;

/// Two adjacent quantised activations of one row: the 32 bits a kernel broadcasts.
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pair(pub [i16; 2]);

impl Pair {
    /// The two values as one little-endian word (first value in the low half), the operand
    /// order of `vpmaddwd`.
    #[inline(always)]
    pub fn word(self) -> i32 {
        (u32::from(self.0[0] as u16) | (u32::from(self.0[1] as u16) << 16)) as i32
    }
}

/// Bytes of quantised activations a row block may occupy, so that it stays in a core's L2
/// while every weight group streams past it.
const ROW_BLOCK_BYTES: usize = 192 * 1024;
/// Row blocks per thread to aim for: enough that work stealing evens out blocks that took
/// longer (other processes share these cores), few enough that re-streaming the weights for
/// each block stays small next to the arithmetic.
const BLOCKS_PER_THREAD: usize = 8;

/// A weight matrix `[k, n]` quantised and packed for [`matmul`].
#[derive(Debug, Clone)]
pub(crate) struct PackedInt8 {
    k: usize,
    n: usize,
    /// `k` rounded up to even (pairs).
    kp: usize,
    groups: usize,
    /// `[groups][kp / 2][NR / 8]` lanes of quantised weights.
    data: Vec<Lanes>,
    /// Per output feature (padded to `groups * NR` with zeros): dequantisation scale.
    scale: Vec<f32>,
    /// Per output feature, zeros where there is no bias (padded like `scale`).
    bias: Vec<f32>,
    /// Largest activation magnitude after quantisation such that no i32 sum can overflow.
    a_max: i32,
}

impl PackedInt8 {
    /// Packs `w` given as `[k, n]` row-major (input-major, the layout the forward pass
    /// multiplies with).
    pub fn from_in_out(w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [k, n]");
        Self::pack(k, n, bias, |kk, col| w[kk * n + col])
    }

    /// Packs `w` given as `[n, k]` row-major (output-major, e.g. an embedding matrix used as
    /// the unembedding), in any float type, without an f32 copy of it (a vocabulary-sized
    /// embedding is gigabytes).
    pub fn from_host_out_in(w: &HostData, n: usize, k: usize) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [n, k]");
        match w {
            HostData::F32(v) => Self::pack(k, n, None, |kk, col| v[col * k + kk]),
            HostData::F16(v) => Self::pack(k, n, None, |kk, col| v[col * k + kk].to_f32()),
            HostData::Bf16(v) => Self::pack(k, n, None, |kk, col| v[col * k + kk].to_f32()),
            quantized @ HostData::Quantized { .. } => {
                let v = quantized.to_f32();
                Self::pack(k, n, None, |kk, col| v[col * k + kk])
            }
        }
    }

    fn pack(
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
        w: impl Fn(usize, usize) -> f32 + Sync,
    ) -> Self {
        let kp = k.next_multiple_of(2);
        let groups = n.div_ceil(NR);
        let mut scale = vec![0.0f32; groups * NR];
        scale[..n].par_iter_mut().enumerate().for_each(|(col, s)| {
            let max = (0..k).fold(0.0f32, |m, kk| m.max(w(kk, col).abs()));
            *s = max / W_MAX as f32;
        });
        let group_len = kp / 2 * LANES_PER_PAIR;
        let mut data = vec![Lanes::default(); groups * group_len];
        data.par_chunks_mut(group_len)
            .enumerate()
            .for_each(|(g, dst)| {
                for (j, pair) in dst.chunks_exact_mut(LANES_PER_PAIR).enumerate() {
                    for f in 0..NR {
                        let col = g * NR + f;
                        if col >= n || scale[col] == 0.0 {
                            continue;
                        }
                        for (half, kk) in [2 * j, 2 * j + 1].into_iter().enumerate() {
                            if kk < k {
                                let q = (w(kk, col) / scale[col]).round() as i32;
                                pair[f / 8].0[(f % 8) * 2 + half] = q.clamp(-W_MAX, W_MAX) as i16;
                            }
                        }
                    }
                }
            });
        // Each i32 lane sums `kp` products of at most `a_max * W_MAX`.
        let a_max =
            (i32::MAX as i64 / (W_MAX as i64 * kp.max(1) as i64)).min(i16::MAX as i64) as i32;
        assert!(a_max >= 127, "k = {k} is too large for 32-bit accumulation");
        Self {
            k,
            n,
            kp,
            groups,
            data,
            scale,
            bias: {
                let mut padded = vec![0.0f32; groups * NR];
                if let Some(b) = bias {
                    padded[..n].copy_from_slice(b);
                }
                padded
            },
            a_max,
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held: the packed weights, their scales and the bias.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.data.as_slice()) + 4 * (self.scale.len() + self.bias.len())
    }

    /// The weight the kernels multiply with, `[k, n]` row-major f32: each quantised value
    /// times its column's scale. For the consumers that need the matrix itself (feature
    /// directions through `W_O`), once the f32 weight has been dropped.
    pub fn dequantize_in_out(&self) -> Vec<f32> {
        let group_len = self.kp / 2 * LANES_PER_PAIR;
        let mut out = vec![0.0f32; self.k * self.n];
        for (kk, row) in out.chunks_exact_mut(self.n).enumerate() {
            let (j, half) = (kk / 2, kk % 2);
            for (col, y) in row.iter_mut().enumerate() {
                let (g, f) = (col / NR, col % NR);
                let lanes = &self.data[g * group_len + j * LANES_PER_PAIR + f / 8];
                *y = f32::from(lanes.0[(f % 8) * 2 + half]) * self.scale[col];
            }
        }
        out
    }

    pub fn n(&self) -> usize {
        self.n
    }

    fn group(&self, g: usize) -> &[Lanes] {
        let len = self.kp / 2 * LANES_PER_PAIR;
        &self.data[g * len..(g + 1) * len]
    }
}

/// Which micro-kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX2 `vpmaddwd`, detected at run time.
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

impl Kernel {
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Kernel::Avx2;
        }
        Kernel::Portable
    }

    /// `acc[r][f] = Σ_k a[r][k] · w[k][f]` for [`MR`] rows of pairs and one group.
    fn tile(self, a: [&[Pair]; MR], group: &[Lanes]) -> [[i32; NR]; MR] {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2::tile(a, group),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 => portable::tile(a, group),
            Kernel::Portable => portable::tile(a, group),
        }
    }
}

/// `x[m, k] · W + b` as `[m, n]` row-major, with the best kernel for this CPU.
pub(crate) fn matmul(x: &[f32], m: usize, w: &PackedInt8) -> Vec<f32> {
    matmul_with(Kernel::best(), x, m, w)
}

pub(crate) fn matmul_with(kernel: Kernel, x: &[f32], m: usize, w: &PackedInt8) -> Vec<f32> {
    assert_eq!(x.len(), m * w.k, "activations are not [m, k]");
    let mut out = Vec::new();
    matmul_into(kernel, &quantize_rows(x, m, w), w, &mut out);
    out
}

/// `q · W + b` for activations already quantised for `w` (see [`quantize_rows_with`]), into
/// `out` (replacing its contents, reusing its allocation).
pub(crate) fn matmul_quantized_into(q: &QuantRows, w: &PackedInt8, out: &mut Vec<f32>) {
    matmul_into(Kernel::best(), q, w, out);
}

fn matmul_into(kernel: Kernel, q: &QuantRows, w: &PackedInt8, out: &mut Vec<f32>) {
    assert_eq!(q.pairs(), w.kp / 2, "activations quantised for another k");
    let (m, n) = (q.rows(), w.n);
    out.clear();
    if m == 0 || n == 0 {
        out.resize(m * n, 0.0);
        return;
    }
    // Every element is written below, so the output is not zeroed first: at these sizes that
    // is a memset of up to the whole logits matrix (2% of a forward pass).
    if out.capacity() < m * n {
        out.reserve(m * n);
        huge_pages(out.spare_capacity_mut());
    }
    let uninit = &mut out.spare_capacity_mut()[..m * n];
    let threads = rayon::current_num_threads();
    let rows_per_block = (ROW_BLOCK_BYTES / (2 * w.kp))
        .min(m.div_ceil(BLOCKS_PER_THREAD * threads))
        .next_multiple_of(MR);
    if m.div_ceil(rows_per_block) >= 2 * threads {
        // Enough row blocks to share: each task owns whole output rows and writes in place.
        uninit
            .par_chunks_mut(rows_per_block * n)
            .enumerate()
            .for_each(|(b, dst)| {
                let r0 = b * rows_per_block;
                let rows = dst.len() / n;
                row_block(kernel, q, r0, rows, 0..w.groups, w, dst, n, 0);
            });
    } else {
        // Few rows (generation, short prompts): share the output features instead; each task
        // fills a strip of columns, copied into place afterwards.
        let per_task = w.groups.div_ceil(2 * threads).max(1);
        let strips: Vec<(usize, Vec<MaybeUninit<f32>>)> = (0..w.groups)
            .step_by(per_task)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|g0| {
                let g1 = (g0 + per_task).min(w.groups);
                let c0 = g0 * NR;
                let width = (g1 * NR).min(n) - c0;
                let mut strip = vec![MaybeUninit::uninit(); m * width];
                row_block(kernel, q, 0, m, g0..g1, w, &mut strip, width, c0);
                (c0, strip)
            })
            .collect();
        // The strips cover every column of every row.
        for (c0, strip) in strips {
            let width = strip.len() / m;
            for (r, src) in strip.chunks(width).enumerate() {
                uninit[r * n + c0..r * n + c0 + width].copy_from_slice(src);
            }
        }
    }
    // SAFETY: `row_block` wrote every element of the first `m * n` (its tiles cover all rows
    // of its block and all features of its groups; the blocks or strips cover the matrix).
    unsafe { out.set_len(m * n) };
}

/// Asks Linux to back the 2 MiB-aligned part of a large fresh allocation with huge pages
/// before it is first written. A logits matrix is 400 MB of new memory per call: as 4 KiB
/// pages, faulting them in cost a quarter of the unembedding, and the output rows, written a
/// cache line at a time 200 KB apart, each touch another page. Advice only: on failure, or
/// elsewhere, nothing changes.
fn huge_pages(buf: &mut [MaybeUninit<f32>]) {
    const HUGE: usize = 2 << 20;
    #[cfg(target_os = "linux")]
    if std::mem::size_of_val(buf) >= 8 * HUGE {
        unsafe extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: std::ffi::c_int) -> i32;
        }
        const MADV_HUGEPAGE: std::ffi::c_int = 14;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        // SAFETY: `lo..hi` lies within `buf`, memory this process owns; the advice changes
        // how pages are backed, not their contents or mapping.
        unsafe { madvise(lo as *mut std::ffi::c_void, hi - lo, MADV_HUGEPAGE) };
    }
}

/// Rows `r0..r0 + rows` × the features of `groups`, written to `dst` (row stride `ld`, whose
/// column 0 is feature `c0`).
#[allow(clippy::too_many_arguments)]
fn row_block(
    kernel: Kernel,
    q: &QuantRows,
    r0: usize,
    rows: usize,
    groups: std::ops::Range<usize>,
    w: &PackedInt8,
    dst: &mut [MaybeUninit<f32>],
    ld: usize,
    c0: usize,
) {
    for g in groups {
        let packed = w.group(g);
        let f0 = g * NR;
        let width = NR.min(w.n - f0);
        for t in (0..rows).step_by(MR) {
            let r = r0 + t;
            let acc = kernel.tile(q.tile(r), packed);
            let sw: &[f32; NR] = w.scale[f0..f0 + NR].try_into().expect("padded scales");
            let b: &[f32; NR] = w.bias[f0..f0 + NR].try_into().expect("padded bias");
            for (i, acc_row) in acc.iter().enumerate().take(rows - t) {
                let sx = q.scale[r + i];
                // Whole fixed-size rows so that this vectorises; then the real width.
                let y: [f32; NR] = std::array::from_fn(|f| acc_row[f] as f32 * sx * sw[f] + b[f]);
                let at = (t + i) * ld + f0 - c0;
                if let Ok(whole) = <&mut [_; NR]>::try_from(&mut dst[at..at + width]) {
                    // A fixed size compiles to vector stores; a slice copy was a `memmove`
                    // call per 64 bytes (4% of a forward pass with logits).
                    *whole = y.map(MaybeUninit::new);
                } else {
                    for (d, &v) in dst[at..at + width].iter_mut().zip(&y) {
                        d.write(v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
