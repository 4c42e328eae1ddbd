//! The AVX2 micro-kernel: a 4-row × 16-feature tile in 8 `__m256i` accumulators. Per pair of
//! input features it loads two weight vectors, broadcasts each row's activation pair, and
//! issues 8 `vpmaddwd` + 8 `vpaddd`. 8 accumulators + 2 weights + a broadcast + a product fit
//! the 16 `ymm` registers without spills (a 4 × 24 tile needs 17 and spills every step).
//!
//! Operands come from aligned [`Lanes`] and [`Pair`] values through slice iterators, not from
//! unaligned-load intrinsics: in debug builds those go through `copy_nonoverlapping` with its
//! precondition checks and a stack round trip, which made this kernel slower than fp32 there,
//! and the tests and dev-profile tools run it too.

use std::arch::x86_64::{__m256i, _mm256_add_epi32, _mm256_madd_epi16, _mm256_set1_epi32};

use super::{LANES_PER_PAIR, Lanes, MR, NR, Pair};

const _: () = assert!(
    MR == 4 && NR == 16,
    "the kernel below is written for 4 x 16 tiles"
);

/// Same contract as [`super::portable::tile`]; the caller has checked that the CPU has AVX2.
pub(super) fn tile(a: [&[Pair]; MR], w: &[Lanes]) -> [[i32; NR]; MR] {
    // SAFETY: `Kernel::Avx2` is only chosen after `is_x86_feature_detected!("avx2")`.
    unsafe { tile_avx2(a, w) }
}

#[inline(always)]
fn vector(l: Lanes) -> __m256i {
    // SAFETY: both are 32 plain bytes; every bit pattern is a valid `__m256i`.
    unsafe { std::mem::transmute::<Lanes, __m256i>(l) }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2(a: [&[Pair]; MR], w: &[Lanes]) -> [[i32; NR]; MR] {
    let zero = vector(Lanes::default());
    let mut c = [[zero; 2]; MR];
    let [a0, a1, a2, a3] = a;
    let rows = a0.iter().zip(a1).zip(a2).zip(a3);
    for ((((p0, p1), p2), p3), wj) in rows.zip(w.chunks_exact(LANES_PER_PAIR)) {
        let (w0, w1) = (vector(wj[0]), vector(wj[1]));
        for (ci, p) in c.iter_mut().zip([p0, p1, p2, p3]) {
            let x = _mm256_set1_epi32(p.word());
            ci[0] = _mm256_add_epi32(ci[0], _mm256_madd_epi16(x, w0));
            ci[1] = _mm256_add_epi32(ci[1], _mm256_madd_epi16(x, w1));
        }
    }
    // SAFETY: `[[__m256i; 2]; 4]` and `[[i32; 16]; 4]` are the same 256 plain bytes.
    unsafe { std::mem::transmute::<[[__m256i; 2]; MR], [[i32; NR]; MR]>(c) }
}
