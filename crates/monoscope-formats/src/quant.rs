//! ggml tensor types: their block layouts, dequantisation to f32, and the quantisers the GGUF
//! writer needs (Q8_0, Q4_1).
//!
//! Layouts follow ggml (`ggml-common.h`, `ggml-quants.c`) byte for byte: a block of 32 values for
//! the classic types, a super-block of `QK_K` = 256 values for the K-quants, every `f16` little
//! endian. Dequantisation is split into chunks of blocks and run on rayon, since the default
//! model alone is ~135M values.

use half::f16;
use rayon::prelude::*;

/// Values per block of the classic quant types.
pub const QK: usize = 32;
/// Values per super-block of the K-quant types.
pub const QK_K: usize = 256;

/// The ggml tensor types this crate can read. The discriminant is the ggml type id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    BF16 = 30,
}

impl GgmlType {
    /// The type for a ggml type id, or `None` when this crate cannot dequantise it.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name for the type, as llama.cpp prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::BF16 => "BF16",
        }
    }

    /// Number of values in one block.
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => QK,
            Self::Q4K | Self::Q5K | Self::Q6K => QK_K,
        }
    }

    /// Bytes in one block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 2 + QK / 2,
            Self::Q4_1 => 4 + QK / 2,
            Self::Q8_0 => 2 + QK,
            Self::Q4K => 4 + 12 + QK_K / 2,
            Self::Q5K => 4 + 12 + QK_K / 8 + QK_K / 2,
            Self::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// Bytes needed for `n` values, or `None` when `n` is not a whole number of blocks.
    pub fn byte_len(self, n: u64) -> Option<u64> {
        let bl = self.block_len() as u64;
        n.is_multiple_of(bl)
            .then(|| n / bl * self.block_bytes() as u64)
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantise `bytes` (a whole number of blocks of `ty`) into `out`.
///
/// # Panics
/// When `bytes` and `out` do not hold the same number of blocks; callers check lengths first.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let (bl, bb) = (ty.block_len(), ty.block_bytes());
    assert_eq!(bytes.len() / bb * bl, out.len(), "block count mismatch");
    assert_eq!(bytes.len() % bb, 0, "partial block");
    // Chunks of ~16k values: big enough to amortise rayon, small enough to balance 2..64 cores.
    let blocks_per_chunk = (16 * 1024 / bl).max(1);
    out.par_chunks_mut(blocks_per_chunk * bl)
        .zip(bytes.par_chunks(blocks_per_chunk * bb))
        .for_each(|(o, b)| {
            for (ob, bb) in o.chunks_exact_mut(bl).zip(b.chunks_exact(bb)) {
                dequantize_block(ty, bb, ob);
            }
        });
}

/// Dequantise one block (`ty.block_bytes()` bytes into `ty.block_len()` values).
pub fn dequantize_block(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => y[0] = f16_at(b, 0),
        GgmlType::BF16 => y[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q8_0 => {
            let d = f16_at(b, 0);
            for (y, &q) in y.iter_mut().zip(&b[2..2 + QK]) {
                *y = d * f32::from(q as i8);
            }
        }
        GgmlType::Q4_0 => {
            let d = f16_at(b, 0);
            let qs = &b[2..2 + QK / 2];
            let (lo, hi) = y.split_at_mut(QK / 2);
            for (j, &q) in qs.iter().enumerate() {
                lo[j] = d * (f32::from(q & 0xF) - 8.0);
                hi[j] = d * (f32::from(q >> 4) - 8.0);
            }
        }
        GgmlType::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qs = &b[4..4 + QK / 2];
            let (lo, hi) = y.split_at_mut(QK / 2);
            for (j, &q) in qs.iter().enumerate() {
                lo[j] = d * f32::from(q & 0xF) + m;
                hi[j] = d * f32::from(q >> 4) + m;
            }
        }
        GgmlType::Q4K => dequantize_q4k(b, y),
        GgmlType::Q5K => dequantize_q5k(b, y),
        GgmlType::Q6K => dequantize_q6k(b, y),
    }
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of a Q4_K/Q5_K block:
/// 6 bits each; the first four sit in the low bits of bytes 0..8, the last four are split
/// between the low/high nibbles of bytes 8..12 and the top two bits of bytes 0..8.
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

// block_q4_K: d f16, dmin f16, scales[12], qs[128]. Each 64-value group uses one 32-byte run of
// qs: low nibbles give the first 32 values, high nibbles the next 32, each with its own scale.
fn dequantize_q4k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..16 + QK_K / 2];
    for g in 0..QK_K / 64 {
        let (s1, m1) = get_scale_min_k4(2 * g, scales);
        let (s2, m2) = get_scale_min_k4(2 * g + 1, scales);
        let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
        let q = &qs[32 * g..32 * g + 32];
        let out = &mut y[64 * g..64 * g + 64];
        for l in 0..32 {
            out[l] = d1 * f32::from(q[l] & 0xF) - m1;
            out[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

// block_q5_K: d, dmin, scales[12], qh[32], qs[128]. As Q4_K, plus a fifth bit per value taken
// from qh: bit 2g of qh[l] for the low-nibble half of group g, bit 2g+1 for the high half.
fn dequantize_q5k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..16 + QK_K / 8];
    let qs = &b[16 + QK_K / 8..16 + QK_K / 8 + QK_K / 2];
    for g in 0..QK_K / 64 {
        let (s1, m1) = get_scale_min_k4(2 * g, scales);
        let (s2, m2) = get_scale_min_k4(2 * g + 1, scales);
        let (d1, m1) = (d * f32::from(s1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(s2), dmin * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * g), 1u8 << (2 * g + 1));
        let q = &qs[32 * g..32 * g + 32];
        let out = &mut y[64 * g..64 * g + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16.0 } else { 0.0 };
            let h2 = if qh[l] & u2 != 0 { 16.0 } else { 0.0 };
            out[l] = d1 * (f32::from(q[l] & 0xF) + h1) - m1;
            out[l + 32] = d2 * (f32::from(q[l] >> 4) + h2) - m2;
        }
    }
}

// block_q6_K: ql[128], qh[64], scales[16] (i8), d f16. Two halves of 128 values; within a half,
// value l+32k takes 4 low bits from ql (nibble k/2 of byte l + 32(k%2)) and 2 high bits from
// bits 2k..2k+2 of qh[l]; the signed 6-bit value is offset by 32, scaled per 16 values.
fn dequantize_q6k(b: &[u8], y: &mut [f32]) {
    let ql_all = &b[..QK_K / 2];
    let qh_all = &b[QK_K / 2..QK_K / 2 + QK_K / 4];
    let sc_all = &b[QK_K / 2 + QK_K / 4..QK_K / 2 + QK_K / 4 + QK_K / 16];
    let d = f16_at(b, QK_K / 2 + QK_K / 4 + QK_K / 16);
    for half in 0..2 {
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        let sc = &sc_all[8 * half..8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            out[l] = s(0) * q1 as f32;
            out[l + 32] = s(2) * q2 as f32;
            out[l + 64] = s(4) * q3 as f32;
            out[l + 96] = s(6) * q4 as f32;
        }
    }
}

/// Quantise to Q8_0: per block of 32, `d = max|x| / 127` (stored f16) and `q = round(x / d)`.
/// Each value is recovered to within `d / 2` (plus f16 rounding of `d`).
///
/// # Panics
/// When `x.len()` is not a multiple of 32.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK, 0, "Q8_0 needs whole blocks of 32");
    let mut out = Vec::with_capacity(x.len() / QK * GgmlType::Q8_0.block_bytes());
    for blk in x.chunks_exact(QK) {
        let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
        // Quantise against the f16-rounded scale actually stored, so rounding of d is not
        // multiplied by up to 127 on the way back.
        let d = f16::from_f32(amax / 127.0);
        let id = if d.to_f32() > 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(
            blk.iter()
                .map(|v| (v * id).round().clamp(-127.0, 127.0) as i8 as u8),
        );
    }
    out
}

/// Quantise to Q4_1: per block of 32, `m = min x`, `d = (max - min) / 15` (both f16) and
/// `q = round((x - m) / d)` in 0..=15. Each value is recovered to within about `d / 2`.
///
/// # Panics
/// When `x.len()` is not a multiple of 32.
pub fn quantize_q4_1(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % QK, 0, "Q4_1 needs whole blocks of 32");
    let mut out = Vec::with_capacity(x.len() / QK * GgmlType::Q4_1.block_bytes());
    for blk in x.chunks_exact(QK) {
        let (lo, hi) = blk
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let m = f16::from_f32(lo);
        let d = f16::from_f32((hi - m.to_f32()) / 15.0);
        let (mf, df) = (m.to_f32(), d.to_f32());
        let id = if df > 0.0 { 1.0 / df } else { 0.0 };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&m.to_le_bytes());
        let q = |v: f32| ((v - mf) * id).round().clamp(0.0, 15.0) as u8;
        for j in 0..QK / 2 {
            out.push(q(blk[j]) | (q(blk[j + QK / 2]) << 4));
        }
    }
    out
}

/// Encode to little-endian f16 (round to nearest).
pub fn quantize_f16(x: &[f32]) -> Vec<u8> {
    x.iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}
