//! The device engine: the host path's algorithms (`grad`, `adam`, `signum`) on burn tensors,
//! so that a step runs on a GPU. The formulas are the host's, written densely: where the host
//! touches only the active (row, latent) pairs, this multiplies by a masked dense code, which
//! gives the same values. Parameters, optimizer state and gradients stay on the device; a step
//! uploads the batch (and the dead-latent mask) and reads back one vector of statistics.
//!
//! The selection rules are the host's exactly, whatever order the backend's top-k breaks ties
//! in: TopK keeps the k largest pre-activations of a row with ties going to the smallest index
//! ([`crate::kernels`]'s `top_k`), then only the positive ones; BatchTopK keeps, over the batch,
//! everything at or above the host's threshold τ (the `k·B`-th largest of the rows' positive
//! candidates), or the candidates themselves when there are no more than `k·B` of them.
//!
//! With 16-bit products ([`crate::Compute::BurnHalf`]) the batch's large matrix products take
//! their operands narrowed to f16 or bf16 and give their result widened back to f32; the
//! parameters, the optimizer state, the element-wise gradient terms and the statistics stay
//! f32 (mixed precision as PyTorch's autocast does it).

use burn::prelude::{Bool, Device, Tensor, TensorData};
use burn::tensor::FloatDType;

use super::config::{AdamConfig, ArchConfig, TrainConfig};
use super::grad::{BatchStats, variance};
use super::params::Params;
use crate::SaeError;

/// Positions in [`DeviceParams`]' array: `Params::tensors` order.
const W_ENC_T: usize = 0;
const B_ENC: usize = 1;
const W_DEC: usize = 2;
const B_DEC: usize = 3;
const THRESHOLD: usize = 4;

/// A [`Params`] on the device: the matrices `[d_sae, d_in]`, the vectors as one-row matrices
/// (`[1, d_sae]`, `[1, d_in]`) so that they broadcast over a batch; `None` where the host's
/// tensor is empty (JumpReLU's threshold only exists for JumpReLU, Adam's `v` for Adam).
#[derive(Clone, Default)]
struct DeviceParams([Option<Tensor<2>>; 5]);

impl DeviceParams {
    fn upload(p: &Params, d: usize, s: usize, device: &Device) -> Self {
        let shapes = [[s, d], [1, s], [s, d], [1, d], [1, s]];
        let mut out = DeviceParams::default();
        for ((slot, t), shape) in out.0.iter_mut().zip(p.tensors()).zip(shapes) {
            if !t.is_empty() {
                *slot = Some(Tensor::from_data(TensorData::new(t.clone(), shape), device));
            }
        }
        out
    }

    fn download(&self) -> Result<Params, SaeError> {
        let mut p = Params::empty();
        for (dst, src) in p.tensors_mut().into_iter().zip(&self.0) {
            if let Some(t) = src {
                *dst = read(t.clone())?;
            }
        }
        Ok(p)
    }

    /// A clone of tensor `i` (a handle: tensors are values, never changed in place).
    fn get(&self, i: usize) -> Tensor<2> {
        self.0[i]
            .clone()
            .expect("the engine holds every tensor its architecture uses")
    }
}

/// Reads a tensor back as `f32`, whatever the device's float type.
fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, SaeError> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| SaeError::Device(format!("reading a tensor back: {e}")))
}

/// Training state on a burn device.
pub(crate) struct DeviceState {
    device: Device,
    d_in: usize,
    d_sae: usize,
    p: DeviceParams,
    /// Adam's first moment, or the schedule-free base iterate `z`.
    m: DeviceParams,
    /// Adam's second moment (all `None` with the schedule-free optimizer).
    v: DeviceParams,
    /// The last step's gradients (not state).
    g: DeviceParams,
    /// The last step's gradient norm, read back with its statistics.
    grad_norm: f64,
    /// The 16-bit type of the batch's matrix products (`None`: f32).
    products: Option<FloatDType>,
}

impl std::fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field("device", &self.device)
            .field("d_in", &self.d_in)
            .field("d_sae", &self.d_sae)
            .finish_non_exhaustive()
    }
}

/// Scalars at the head of the statistics vector read back after each step.
const PENALTY: usize = 0;
const AUX_SQ: usize = 1;
const MIN_ACTIVE: usize = 2;
/// Then one sum of squares per gradient tensor, then the rows' squared errors, then the
/// latents' firing counts.
const GRAD_SQ: usize = 3;
const HEAD: usize = GRAD_SQ + 5;

impl DeviceState {
    /// Uploads host parameters and optimizer buffers.
    pub(crate) fn upload(
        device: &Device,
        d: usize,
        s: usize,
        p: &Params,
        m: &Params,
        v: &Params,
    ) -> Self {
        DeviceState {
            device: device.clone(),
            d_in: d,
            d_sae: s,
            p: DeviceParams::upload(p, d, s, device),
            m: DeviceParams::upload(m, d, s, device),
            v: DeviceParams::upload(v, d, s, device),
            g: DeviceParams::default(),
            grad_norm: 0.0,
            products: None,
        }
    }

    /// This state with the batch's matrix products in `products` (f16 or bf16; `None`: f32).
    pub(crate) fn with_products(mut self, products: Option<FloatDType>) -> Self {
        self.products = products;
        self
    }

    /// `a @ b`, in the 16-bit product type when there is one (the result in f32 either way).
    fn mm(&self, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        match self.products {
            Some(dtype) => a.cast(dtype).matmul(b.cast(dtype)).cast(FloatDType::F32),
            None => a.matmul(b),
        }
    }

    /// Parameters, first and second optimizer buffers, read back.
    pub(crate) fn download(&self) -> Result<(Params, Params, Params), SaeError> {
        Ok((self.p.download()?, self.m.download()?, self.v.download()?))
    }

    pub(crate) fn download_params(&self) -> Result<Params, SaeError> {
        self.p.download()
    }

    pub(crate) fn set_b_dec(&mut self, b_dec: &[f32]) {
        let t = TensorData::new(b_dec.to_vec(), [1, self.d_in]);
        self.p.0[B_DEC] = Some(Tensor::from_data(t, &self.device));
    }

    pub(crate) fn start_schedule_free(&mut self) {
        self.m = self.p.clone();
    }

    pub(crate) fn grad_norm(&self) -> f64 {
        self.grad_norm
    }

    /// The host's `grad::loss_and_grads`, then (with a unit decoder) the gradient projection,
    /// and the gradient norm; the statistics come back in one read.
    pub(crate) fn loss_and_grads(
        &mut self,
        cfg: &TrainConfig,
        x: &[f32],
        coeff: f32,
        dead: Option<&[bool]>,
    ) -> Result<BatchStats, SaeError> {
        let (d, s) = (self.d_in, self.d_sae);
        let n = x.len() / d;
        let inv_b = 1.0 / n as f32;
        let dev = &self.device;
        let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [n, d]), dev);
        let (w_enc_t, b_enc, w_dec, b_dec) = (
            self.p.get(W_ENC_T),
            self.p.get(B_ENC),
            self.p.get(W_DEC),
            self.p.get(B_DEC),
        );
        let xc = xt.clone() - b_dec;
        let z = self.mm(xc.clone(), w_enc_t.clone().transpose()) + b_enc;
        let positive = z.clone().greater_elem(0.0);
        let theta = self.p.0[THRESHOLD].clone().map(|t| t.clamp_min(0.0));
        let active = match (&cfg.architecture, &theta) {
            (ArchConfig::TopK { k, .. }, _) => top_k_mask(z.clone(), *k).bool_and(positive),
            (ArchConfig::BatchTopK { k, .. }, _) => batch_top_k_mask(z.clone(), *k, positive),
            (ArchConfig::ReluL1 { .. }, _) => positive,
            (ArchConfig::JumpRelu { .. }, Some(theta)) => z
                .clone()
                .greater(theta.clone().expand([n, s]))
                .bool_and(positive),
            (ArchConfig::JumpRelu { .. }, None) => {
                unreachable!("a JumpReLU engine holds its threshold")
            }
        };
        let inactive = active.clone().bool_not();
        let f = z.clone().mask_fill(inactive.clone(), 0.0);

        // Decoder and ∂/∂x̂ = G = (2/B)·e; ∂f = G·W_decᵀ.
        let e = self.mm(f.clone(), w_dec.clone()) + self.p.get(B_DEC) - xt;
        let row_sq = e.clone().square().sum_dim(1).reshape([n]);
        let gout = e.mul_scalar(2.0 * inv_b);
        let gf = self.mm(gout.clone(), w_dec.clone().transpose());
        let colsum_fired = active.clone().float().sum_dim(0);

        let mut scalars: Vec<Tensor<1>> = vec![zeros1(dev); GRAD_SQ];
        let mut g_w_dec = self.mm(f.clone().transpose(), gout.clone());
        let mut g_threshold = None;
        let mut gz = match (&cfg.architecture, theta) {
            (ArchConfig::ReluL1 { .. }, _) => {
                // (λ/B)·Σ f_i·‖W_dec,i‖: ∂z gains (λ/B)·‖W_dec,i‖ where active, and the
                // decoder rows are pulled by (λ/B)·(Σ_b f_bi)·W_dec,i/‖W_dec,i‖.
                let norms = w_dec.clone().square().sum_dim(1).sqrt().reshape([1, s]);
                let colsum_f = f.clone().sum_dim(0);
                scalars[PENALTY] = (colsum_f.clone() * norms.clone()).sum();
                let zero_norm = norms.clone().lower_equal_elem(0.0);
                let safe = norms.clone().mask_fill(zero_norm.clone(), 1.0);
                let pull = colsum_f
                    .mul_scalar(coeff * inv_b)
                    .div(safe)
                    .mask_fill(zero_norm, 0.0)
                    .reshape([s, 1]);
                g_w_dec = g_w_dec + w_dec.clone() * pull;
                (gf + norms.mul_scalar(coeff * inv_b)).mask_fill(inactive.clone(), 0.0)
            }
            (ArchConfig::JumpRelu { bandwidth, .. }, Some(theta)) => {
                // Rectangle-kernel STE, as the host writes it: where |z − θ| < ε/2,
                // ∂θ += −(θ/ε)·∂f − (λ/B)/ε; no gradient where the raw threshold is ≤ 0.
                let eps = *bandwidth;
                let window = (z.clone() - theta.clone().expand([n, s]))
                    .abs()
                    .lower_elem(0.5 * eps);
                let slope = theta.div_scalar(eps).neg();
                let term = (gf.clone() * slope).sub_scalar(coeff * inv_b / eps);
                let dtheta = term.mask_fill(window.bool_not(), 0.0).sum_dim(0);
                let raw = self.p.get(THRESHOLD);
                g_threshold = Some(dtheta.mask_fill(raw.lower_equal_elem(0.0), 0.0));
                gf.mask_fill(inactive.clone(), 0.0)
            }
            _ => gf.mask_fill(inactive.clone(), 0.0),
        };

        // AuxK: the top dead latents reconstruct the residual (as `grad::sparse`).
        let n_dead = dead.map_or(0, |m| m.iter().filter(|&&v| v).count());
        if let (Some((k_aux, alpha)), Some(mask), true) = (cfg.auxk(), dead, n_dead > 0) {
            let scale = (n_dead as f32 / k_aux as f32).min(1.0);
            let w = alpha * scale;
            // Uploaded as 0/1 floats: every backend takes float data, not every one takes
            // host booleans.
            let flags: Vec<f32> = mask.iter().map(|&m| f32::from(u8::from(m))).collect();
            let dead_t =
                Tensor::<2>::from_data(TensorData::new(flags, [1, s]), dev).greater_elem(0.5);
            let zd = z
                .clone()
                .mask_fill(dead_t.bool_not().expand([n, s]), f32::NEG_INFINITY);
            let aux_active =
                top_k_mask(zd.clone(), k_aux.min(n_dead)).bool_and(zd.clone().greater_elem(0.0));
            let aux_inactive = aux_active.bool_not();
            let fa = zd.mask_fill(aux_inactive.clone(), 0.0);
            // The host rebuilds e from G as G·0.5/(1/B): the same rounding here.
            let residual = gout.clone().mul_scalar(0.5).div_scalar(inv_b);
            let diff = self.mm(fa.clone(), w_dec.clone()) + residual;
            scalars[AUX_SQ] = diff.clone().square().sum();
            let ga = diff.mul_scalar(2.0 * w * inv_b);
            let gza = self
                .mm(ga.clone(), w_dec.clone().transpose())
                .mask_fill(aux_inactive, 0.0);
            g_w_dec = g_w_dec + self.mm(fa.transpose(), ga);
            gz = gz + gza;
        }

        let g_w_enc_t = self.mm(gz.clone().transpose(), xc);
        let g_b_enc = gz.sum_dim(0);
        // x_c = x − b_dec: the encoder's part of ∂/∂b_dec is −W_enc·(Σ ∂z).
        // A vector times a matrix: cheap, kept in f32 whatever the products.
        let g_b_dec = gout.sum_dim(0) - g_b_enc.clone().matmul(w_enc_t);
        if cfg.unit_decoder() {
            // Only the component orthogonal to each (unit) decoder row changes its direction.
            let along = (g_w_dec.clone() * w_dec.clone()).sum_dim(1);
            g_w_dec = g_w_dec - w_dec * along;
        }
        if matches!(cfg.architecture, ArchConfig::BatchTopK { .. }) {
            scalars[MIN_ACTIVE] = f.mask_fill(inactive, f32::INFINITY).min();
        }
        self.g = DeviceParams([
            Some(g_w_enc_t),
            Some(g_b_enc),
            Some(g_w_dec),
            Some(g_b_dec),
            g_threshold,
        ]);
        for t in self.g.0.iter() {
            scalars.push(match t {
                Some(t) => t.clone().square().sum(),
                None => zeros1(dev),
            });
        }
        scalars.push(row_sq);
        scalars.push(colsum_fired.reshape([s]));
        // The batch's variance is host work: done here, after the step's device work is queued
        // and before the read that waits for it, so that on a GPU the two overlap.
        let batch_variance = variance(x, d);
        let back = read(Tensor::cat(scalars, 0))?;

        let grad_sq: f64 = back[GRAD_SQ..HEAD].iter().map(|&v| f64::from(v)).sum();
        self.grad_norm = grad_sq.sqrt();
        let row_sq_err: Vec<f64> = back[HEAD..HEAD + n].iter().map(|&v| f64::from(v)).collect();
        // Counts of at most B rows: exact in f32.
        let fired: Vec<u32> = back[HEAD + n..].iter().map(|&v| v as u32).collect();
        let active: u64 = fired.iter().map(|&v| u64::from(v)).sum();
        let sq_err: f64 = row_sq_err.iter().sum();
        let sparsity_loss = match cfg.architecture {
            ArchConfig::ReluL1 { .. } => f64::from(coeff) * f64::from(back[PENALTY]) / n as f64,
            ArchConfig::JumpRelu { .. } => f64::from(coeff) * active as f64 / n as f64,
            _ => 0.0,
        };
        let aux_loss = match cfg.auxk() {
            Some((k_aux, alpha)) if n_dead > 0 => {
                let w = alpha * (n_dead as f32 / k_aux as f32).min(1.0);
                f64::from(w) * f64::from(back[AUX_SQ]) / n as f64
            }
            _ => 0.0,
        };
        let min_active = match cfg.architecture {
            ArchConfig::BatchTopK { .. } => back[MIN_ACTIVE],
            _ => f32::INFINITY,
        };
        Ok(BatchStats {
            mse_loss: sq_err / n as f64,
            sparsity_loss,
            aux_loss,
            sq_err,
            row_sq_err,
            variance: batch_variance,
            active,
            fired,
            min_active,
        })
    }

    /// `adam::adam_update` on every tensor.
    pub(crate) fn adam(&mut self, lr: f32, cfg: &AdamConfig, t: u64, clip: f32) {
        let (b1, b2) = (cfg.beta1, cfg.beta2);
        let bias1 = 1.0 - (b1 as f64).powf(t as f64);
        let bias2 = 1.0 - (b2 as f64).powf(t as f64);
        let step = (lr as f64 / bias1) as f32;
        let inv_sqrt_bias2 = (1.0 / bias2.sqrt()) as f32;
        let decay = 1.0 - lr * cfg.weight_decay;
        let eps = cfg.eps;
        let g = std::mem::take(&mut self.g);
        for (i, g) in g.0.into_iter().enumerate() {
            let (Some(g), Some(p), Some(m), Some(v)) = (
                g,
                self.p.0[i].take(),
                self.m.0[i].take(),
                self.v.0[i].take(),
            ) else {
                continue;
            };
            let gi = g.mul_scalar(clip);
            let m = m.mul_scalar(b1) + gi.clone().mul_scalar(1.0 - b1);
            let v = v.mul_scalar(b2) + gi.clone().mul_scalar(1.0 - b2) * gi;
            let denom = v.clone().sqrt().mul_scalar(inv_sqrt_bias2).add_scalar(eps);
            let p = p.mul_scalar(decay) - m.clone().mul_scalar(step) / denom;
            self.p.0[i] = Some(p);
            self.m.0[i] = Some(m);
            self.v.0[i] = Some(v);
        }
    }

    /// `signum::signum_update` on every tensor (`p` holds y, `m` holds z).
    pub(crate) fn signum(&mut self, lr: f32, beta: f32, c: f32) {
        let keep = 1.0 - beta;
        let g = std::mem::take(&mut self.g);
        for (i, g) in g.0.into_iter().enumerate() {
            let (Some(g), Some(y), Some(z)) = (g, self.p.0[i].take(), self.m.0[i].take()) else {
                continue;
            };
            let x = (y - z.clone().mul_scalar(keep)).div_scalar(beta);
            let z = z - g.sign().mul_scalar(lr);
            let x = x.clone() + (z.clone() - x).mul_scalar(c);
            self.p.0[i] = Some(x.mul_scalar(beta) + z.clone().mul_scalar(keep));
            self.m.0[i] = Some(z);
        }
    }

    pub(crate) fn normalize_decoder(&mut self) {
        let w = self.p.get(W_DEC);
        let norms = w.clone().square().sum_dim(1).sqrt().clamp_min(f32::EPSILON);
        self.p.0[W_DEC] = Some(w / norms);
    }
}

fn zeros1(device: &Device) -> Tensor<1> {
    Tensor::zeros([1], device)
}

/// The host's TopK selection of each row of `z` (`[n, s]`): the `k` largest values, ties to
/// the smallest index, never NaN or −∞. Independent of how the backend's top-k orders ties:
/// only its k-th value is used, and the ties at it are ranked by a running count.
fn top_k_mask(z: Tensor<2>, k: usize) -> Tensor<2, Bool> {
    let [n, s] = z.dims();
    if k >= s {
        return z.greater_elem(f32::NEG_INFINITY);
    }
    let kth = z.clone().topk(k, 1).min_dim(1).expand([n, s]);
    let above = z.clone().greater(kth.clone());
    let tie = z.equal(kth);
    // Ties still needed per row: k minus the values strictly above the k-th.
    let need = above
        .clone()
        .int()
        .sum_dim(1)
        .neg()
        .add_scalar(k as i64)
        .expand([n, s]);
    let rank = tie.clone().int().cumsum(1);
    tie.bool_and(rank.lower_equal(need)).bool_or(above)
}

/// The host's BatchTopK selection (`grad::sparse::select_batch_top_k`), with `positive` the
/// mask `z > 0`. The host keeps each row's `per_row` largest positive values as candidates;
/// when there are more than `k·B` candidates, the threshold τ is the `k·B`-th largest of them
/// and every value ≥ τ is taken (ties included, rows with more than `per_row` re-encoded):
/// that is `z ≥ τ` over the whole batch. Otherwise the candidates are the selection.
fn batch_top_k_mask(z: Tensor<2>, k: usize, positive: Tensor<2, Bool>) -> Tensor<2, Bool> {
    let [n, s] = z.dims();
    let per_row = (4 * k).max(k + 16).min(s);
    let budget = k * n;
    // The candidates' values do not depend on how ties are broken, so τ needs no tie rule.
    let cand = z.clone().topk(per_row, 1);
    let cand_positive = cand.clone().greater_elem(0.0);
    let over = cand_positive
        .clone()
        .int()
        .sum()
        .greater_elem(budget as i64)
        .reshape([1, 1])
        .expand([n, s]);
    let tau = cand
        .mask_fill(cand_positive.bool_not(), f32::NEG_INFINITY)
        .reshape([n * per_row])
        .sort_descending(0)
        .narrow(0, budget - 1, 1)
        .reshape([1, 1])
        .expand([n, s]);
    let cleared = z.clone().greater_equal(tau);
    let candidates = if per_row < s {
        top_k_mask(z, per_row).bool_and(positive)
    } else {
        positive
    };
    cleared
        .bool_and(over.clone())
        .bool_or(candidates.bool_and(over.bool_not()))
}
