//! One SAE's training run: initialisation, the step (normalise, forward/backward, clip, the
//! optimizer, decoder renormalisation), dead-latent bookkeeping, metrics and export.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::compute::Compute;
use super::config::{ArchConfig, BDecInit, Optimizer, TrainConfig};
use super::device::DeviceState;
use super::engine::{Engine, HostState};
use super::grad::{BatchStats, Scratch};
use super::params::Params;
use super::signum::average;
use crate::kernels::{dot, sum_sq};
use crate::{Architecture, Sae, SaeError, SaeMetadata, StepMetrics};

/// Trains one SAE on batches of raw activations (`[B, d_in]` rows, any B).
///
/// Threads: the dense products and the parallel loops use the current rayon pool, so run
/// `step` inside `ThreadPool::install` to bound them. Results are deterministic for a given
/// configuration, input stream and thread count.
///
/// [`Compute`] says where the passes and the optimizer run ([`Trainer::new_on`]): the host
/// kernels, or burn tensors on a device, from the same initial weights (initialised here)
/// and with the same bookkeeping; only the engine differs.
#[derive(Debug)]
pub struct Trainer {
    pub(super) cfg: TrainConfig,
    /// Input scale: batches are multiplied by it (see [`crate::norm`]).
    pub(super) scale: f32,
    /// Parameters, optimizer state and gradients, where they are computed.
    pub(super) engine: Engine,
    pub(super) compute: Compute,
    /// The schedule-free average's weights so far (`Σ lr_max²`) and its running `lr_max`.
    pub(super) average_weight_sum: f64,
    pub(super) average_lr_max: f32,
    pub(super) step: u64,
    pub(super) tokens: u64,
    /// Tokens since each latent last fired.
    pub(super) since_fired: Vec<u64>,
    pub(super) window: Window,
    /// BatchTopK's running threshold on normalised input.
    pub(super) batch_threshold: Option<f64>,
    /// Seeds initialisation; kept (and checkpointed) for anything stochastic added later.
    pub(super) rng: ChaCha8Rng,
}

/// Sums since the last metrics report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Window {
    pub steps: u64,
    pub tokens: u64,
    #[serde(with = "super::checkpoint::f64_bits")]
    pub mse_loss: f64,
    #[serde(with = "super::checkpoint::f64_bits")]
    pub sparsity_loss: f64,
    #[serde(with = "super::checkpoint::f64_bits")]
    pub aux_loss: f64,
    #[serde(with = "super::checkpoint::f64_bits")]
    pub sq_err: f64,
    #[serde(with = "super::checkpoint::f64_bits")]
    pub variance: f64,
    pub active: u64,
    #[serde(with = "super::checkpoint::f64_bits")]
    pub grad_norm: f64,
    /// Massive rows, and the squared error and variance of the other rows.
    #[serde(default)]
    pub massive_rows: u64,
    #[serde(default, with = "super::checkpoint::f64_bits")]
    pub kept_sq_err: f64,
    #[serde(default, with = "super::checkpoint::f64_bits")]
    pub kept_variance: f64,
    #[serde(skip)]
    pub fired: Vec<u64>,
}

impl Trainer {
    /// A fresh SAE for `cfg`, trained on inputs multiplied by `scale`
    /// ([`crate::estimate_input_scale`]; 1.0 for none).
    pub fn new(cfg: TrainConfig, scale: f32) -> Result<Self, SaeError> {
        cfg.validate()?;
        let (d, s) = (cfg.d_in, cfg.d_sae);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let jump = matches!(cfg.architecture, ArchConfig::JumpRelu { .. });
        let mut p = Params::zeros(d, s, jump);
        // Decoder rows in uniformly random directions (normalised Gaussians) at the configured
        // norm, or unit norm when the decoder is kept normalised; W_enc = W_decᵀ (April update,
        // Gao et al.), so that each latent starts by detecting its own direction.
        let norm = if cfg.unit_decoder() {
            1.0
        } else {
            cfg.decoder_init_norm
        };
        for row in p.w_dec.chunks_mut(d) {
            for v in row.iter_mut() {
                *v = gaussian(&mut rng);
            }
            let n = dot(row, row).sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v *= norm / n);
        }
        let enc = cfg.encoder_init_norm.map_or(1.0, |e| e / norm);
        p.w_enc_t
            .iter_mut()
            .zip(&p.w_dec)
            .for_each(|(e, w)| *e = w * enc);
        if let ArchConfig::JumpRelu { init_threshold, .. } = cfg.architecture {
            p.threshold.fill(init_threshold);
        }
        Self::with_params(cfg, scale, p, rng)
    }

    /// Continues training from an existing SAE (fine-tuning, or planted initial weights).
    /// `scale` is the input scale to train with; the SAE's weights take raw input, so they
    /// are rescaled into the normalised space first.
    pub fn from_sae(cfg: TrainConfig, sae: &Sae, scale: f32) -> Result<Self, SaeError> {
        cfg.validate()?;
        sae.validate()?;
        if (sae.d_in, sae.d_sae) != (cfg.d_in, cfg.d_sae) {
            return Err(SaeError::config(
                "d_in/d_sae",
                format!("{}/{}", sae.d_in, sae.d_sae),
                format!("the configuration says {}/{}", cfg.d_in, cfg.d_sae),
            ));
        }
        let (d, s) = (cfg.d_in, cfg.d_sae);
        let jump = matches!(cfg.architecture, ArchConfig::JumpRelu { .. });
        let mut p = Params::zeros(d, s, jump);
        for r in 0..d {
            for i in 0..s {
                p.w_enc_t[i * d + r] = sae.w_enc[r * s + i] / scale;
            }
        }
        p.b_enc.copy_from_slice(&sae.b_enc);
        p.w_dec
            .iter_mut()
            .zip(&sae.w_dec)
            .for_each(|(p, w)| *p = w * scale);
        p.b_dec
            .iter_mut()
            .zip(&sae.b_dec)
            .for_each(|(p, b)| *p = b * scale);
        if jump {
            match &sae.threshold {
                Some(t) => p.threshold.copy_from_slice(t),
                None => {
                    if let ArchConfig::JumpRelu { init_threshold, .. } = cfg.architecture {
                        p.threshold.fill(init_threshold);
                    }
                }
            }
        }
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut t = Self::with_params(cfg, scale, p, rng)?;
        // Keep the given b_dec: mean-initialisation is for fresh SAEs only.
        t.cfg.b_dec_init = BDecInit::Zeros;
        Ok(t)
    }

    fn with_params(
        cfg: TrainConfig,
        scale: f32,
        p: Params,
        rng: ChaCha8Rng,
    ) -> Result<Self, SaeError> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(SaeError::config(
                "scale",
                scale,
                "must be positive and finite",
            ));
        }
        let zeros = Params::zeros(cfg.d_in, cfg.d_sae, !p.threshold.is_empty());
        let v = match cfg.optimizer {
            Optimizer::Adam => zeros.clone(),
            Optimizer::Signum => Params::empty(),
        };
        Ok(Trainer {
            scale,
            engine: Engine::Host(Box::new(HostState {
                m: zeros.clone(),
                v,
                g: zeros,
                scratch: Scratch::default(),
                p,
            })),
            compute: Compute::Host,
            average_weight_sum: 0.0,
            average_lr_max: 0.0,
            since_fired: vec![0; cfg.d_sae],
            window: Window {
                fired: vec![0; cfg.d_sae],
                ..Default::default()
            },
            batch_threshold: None,
            step: 0,
            tokens: 0,
            rng,
            cfg,
        })
    }

    /// [`Trainer::new`] computing on `compute`: initialised on the host (the same weights as
    /// `new`), then uploaded.
    pub fn new_on(cfg: TrainConfig, scale: f32, compute: Compute) -> Result<Self, SaeError> {
        Self::new(cfg, scale)?.on(compute)
    }

    /// [`Trainer::from_sae`] computing on `compute`.
    pub fn from_sae_on(
        cfg: TrainConfig,
        sae: &Sae,
        scale: f32,
        compute: Compute,
    ) -> Result<Self, SaeError> {
        Self::from_sae(cfg, sae, scale)?.on(compute)
    }

    /// This trainer moved onto `compute`: its parameters and optimizer state uploaded to a
    /// device, or read back into host memory.
    pub(super) fn on(mut self, compute: Compute) -> Result<Self, SaeError> {
        if compute == self.compute {
            return Ok(self);
        }
        let (d, s) = (self.cfg.d_in, self.cfg.d_sae);
        let view = self.engine.view()?;
        let (p, m, v) = (
            view.p.into_owned(),
            view.m.into_owned(),
            view.v.into_owned(),
        );
        self.engine = match &compute {
            Compute::Host => Engine::Host(Box::new(HostState {
                g: Params::zeros(d, s, !p.threshold.is_empty()),
                scratch: Scratch::default(),
                p,
                m,
                v,
            })),
            Compute::Burn(device) => {
                Engine::Device(Box::new(DeviceState::upload(device, d, s, &p, &m, &v)))
            }
            Compute::BurnHalf(device, dtype) => Engine::Device(Box::new(
                DeviceState::upload(device, d, s, &p, &m, &v).with_products(Some(*dtype)),
            )),
        };
        self.compute = compute;
        Ok(self)
    }

    /// Where this trainer computes.
    pub fn compute(&self) -> &Compute {
        &self.compute
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Steps completed.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn is_finished(&self) -> bool {
        self.step >= self.cfg.total_steps
    }

    pub fn input_scale(&self) -> f32 {
        self.scale
    }

    /// Trains on one batch of raw rows. Returns metrics on reporting steps.
    pub fn step(&mut self, rows: &[f32]) -> Result<Option<StepMetrics>, SaeError> {
        let (d, s) = (self.cfg.d_in, self.cfg.d_sae);
        if self.is_finished() {
            return Err(SaeError::Finished {
                step: self.step,
                total_steps: self.cfg.total_steps,
            });
        }
        if rows.is_empty() || !rows.len().is_multiple_of(d) {
            return Err(SaeError::RowWidth {
                len: rows.len(),
                d_in: d,
            });
        }
        let scale = self.scale;
        let mut x: Vec<f32> = rows.par_iter().map(|v| v * scale).collect();
        let massive = self.massive_rows(&x);
        if self.cfg.exclude_massive && massive.iter().any(|&m| m) {
            x = x
                .chunks(d)
                .zip(&massive)
                .filter(|(_, m)| !**m)
                .flat_map(|(r, _)| r.iter().copied())
                .collect();
            if x.is_empty() {
                // Nothing left to learn from: the step passes without an update.
                self.window.massive_rows += massive.len() as u64;
                self.step += 1;
                return Ok(None);
            }
        }
        let n = x.len() / d;
        if self.step == 0 && self.cfg.b_dec_init == BDecInit::Mean {
            let mut mean = vec![0.0f64; d];
            for r in x.chunks(d) {
                mean.iter_mut()
                    .zip(r)
                    .for_each(|(m, v)| *m += f64::from(*v));
            }
            let mean: Vec<f32> = mean.into_iter().map(|m| (m / n as f64) as f32).collect();
            self.engine.set_b_dec(&mean);
        }
        if self.step == 0 && self.cfg.optimizer == Optimizer::Signum {
            // The base iterate starts where the parameters are: x = y = z.
            self.engine.start_schedule_free();
        }
        let dead: Option<Vec<bool>> = self.cfg.auxk().map(|_| {
            self.since_fired
                .iter()
                .map(|&t| t >= self.cfg.dead_after_tokens)
                .collect()
        });
        let coeff = self.cfg.sparsity_coeff_at(self.step);
        let stats = self
            .engine
            .loss_and_grads(&self.cfg, &x, coeff, dead.as_deref())?;
        let loss = stats.loss();
        if !loss.is_finite() {
            return Err(SaeError::NonFinite {
                step: self.step,
                what: "loss",
                value: loss,
            });
        }
        let unit = self.cfg.unit_decoder();
        let grad_norm = self.engine.finish_grads(unit, d);
        if !grad_norm.is_finite() {
            return Err(SaeError::NonFinite {
                step: self.step,
                what: "gradient norm",
                value: grad_norm,
            });
        }
        let clip = match self.cfg.clip_grad_norm {
            // torch.nn.utils.clip_grad_norm_: scale by max/(norm + 1e-6) when norm > max.
            Some(max) if grad_norm > f64::from(max) => (f64::from(max) / (grad_norm + 1e-6)) as f32,
            _ => 1.0,
        };
        let lr = self.cfg.lr_at(self.step);
        match self.cfg.optimizer {
            Optimizer::Adam => self.engine.adam(lr, &self.cfg.adam, self.step + 1, clip),
            Optimizer::Signum => {
                // The sign ignores the gradient's scale, so clipping has nothing to do here.
                self.average_lr_max = self.average_lr_max.max(lr);
                let weight = f64::from(self.average_lr_max).powi(2);
                self.average_weight_sum += weight;
                let c = if self.average_weight_sum > 0.0 {
                    (weight / self.average_weight_sum) as f32
                } else {
                    0.0
                };
                self.engine.signum(lr, self.cfg.schedule_free_momentum, c);
            }
        }
        if unit {
            self.engine.normalize_decoder(d);
        }
        if let ArchConfig::BatchTopK { threshold_lr, .. } = self.cfg.architecture
            && stats.min_active.is_finite()
        {
            // SAELens's moving average of the smallest selected activation, started at the
            // first batch's value rather than 0 so short runs are not biased low.
            let m = f64::from(stats.min_active);
            self.batch_threshold = Some(match self.batch_threshold {
                Some(t) => (1.0 - threshold_lr) * t + threshold_lr * m,
                None => m,
            });
        }
        for (since, &f) in self.since_fired.iter_mut().zip(&stats.fired) {
            *since = if f > 0 { 0 } else { *since + n as u64 };
        }
        self.accumulate(&stats, n, grad_norm);
        self.accumulate_massive(&x, &massive, &stats);
        self.step += 1;
        self.tokens += n as u64;
        let report = self.step.is_multiple_of(self.cfg.metrics_every.max(1))
            || self.step == self.cfg.total_steps;
        Ok(report.then(|| self.report(lr, coeff, s)))
    }

    fn accumulate(&mut self, st: &BatchStats, n: usize, grad_norm: f64) {
        let w = &mut self.window;
        w.steps += 1;
        w.tokens += n as u64;
        w.mse_loss += st.mse_loss;
        w.sparsity_loss += st.sparsity_loss;
        w.aux_loss += st.aux_loss;
        w.sq_err += st.sq_err;
        w.variance += st.variance;
        w.active += st.active;
        w.grad_norm += grad_norm;
        for (a, &f) in w.fired.iter_mut().zip(&st.fired) {
            *a += u64::from(f);
        }
    }

    /// Which rows of the normalised batch `x` are massive (none without a threshold).
    fn massive_rows(&self, x: &[f32]) -> Vec<bool> {
        let d = self.cfg.d_in;
        match self.cfg.massive_norm {
            None => vec![false; x.len() / d],
            Some(t) => {
                let limit = f64::from(t * self.scale).powi(2);
                x.par_chunks(d).map(|r| sum_sq(r) > limit).collect()
            }
        }
    }

    /// Adds the massive rows' count and the other rows' error and variance to the window.
    /// `massive` flags the rows of the batch as given; `x` and `stats` are what was trained
    /// on (without the massive rows when they are excluded).
    fn accumulate_massive(&mut self, x: &[f32], massive: &[bool], stats: &BatchStats) {
        if self.cfg.massive_norm.is_none() {
            return;
        }
        let d = self.cfg.d_in;
        let trained: Vec<bool> = if self.cfg.exclude_massive {
            vec![false; x.len() / d]
        } else {
            massive.to_vec()
        };
        let w = &mut self.window;
        w.massive_rows += massive.iter().filter(|&&m| m).count() as u64;
        let mut sum = vec![0.0f64; d];
        let (mut sq, mut kept) = (0.0f64, 0usize);
        for ((r, &m), &e) in x.chunks(d).zip(&trained).zip(&stats.row_sq_err) {
            if m {
                continue;
            }
            kept += 1;
            w.kept_sq_err += e;
            sq += sum_sq(r);
            sum.iter_mut().zip(r).for_each(|(s, v)| *s += f64::from(*v));
        }
        if kept > 0 {
            w.kept_variance += sq - sum.iter().map(|s| s * s).sum::<f64>() / kept as f64;
        }
    }

    fn report(&mut self, lr: f32, coeff: f32, s: usize) -> StepMetrics {
        let w = std::mem::replace(
            &mut self.window,
            Window {
                fired: vec![0; s],
                ..Default::default()
            },
        );
        let steps = w.steps.max(1) as f64;
        let tokens = w.tokens.max(1) as f64;
        let dense = w
            .fired
            .iter()
            .filter(|&&f| f as f64 / tokens > f64::from(self.cfg.dense_threshold))
            .count();
        let dead = self
            .since_fired
            .iter()
            .filter(|&&t| t >= self.cfg.dead_after_tokens)
            .count();
        StepMetrics {
            step: self.step,
            tokens: self.tokens,
            lr,
            sparsity_coeff: coeff,
            loss: (w.mse_loss + w.sparsity_loss + w.aux_loss) / steps,
            mse_loss: w.mse_loss / steps,
            sparsity_loss: w.sparsity_loss / steps,
            aux_loss: w.aux_loss / steps,
            mse: w.sq_err / (tokens * self.cfg.d_in as f64),
            fvu: w.sq_err / w.variance.max(f64::MIN_POSITIVE),
            fvu_without_massive: self
                .cfg
                .massive_norm
                .map(|_| w.kept_sq_err / w.kept_variance.max(f64::MIN_POSITIVE)),
            massive_rows: w.massive_rows,
            l0: w.active as f64 / tokens,
            dead_fraction: dead as f64 / s as f64,
            dense_fraction: dense as f64 / s as f64,
            grad_norm: w.grad_norm / steps,
            batchtopk_threshold: self.batch_threshold,
        }
    }

    /// Trains on every batch `batches` yields until the run is finished, calling `on_metrics`
    /// on each report. Returns the number of steps taken.
    pub fn train<I>(
        &mut self,
        batches: I,
        mut on_metrics: impl FnMut(&StepMetrics),
    ) -> Result<u64, SaeError>
    where
        I: IntoIterator,
        I::Item: AsRef<[f32]>,
    {
        let start = self.step;
        for batch in batches {
            if self.is_finished() {
                break;
            }
            if let Some(m) = self.step(batch.as_ref())? {
                on_metrics(&m);
            }
        }
        Ok(self.step - start)
    }

    /// The SAE as trained so far, in SAELens's layout, with the input scale folded in (it
    /// takes raw activations). BatchTopK becomes JumpReLU with its running threshold.
    /// With the schedule-free optimizer this is the average `x`, not the point `y` the
    /// gradients were taken at (sparsify saves the same).
    ///
    /// # Panics
    /// When a device trainer's parameters cannot be read back ([`Trainer::try_export`]
    /// returns that error instead).
    pub fn export(&self, metadata: SaeMetadata) -> Sae {
        self.try_export(metadata)
            .expect("reading the trained parameters back from the device")
    }

    /// [`Trainer::export`], with a device that fails to read back as an error.
    pub fn try_export(&self, metadata: SaeMetadata) -> Result<Sae, SaeError> {
        let (d, s) = (self.cfg.d_in, self.cfg.d_sae);
        let params;
        let averaged;
        let p = match self.cfg.optimizer {
            Optimizer::Adam => {
                params = self.engine.params()?;
                &*params
            }
            Optimizer::Signum => {
                let view = self.engine.view()?;
                let beta = self.cfg.schedule_free_momentum;
                let [w_enc_t, b_enc, w_dec, b_dec, threshold] = view.p.tensors();
                let [z_enc_t, z_b_enc, z_dec, z_b_dec, z_threshold] = view.m.tensors();
                averaged = Params {
                    w_enc_t: average(w_enc_t, z_enc_t, beta),
                    b_enc: average(b_enc, z_b_enc, beta),
                    w_dec: average(w_dec, z_dec, beta),
                    b_dec: average(b_dec, z_b_dec, beta),
                    threshold: average(threshold, z_threshold, beta),
                };
                &averaged
            }
        };
        let mut w_enc = vec![0.0f32; d * s];
        w_enc.par_chunks_mut(s).enumerate().for_each(|(r, row)| {
            for (i, v) in row.iter_mut().enumerate() {
                *v = p.w_enc_t[i * d + r];
            }
        });
        let (architecture, threshold, training) = match self.cfg.architecture {
            ArchConfig::ReluL1 { .. } => (Architecture::Relu, None, "standard"),
            ArchConfig::TopK { k, .. } => (Architecture::TopK { k }, None, "topk"),
            ArchConfig::BatchTopK { .. } => {
                let t = self.batch_threshold.unwrap_or(0.0) as f32;
                (Architecture::JumpRelu, Some(vec![t; s]), "batchtopk")
            }
            ArchConfig::JumpRelu { .. } => {
                let t = p.threshold.iter().map(|t| t.max(0.0)).collect();
                (Architecture::JumpRelu, Some(t), "jumprelu")
            }
        };
        let mut metadata = metadata;
        metadata.training_architecture = Some(training.into());
        metadata.training_architecture_details = serde_json::to_value(&self.cfg).ok();
        let mut sae = Sae {
            d_in: d,
            d_sae: s,
            architecture,
            w_enc,
            b_enc: p.b_enc.clone(),
            w_dec: p.w_dec.clone(),
            b_dec: p.b_dec.clone(),
            threshold,
            apply_b_dec_to_input: true,
            metadata,
            extra_cfg: Default::default(),
        };
        sae.fold_input_scale(self.scale);
        Ok(sae)
    }
}

/// A standard normal sample (Box–Muller; avoids a distribution crate for one use).
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}
