//! Linear layers and the choice of matrix-product arithmetic ([`MatmulKind`]).
//!
//! Every projection is `x[rows, in] @ w[in, out] (+ b)`. With [`MatmulKind::F32`] that is one
//! burn matmul on any device, the weight kept in the checkpoint's float type and widened as it
//! is used (exact for f16 and bf16, so a bf16 model costs 2 bytes per parameter and computes
//! what it would widened at load). With [`MatmulKind::Int8`] on the CPU (`flex`) device the weights
//! are instead packed once at load for the integer kernels of `crate::int8` (the float copy
//! is not kept), and the product runs there: roughly twice the multiply-add rate of fp32 on AVX2, at the cost of int8 weight
//! rounding (about 1% relative error per product). Other devices keep the burn matmul.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use monoscope_formats::HostData;

use crate::int8::{self, PackedInt8};

/// The arithmetic of the model's linear layers and unembedding: the one way every stage and
/// command says it (`matmul = "f32" | "int8"`). Speed and error of each: BENCHMARKS.md
/// (`cargo xtask bench forward`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MatmulKind {
    /// fp32 burn matmuls: the reference arithmetic, on every device.
    #[default]
    F32,
    /// int8 weights (one scale per output feature) times activations quantised per row, with
    /// 32-bit integer accumulation. CPU (`flex`) device only; elsewhere it means `F32`.
    Int8,
}

impl MatmulKind {
    /// The configuration spelling: `f32` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            MatmulKind::F32 => "f32",
            MatmulKind::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for MatmulKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MatmulKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(MatmulKind::F32),
            "int8" => Ok(MatmulKind::Int8),
            other => Err(format!("`{other}`: expected f32 or int8")),
        }
    }
}

/// Which model a stage runs and how: the checkpoint, the arithmetic of its linear layers and
/// the device. Every stage and command that runs a model loads it through this.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// A GGUF file or a Hugging Face directory.
    pub path: std::path::PathBuf,
    pub matmul: MatmulKind,
    pub device: Device,
}

impl ModelSpec {
    /// The model at `path`, f32 arithmetic on the CPU.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        ModelSpec {
            path: path.into(),
            matmul: MatmulKind::F32,
            device: Device::flex(),
        }
    }

    pub fn with_matmul(mut self, matmul: MatmulKind) -> Self {
        self.matmul = matmul;
        self
    }

    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    pub fn load(&self) -> Result<crate::Model, crate::LmError> {
        crate::load_with(
            &self.path,
            &self.device,
            &ModelOptions::with_matmul(self.matmul),
        )
    }
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

/// One projection: the weight `[in, out]` kept in the checkpoint's float type (f32, f16 or
/// bf16) and widened to f32 as it is multiplied, or, for the int8 path, only the packed
/// weight. Either way the model holds one compact copy of each matrix.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    w: Option<Tensor<2>>,
    pub b: Option<Tensor<1>>,
    pub int8: Option<Arc<PackedInt8>>,
    d_in: usize,
    d_out: usize,
}

impl Linear {
    /// Builds from host data `w[in, out]` row-major; packs it for int8 (and then keeps only
    /// the packed weight) when `int8` is set.
    pub fn new(
        w: HostData,
        [d_in, d_out]: [usize; 2],
        b: Option<Vec<f32>>,
        int8: bool,
        device: &Device,
    ) -> Self {
        let (w, packed) = if int8 {
            let packed = PackedInt8::from_in_out(&w.into_f32(), d_in, d_out, b.as_deref());
            (None, Some(Arc::new(packed)))
        } else {
            (Some(upload(w, [d_in, d_out], device)), None)
        };
        Self {
            w,
            b: b.map(|b| Tensor::from_data(TensorData::new(b, [d_out]), device)),
            int8: packed,
            d_in,
            d_out,
        }
    }

    /// Bytes held by the weight and bias.
    pub fn bytes(&self) -> usize {
        self.w.as_ref().map_or(0, tensor_bytes)
            + self.b.as_ref().map_or(0, tensor_bytes)
            + self.int8.as_ref().map_or(0, |p| p.bytes())
    }

    /// `[in, out]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.d_in, self.d_out]
    }

    /// The weight `[in, out]` in f32 as the forward pass multiplies with it (int8: the
    /// dequantised packed weight).
    pub fn weight_f32(&self) -> Tensor<2> {
        match (&self.w, &self.int8) {
            (Some(w), _) => widen(w.clone()),
            // Packed weights exist only on the CPU device.
            (None, Some(packed)) => Tensor::from_data(
                TensorData::new(packed.dequantize_in_out(), [self.d_in, self.d_out]),
                &Device::flex(),
            ),
            (None, None) => unreachable!("a Linear holds a dense or a packed weight"),
        }
    }

    /// `x[rows, in] @ w (+ b)`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        if let Some(packed) = &self.int8 {
            return int8_product(x, packed);
        }
        let y = x.matmul(self.weight_f32());
        match &self.b {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }
}

/// A host tensor on `device` in its own float type.
pub(crate) fn upload<const D: usize>(
    data: HostData,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    let data = match data {
        HostData::F32(v) => TensorData::new(v, shape),
        HostData::F16(v) => TensorData::new(v, shape),
        HostData::Bf16(v) => TensorData::new(v, shape),
        // Quantised blocks have no burn type: the device holds their f32 values.
        quantized @ HostData::Quantized { .. } => TensorData::new(quantized.into_f32(), shape),
    };
    // Without the dtype, burn converts to the device's default float type.
    let dtype = data.dtype();
    Tensor::from_data(data, (device, dtype))
}

/// Bytes held by `t`'s elements.
pub(crate) fn tensor_bytes<const D: usize>(t: &Tensor<D>) -> usize {
    t.shape().num_elements() * t.dtype().size()
}

/// `t` in f32 (no copy when it already is).
pub(crate) fn widen<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

/// Elements of an output-major matrix widened at a time by [`matmul_output_major`]: a block of
/// vocabulary rows, not the whole vocabulary, is ever held in f32.
const WIDEN_BLOCK_ELEMENTS: usize = 1 << 24;

/// `x[rows, d] @ m[n, d]ᵀ` for an output-major matrix such as the unembedding, in any float
/// type. An f32 `m` is read through a transposed view; a 16-bit one is widened block by block.
pub(crate) fn matmul_output_major(x: Tensor<2>, m: &Tensor<2>) -> Tensor<2> {
    if m.dtype() == DType::F32 {
        return x.matmul(m.clone().transpose());
    }
    let [n, d] = m.dims();
    let block = (WIDEN_BLOCK_ELEMENTS / d.max(1)).max(1);
    let parts: Vec<Tensor<2>> = (0..n)
        .step_by(block)
        .map(|start| {
            let rows = block.min(n - start);
            x.clone()
                .matmul(widen(m.clone().narrow(0, start, rows)).transpose())
        })
        .collect();
    Tensor::cat(parts, 1)
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
