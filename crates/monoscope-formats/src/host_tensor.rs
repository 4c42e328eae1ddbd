//! [`HostTensor`]: one weight on the host, kept in the checkpoint's own element type.
//!
//! A bf16 checkpoint stays bf16 here (2 bytes per parameter), so a loaded model costs what its
//! file costs, not twice that. Widening to f32 is exact for f16 and bf16, so a consumer that
//! widens on use computes the same numbers as one that widened at load. Quantised GGUF types
//! have no such element type and arrive dequantised to f32.
//!
//! The loaders only ever move elements around (split fused matrices, reorder heads, transpose),
//! which [`HostData`] does for every element type alike; arithmetic on weights (Gemma's
//! `1 + w` norms) goes through [`HostData::to_f32`].

use std::ops::Range;

use half::{bf16, f16};

/// A row-major tensor's elements, in the type the checkpoint stores them in.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

/// Runs `$body` with `$v` bound to the inner vector, whatever its element type, and wraps a
/// vector result back into the same variant.
macro_rules! each_type {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            HostData::F32($v) => HostData::F32($body),
            HostData::F16($v) => HostData::F16($body),
            HostData::Bf16($v) => HostData::Bf16($body),
        }
    };
}

impl HostData {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per element as held.
    pub fn element_size(&self) -> usize {
        match self {
            Self::F32(_) => 4,
            Self::F16(_) | Self::Bf16(_) => 2,
        }
    }

    /// The elements widened to f32 (exact for every variant).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Self::F32(v) => v.clone(),
            Self::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Self::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// [`Self::to_f32`], consuming: no copy when already f32.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Self::F32(v) => v,
            other => other.to_f32(),
        }
    }

    /// A copy of the elements in `range`.
    pub fn slice(&self, range: Range<usize>) -> Self {
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
    /// returns its transpose `[cols, Σ rows_i]`. Every part must hold the same element type.
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
        self.data.len() * self.data.element_size()
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
        assert_eq!(bf(&[1.0, 2.0]).element_size() * 2, 4);
    }
}
