//! Quantisers and dequantisers: round-trip error bounds for the formats the writer produces,
//! and K-quant decoding against a naive per-element reference on random hand-built blocks.

use half::f16;
use monoscope_formats::quant::{
    GgmlType, QK_K, dequantize, get_scale_min_k4, quantize_q4_1, quantize_q8_0,
};
use proptest::prelude::*;

fn dequant(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / ty.block_bytes() * ty.block_len()];
    dequantize(ty, bytes, &mut out);
    out
}

fn blocks(n_blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    // Magnitudes from tiny to large (but within f16 range), so scales exercise f16 rounding.
    (
        prop::sample::select(vec![1e-3f32, 0.1, 1.0, 30.0, 1000.0]),
        1..=n_blocks,
    )
        .prop_flat_map(|(scale, n)| {
            prop::collection::vec(-1.0f32..1.0, n * 32)
                .prop_map(move |v| v.iter().map(|x| x * scale).collect())
        })
}

proptest! {
    #[test]
    fn q8_0_round_trip_within_half_step(x in blocks(4)) {
        let y = dequant(GgmlType::Q8_0, &quantize_q8_0(&x));
        prop_assert_eq!(y.len(), x.len());
        for (bx, by) in x.chunks(32).zip(y.chunks(32)) {
            let amax = bx.iter().fold(0f32, |a, v| a.max(v.abs()));
            // Half a quantisation step; values clamped at ±127 when the f16 scale rounded down
            // can be off by 127 × that rounding (2^-11 relative, or 2^-25 for subnormal f16).
            let step = amax / 127.0;
            let bound = step * 0.5 + 127.0 * (step * 2f32.powi(-11)).max(2f32.powi(-25)) + 1e-9;
            for (a, b) in bx.iter().zip(by) {
                prop_assert!((a - b).abs() <= bound, "{} vs {} (bound {})", a, b, bound);
            }
        }
    }

    #[test]
    fn q4_1_round_trip_within_half_step(x in blocks(4)) {
        let y = dequant(GgmlType::Q4_1, &quantize_q4_1(&x));
        for (bx, by) in x.chunks(32).zip(y.chunks(32)) {
            let lo = bx.iter().fold(f32::INFINITY, |a, &v| a.min(v));
            let hi = bx.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            // Half a step of (max-min)/15, plus the f16 rounding of d (up to 15 steps away)
            // and of m (2^-11 relative), plus f16's subnormal resolution.
            let bound = (hi - lo) / 30.0 + (hi - lo) * 15.0 / 15.0 * 2f32.powi(-11) + lo.abs() * 2f32.powi(-11) + 1e-6;
            for (a, b) in bx.iter().zip(by) {
                prop_assert!((a - b).abs() <= bound, "{} vs {} (bound {})", a, b, bound);
            }
        }
    }

    #[test]
    fn q4_0_matches_naive(d in -2.0f32..2.0, qs in prop::collection::vec(any::<u8>(), 16)) {
        let mut b = f16::from_f32(d).to_le_bytes().to_vec();
        b.extend(&qs);
        let y = dequant(GgmlType::Q4_0, &b);
        let d = f16::from_f32(d).to_f32();
        for (i, v) in y.iter().enumerate() {
            let nib = if i < 16 { qs[i] & 15 } else { qs[i - 16] >> 4 };
            prop_assert_eq!(*v, d * (f32::from(nib) - 8.0));
        }
    }

    #[test]
    fn q4_k_matches_naive(d in -1.0f32..1.0, dmin in -1.0f32..1.0, bytes in prop::collection::vec(any::<u8>(), 12 + 128)) {
        let mut b = [f16::from_f32(d).to_le_bytes(), f16::from_f32(dmin).to_le_bytes()].concat();
        b.extend(&bytes);
        let y = dequant(GgmlType::Q4K, &b);
        let (sc, qs) = bytes.split_at(12);
        for (i, v) in y.iter().enumerate() {
            let (s, m) = naive_scale_min(sc, i / 32);
            let byte = qs[(i / 64) * 32 + i % 32];
            let q = if (i / 32) % 2 == 0 { byte & 15 } else { byte >> 4 };
            let want = f16_of(d) * f32::from(s) * f32::from(q) - f16_of(dmin) * f32::from(m);
            prop_assert!((v - want).abs() <= 1e-6 * want.abs().max(1.0), "elem {}: {} vs {}", i, v, want);
        }
    }

    #[test]
    fn q5_k_matches_naive(d in -1.0f32..1.0, dmin in -1.0f32..1.0, bytes in prop::collection::vec(any::<u8>(), 12 + 32 + 128)) {
        let mut b = [f16::from_f32(d).to_le_bytes(), f16::from_f32(dmin).to_le_bytes()].concat();
        b.extend(&bytes);
        let y = dequant(GgmlType::Q5K, &b);
        let (sc, rest) = bytes.split_at(12);
        let (qh, qs) = rest.split_at(32);
        for (i, v) in y.iter().enumerate() {
            let sub = i / 32; // sub-block 0..8, 32 values each
            let (s, m) = naive_scale_min(sc, sub);
            let byte = qs[(i / 64) * 32 + i % 32];
            let lo = if sub % 2 == 0 { byte & 15 } else { byte >> 4 };
            let hi = (qh[i % 32] >> sub) & 1;
            let q = lo | (hi << 4);
            let want = f16_of(d) * f32::from(s) * f32::from(q) - f16_of(dmin) * f32::from(m);
            prop_assert!((v - want).abs() <= 1e-6 * want.abs().max(1.0), "elem {}: {} vs {}", i, v, want);
        }
    }

    #[test]
    fn q6_k_matches_naive(d in -1.0f32..1.0, bytes in prop::collection::vec(any::<u8>(), 128 + 64 + 16)) {
        let mut b = bytes.clone();
        b.extend(f16::from_f32(d).to_le_bytes());
        let y = dequant(GgmlType::Q6K, &b);
        let (ql, rest) = bytes.split_at(128);
        let (qh, sc) = rest.split_at(64);
        for (i, v) in y.iter().enumerate() {
            // Within each half of 128: quarter k (0..4) of 32 values, lane l.
            let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
            let lbyte = ql[64 * half + l + 32 * (k % 2)];
            let low = if k < 2 { lbyte & 15 } else { lbyte >> 4 };
            let high = (qh[32 * half + l] >> (2 * k)) & 3;
            let q = i32::from(low | (high << 4)) - 32;
            let scale = sc[i / 16] as i8;
            let want = f16_of(d) * f32::from(scale) * q as f32;
            prop_assert!((v - want).abs() <= 1e-6 * want.abs().max(1.0), "elem {}: {} vs {}", i, v, want);
        }
    }
}

fn f16_of(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// 6-bit scale and min of sub-block `j`, spelled out bit by bit from ggml's packing: entries
/// 0..4 are the low 6 bits of bytes j and j+4; entries 4..8 take their low 4 bits from the
/// nibbles of byte j+4 and their high 2 bits from the top of bytes j-4 and j.
fn naive_scale_min(sc: &[u8], j: usize) -> (u8, u8) {
    let bits = |byte: u8, from: u32, n: u32| (byte >> from) & ((1u8 << n) - 1);
    if j < 4 {
        (bits(sc[j], 0, 6), bits(sc[j + 4], 0, 6))
    } else {
        let s = bits(sc[j + 4], 0, 4) + (bits(sc[j - 4], 6, 2) << 4);
        let m = bits(sc[j + 4], 4, 4) + (bits(sc[j], 6, 2) << 4);
        (s, m)
    }
}

#[test]
fn scale_min_packing_agrees_with_naive() {
    let sc: Vec<u8> = (0..12u8)
        .map(|i| i.wrapping_mul(97).wrapping_add(13))
        .collect();
    for j in 0..8 {
        assert_eq!(get_scale_min_k4(j, &sc), naive_scale_min(&sc, j), "j = {j}");
    }
}

#[test]
fn block_sizes_match_ggml() {
    let want = [
        (GgmlType::Q4_0, 18, 32),
        (GgmlType::Q4_1, 20, 32),
        (GgmlType::Q5_0, 22, 32),
        (GgmlType::Q5_1, 24, 32),
        (GgmlType::Q8_0, 34, 32),
        (GgmlType::IQ4NL, 18, 32),
        (GgmlType::Q2K, 84, QK_K),
        (GgmlType::Q3K, 110, QK_K),
        (GgmlType::Q4K, 144, QK_K),
        (GgmlType::Q5K, 176, QK_K),
        (GgmlType::Q6K, 210, QK_K),
        (GgmlType::IQ4XS, 136, QK_K),
        (GgmlType::BF16, 2, 1),
    ];
    for (ty, bytes, len) in want {
        assert_eq!(
            (ty.block_bytes(), ty.block_len()),
            (bytes, len),
            "{}",
            ty.name()
        );
        assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
    }
}
