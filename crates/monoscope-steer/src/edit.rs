//! Feature edits at the SAE's hook, as a [`monoscope_lm::Intervention`].
//!
//! With `f = encode(x)`, `x̂ = decode(f)` and the error `e = x − x̂`, clamping feature i to `c`
//! replaces `x̂` by the reconstruction with `f_i = c` and keeps `e` (Scaling Monosemanticity,
//! appendix). The decoder is linear, so that is `x' = x + (c − f_i(x))·W_dec,i`: `b_dec`
//! cancels, and several clamped features add their terms. Adding is `x' = x + α·W_dec,i`;
//! ablating is clamping to 0.
//!
//! Input normalisation: a saved SAE takes raw activations (the training scale `s` is folded
//! into `W_enc·s` and `W_dec/s`, see `monoscope_sae::Sae::fold_input_scale`), so `f_i(x)` and
//! `c` are in the SAE's units and `W_dec,i` already carries the `1/s` back to model units.
//! SAELens directories that still need a scale are refused when loaded.
//!
//! The first position is left alone by default: it is the attention sink (BOS, or the first
//! chat token), whose activations are huge outliers the SAE never saw (capture does not store
//! it), so an edit there measures the SAE's extrapolation rather than the feature.

use std::sync::Arc;

use burn::prelude::*;
use monoscope_lm::{HookContext, HookName, Intervention};
use monoscope_sae::Sae;

use crate::SteerError;

pub use monoscope_artifacts::steer::Mode;

/// One feature set to (clamp, ablate) or pushed by (add) a value in the SAE's units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureEdit {
    pub feature: u32,
    pub mode: Mode,
    /// Ignored for [`Mode::Ablate`].
    pub value: f32,
}

impl FeatureEdit {
    /// The coefficient of `W_dec,i` in the update, given the feature's current activation.
    fn coefficient(&self, current: f32) -> f32 {
        match self.mode {
            Mode::Clamp => self.value - current,
            Mode::Ablate => -current,
            Mode::Add => self.value,
        }
    }

    fn needs_activation(&self) -> bool {
        self.mode != Mode::Add
    }
}

/// Edits applied by one SAE at its hook: the intervention the steer stage installs.
#[derive(Debug, Clone)]
pub struct SaeSteering {
    sae: Arc<Sae>,
    edits: Vec<FeatureEdit>,
    first_position: usize,
}

impl SaeSteering {
    /// Checks that every feature exists, appears once, and has a finite value.
    pub fn new(sae: Arc<Sae>, edits: Vec<FeatureEdit>) -> Result<Self, SteerError> {
        for (n, edit) in edits.iter().enumerate() {
            if edit.feature as usize >= sae.d_sae {
                return Err(SteerError::config(
                    "feature",
                    edit.feature,
                    format!("the SAE has features 0..{}", sae.d_sae),
                ));
            }
            if !edit.value.is_finite() {
                return Err(SteerError::config(
                    "value",
                    edit.value,
                    format!("feature {}: must be finite", edit.feature),
                ));
            }
            if edits[..n].iter().any(|e| e.feature == edit.feature) {
                return Err(SteerError::config(
                    "feature",
                    edit.feature,
                    "appears twice in one intervention",
                ));
            }
        }
        Ok(Self {
            sae,
            edits,
            first_position: 1,
        })
    }

    /// Positions before `first` are left unchanged (default 1: all but the attention sink; 0
    /// steers every position, as the paper does).
    pub fn starting_at(mut self, first: usize) -> Self {
        self.first_position = first;
        self
    }

    pub fn edits(&self) -> &[FeatureEdit] {
        &self.edits
    }

    /// Applies the edits to `rows` (`[n, d_in]`, row-major) where `steer(row)` says so.
    pub fn steer_rows(
        &self,
        rows: &mut [f32],
        steer: impl Fn(usize) -> bool,
    ) -> Result<(), SteerError> {
        let d = self.sae.d_in;
        if d == 0 || !rows.len().is_multiple_of(d) {
            return Err(SteerError::config(
                "activation width",
                rows.len(),
                format!("not a whole number of rows of the SAE's d_in = {d}"),
            ));
        }
        let chosen: Vec<usize> = (0..rows.len() / d).filter(|&r| steer(r)).collect();
        if self.edits.is_empty() || chosen.is_empty() {
            return Ok(());
        }
        let codes = if self.edits.iter().any(FeatureEdit::needs_activation) {
            let picked: Vec<f32> = chosen
                .iter()
                .flat_map(|&r| rows[r * d..(r + 1) * d].iter().copied())
                .collect();
            Some(self.sae.encode_sparse(&picked)?)
        } else {
            None
        };
        for (k, &r) in chosen.iter().enumerate() {
            let row = &mut rows[r * d..(r + 1) * d];
            // Sum the update first, then add it once: an edit whose coefficient is 0 leaves
            // the row bit-identical.
            let mut delta = vec![0.0f32; d];
            for edit in &self.edits {
                let current = codes.as_ref().map_or(0.0, |c| {
                    let (idx, val) = c.row(k);
                    idx.iter()
                        .position(|&i| i == edit.feature)
                        .map_or(0.0, |p| val[p])
                });
                let coef = edit.coefficient(current);
                if coef != 0.0 {
                    let f = edit.feature as usize;
                    for (o, w) in delta.iter_mut().zip(&self.sae.w_dec[f * d..(f + 1) * d]) {
                        *o += coef * w;
                    }
                }
            }
            for (x, dx) in row.iter_mut().zip(&delta) {
                *x += dx;
            }
        }
        Ok(())
    }
}

impl Intervention for SaeSteering {
    fn apply(&self, _hook: &HookName, activation: Tensor<3>, ctx: &HookContext) -> Tensor<3> {
        if self.edits.is_empty() {
            return activation;
        }
        let [b, t, d] = activation.dims();
        let device = activation.device();
        let mut host = monoscope_lm::to_host(activation, "steered activation")
            .expect("an f32 activation is always readable on the host");
        // A column's sequence position: the cached columns (the offset) plus the real tokens
        // before it in this chunk. Exact for unpadded caches, which is what generation builds.
        let positions: Vec<Option<usize>> = ctx
            .valid
            .iter()
            .flat_map(|flags| {
                let mut real = 0;
                flags.iter().map(move |&valid| {
                    let pos = valid.then_some(ctx.offset + real);
                    real += usize::from(valid);
                    pos
                })
            })
            .collect();
        self.steer_rows(&mut host, |r| {
            positions
                .get(r)
                .copied()
                .flatten()
                .is_some_and(|p| p >= self.first_position)
        })
        .expect("the steer stage checks the SAE's d_in against the model before steering");
        Tensor::from_data(TensorData::new(host, [b, t, d]), &device)
    }
}
