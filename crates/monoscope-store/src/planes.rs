//! Byte planes: how a column's values are laid out before zstd sees them.
//!
//! A column of `n` little-endian values of `e` bytes is stored as `e` planes of `n` bytes: plane
//! `b` holds byte `b` of every value. The sign/exponent bytes of floats (and the high bytes of
//! small ids) are nearly constant, and zstd compresses a run of them far better than the same
//! bytes interleaved with noisy mantissa bytes (the Blosc "shuffle" filter). Splitting and
//! joining are fused with (de)quantisation, so the filter costs no extra pass over the data.

use std::ops::Range;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::spec::Dtype;

/// Values converted per step of the f16/bf16 paths (fits in L1 with its f32 counterpart).
const CHUNK: usize = 1024;

/// `values` quantised to `dtype`, as byte planes.
pub fn quantise(values: &[f32], dtype: Dtype) -> Vec<u8> {
    let n = values.len();
    let mut out = vec![0u8; n * dtype.size()];
    match dtype {
        Dtype::F32 => split_u32(bytemuck::cast_slice(values), &mut out),
        Dtype::F16 | Dtype::Bf16 => {
            let (lo, hi) = out.split_at_mut(n);
            let mut halves = [0u16; CHUNK];
            for (c, chunk) in values.chunks(CHUNK).enumerate() {
                let h = &mut halves[..chunk.len()];
                if dtype == Dtype::F16 {
                    bytemuck::cast_slice_mut::<u16, f16>(h).convert_from_f32_slice(chunk);
                } else {
                    bytemuck::cast_slice_mut::<u16, bf16>(h).convert_from_f32_slice(chunk);
                }
                let base = c * CHUNK;
                for (i, v) in h.iter().enumerate() {
                    let [b0, b1] = v.to_le_bytes();
                    lo[base + i] = b0;
                    hi[base + i] = b1;
                }
            }
        }
    }
    out
}

/// Byte planes of `dtype` values back to f32.
pub fn dequantise(planes: &[u8], dtype: Dtype) -> Vec<f32> {
    let n = planes.len() / dtype.size();
    // Built by extension rather than into a zeroed buffer: one pass over the output, not two.
    let mut out = Vec::with_capacity(n);
    dequantise_into(planes, n, 0..n, dtype, &mut out);
    out
}

/// Values `at` of a column of `n` `dtype` values held as byte planes, appended to `out` as
/// f32. Rows are contiguous in every plane, so a row range costs no more than a whole column.
pub fn dequantise_into(
    planes: &[u8],
    n: usize,
    at: Range<usize>,
    dtype: Dtype,
    out: &mut Vec<f32>,
) {
    // `extend` from a zip of equal-length slices writes straight into the spare capacity, in
    // one vectorised pass, with no bounce buffer and no zeroing.
    match dtype {
        Dtype::F32 => {
            let [p0, p1, p2, p3] = plane_slices::<4>(planes, n, at);
            let bytes = p0.iter().zip(p1).zip(p2).zip(p3);
            out.extend(bytes.map(|(((&a, &b), &c), &d)| f32::from_le_bytes([a, b, c, d])));
        }
        Dtype::F16 => {
            let [lo, hi] = plane_slices::<2>(planes, n, at);
            let halves = lo.iter().zip(hi).map(|(&l, &h)| u16::from_le_bytes([l, h]));
            out.extend(halves.map(f16_to_f32));
        }
        Dtype::Bf16 => {
            let [lo, hi] = plane_slices::<2>(planes, n, at);
            let halves = lo.iter().zip(hi).map(|(&l, &h)| u16::from_le_bytes([l, h]));
            out.extend(halves.map(bf16_to_f32));
        }
    }
}

/// Values `at` of a column of `n` `dtype` values held as byte planes, written to `out` as
/// `dtype` values in native order: `at.len()` words for f32, `at.len()` halves packed two to a
/// word for f16 and bf16. This is the compact form the shuffle buffer holds rows in.
pub fn join_into(planes: &[u8], n: usize, at: Range<usize>, dtype: Dtype, out: &mut [u32]) {
    match dtype {
        Dtype::F32 => {
            let [p0, p1, p2, p3] = plane_slices::<4>(planes, n, at);
            join4(&mut out[..p0.len()], p0, p1, p2, p3);
        }
        Dtype::F16 | Dtype::Bf16 => {
            let [lo, hi] = plane_slices::<2>(planes, n, at);
            let halves: &mut [u16] = bytemuck::cast_slice_mut(out);
            join2(&mut halves[..lo.len()], lo, hi);
        }
    }
}

/// The first `n` values of `joined` (as [`join_into`] writes them), appended to `out` as f32.
pub fn widen_into(joined: &[u32], n: usize, dtype: Dtype, out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend_from_slice(bytemuck::cast_slice(&joined[..n])),
        Dtype::F16 => {
            let halves: &[u16] = bytemuck::cast_slice(joined);
            out.extend(halves[..n].iter().copied().map(f16_to_f32));
        }
        Dtype::Bf16 => {
            let halves: &[u16] = bytemuck::cast_slice(joined);
            out.extend(halves[..n].iter().copied().map(bf16_to_f32));
        }
    }
}

/// Words per row of `d` values in the form [`join_into`] writes.
pub fn joined_words(d: usize, dtype: Dtype) -> usize {
    (d * dtype.size()).div_ceil(4)
}

/// The `E` plane segments holding values `at` of a column of `n` values.
fn plane_slices<const E: usize>(planes: &[u8], n: usize, at: Range<usize>) -> [&[u8]; E] {
    std::array::from_fn(|b| &planes[b * n + at.start..b * n + at.end])
}

/// Interleaves four byte planes into words. Equal lengths let the loop vectorise.
fn join4(out: &mut [u32], p0: &[u8], p1: &[u8], p2: &[u8], p3: &[u8]) {
    let n = out.len();
    let bytes = p0[..n].iter().zip(&p1[..n]).zip(&p2[..n]).zip(&p3[..n]);
    for (o, (((&a, &b), &c), &d)) in out.iter_mut().zip(bytes) {
        *o = u32::from_le_bytes([a, b, c, d]);
    }
}

/// Interleaves two byte planes into halves.
fn join2(out: &mut [u16], lo: &[u8], hi: &[u8]) {
    let n = out.len();
    for (o, (&l, &h)) in out.iter_mut().zip(lo[..n].iter().zip(&hi[..n])) {
        *o = u16::from_le_bytes([l, h]);
    }
}

/// An IEEE binary16 bit pattern to f32, exactly as `half` (and F16C) convert it, in a form
/// the compiler vectorises inline: `half`'s F16C path is a call per eight values that cannot
/// be inlined (a `target_feature` function), which made it and its loop the larger part of a
/// shuffled f16 read.
///
/// Shifting the 15 exponent-and-mantissa bits into an f32's fields and scaling by 2^112 (the
/// difference of the exponent biases) is exact for normal and subnormal halves alike; inf
/// and NaN keep their payload under an all-ones exponent, NaN made quiet.
#[inline]
fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let magnitude = (h & 0x7fff) << 13;
    let sign = (h & 0x8000) << 16;
    let finite = (f32::from_bits(magnitude) * f32::from_bits(0x7780_0000)).to_bits();
    let quiet = if magnitude > 0x0f80_0000 {
        0x0040_0000
    } else {
        0
    };
    let special = magnitude | 0x7f80_0000 | quiet;
    f32::from_bits(
        sign | if magnitude >= 0x0f80_0000 {
            special
        } else {
            finite
        },
    )
}

/// A bfloat16 bit pattern to f32 (its top half), NaN made quiet as `half` does.
#[inline]
fn bf16_to_f32(h: u16) -> f32 {
    let quiet = if h & 0x7fff > 0x7f80 { 0x0040 } else { 0 };
    f32::from_bits(u32::from(h | quiet) << 16)
}

/// u32 values as four byte planes.
pub fn split_u32(values: &[u32], out: &mut [u8]) {
    let n = values.len();
    let (p0, rest) = out.split_at_mut(n);
    let (p1, rest) = rest.split_at_mut(n);
    let (p2, p3) = rest.split_at_mut(n);
    for (i, v) in values.iter().enumerate() {
        let [b0, b1, b2, b3] = v.to_le_bytes();
        p0[i] = b0;
        p1[i] = b1;
        p2[i] = b2;
        p3[i] = b3;
    }
}

/// Four byte planes back to u32 values.
pub fn join_u32(planes: &[u8]) -> Vec<u32> {
    let n = planes.len() / 4;
    let (p0, rest) = planes.split_at(n);
    let (p1, rest) = rest.split_at(n);
    let (p2, p3) = rest.split_at(n);
    (0..n)
        .map(|i| u32::from_le_bytes([p0[i], p1[i], p2[i], p3[i]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_are_plane_major() {
        let mut out = [0u8; 8];
        split_u32(&[0x0403_0201, 0x0807_0605], &mut out);
        assert_eq!(out, [1, 5, 2, 6, 3, 7, 4, 8]);
        assert_eq!(join_u32(&out), [0x0403_0201, 0x0807_0605]);
    }

    #[test]
    fn every_dtype_round_trips_across_chunk_boundaries() {
        let values: Vec<f32> = (0..CHUNK * 2 + 7)
            .map(|i| (i as f32 - 900.0) * 0.37)
            .collect();
        for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            let back = dequantise(&quantise(&values, dtype), dtype);
            assert_eq!(back.len(), values.len());
            let tol = match dtype {
                Dtype::F32 => 0.0,
                Dtype::F16 => 1.0 / 2048.0,
                Dtype::Bf16 => 1.0 / 256.0,
            };
            for (a, b) in values.iter().zip(&back) {
                assert!((a - b).abs() <= a.abs() * tol, "{dtype}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn f16_and_bf16_widen_bit_for_bit_as_half_does() {
        for h in 0..=u16::MAX {
            let want = f16::from_bits(h).to_f32();
            let got = f16_to_f32(h);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "f16 {h:#06x}: {got:e} vs {want:e}"
            );
            assert_eq!(
                bf16_to_f32(h).to_bits(),
                bf16::from_bits(h).to_f32().to_bits()
            );
        }
    }

    #[test]
    fn row_ranges_join_and_widen_like_the_whole_column() {
        let (rows, d) = (5, 3);
        let values: Vec<f32> = (0..rows * d).map(|i| i as f32 * 1.25 - 7.0).collect();
        for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            let planes = quantise(&values, dtype);
            let whole = dequantise(&planes, dtype);
            let n = rows * d;
            let mut part = Vec::new();
            dequantise_into(&planes, n, d..3 * d, dtype, &mut part);
            assert_eq!(part, whole[d..3 * d], "{dtype}");
            let mut joined = vec![0u32; joined_words(d, dtype)];
            let mut widened = Vec::new();
            for r in [4, 0, 2] {
                join_into(&planes, n, r * d..(r + 1) * d, dtype, &mut joined);
                widen_into(&joined, d, dtype, &mut widened);
            }
            let want: Vec<f32> = [4, 0, 2]
                .iter()
                .flat_map(|r| whole[r * d..(r + 1) * d].iter().copied())
                .collect();
            assert_eq!(widened, want, "{dtype}");
        }
    }
}
