//! Linear layers, the choice of matrix-product arithmetic ([`MatmulKind`]) and the float type
//! the weights are held and multiplied in ([`Precision`]).
//!
//! Every projection is `x[rows, in] @ w[in, out] (+ b)`. With [`MatmulKind::F32`] and
//! [`Precision::F32`] that is one burn matmul on any device, the weight kept in the
//! checkpoint's float type and widened as it is used (exact for f16 and bf16, so a bf16 model
//! costs 2 bytes per parameter and computes what it would widened at load). With
//! [`Precision::F16`] or [`Precision::Bf16`] (GPU devices) the weight is converted once at load
//! to that type and the product runs in it: the activation is narrowed to the weight's type on
//! the way in and the product widened back to f32 on the way out, so that the residual stream,
//! norms, attention scores and softmax stay in f32 and only the matmuls (where the time and
//! the memory go) run at half width. With [`MatmulKind::Int8`] on the CPU (`flex`) device the
//! weights are instead packed once at load for the integer kernels of `crate::int8` (the float
//! copy is not kept), and the product runs there: roughly twice the multiply-add rate of fp32
//! on AVX2, at the cost of int8 weight rounding (about 1% relative error per product). Other
//! devices keep the burn matmul.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType, bf16, f16};
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
    /// 32-bit integer accumulation. CPU (`flex`) device with the host kernels on only;
    /// elsewhere it means `F32`.
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

/// The float type the model's weights are held in on the device and its linear layers and
/// unembedding multiply in: the one way every stage and command says it (`precision = "f32" |
/// "f16" | "bf16"`).
///
/// `F32` is the reference: weights stay in the checkpoint's float type (16-bit stays 16-bit)
/// and are widened to f32 as they are multiplied, so every product is an f32 one. `F16` and
/// `Bf16` convert every matrix (the embedding and unembedding included; norm weights and
/// biases stay f32) to that type once at load and run the matmuls in it, the activation
/// narrowed on the way in and the product widened back to f32 on the way out: the residual
/// stream, norms, attention scores and softmax stay f32, where 16-bit rounding would
/// accumulate over layers and positions, while the matmuls, which hold the weights and take
/// the time, run at half width (tensor cores on GPUs). They are for GPU devices: the CPU
/// (`flex`) device refuses them (see [`ModelOptions::check`]).
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
pub enum Precision {
    /// f32 products (weights widened from the checkpoint's type as they are used).
    #[default]
    F32,
    /// IEEE half precision: 10 mantissa bits, range ±65504.
    F16,
    /// bfloat16: 7 mantissa bits, f32's range.
    Bf16,
}

impl Precision {
    /// The configuration spelling: `f32`, `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// The 16-bit type the matmuls run in, `None` for `F32`.
    pub(crate) fn half(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some(FloatDType::F16),
            Precision::Bf16 => Some(FloatDType::BF16),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("`{other}`: expected f32, f16 or bf16")),
        }
    }
}

/// Which model a stage runs and how: the checkpoint, the arithmetic of its linear layers, the
/// float type of its weights and the device. Every stage and command that runs a model loads
/// it through this.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// A GGUF file or a Hugging Face directory.
    pub path: std::path::PathBuf,
    pub matmul: MatmulKind,
    pub precision: Precision,
    pub device: Device,
}

impl ModelSpec {
    /// The model at `path`, f32 arithmetic on the CPU.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        ModelSpec {
            path: path.into(),
            matmul: MatmulKind::F32,
            precision: Precision::F32,
            device: Device::flex(),
        }
    }

    pub fn with_matmul(mut self, matmul: MatmulKind) -> Self {
        self.matmul = matmul;
        self
    }

    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The options [`ModelSpec::load`] builds the model with.
    pub fn options(&self) -> ModelOptions {
        ModelOptions::with_matmul(self.matmul).with_precision(self.precision)
    }

    pub fn load(&self) -> Result<crate::Model, crate::LmError> {
        crate::load_with(&self.path, &self.device, &self.options())
    }
}

/// How [`crate::load_with`] / [`crate::Model::from_loaded_with`] build a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    pub matmul: MatmulKind,
    pub precision: Precision,
    /// Whether the CPU (`flex`) device runs the host kernels (`crate::fused`,
    /// `crate::attention`, the int8 path) where a block allows them (default `true`). `false`
    /// runs burn's ops there too, as every other device does: the device path, on a machine
    /// without a GPU (the device tests compare the two paths this way). `MatmulKind::Int8`
    /// is a host kernel, so it then means `F32`. Other devices ignore it.
    pub host_kernels: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            matmul: MatmulKind::F32,
            precision: Precision::F32,
            host_kernels: true,
        }
    }
}

impl ModelOptions {
    /// The default options with `matmul` set.
    pub fn with_matmul(matmul: MatmulKind) -> Self {
        Self {
            matmul,
            ..Self::default()
        }
    }

    /// These options with `precision` set.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// These options with the host kernels on or off (see [`ModelOptions::host_kernels`]).
    pub fn with_host_kernels(mut self, host_kernels: bool) -> Self {
        self.host_kernels = host_kernels;
        self
    }

    /// Refuses settings `device` cannot run: 16-bit precision on the CPU (`flex`) device,
    /// whose backend has no 16-bit matmul worth the name (bf16 products are converted to f32
    /// and back inside every call, f16 ones run slower than f32; and a 16-bit checkpoint
    /// already costs 2 bytes per parameter there under `F32`); `int8` products anywhere but
    /// the CPU (the integer kernels are host kernels; elsewhere the layers would quietly
    /// multiply in f32); a 16-bit type the device has no matrix product for.
    pub fn check(&self, device: &Device) -> Result<(), crate::LmError> {
        if self.matmul == MatmulKind::Int8 && *device != Device::flex() {
            return Err(crate::LmError::Setting {
                name: "matmul",
                value: self.matmul.to_string(),
                reason: "the int8 kernels run on the CPU device only; on a GPU use                          `matmul = \"f32\"` with `precision = \"f16\"` or `\"bf16\"`"
                    .into(),
            });
        }
        if self.precision != Precision::F32 && *device == Device::flex() {
            return Err(crate::LmError::Setting {
                name: "precision",
                value: self.precision.to_string(),
                reason: "16-bit matmuls are for GPU devices; the CPU device runs `f32` \
                         (16-bit checkpoints stay 16-bit in memory there and are widened as \
                         they are multiplied)"
                    .into(),
            });
        }
        if let Some(dtype) = self.precision.half()
            && let Err(why) = monoscope_device::check_half_product(device, dtype)
        {
            return Err(crate::LmError::Setting {
                name: "precision",
                value: self.precision.to_string(),
                reason: format!(
                    "this device has no {} matrix product ({why}); use `f32`{}",
                    self.precision,
                    if self.precision == Precision::Bf16 {
                        " or `f16`"
                    } else {
                        ""
                    }
                ),
            });
        }
        Ok(())
    }

    /// Whether this device runs the integer kernels.
    pub(crate) fn int8_on(&self, device: &Device) -> bool {
        self.matmul == MatmulKind::Int8 && self.host_kernels && *device == Device::flex()
    }

    /// How the linear layers hold their weights on `device`.
    pub(crate) fn weight_format(&self, device: &Device) -> WeightFormat {
        if self.int8_on(device) {
            WeightFormat::Int8
        } else if let Some(dtype) = self.precision.half() {
            WeightFormat::Half(dtype)
        } else {
            WeightFormat::Checkpoint
        }
    }
}

/// How a model holds its weight matrices: what [`ModelOptions`] asked for, resolved for the
/// device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum WeightFormat {
    /// The checkpoint's float type, widened to f32 as multiplied ([`Precision::F32`]).
    Checkpoint,
    /// Converted once at load to this 16-bit type, multiplied in it.
    Half(FloatDType),
    /// Packed for the int8 kernels (no float copy).
    Int8,
}

/// One projection: the weight `[in, out]` kept in the checkpoint's float type (f32, f16 or
/// bf16) and widened to f32 as it is multiplied, or converted to the 16-bit type the product
/// runs in ([`WeightFormat::Half`]), or, for the int8 path, only the packed weight. Either way
/// the model holds one compact copy of each matrix.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    w: Option<Tensor<2>>,
    pub b: Option<Tensor<1>>,
    pub int8: Option<Arc<PackedInt8>>,
    /// The 16-bit type the product runs in (`w` is held in it); `None`: f32 products.
    half: Option<FloatDType>,
    d_in: usize,
    d_out: usize,
}

impl Linear {
    /// Builds from host data `w[in, out]` row-major, held as `format` says (for int8 only the
    /// packed weight is kept).
    pub fn new(
        w: HostData,
        [d_in, d_out]: [usize; 2],
        b: Option<Vec<f32>>,
        format: WeightFormat,
        device: &Device,
    ) -> Self {
        let (w, packed, half) = match format {
            WeightFormat::Int8 => {
                let packed = PackedInt8::from_in_out(&w.into_f32(), d_in, d_out, b.as_deref());
                (None, Some(Arc::new(packed)), None)
            }
            WeightFormat::Half(dtype) => (
                Some(upload(to_half(w, dtype), [d_in, d_out], device)),
                None,
                Some(dtype),
            ),
            WeightFormat::Checkpoint => (Some(upload(w, [d_in, d_out], device)), None, None),
        };
        Self {
            w,
            b: b.map(|b| Tensor::from_data(TensorData::new(b, [d_out]), device)),
            int8: packed,
            half,
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
    /// dequantised packed weight; 16-bit precision: the 16-bit weight widened).
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

    /// `x[rows, in] @ w (+ b)`, in f32 whatever the product ran in.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        if let Some(packed) = &self.int8 {
            return int8_product(x, packed);
        }
        let y = match (self.half, &self.w) {
            (Some(dtype), Some(w)) => half_product(x, w.clone(), dtype),
            _ => x.matmul(self.weight_f32()),
        };
        match &self.b {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }
}

/// `x @ w` with `w` held in the 16-bit `dtype`: `x` narrowed to it, the product widened back
/// to f32 (see [`Precision`]).
pub(crate) fn half_product(x: Tensor<2>, w: Tensor<2>, dtype: FloatDType) -> Tensor<2> {
    x.cast(dtype).matmul(w).cast(FloatDType::F32)
}

/// `data` converted on the host to the 16-bit `dtype` (`F16` or `BF16`), so that only the
/// 16-bit copy is uploaded.
pub(crate) fn to_half(data: HostData, dtype: FloatDType) -> HostData {
    match (dtype, data) {
        (FloatDType::F16, HostData::F16(v)) => HostData::F16(v),
        (FloatDType::BF16, HostData::Bf16(v)) => HostData::Bf16(v),
        (FloatDType::F16, other) => {
            HostData::F16(other.into_f32().into_iter().map(f16::from_f32).collect())
        }
        (FloatDType::BF16, other) => {
            HostData::Bf16(other.into_f32().into_iter().map(bf16::from_f32).collect())
        }
        (other, _) => unreachable!("{other:?} is not a 16-bit precision"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The 16-bit product's mechanics (narrow, multiply, widen, f32 bias) on the CPU
    /// backend, which the model refuses 16-bit precision on but whose ops run it: what a GPU
    /// computes, up to its kernels' rounding.
    #[test]
    fn half_products_follow_f32() {
        let device = Device::flex();
        let (d_in, d_out, rows) = (24, 10, 3);
        let w: Vec<f32> = (0..d_in * d_out)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) / (d_in as f32).sqrt())
            .collect();
        let b: Vec<f32> = (0..d_out).map(|i| i as f32 * 0.1 - 0.4).collect();
        let x: Vec<f32> = (0..rows * d_in)
            .map(|i| (i * 13 % 29) as f32 / 14.0 - 1.0)
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [rows, d_in]), &device);
        let dense = |format| {
            Linear::new(
                HostData::F32(w.clone()),
                [d_in, d_out],
                Some(b.clone()),
                format,
                &device,
            )
        };
        let reference = dense(WeightFormat::Checkpoint).forward(x.clone());
        let want = crate::to_host(reference, "f32").unwrap();
        for (dtype, tol) in [(FloatDType::F16, 5e-3), (FloatDType::BF16, 3e-2)] {
            let linear = dense(WeightFormat::Half(dtype));
            assert_eq!(linear.w.as_ref().unwrap().dtype(), DType::from(dtype));
            assert_eq!(linear.bytes(), d_in * d_out * 2 + d_out * 4);
            let y = linear.forward(x.clone());
            assert_eq!(
                y.dtype(),
                DType::F32,
                "{dtype:?}: the product comes back in f32"
            );
            let got = crate::to_host(y, "half").unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= tol * w.abs().max(1.0),
                    "{dtype:?}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn host_data_converts_to_half() {
        let v = vec![1.0f32, -2.5, 65504.0, 1e-3];
        let HostData::F16(h) = to_half(HostData::F32(v.clone()), FloatDType::F16) else {
            panic!("f16 expected");
        };
        assert_eq!(h[2].to_f32(), 65504.0);
        let HostData::Bf16(b) = to_half(HostData::F16(h), FloatDType::BF16) else {
            panic!("bf16 expected");
        };
        assert_eq!(b[1].to_f32(), -2.5);
    }
}
