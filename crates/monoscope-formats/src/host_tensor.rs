//! [`HostTensor`]: one weight on the host, kept in the checkpoint's own element type.
//!
//! A bf16 checkpoint stays bf16 here (2 bytes per parameter) and a block-quantised GGUF tensor
//! stays in its blocks, so a loaded checkpoint costs what its file costs, not the 4 bytes per
//! parameter of f32. Widening to f32 is exact for f16 and bf16, and dequantisation is what it
//! is whenever it happens, so a consumer that widens on use computes the same numbers as one
//! that widened at load.
//!
//! The loaders only ever move elements around (split fused matrices, reorder heads, transpose),
//! which [`HostData`] does for every float type alike (quantised blocks are dequantised first,
//! except for whole-block row ranges); arithmetic on weights (Gemma's `1 + w` norms) goes
//! through [`HostData::to_f32`].

use std::ops::Range;

use half::{bf16, f16};

use crate::quant::{GgmlType, dequantize};

/// A row-major tensor's elements, in the type the checkpoint stores them in.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    /// `len` values in blocks of a GGUF quantised type, as the file stores them.
    Quantized {
        ty: GgmlType,
        len: usize,
        bytes: Vec<u8>,
    },
}

/// Runs `$body` with `$v` bound to the inner vector, whatever its element type, and wraps a
/// vector result back into the same variant; quantised blocks are dequantised to f32 first.
macro_rules! each_type {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            HostData::F32($v) => HostData::F32($body),
            HostData::F16($v) => HostData::F16($body),
            HostData::Bf16($v) => HostData::Bf16($body),
            quantized @ HostData::Quantized { .. } => {
                let wide = quantized.to_f32();
                let $v = &wide;
                HostData::F32($body)
            }
        }
    };
}

impl HostData {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::Bf16(v) => v.len(),
            Self::Quantized { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the elements.
    pub fn byte_len(&self) -> usize {
        match self {
            Self::F32(v) => 4 * v.len(),
            Self::F16(v) => 2 * v.len(),
            Self::Bf16(v) => 2 * v.len(),
            Self::Quantized { bytes, .. } => bytes.len(),
        }
    }

    /// The elements widened (exact for the float types) or dequantised to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Self::F32(v) => v.clone(),
            Self::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::Quantized { ty, len, bytes } => {
                let mut out = vec![0.0f32; *len];
                dequantize(*ty, bytes, &mut out);
                out
            }
        }
    }

    /// [`Self::to_f32`], consuming: no copy when already f32.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Self::F32(v) => v,
            other => other.to_f32(),
        }
    }

    /// A copy of the elements in `range`; quantised blocks stay blocks when `range` covers
    /// whole blocks (rows of a GGUF matrix always do).
    pub fn slice(&self, range: Range<usize>) -> Self {
        if let Self::Quantized { ty, len, bytes } = self {
            let (per_block, block_bytes) = (ty.block_len(), ty.block_bytes());
            if range.start.is_multiple_of(per_block)
                && range.end.is_multiple_of(per_block)
                && range.start <= range.end
                && range.end <= *len
            {
                let bytes = &bytes
                    [range.start / per_block * block_bytes..range.end / per_block * block_bytes];
                return Self::Quantized {
                    ty: *ty,
                    len: range.len(),
                    bytes: bytes.to_vec(),
                };
            }
        }
        self.gather(std::iter::once(range))
    }

    /// The elements of `ranges`, concatenated in order.
    pub fn gather(&self, ranges: impl IntoIterator<Item = Range<usize>> + Clone) -> Self {
        fn pick<T: Copy>(v: &[T], ranges: impl IntoIterator<Item = Range<usize>>) -> Vec<T> {
            let mut out = Vec::new();
            for r in ranges {
                out.extend_from_slice(&v[r]);
            }
            out
        }
        each_type!(self, v => pick(v, ranges.clone()))
    }

    /// The transpose of a row-major `[rows, cols]` matrix, as `[cols, rows]`.
    pub fn transposed(&self, rows: usize, cols: usize) -> Self {
        each_type!(self, v => transpose(v, rows, cols))
    }

    /// Stacks row-major `[rows_i, cols]` matrices into one `[Σ rows_i, cols]` matrix and
    /// returns its transpose `[cols, Σ rows_i]`. Every part must hold the same float type
    /// (`None` otherwise, and for quantised blocks).
    pub fn stack_transposed(parts: &[&HostData], cols: usize) -> Option<Self> {
        fn go<T: Copy + Default>(parts: &[&[T]], cols: usize) -> Vec<T> {
            let rows: usize = parts.iter().map(|p| p.len() / cols).sum();
            let mut t = vec![T::default(); rows * cols];
            let mut r0 = 0;
            for part in parts {
                let n = part.len() / cols;
                for r in 0..n {
                    for (c, &x) in part[r * cols..(r + 1) * cols].iter().enumerate() {
                        t[c * rows + r0 + r] = x;
                    }
                }
                r0 += n;
            }
            t
        }
        macro_rules! all_of {
            ($variant:ident) => {{
                let mut slices = Vec::with_capacity(parts.len());
                for p in parts {
                    match p {
                        HostData::$variant(v) => slices.push(v.as_slice()),
                        _ => return None,
                    }
                }
                HostData::$variant(go(&slices, cols))
            }};
        }
        Some(match parts.first()? {
            HostData::F32(_) => all_of!(F32),
            HostData::F16(_) => all_of!(F16),
            HostData::Bf16(_) => all_of!(Bf16),
            HostData::Quantized { .. } => return None,
        })
    }
}

impl From<Vec<f32>> for HostData {
    fn from(v: Vec<f32>) -> Self {
        Self::F32(v)
    }
}

/// Row-major `[rows, cols]` → `[cols, rows]`, blocked so both sides stay in cache on
/// vocabulary-sized matrices.
fn transpose<T: Copy + Default>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); v.len()];
    const B: usize = 64;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    out[c * rows + r] = v[r * cols + c];
                }
            }
        }
    }
    out
}

/// One weight matrix or vector, row-major, in the checkpoint's element type (see the module
/// docs).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    /// An f32 tensor.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self {
            shape,
            data: HostData::F32(data),
        }
    }

    /// The elements widened to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.to_f32()
    }

    /// Bytes held by the elements.
    pub fn byte_len(&self) -> usize {
        self.data.byte_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf(v: &[f32]) -> HostData {
        HostData::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect())
    }

    #[test]
    fn moves_elements_alike_for_every_type() {
        let v: Vec<f32> = (0..6).map(|x| x as f32).collect();
        for d in [
            HostData::F32(v.clone()),
            HostData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            bf(&v),
        ] {
            assert_eq!(
                d.transposed(2, 3).to_f32(),
                vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
            );
            assert_eq!(d.gather([4..6, 0..1]).to_f32(), vec![4.0, 5.0, 0.0]);
            let stacked = HostData::stack_transposed(&[&d, &d.slice(0..3)], 3).unwrap();
            assert_eq!(
                stacked.to_f32(),
                vec![0.0, 3.0, 0.0, 1.0, 4.0, 1.0, 2.0, 5.0, 2.0]
            );
            assert_eq!(d.len(), 6);
        }
    }

    #[test]
    fn stacking_refuses_mixed_types() {
        let a = HostData::F32(vec![1.0, 2.0]);
        assert_eq!(HostData::stack_transposed(&[&a, &bf(&[1.0, 2.0])], 2), None);
        assert_eq!(HostData::stack_transposed(&[], 2), None);
    }

    #[test]
    fn widening_is_exact() {
        let x = bf16::from_bits(0x3f81);
        assert_eq!(HostData::Bf16(vec![x]).into_f32(), vec![x.to_f32()]);
        assert_eq!(HostTensor::f32(vec![1], vec![2.5]).byte_len(), 4);
        assert_eq!(bf(&[1.0, 2.0]).byte_len(), 4);
    }

    #[test]
    fn quantized_rows_stay_blocks_and_the_rest_dequantizes() {
        // Two rows of one Q8_0 block each: scale 0.5 (f16 0x3800), values 0..32 and 32..64.
        let mut bytes = Vec::new();
        for row in 0..2u8 {
            bytes.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
            bytes.extend((0..32u8).map(|i| (row * 32 + i) as i8 as u8));
        }
        let q = HostData::Quantized {
            ty: GgmlType::Q8_0,
            len: 64,
            bytes,
        };
        let wide: Vec<f32> = (0..64).map(|i| i as f32 * 0.5).collect();
        assert_eq!(q.to_f32(), wide);
        assert_eq!(q.byte_len(), 68);
        let row = q.slice(32..64);
        assert!(
            matches!(row, HostData::Quantized { len: 32, .. }),
            "{row:?}"
        );
        assert_eq!(row.to_f32(), wide[32..]);
        // Not whole blocks, and every reordering: f32.
        assert_eq!(q.slice(1..3), HostData::F32(vec![0.5, 1.0]));
        assert_eq!(
            q.transposed(2, 32).to_f32(),
            HostData::F32(wide).transposed(2, 32).to_f32()
        );
        assert_eq!(HostData::stack_transposed(&[&q], 32), None);
    }
}
