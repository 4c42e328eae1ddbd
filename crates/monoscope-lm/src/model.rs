//! [`Model`]: a loaded checkpoint on a burn device, with its tokenizer and hook names.

use std::fmt;
use std::path::Path;

use burn::prelude::*;
use monoscope_formats::{
    LoadedModel, MlpActivation, ModelConfig, NormPlacement, QkNorm, Tokenizer,
};

use crate::layers::NormKind;
use crate::linear::WeightFormat;
use crate::weights::{self, ModelWeights, Unembedding};
use crate::{HookName, HookPoint, LmError, MatmulKind, ModelOptions, Precision};

/// A transformer language model (any [`monoscope_formats::Architecture`]) ready to run.
pub struct Model {
    pub(crate) config: ModelConfig,
    pub(crate) weights: ModelWeights,
    tokenizer: Tokenizer,
    name: String,
    sha256: String,
    pub(crate) device: Device,
    matmul: MatmulKind,
    precision: Precision,
    /// Whether the CPU device may run the host kernels ([`ModelOptions::host_kernels`]).
    host_kernels: bool,
}

/// Loads a GGUF file or a Hugging Face model directory onto `device` (fp32 arithmetic).
pub fn load(path: &Path, device: &Device) -> Result<Model, LmError> {
    load_with(path, device, &ModelOptions::default())
}

/// [`load`] with options, e.g. [`MatmulKind::Int8`] for faster CPU inference or
/// [`Precision::Bf16`] on a GPU.
pub fn load_with(path: &Path, device: &Device, options: &ModelOptions) -> Result<Model, LmError> {
    let loaded = monoscope_formats::load_model(path)?;
    Model::from_loaded_with(loaded, device, options)
}

impl Model {
    /// Builds the model from a checkpoint already in memory; the host tensors are dropped once
    /// uploaded.
    pub fn from_loaded(loaded: LoadedModel, device: &Device) -> Result<Self, LmError> {
        Self::from_loaded_with(loaded, device, &ModelOptions::default())
    }

    /// [`Model::from_loaded`] with options; refuses options the device cannot run (see
    /// [`ModelOptions::check`]).
    pub fn from_loaded_with(
        mut loaded: LoadedModel,
        device: &Device,
        options: &ModelOptions,
    ) -> Result<Self, LmError> {
        options.check(device)?;
        let format = options.weight_format(device);
        let weights = weights::build(&mut loaded, device, format)?;
        Ok(Self {
            matmul: if format == WeightFormat::Int8 {
                MatmulKind::Int8
            } else {
                MatmulKind::F32
            },
            precision: options.precision,
            host_kernels: options.host_kernels,
            config: loaded.config,
            weights,
            tokenizer: loaded.tokenizer,
            name: loaded.name,
            sha256: loaded.sha256,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checksum of the weights the model was loaded from (see [`LoadedModel::sha256`]).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The arithmetic the linear layers actually run (`Int8` was asked for and the device
    /// supports it, or `F32`).
    pub fn matmul_kind(&self) -> MatmulKind {
        self.matmul
    }

    /// The float type the weights are held and multiplied in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether the CPU (`flex`) device runs the host kernels where a block allows them
    /// ([`ModelOptions::host_kernels`]); other devices never do.
    pub fn host_kernels(&self) -> bool {
        self.host_kernels
    }

    pub fn n_layers(&self) -> usize {
        self.config.n_layers
    }

    pub fn d_model(&self) -> usize {
        self.config.d_model
    }

    /// Every hook point of this model, in forward order.
    pub fn hook_names(&self) -> Vec<HookName> {
        HookName::all(self.config.n_layers, !self.config.block.parallel_residual)
    }

    /// Parses `name` and checks it against this model (its layer, and that the model has it:
    /// parallel-residual blocks have no `hook_resid_mid`).
    pub fn hook(&self, name: &str) -> Result<HookName, LmError> {
        let hook = HookName::parse(name)?;
        self.check_hook(&hook)?;
        Ok(hook)
    }

    pub(crate) fn check_hook(&self, hook: &HookName) -> Result<(), LmError> {
        hook.validate(self.config.n_layers)?;
        if self.config.block.parallel_residual && matches!(hook.point(), HookPoint::ResidMid(_)) {
            return Err(LmError::InvalidHook {
                name: hook.to_string(),
                reason: "this model's blocks run attention and MLP in parallel: there is no \
                         residual between them"
                    .into(),
            });
        }
        Ok(())
    }

    /// The width of `hook`'s activations (its last dimension).
    pub fn hook_width(&self, hook: &HookName) -> usize {
        let c = &self.config;
        match hook.point() {
            HookPoint::Q(_) | HookPoint::Z(_) => c.n_heads * c.head_dim,
            HookPoint::K(_) | HookPoint::V(_) => c.n_kv_heads * c.head_dim,
            HookPoint::MlpPre(_) | HookPoint::MlpPost(_) => c.d_ff,
            _ => c.d_model,
        }
    }

    /// Directions `[n, width]` at `hook` carried into the residual stream by the linear map
    /// that follows the hook (no bias): the output projection after `attn.hook_z`, the down
    /// projection after `mlp.hook_post`, the identity where the hook is `d_model` wide. `None`
    /// for hooks with no such map (`attn.hook_q/k/v`, `mlp.hook_pre`). What a feature's
    /// direct logit effect reads.
    pub fn residual_direction(&self, hook: &HookName, directions: Tensor<2>) -> Option<Tensor<2>> {
        let block = |l: usize| self.weights.blocks.get(l);
        match hook.point() {
            HookPoint::Z(l) => Some(directions.matmul(block(l)?.o.weight_f32())),
            HookPoint::MlpPost(l) => Some(directions.matmul(block(l)?.down.weight_f32())),
            HookPoint::Q(_) | HookPoint::K(_) | HookPoint::V(_) | HookPoint::MlpPre(_) => None,
            _ => Some(directions),
        }
    }

    /// Bytes the model's weights occupy on its device: 2 per parameter for a bf16 or f16
    /// checkpoint, for 16-bit [`Precision`] and for int8 (packed as 16-bit lanes), 4 for f32.
    pub fn weight_bytes(&self) -> usize {
        self.weights.bytes()
    }

    /// The token embedding matrix `[vocab, d_model]`, in f32.
    pub fn embedding_matrix(&self) -> Tensor<2> {
        crate::linear::widen(self.weights.embed.clone())
    }

    /// Logits `[batch, seq, vocab]` of residual-stream vectors `[batch, seq, d_model]` through
    /// the final norm and the unembedding: what the model would predict from that residual.
    pub fn logits_from_residual(&self, resid: Tensor<3>) -> Tensor<3> {
        let normed = crate::layers::normalize(resid, self.norm_kind(), self.config.norm_eps);
        self.unembed(normed)
    }

    /// Final norm's weight/bias and the unembedding on `hook_normalized` values.
    pub(crate) fn unembed(&self, normalized: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = normalized.dims();
        let x = crate::layers::scale(normalized, &self.weights.final_norm).reshape([b * t, d]);
        let logits = match &self.weights.unembed {
            Unembedding::Int8(packed) => crate::linear::int8_product(x, packed),
            Unembedding::Dense(m) => match self.precision.half() {
                Some(dtype) => {
                    crate::linear::half_product(x, m.as_ref().clone().transpose(), dtype)
                }
                None => crate::linear::matmul_output_major(x, m),
            },
        };
        let logits = match self.config.block.final_logit_softcap {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        };
        logits.reshape([b, t, self.config.vocab_size])
    }

    pub(crate) fn norm_kind(&self) -> NormKind {
        if self.config.architecture.layer_norm() {
            NormKind::Layer
        } else {
            NormKind::Rms
        }
    }

    /// Whether every block is a plain pre-norm SwiGLU block with full RoPE and standard
    /// attention: what the int8 host path computes.
    pub(crate) fn plain_blocks(&self) -> bool {
        let b = &self.config.block;
        b.mlp == MlpActivation::SwiGlu
            && b.norm_placement == NormPlacement::Pre
            && b.qk_norm == QkNorm::None
            && !b.parallel_residual
            && b.rotary_dim.is_none()
            && b.attn_scale.is_none()
            && b.attn_logit_softcap.is_none()
            && b.local_rope_theta.is_none()
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}
