//! Byte planes: how a column's values are laid out before zstd sees them.
//!
//! A column of `n` little-endian values of `e` bytes is stored as `e` planes of `n` bytes: plane
//! `b` holds byte `b` of every value. The sign/exponent bytes of floats (and the high bytes of
//! small ids) are nearly constant, and zstd compresses a run of them far better than the same
//! bytes interleaved with noisy mantissa bytes (the Blosc "shuffle" filter). Splitting and
//! joining are fused with (de)quantisation, so the filter costs no extra pass over the data.

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
    match dtype {
        Dtype::F32 => {
            let (p0, rest) = planes.split_at(n);
            let (p1, rest) = rest.split_at(n);
            let (p2, p3) = rest.split_at(n);
            let bytes = p0.iter().zip(p1).zip(p2).zip(p3);
            out.extend(bytes.map(|(((&a, &b), &c), &d)| f32::from_le_bytes([a, b, c, d])));
        }
        Dtype::F16 | Dtype::Bf16 => {
            let (lo, hi) = planes.split_at(n);
            let mut halves = [0u16; CHUNK];
            let mut floats = [0.0f32; CHUNK];
            for (lo, hi) in lo.chunks(CHUNK).zip(hi.chunks(CHUNK)) {
                let (h, f) = (&mut halves[..lo.len()], &mut floats[..lo.len()]);
                for ((v, &l), &u) in h.iter_mut().zip(lo).zip(hi) {
                    *v = u16::from_le_bytes([l, u]);
                }
                if dtype == Dtype::F16 {
                    bytemuck::cast_slice::<u16, f16>(h).convert_to_f32_slice(f);
                } else {
                    bytemuck::cast_slice::<u16, bf16>(h).convert_to_f32_slice(f);
                }
                out.extend_from_slice(f);
            }
        }
    }
    out
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
}
