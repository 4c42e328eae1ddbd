//! Training configuration. Defaults follow the sources in `reference/sae-ecosystem.md`: the
//! Anthropic April-2024 recipe for ReLU+L1, Gao et al. for TopK/AuxK, SAELens for BatchTopK
//! and JumpReLU, PyTorch for Adam, sparsify for schedule-free sign descent and for scaling
//! the learning rate with the dictionary's width; where they disagree, the choice measured
//! best on real activations (BENCHMARKS.md "SAE quality") is the default.

use serde::{Deserialize, Serialize};

use crate::SaeError;

/// Everything that determines a training run (with the data and the input scale).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub d_in: usize,
    pub d_sae: usize,
    pub architecture: ArchConfig,
    /// Steps (batches) in the run; schedules are defined over it.
    pub total_steps: u64,
    /// Which update rule steps the parameters.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Peak learning rate; [`TrainConfig::new`] sets the optimizer's default for the width
    /// ([`default_lr`]).
    #[serde(default = "defaults::lr")]
    pub lr: f32,
    /// Linear warm-up of the learning rate from 0 over this many steps.
    #[serde(default)]
    pub lr_warmup_steps: u64,
    /// Linear decay of the learning rate to 0 over this last fraction of the steps.
    #[serde(default = "defaults::lr_decay_fraction")]
    pub lr_decay_fraction: f32,
    #[serde(default)]
    pub adam: AdamConfig,
    /// Momentum of the schedule-free average (`Optimizer::Signum`).
    #[serde(default = "defaults::schedule_free_momentum")]
    pub schedule_free_momentum: f32,
    /// Global gradient-norm clip (SAELens hard-codes 1.0); `None` disables it.
    #[serde(default = "defaults::clip")]
    pub clip_grad_norm: Option<f32>,
    /// Norm of the initial decoder rows when the decoder is not kept at unit norm.
    #[serde(default = "defaults::decoder_init_norm")]
    pub decoder_init_norm: f32,
    /// Norm of the initial encoder rows (`W_enc = W_decᵀ` in direction); `None`: the decoder
    /// rows' norm. [`TrainConfig::new`] sets [`UNIT_DECODER_ENCODER_NORM`] for the
    /// architectures whose decoder is kept at unit norm.
    #[serde(default)]
    pub encoder_init_norm: Option<f32>,
    /// Keep decoder rows at unit norm (renormalise after each step, drop the gradient's
    /// parallel component), as sparsify and OpenAI do for TopK. Default: on for TopK and
    /// BatchTopK, off for ReLU+L1 (whose penalty already weighs by the norm) and JumpReLU.
    #[serde(default)]
    pub normalize_decoder: Option<bool>,
    #[serde(default)]
    pub b_dec_init: BDecInit,
    #[serde(default)]
    pub seed: u64,
    /// A latent is dead after this many tokens without firing (Gao et al.: 10M).
    #[serde(default = "defaults::dead_after_tokens")]
    pub dead_after_tokens: u64,
    /// Rows whose raw norm is above this are *massive* ([`crate::norm`]): metrics are also
    /// reported without them. `None`: no threshold.
    #[serde(default)]
    pub massive_norm: Option<f32>,
    /// Leave massive rows out of training (needs `massive_norm`).
    #[serde(default)]
    pub exclude_massive: bool,
    /// A latent is dense when it fires on more than this fraction of tokens.
    #[serde(default = "defaults::dense_threshold")]
    pub dense_threshold: f32,
    /// Report metrics every this many steps (and at the last step).
    #[serde(default = "defaults::metrics_every")]
    pub metrics_every: u64,
}

/// The training architecture and its sparsity mechanism.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArchConfig {
    /// ReLU with penalty `λ·Σ f_i·‖W_dec,i‖`, λ warmed up linearly.
    ReluL1 {
        #[serde(default = "defaults::l1_coeff")]
        l1_coeff: f32,
        #[serde(default = "defaults::warmup_fraction")]
        l1_warmup_fraction: f32,
    },
    /// k largest pre-activations per row, plus AuxK for dead latents.
    TopK {
        k: usize,
        #[serde(default)]
        aux: AuxKConfig,
    },
    /// k·B largest activations over the batch; exported as JumpReLU with one threshold, the
    /// moving average of the smallest selected activation (SAELens).
    BatchTopK {
        k: usize,
        #[serde(default = "defaults::threshold_lr")]
        threshold_lr: f64,
        #[serde(default)]
        aux: AuxKConfig,
    },
    /// JumpReLU with an L0 penalty through a rectangle-kernel straight-through estimator.
    JumpRelu {
        #[serde(default = "defaults::l0_coeff")]
        l0_coeff: f32,
        #[serde(default = "defaults::bandwidth")]
        bandwidth: f32,
        #[serde(default = "defaults::init_threshold")]
        init_threshold: f32,
        #[serde(default = "defaults::warmup_fraction")]
        l0_warmup_fraction: f32,
    },
}

/// Auxiliary loss for dead latents (Gao et al. 2024, appendix B.1): the top `k_aux` dead
/// latents reconstruct the main reconstruction's residual.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuxKConfig {
    /// 0 disables AuxK.
    #[serde(default = "defaults::aux_coeff")]
    pub coeff: f32,
    /// Default: `min(d_in / 2, 256)`.
    #[serde(default)]
    pub k_aux: Option<usize>,
}

impl Default for AuxKConfig {
    fn default() -> Self {
        AuxKConfig {
            coeff: defaults::aux_coeff(),
            k_aux: None,
        }
    }
}

/// The update rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Adam/AdamW ([`AdamConfig`]), with warm-up and a linear decay over the last steps: the
    /// default for JumpReLU, whose threshold learns from a straight-through estimate that sign
    /// descent amplifies (its L0 runs away).
    Adam,
    /// Sign descent wrapped in a schedule-free average (Defazio et al. 2024; sparsify's
    /// default): the gradient is taken at `y = β·x + (1 − β)·z`, `z` steps by `−lr·sign(g)`,
    /// `x` is the uniform average of the `z` iterates and is what gets exported. No schedule:
    /// the average does what a decay would.
    #[default]
    Signum,
}

impl Optimizer {
    /// The update rule `architecture` trains best with (module docs).
    pub fn default_for(architecture: &ArchConfig) -> Self {
        match architecture {
            ArchConfig::JumpRelu { .. } => Optimizer::Adam,
            _ => Optimizer::Signum,
        }
    }
}

/// The learning rate `optimizer` starts from for `d_sae` latents and batches of `batch_rows`:
/// sparsify's rates for batches of 4,096 (Adam 2e-4, sign descent 5e-3), scaled by
/// `1/√(d_sae / 2¹⁴)` so that wider dictionaries take smaller steps, and by `√(batch_rows /
/// 4096)`, the square-root rule for a gradient whose noise grows as the batch shrinks.
pub fn default_lr(optimizer: Optimizer, d_sae: usize, batch_rows: usize) -> f32 {
    let base = match optimizer {
        Optimizer::Adam => 2e-4,
        Optimizer::Signum => 5e-3,
    };
    let width = (d_sae.max(1) as f64 / 16_384.0).sqrt();
    let batch = (batch_rows.max(1) as f64 / REFERENCE_BATCH as f64).sqrt();
    (base * batch / width) as f32
}

/// Initial encoder row norm with a unit-norm decoder: `√(1/3)`, the norm of PyTorch's default
/// `nn.Linear` rows (uniform in `±1/√d_in`) that sparsify starts from. Against unit rows it
/// cut the held-out FVU by about 0.006 in every comparison on real activations: sign descent
/// moves every weight by the same step, which turns smaller rows faster early on.
pub const UNIT_DECODER_ENCODER_NORM: f32 = 0.577_350_3;

/// The batch size the default learning rates are stated for.
pub const REFERENCE_BATCH: usize = 4096;

/// Adam/AdamW hyper-parameters; the defaults are PyTorch's (burn's differ: eps 1e-5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    #[serde(default = "defaults::beta1")]
    pub beta1: f32,
    #[serde(default = "defaults::beta2")]
    pub beta2: f32,
    #[serde(default = "defaults::eps")]
    pub eps: f32,
    /// Decoupled (AdamW) weight decay; 0 gives plain Adam.
    #[serde(default)]
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: defaults::beta1(),
            beta2: defaults::beta2(),
            eps: defaults::eps(),
            weight_decay: 0.0,
        }
    }
}

/// Initial decoder bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BDecInit {
    /// SAELens v6.
    Zeros,
    /// Mean of the first batch (sparsify): starts the encoder on centred input.
    #[default]
    Mean,
}

mod defaults {
    pub fn lr() -> f32 {
        3e-4
    }
    pub fn lr_decay_fraction() -> f32 {
        0.2
    }
    pub fn clip() -> Option<f32> {
        Some(1.0)
    }
    pub fn decoder_init_norm() -> f32 {
        0.1
    }
    pub fn dead_after_tokens() -> u64 {
        10_000_000
    }
    pub fn dense_threshold() -> f32 {
        0.1
    }
    pub fn metrics_every() -> u64 {
        100
    }
    pub fn l1_coeff() -> f32 {
        5.0
    }
    pub fn warmup_fraction() -> f32 {
        0.05
    }
    pub fn threshold_lr() -> f64 {
        0.01
    }
    pub fn l0_coeff() -> f32 {
        1.0
    }
    pub fn bandwidth() -> f32 {
        0.05
    }
    pub fn init_threshold() -> f32 {
        0.01
    }
    pub fn schedule_free_momentum() -> f32 {
        0.95
    }
    pub fn aux_coeff() -> f32 {
        1.0 / 32.0
    }
    pub fn beta1() -> f32 {
        0.9
    }
    pub fn beta2() -> f32 {
        0.999
    }
    pub fn eps() -> f32 {
        1e-8
    }
}

impl TrainConfig {
    /// A configuration with every default, for `architecture` on `d_in → d_sae`.
    pub fn new(d_in: usize, d_sae: usize, architecture: ArchConfig, total_steps: u64) -> Self {
        let optimizer = Optimizer::default_for(&architecture);
        TrainConfig {
            d_in,
            d_sae,
            architecture,
            total_steps,
            optimizer,
            lr: defaults::lr(),
            lr_warmup_steps: 0,
            lr_decay_fraction: defaults::lr_decay_fraction(),
            adam: AdamConfig::default(),
            schedule_free_momentum: defaults::schedule_free_momentum(),
            clip_grad_norm: defaults::clip(),
            decoder_init_norm: defaults::decoder_init_norm(),
            encoder_init_norm: None,
            normalize_decoder: None,
            b_dec_init: BDecInit::default(),
            seed: 0,
            dead_after_tokens: defaults::dead_after_tokens(),
            massive_norm: None,
            exclude_massive: false,
            dense_threshold: defaults::dense_threshold(),
            metrics_every: defaults::metrics_every(),
        }
        .with_optimizer(optimizer)
        .with_default_encoder_init()
    }

    /// [`UNIT_DECODER_ENCODER_NORM`] when the decoder is kept at unit norm, else the decoder
    /// rows' norm.
    fn with_default_encoder_init(mut self) -> Self {
        self.encoder_init_norm = self.unit_decoder().then_some(UNIT_DECODER_ENCODER_NORM);
        self
    }

    /// This configuration stepped by `optimizer`, with that optimizer's learning rate for the
    /// width and batches of [`REFERENCE_BATCH`] rows, and its schedule (a decay for Adam, none
    /// for the schedule-free average).
    pub fn with_optimizer(mut self, optimizer: Optimizer) -> Self {
        self.optimizer = optimizer;
        self.lr = default_lr(optimizer, self.d_sae, REFERENCE_BATCH);
        self.lr_decay_fraction = match optimizer {
            Optimizer::Adam => defaults::lr_decay_fraction(),
            Optimizer::Signum => 0.0,
        };
        self
    }

    /// The optimizer's default learning rate for batches of `batch_rows` ([`default_lr`]).
    pub fn for_batch(mut self, batch_rows: usize) -> Self {
        self.lr = default_lr(self.optimizer, self.d_sae, batch_rows);
        self
    }

    /// A dead-latent window that acts at the scale of a run of `total_tokens`: Gao et al.'s
    /// 10M tokens, or a tenth of the run when that is shorter (a latent silent for a tenth of
    /// the run fires on fewer than one token in `total_tokens / 10`), never below one batch.
    pub fn dead_after_for(total_tokens: u64, batch_rows: u64) -> u64 {
        defaults::dead_after_tokens()
            .min(total_tokens / 10)
            .max(batch_rows.max(1))
    }

    /// Whether decoder rows are kept at unit norm (see the field).
    pub fn unit_decoder(&self) -> bool {
        self.normalize_decoder.unwrap_or(matches!(
            self.architecture,
            ArchConfig::TopK { .. } | ArchConfig::BatchTopK { .. }
        ))
    }

    /// `k_aux` and the coefficient, when AuxK is on.
    pub(crate) fn auxk(&self) -> Option<(usize, f32)> {
        let aux = match &self.architecture {
            ArchConfig::TopK { aux, .. } | ArchConfig::BatchTopK { aux, .. } => aux,
            _ => return None,
        };
        let k_aux = aux.k_aux.unwrap_or((self.d_in / 2).clamp(1, 256));
        (aux.coeff > 0.0 && k_aux > 0).then_some((k_aux.min(self.d_sae), aux.coeff))
    }

    /// Learning rate at `step` (0-based): linear warm-up, constant, linear decay to 0.
    pub fn lr_at(&self, step: u64) -> f32 {
        let warm = if self.lr_warmup_steps > 0 {
            ((step + 1) as f32 / self.lr_warmup_steps as f32).min(1.0)
        } else {
            1.0
        };
        let decay_steps = (self.lr_decay_fraction as f64 * self.total_steps as f64).round() as u64;
        let decay_start = self.total_steps - decay_steps.min(self.total_steps);
        let decay = if step >= decay_start && decay_steps > 0 {
            (self.total_steps - step) as f32 / decay_steps as f32
        } else {
            1.0
        };
        self.lr * warm * decay
    }

    /// Sparsity coefficient (λ for L1 and L0) at `step`, warmed up linearly; 0 for TopK.
    pub fn sparsity_coeff_at(&self, step: u64) -> f32 {
        let (coeff, frac) = match self.architecture {
            ArchConfig::ReluL1 {
                l1_coeff,
                l1_warmup_fraction,
            } => (l1_coeff, l1_warmup_fraction),
            ArchConfig::JumpRelu {
                l0_coeff,
                l0_warmup_fraction,
                ..
            } => (l0_coeff, l0_warmup_fraction),
            _ => return 0.0,
        };
        let warm = (frac as f64 * self.total_steps as f64).ceil() as u64;
        if warm == 0 {
            coeff
        } else {
            coeff * ((step + 1) as f32 / warm as f32).min(1.0)
        }
    }

    /// Rejects impossible values before anything is allocated.
    pub fn validate(&self) -> Result<(), SaeError> {
        if self.d_in == 0 || self.d_sae == 0 {
            return Err(SaeError::config(
                "d_in/d_sae",
                format!("{}/{}", self.d_in, self.d_sae),
                "must be positive",
            ));
        }
        if self.total_steps == 0 {
            return Err(SaeError::config("total_steps", 0, "must be positive"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(SaeError::config("lr", self.lr, "must be positive"));
        }
        if !(0.0..=1.0).contains(&self.lr_decay_fraction) {
            return Err(SaeError::config(
                "lr_decay_fraction",
                self.lr_decay_fraction,
                "must be in [0, 1]",
            ));
        }
        if !(0.0..1.0).contains(&self.schedule_free_momentum) || self.schedule_free_momentum == 0.0
        {
            return Err(SaeError::config(
                "schedule_free_momentum",
                self.schedule_free_momentum,
                "must be in (0, 1)",
            ));
        }
        if let Some(t) = self.massive_norm
            && !(t.is_finite() && t > 0.0)
        {
            return Err(SaeError::config("massive_norm", t, "must be positive"));
        }
        if self.exclude_massive && self.massive_norm.is_none() {
            return Err(SaeError::config(
                "exclude_massive",
                true,
                "needs massive_norm (the threshold)",
            ));
        }
        let a = &self.adam;
        if !(0.0..1.0).contains(&a.beta1) || !(0.0..1.0).contains(&a.beta2) || a.eps <= 0.0 {
            return Err(SaeError::config(
                "adam",
                format!("{a:?}"),
                "betas must be in [0, 1), eps positive",
            ));
        }
        match &self.architecture {
            ArchConfig::TopK { k, .. } | ArchConfig::BatchTopK { k, .. }
                if *k == 0 || *k > self.d_sae =>
            {
                return Err(SaeError::config(
                    "architecture.k",
                    k,
                    format!("must be in 1..={}", self.d_sae),
                ));
            }
            ArchConfig::JumpRelu { bandwidth, .. } if *bandwidth <= 0.0 => {
                return Err(SaeError::config(
                    "architecture.bandwidth",
                    bandwidth,
                    "must be positive",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}
