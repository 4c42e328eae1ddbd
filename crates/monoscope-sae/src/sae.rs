//! The inference SAE: weights in the SAELens layout, encoding to feature activations (dense or
//! sparse) and decoding back.
//!
//! `f(x) = σ((x − b_dec·[apply_b_dec_to_input]) · W_enc + b_enc)`, `x̂ = f · W_dec + b_dec`,
//! with σ one of ReLU, TopK (ReLU of the k largest pre-activations) or JumpReLU
//! (`z·[z > θ]`, θ per feature). A BatchTopK SAE is a JumpReLU SAE with one shared θ.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::SaeError;
use crate::kernels::{View, matmul, positive, top_k};

/// How pre-activations become feature activations (the inference architectures SAELens names
/// `standard`, `topk` and `jumprelu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Architecture {
    /// `relu(z)`; SAELens calls it `standard`.
    Relu,
    /// `relu` of the `k` largest pre-activations of each row, zero elsewhere.
    TopK { k: usize },
    /// `z · [z > θ_i]` with the per-feature `threshold` (kept in f32).
    JumpRelu,
}

impl Architecture {
    /// The name SAELens writes in `cfg.json`'s `architecture`.
    pub fn saelens_name(&self) -> &'static str {
        match self {
            Architecture::Relu => "standard",
            Architecture::TopK { .. } => "topk",
            Architecture::JumpRelu => "jumprelu",
        }
    }
}

/// What the SAE was trained on, as SAELens's `cfg.json` `metadata` records it. Unknown keys
/// are kept in `extra` so that a loaded directory saves back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SaeMetadata {
    #[serde(default)]
    pub model_name: Option<String>,
    #[serde(default)]
    pub hook_name: Option<String>,
    #[serde(default)]
    pub hook_head_index: Option<u64>,
    #[serde(default)]
    pub context_size: Option<u64>,
    #[serde(default)]
    pub prepend_bos: Option<bool>,
    #[serde(default)]
    pub dataset_path: Option<String>,
    // Absent, not null, when unknown: as SAELens writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seqpos_slice: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_from_pretrained_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    /// The training architecture (`standard`, `topk`, `batchtopk`, `jumprelu`); differs from
    /// the inference architecture for BatchTopK, which is saved as JumpReLU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_architecture_details: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A sparse autoencoder ready for inference. Weights are f32, row-major, in SAELens's shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Sae {
    pub d_in: usize,
    pub d_sae: usize,
    pub architecture: Architecture,
    /// `[d_in, d_sae]`
    pub w_enc: Vec<f32>,
    /// `[d_sae]`
    pub b_enc: Vec<f32>,
    /// `[d_sae, d_in]`: row i is feature i's direction.
    pub w_dec: Vec<f32>,
    /// `[d_in]`
    pub b_dec: Vec<f32>,
    /// `[d_sae]`, JumpReLU only.
    pub threshold: Option<Vec<f32>>,
    /// Subtract `b_dec` from the input before encoding (SAELens default; sparsify does too).
    pub apply_b_dec_to_input: bool,
    pub metadata: SaeMetadata,
    /// Other top-level `cfg.json` keys (e.g. `reshape_activations`), kept for round trips.
    pub extra_cfg: serde_json::Map<String, serde_json::Value>,
}

/// Feature activations of a batch in compressed-row form: row r's active features are
/// `indices[row_ptr[r]..row_ptr[r+1]]` (ascending) with `values` alongside.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseCodes {
    pub d_sae: usize,
    pub row_ptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseCodes {
    pub fn n_rows(&self) -> usize {
        self.row_ptr.len().saturating_sub(1)
    }

    /// Row r as `(indices, values)`.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.row_ptr[r], self.row_ptr[r + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    /// The dense `[n_rows, d_sae]` matrix.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.n_rows() * self.d_sae];
        for r in 0..self.n_rows() {
            let (idx, val) = self.row(r);
            for (&i, &v) in idx.iter().zip(val) {
                out[r * self.d_sae + i as usize] = v;
            }
        }
        out
    }
}

/// Rows per encoder block: bounds the `[rows, d_sae]` pre-activation buffer (~32 MiB at
/// d_sae = 16384) while keeping the product large enough for `gemm` to run at full rate.
pub(crate) const ENCODE_BLOCK_ROWS: usize = 512;

impl Sae {
    /// Checks that every tensor has the length its shape requires.
    pub fn validate(&self) -> Result<(), SaeError> {
        let (d, s) = (self.d_in, self.d_sae);
        let check = |key: &str, len: usize, want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(SaeError::config(
                    key,
                    len,
                    format!("expected {want} values"),
                ))
            }
        };
        check("W_enc", self.w_enc.len(), d * s)?;
        check("b_enc", self.b_enc.len(), s)?;
        check("W_dec", self.w_dec.len(), s * d)?;
        check("b_dec", self.b_dec.len(), d)?;
        match (&self.architecture, &self.threshold) {
            (Architecture::JumpRelu, Some(t)) => check("threshold", t.len(), s)?,
            (Architecture::JumpRelu, None) => {
                return Err(SaeError::config(
                    "threshold",
                    "absent",
                    "JumpReLU needs one",
                ));
            }
            (Architecture::TopK { k }, _) if *k == 0 || *k > s => {
                return Err(SaeError::config("k", k, format!("must be in 1..={s}")));
            }
            _ => {}
        }
        Ok(())
    }

    fn n_rows(&self, x: &[f32]) -> Result<usize, SaeError> {
        if self.d_in == 0 || !x.len().is_multiple_of(self.d_in) {
            return Err(SaeError::RowWidth {
                len: x.len(),
                d_in: self.d_in,
            });
        }
        Ok(x.len() / self.d_in)
    }

    /// Pre-activations `[rows, d_sae]` of a block of rows, without `b_enc`: the selection adds
    /// it as it scans, which saves writing the bias into every row first.
    fn unbiased_pre_activations(&self, x: &[f32], rows: usize, out: &mut Vec<f32>) {
        let (d, s) = (self.d_in, self.d_sae);
        let centred;
        let input = if self.apply_b_dec_to_input {
            centred = x
                .chunks(d)
                .flat_map(|r| r.iter().zip(&self.b_dec).map(|(a, b)| a - b))
                .collect::<Vec<f32>>();
            &centred[..]
        } else {
            x
        };
        out.resize(rows * s, 0.0);
        matmul(
            out,
            View::rows(input, rows, d),
            View::rows(&self.w_enc, d, s),
            false,
        );
    }

    /// Feature activations of `x` (`[n, d_in]`, row-major) in sparse form.
    pub fn encode_sparse(&self, x: &[f32]) -> Result<SparseCodes, SaeError> {
        let n = self.n_rows(x)?;
        let mut codes = SparseCodes {
            d_sae: self.d_sae,
            row_ptr: vec![0],
            ..Default::default()
        };
        let mut pre = Vec::new();
        for (b, block) in x.chunks(ENCODE_BLOCK_ROWS * self.d_in).enumerate() {
            let rows = block.len() / self.d_in;
            self.unbiased_pre_activations(block, rows, &mut pre);
            let per_row: Vec<Vec<(u32, f32)>> = pre
                .par_chunks(self.d_sae)
                .map(|z| self.activate_row(z))
                .collect();
            for row in per_row {
                for (i, v) in row {
                    codes.indices.push(i);
                    codes.values.push(v);
                }
                codes.row_ptr.push(codes.indices.len());
            }
            debug_assert_eq!(codes.n_rows(), (b * ENCODE_BLOCK_ROWS + rows).min(n));
        }
        Ok(codes)
    }

    /// Non-zero activations of one row of pre-activations (`b_enc` not yet added).
    fn activate_row(&self, z: &[f32]) -> Vec<(u32, f32)> {
        let b = &self.b_enc;
        let mut out = Vec::new();
        match self.architecture {
            Architecture::Relu => positive(z, b, &mut out),
            Architecture::TopK { k } => {
                top_k(z, b, k, None, &mut out);
                out.retain(|e| e.1 > 0.0);
            }
            Architecture::JumpRelu => {
                let t = self.threshold.as_deref().unwrap_or_default();
                // SAELens: relu(z) · [z > relu(θ)].
                positive(z, b, &mut out);
                out.retain(|&(i, v)| v > t[i as usize].max(0.0));
            }
        }
        out
    }

    /// Sets one JumpReLU threshold for every feature so that the rows `x` get a mean L0 of
    /// `l0`: BatchTopK's inference threshold, measured with the final weights instead of the
    /// moving average of training, which lags behind weights that are still moving (and
    /// belongs to the point the gradients were taken at, not to the schedule-free average
    /// that is exported). Each row contributes its `4·l0 + 16` largest activations, so the
    /// threshold is exact unless a row has more than that many above it.
    pub fn calibrate_threshold(&mut self, x: &[f32], l0: f64) -> Result<f32, SaeError> {
        let n = self.n_rows(x)?;
        let per_row = ((4.0 * l0).ceil() as usize + 16).min(self.d_sae);
        let budget = ((l0 * n as f64).round() as usize).max(1);
        let mut candidates = Vec::new();
        let mut pre = Vec::new();
        for block in x.chunks(ENCODE_BLOCK_ROWS * self.d_in) {
            let rows = block.len() / self.d_in;
            self.unbiased_pre_activations(block, rows, &mut pre);
            let tops: Vec<Vec<(u32, f32)>> = pre
                .par_chunks(self.d_sae)
                .map(|z| {
                    let mut out = Vec::new();
                    top_k(z, &self.b_enc, per_row, None, &mut out);
                    out.retain(|e| e.1 > 0.0);
                    out
                })
                .collect();
            candidates.extend(tops.into_iter().flatten().map(|e| e.1));
        }
        let threshold = if candidates.len() <= budget {
            0.0
        } else {
            // Strictly above the threshold fires: take the value just past the budget.
            let (_, t, _) = candidates.select_nth_unstable_by(budget, |a, b| b.total_cmp(a));
            *t
        };
        self.architecture = Architecture::JumpRelu;
        self.threshold = Some(vec![threshold; self.d_sae]);
        Ok(threshold)
    }

    /// Dense feature activations `[n, d_sae]`.
    pub fn encode(&self, x: &[f32]) -> Result<Vec<f32>, SaeError> {
        Ok(self.encode_sparse(x)?.to_dense())
    }

    /// Reconstruction `[n, d_in]` from sparse codes: only active features are touched.
    pub fn decode_sparse(&self, codes: &SparseCodes) -> Vec<f32> {
        let d = self.d_in;
        let mut out = vec![0.0; codes.n_rows() * d];
        out.par_chunks_mut(d).enumerate().for_each(|(r, y)| {
            y.copy_from_slice(&self.b_dec);
            let (idx, val) = codes.row(r);
            for (&i, &v) in idx.iter().zip(val) {
                let w = &self.w_dec[i as usize * d..(i as usize + 1) * d];
                crate::kernels::axpy(y, v, w);
            }
        });
        out
    }

    /// Reconstruction `[n, d_in]` from dense activations `[n, d_sae]`.
    pub fn decode(&self, f: &[f32]) -> Result<Vec<f32>, SaeError> {
        if self.d_sae == 0 || !f.len().is_multiple_of(self.d_sae) {
            return Err(SaeError::RowWidth {
                len: f.len(),
                d_in: self.d_sae,
            });
        }
        let n = f.len() / self.d_sae;
        let mut out = Vec::with_capacity(n * self.d_in);
        for _ in 0..n {
            out.extend_from_slice(&self.b_dec);
        }
        matmul(
            &mut out,
            View::rows(f, n, self.d_sae),
            View::rows(&self.w_dec, self.d_sae, self.d_in),
            true,
        );
        Ok(out)
    }

    /// `decode(encode(x))`, through the sparse path.
    pub fn reconstruct(&self, x: &[f32]) -> Result<Vec<f32>, SaeError> {
        Ok(self.decode_sparse(&self.encode_sparse(x)?))
    }

    /// Folds an input scale `s` into the weights: the SAE trained on `s·x` becomes one that
    /// takes raw `x` and returns reconstructions of raw `x`. Thresholds and `b_enc` act on
    /// pre-activations, which do not change, so they stay as they are.
    pub fn fold_input_scale(&mut self, s: f32) {
        self.w_enc.iter_mut().for_each(|w| *w *= s);
        self.w_dec.iter_mut().for_each(|w| *w /= s);
        self.b_dec.iter_mut().for_each(|b| *b /= s);
    }

    /// Rescales each feature so that its decoder row has unit norm, compensating in the
    /// encoder (and threshold) so that reconstructions are unchanged for ReLU and JumpReLU,
    /// and for TopK trained with `rescale_acts_by_decoder_norm` (whose selection ranks
    /// `z_i·‖W_dec,i‖`, exactly the folded pre-activation).
    pub fn fold_decoder_norm(&mut self) {
        let (d, s) = (self.d_in, self.d_sae);
        for i in 0..s {
            let row = &mut self.w_dec[i * d..(i + 1) * d];
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-8);
            row.iter_mut().for_each(|v| *v /= norm);
            for r in 0..d {
                self.w_enc[r * s + i] *= norm;
            }
            self.b_enc[i] *= norm;
            if let Some(t) = &mut self.threshold {
                t[i] *= norm;
            }
        }
    }

    /// Norm of each decoder row.
    pub fn decoder_norms(&self) -> Vec<f32> {
        self.w_dec
            .chunks(self.d_in)
            .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
            .collect()
    }
}
