//! ggml tensor types: their block layouts, dequantisation to f32, and the quantisers the GGUF
//! writer needs (Q8_0, Q4_1).
//!
//! Readable: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL
//! and IQ4_XS. Layouts follow ggml (`ggml-common.h`, `ggml-quants.c`) byte for byte: a block of
//! 32 values for the classic types and IQ4_NL, a super-block of `QK_K` = 256 values for the
//! K-quants and IQ4_XS, every `f16` little endian. `tests/quant.rs` checks the older types
//! against naive per-element decoders, `tests/quant_reference.rs` Q5_0, Q5_1, Q2_K, Q3_K, IQ4_NL
//! and IQ4_XS bit for bit against gguf-py's. Dequantisation is split into chunks of blocks and
//! run on rayon, since the default model alone is ~135M values.

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
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    IQ4NL = 20,
    IQ4XS = 23,
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
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            20 => Self::IQ4NL,
            23 => Self::IQ4XS,
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
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::IQ4NL => "IQ4_NL",
            Self::IQ4XS => "IQ4_XS",
            Self::BF16 => "BF16",
        }
    }

    /// Number of values in one block.
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::IQ4NL => QK,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::IQ4XS => QK_K,
        }
    }

    /// Bytes in one block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 2 + QK / 2,
            Self::Q4_1 => 4 + QK / 2,
            Self::Q5_0 => 2 + 4 + QK / 2,
            Self::Q5_1 => 4 + 4 + QK / 2,
            Self::Q8_0 => 2 + QK,
            Self::IQ4NL => 2 + QK / 2,
            Self::Q2K => QK_K / 16 + QK_K / 4 + 4,
            Self::Q3K => QK_K / 8 + QK_K / 4 + 12 + 2,
            Self::Q4K => 4 + 12 + QK_K / 2,
            Self::Q5K => 4 + 12 + QK_K / 8 + QK_K / 2,
            Self::Q6K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
            Self::IQ4XS => 2 + 2 + QK_K / 64 + QK_K / 2,
        }
    }

    /// Bytes needed for `n` values, or `None` when `n` is not a whole number of blocks or the
    /// byte count does not fit in a u64 (a count read from a file can be anything).
    pub fn byte_len(self, n: u64) -> Option<u64> {
        let bl = self.block_len() as u64;
        if !n.is_multiple_of(bl) {
            return None;
        }
        (n / bl).checked_mul(self.block_bytes() as u64)
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
        // block_q5_0: d f16, qh[4], qs[16]. As Q4_0 but 5-bit, offset 16: bit j of the
        // little-endian u32 qh is the fifth bit of value j (low nibbles 0..16, high 16..32).
        GgmlType::Q5_0 => {
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..6 + QK / 2];
            let (lo, hi) = y.split_at_mut(QK / 2);
            for (j, &q) in qs.iter().enumerate() {
                let (h0, h1) = (fifth_bit(qh, j), fifth_bit(qh, j + QK / 2));
                lo[j] = d * f32::from(((q & 0xF) | h0) as i8 - 16);
                hi[j] = d * f32::from(((q >> 4) | h1) as i8 - 16);
            }
        }
        // block_q5_1: d f16, m f16, qh[4], qs[16]. Q5_0's bits, unsigned, plus the minimum m.
        GgmlType::Q5_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let qs = &b[8..8 + QK / 2];
            let (lo, hi) = y.split_at_mut(QK / 2);
            for (j, &q) in qs.iter().enumerate() {
                let (h0, h1) = (fifth_bit(qh, j), fifth_bit(qh, j + QK / 2));
                lo[j] = d * f32::from((q & 0xF) | h0) + m;
                hi[j] = d * f32::from((q >> 4) | h1) + m;
            }
        }
        // block_iq4_nl: d f16, qs[16]. Nibbles as in Q4_0, each an index into the non-linear
        // table KVALUES_IQ4NL rather than an offset integer.
        GgmlType::IQ4NL => {
            let d = f16_at(b, 0);
            let qs = &b[2..2 + QK / 2];
            let (lo, hi) = y.split_at_mut(QK / 2);
            for (j, &q) in qs.iter().enumerate() {
                lo[j] = d * f32::from(KVALUES_IQ4NL[usize::from(q & 0xF)]);
                hi[j] = d * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
            }
        }
        GgmlType::Q2K => dequantize_q2k(b, y),
        GgmlType::Q3K => dequantize_q3k(b, y),
        GgmlType::IQ4XS => dequantize_iq4xs(b, y),
        GgmlType::Q4K => dequantize_q4k(b, y),
        GgmlType::Q5K => dequantize_q5k(b, y),
        GgmlType::Q6K => dequantize_q6k(b, y),
    }
}

/// The fifth bit of value `j` of a Q5_0/Q5_1 block, as 0 or 16.
fn fifth_bit(qh: u32, j: usize) -> u8 {
    (((qh >> j) & 1) << 4) as u8
}

/// The 16 levels of IQ4_NL and IQ4_XS (ggml's `kvalues_iq4nl`), indexed by a 4-bit quant.
const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

// block_q2_K: scales[16], qs[64], d f16, dmin f16. Sixteen sub-blocks of 16 values; sub-block s
// has scale d * (scales[s] & 15) and min dmin * (scales[s] >> 4). Each 128-value half uses 32
// bytes of qs: value 32k + l of the half (k 0..4, l 0..32) is bits 2k..2k+2 of byte l.
fn dequantize_q2k(b: &[u8], y: &mut [f32]) {
    let scales = &b[..QK_K / 16];
    let qs_all = &b[QK_K / 16..QK_K / 16 + QK_K / 4];
    let (d, dmin) = (
        f16_at(b, QK_K / 16 + QK_K / 4),
        f16_at(b, QK_K / 16 + QK_K / 4 + 2),
    );
    for half in 0..2 {
        let qs = &qs_all[32 * half..32 * half + 32];
        let out = &mut y[128 * half..128 * half + 128];
        for (i, v) in out.iter_mut().enumerate() {
            let (k, l) = (i / 32, i % 32);
            let sc = scales[8 * half + i / 16];
            let (dl, ml) = (d * f32::from(sc & 0xF), dmin * f32::from(sc >> 4));
            *v = dl * f32::from((qs[l] >> (2 * k)) & 3) - ml;
        }
    }
}

/// The sixteen 6-bit scales of a Q3_K block (before the -32 offset), from its 12 packed bytes:
/// the low 4 bits of scale s are the low (s < 8) or high (s >= 8) nibble of byte s % 8, the high
/// 2 bits are bits 2(s/4)..2(s/4)+2 of byte 8 + s % 4.
fn q3k_scales(p: &[u8]) -> [i8; 16] {
    std::array::from_fn(|s| {
        let low = if s < 8 { p[s] & 0xF } else { p[s - 8] >> 4 };
        let high = (p[8 + s % 4] >> (2 * (s / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

// block_q3_K: hmask[32], qs[64], scales[12], d f16. Low 2 bits laid out as in Q2_K; the third
// bit of value i is bit i/32 of hmask[i % 32], and a *clear* bit subtracts 4, so values run
// -4..=3. Each sub-block of 16 has the signed scale d * (s - 32), no min.
fn dequantize_q3k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[..QK_K / 8];
    let qs_all = &b[QK_K / 8..QK_K / 8 + QK_K / 4];
    let scales = q3k_scales(&b[QK_K / 8 + QK_K / 4..QK_K / 8 + QK_K / 4 + 12]);
    let d = f16_at(b, QK_K / 8 + QK_K / 4 + 12);
    for (i, v) in y[..QK_K].iter_mut().enumerate() {
        let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = (qs_all[32 * half + l] >> (2 * k)) & 3;
        let minus4 = if hmask[l] & (1 << (i / 32)) != 0 {
            0
        } else {
            4
        };
        let dl = d * f32::from(scales[i / 16]);
        *v = dl * f32::from(low as i8 - minus4);
    }
}

// block_iq4_xs: d f16, scales_h u16, scales_l[4], qs[128]. Eight sub-blocks of 32 values; the
// 6-bit scale of sub-block j is nibble j%2 of scales_l[j/2] plus bits 2j..2j+2 of scales_h as
// its top two bits, offset by -32. Values are IQ4_NL table entries, nibbles packed per
// sub-block as in Q4_0 (16 bytes: low nibbles first 16 values, high nibbles the next 16).
fn dequantize_iq4xs(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let scales_l = &b[4..4 + QK_K / 64];
    let qs_all = &b[4 + QK_K / 64..4 + QK_K / 64 + QK_K / 2];
    for j in 0..QK_K / 32 {
        let low = (scales_l[j / 2] >> (4 * (j % 2))) & 0xF;
        let high = ((scales_h >> (2 * j)) & 3) as u8;
        let dl = d * f32::from((low | (high << 4)) as i8 - 32);
        let qs = &qs_all[16 * j..16 * j + 16];
        let (lo, hi) = y[32 * j..32 * j + 32].split_at_mut(16);
        for (l, &q) in qs.iter().enumerate() {
            lo[l] = dl * f32::from(KVALUES_IQ4NL[usize::from(q & 0xF)]);
            hi[l] = dl * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
        }
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
