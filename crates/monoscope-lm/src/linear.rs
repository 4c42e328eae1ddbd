//! Linear layers and the choice of matrix-product arithmetic ([`MatmulKind`]).
//!
//! Every projection is `x[rows, in] @ w[in, out] (+ b)`. With [`MatmulKind::F32`] that is one
//! burn matmul on any device. With [`MatmulKind::Int8`] on the CPU (`flex`) device the weights
//! are also packed once at load for the integer kernels of `crate::int8`, and the product runs
//! there: roughly twice the multiply-add rate of fp32 on AVX2, at the cost of int8 weight
//! rounding (about 1% relative error per product). Other devices keep the burn matmul.

use std::sync::Arc;

use burn::prelude::*;

use crate::int8::{self, PackedInt8};

/// The arithmetic of the model's linear layers and unembedding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MatmulKind {
    /// fp32 burn matmuls: the reference arithmetic, on every device.
    #[default]
    F32,
    /// int8 weights (one scale per output feature) times activations quantised per row, with
    /// 32-bit integer accumulation. CPU (`flex`) device only; elsewhere it means `F32`.
    Int8,
}

/// How [`crate::load_with`] / [`crate::Model::from_loaded_with`] build a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelOptions {
    pub matmul: MatmulKind,
}

impl ModelOptions {
    /// The options with `matmul` set.
    pub fn with_matmul(matmul: MatmulKind) -> Self {
        Self { matmul }
    }

    /// Whether this device runs the integer kernels.
    pub(crate) fn int8_on(&self, device: &Device) -> bool {
        self.matmul == MatmulKind::Int8 && *device == Device::flex()
    }
}

/// One projection: the burn weight `[in, out]` (and bias) and, for the int8 path, the packed
/// weight.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub w: Tensor<2>,
    pub b: Option<Tensor<1>>,
    pub int8: Option<Arc<PackedInt8>>,
}

impl Linear {
    /// Builds from host data `w[in, out]` row-major; packs for int8 when `int8` is set.
    pub fn new(
        w: Vec<f32>,
        d_in: usize,
        d_out: usize,
        b: Option<Vec<f32>>,
        int8: bool,
        device: &Device,
    ) -> Self {
        let packed = int8.then(|| Arc::new(PackedInt8::from_in_out(&w, d_in, d_out, b.as_deref())));
        Self {
            w: Tensor::from_data(TensorData::new(w, [d_in, d_out]), device),
            b: b.map(|b| Tensor::from_data(TensorData::new(b, [d_out]), device)),
            int8: packed,
        }
    }

    /// `x[rows, in] @ w (+ b)`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        if let Some(packed) = &self.int8 {
            return int8_product(x, packed);
        }
        let y = x.matmul(self.w.clone());
        match &self.b {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }
}

/// `x[rows, k]` through a packed int8 weight, on the host of the CPU device.
pub(crate) fn int8_product(x: Tensor<2>, packed: &PackedInt8) -> Tensor<2> {
    let device = x.device();
    let [rows, k] = x.dims();
    debug_assert_eq!(k, packed.k());
    let data = x.into_data().convert::<f32>();
    let src: &[f32] = data.as_slice().expect("f32 data after convert");
    let y = int8::matmul(src, rows, packed);
    Tensor::from_data(TensorData::new(y, [rows, packed.n()]), &device)
}
