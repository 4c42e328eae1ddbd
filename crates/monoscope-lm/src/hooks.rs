//! Hook points in TransformerLens naming, and the interventions that can replace an activation.
//!
//! | hook | what it holds (`[batch, seq, d_model]`) |
//! |---|---|
//! | `blocks.{L}.hook_resid_pre` | the residual stream entering block `L` |
//! | `blocks.{L}.hook_attn_out` | the attention output of block `L` (after the output projection and its bias), before it is added to the residual |
//! | `blocks.{L}.hook_mlp_out` | the MLP output of block `L`, before it is added to the residual |
//! | `blocks.{L}.hook_resid_post` | the residual stream leaving block `L` (equal to `hook_resid_pre` of `L+1`) |
//! | `ln_final.hook_normalized` | the final norm's output *before* its elementwise weight and bias, as in TransformerLens |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use burn::prelude::*;

use crate::LmError;

/// Where in a block (or after the blocks) a hook sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    ResidPre(usize),
    AttnOut(usize),
    MlpOut(usize),
    ResidPost(usize),
    FinalNormalized,
}

/// A parsed hook name such as `blocks.15.hook_resid_post`.
///
/// [`HookName::parse`] checks the syntax only; [`crate::Model::hook`] also checks the layer
/// against the model. Ordering follows the forward pass (layer, then position in the block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HookName(HookPoint);

impl HookName {
    pub const FINAL_NORMALIZED: &'static str = "ln_final.hook_normalized";

    pub fn new(point: HookPoint) -> Self {
        Self(point)
    }

    pub fn resid_pre(layer: usize) -> Self {
        Self(HookPoint::ResidPre(layer))
    }

    pub fn resid_post(layer: usize) -> Self {
        Self(HookPoint::ResidPost(layer))
    }

    pub fn attn_out(layer: usize) -> Self {
        Self(HookPoint::AttnOut(layer))
    }

    pub fn mlp_out(layer: usize) -> Self {
        Self(HookPoint::MlpOut(layer))
    }

    pub fn final_normalized() -> Self {
        Self(HookPoint::FinalNormalized)
    }

    pub fn point(&self) -> HookPoint {
        self.0
    }

    /// The block this hook belongs to, `None` for `ln_final.hook_normalized`.
    pub fn layer(&self) -> Option<usize> {
        match self.0 {
            HookPoint::ResidPre(l)
            | HookPoint::AttnOut(l)
            | HookPoint::MlpOut(l)
            | HookPoint::ResidPost(l) => Some(l),
            HookPoint::FinalNormalized => None,
        }
    }

    /// Parses the syntax; any layer number is accepted.
    pub fn parse(name: &str) -> Result<Self, LmError> {
        let invalid = |reason: String| LmError::InvalidHook {
            name: name.to_string(),
            reason,
        };
        if name == Self::FINAL_NORMALIZED {
            return Ok(Self::final_normalized());
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(|| {
            invalid(format!(
                "expected `blocks.{{L}}.hook_{{resid_pre|resid_post|attn_out|mlp_out}}` or `{}`",
                Self::FINAL_NORMALIZED
            ))
        })?;
        let (layer, hook) = rest
            .split_once('.')
            .ok_or_else(|| invalid("missing `.hook_...` after the layer number".into()))?;
        let layer: usize = layer
            .parse()
            .map_err(|_| invalid(format!("`{layer}` is not a layer number")))?;
        let point = match hook {
            "hook_resid_pre" => HookPoint::ResidPre(layer),
            "hook_resid_post" => HookPoint::ResidPost(layer),
            "hook_attn_out" => HookPoint::AttnOut(layer),
            "hook_mlp_out" => HookPoint::MlpOut(layer),
            other => {
                return Err(invalid(format!(
                    "unknown hook `{other}` (known: hook_resid_pre, hook_resid_post, hook_attn_out, hook_mlp_out)"
                )));
            }
        };
        Ok(Self(point))
    }

    /// Checks the layer against a model with `n_layers` blocks.
    pub fn validate(&self, n_layers: usize) -> Result<(), LmError> {
        match self.layer() {
            Some(layer) if layer >= n_layers => Err(LmError::HookLayerOutOfRange {
                name: self.to_string(),
                layer,
                n_layers,
            }),
            _ => Ok(()),
        }
    }

    /// How many blocks must run before this hook's activation exists.
    pub(crate) fn blocks_needed(&self, n_layers: usize) -> usize {
        match self.0 {
            HookPoint::ResidPre(l) => l,
            HookPoint::AttnOut(l) | HookPoint::MlpOut(l) | HookPoint::ResidPost(l) => l + 1,
            HookPoint::FinalNormalized => n_layers,
        }
    }

    /// Every hook of a model with `n_layers` blocks, in forward order.
    pub fn all(n_layers: usize) -> Vec<Self> {
        let mut names = Vec::with_capacity(4 * n_layers + 1);
        for l in 0..n_layers {
            names.extend([
                Self::resid_pre(l),
                Self::attn_out(l),
                Self::mlp_out(l),
                Self::resid_post(l),
            ]);
        }
        names.push(Self::final_normalized());
        names
    }
}

impl fmt::Display for HookName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            HookPoint::ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            HookPoint::AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            HookPoint::MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            HookPoint::ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            HookPoint::FinalNormalized => f.write_str(Self::FINAL_NORMALIZED),
        }
    }
}

impl FromStr for HookName {
    type Err = LmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Where the activation handed to an intervention sits in the sequence.
#[derive(Debug, Clone)]
pub struct HookContext {
    /// Sequence position of the activation's first column: 0 for a plain forward, the number of
    /// cached positions while generating (so `offset >= prompt_len` means "generated token").
    pub offset: usize,
    /// For each batch row, whether each column is a real token (`false` = padding).
    pub valid: Vec<Vec<bool>>,
}

/// A function that replaces the activation at a hook: given `[batch, seq, d_model]`, it returns a
/// tensor of the same shape. Used for steering and for splicing an SAE into the model.
pub trait Intervention: Send + Sync {
    fn apply(&self, hook: &HookName, activation: Tensor<3>, ctx: &HookContext) -> Tensor<3>;
}

impl<F> Intervention for F
where
    F: Fn(&HookName, Tensor<3>, &HookContext) -> Tensor<3> + Send + Sync,
{
    fn apply(&self, hook: &HookName, activation: Tensor<3>, ctx: &HookContext) -> Tensor<3> {
        self(hook, activation, ctx)
    }
}

/// Interventions to run during a forward pass or a generation, applied in insertion order when
/// several share a hook.
#[derive(Clone, Default)]
pub struct Interventions {
    entries: Vec<(HookName, Arc<dyn Intervention>)>,
}

impl Interventions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an intervention at `hook` (builder style).
    pub fn with(mut self, hook: HookName, f: impl Intervention + 'static) -> Self {
        self.push(hook, Arc::new(f));
        self
    }

    pub fn push(&mut self, hook: HookName, f: Arc<dyn Intervention>) {
        self.entries.push((hook, f));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn hooks(&self) -> impl Iterator<Item = &HookName> {
        self.entries.iter().map(|(h, _)| h)
    }

    pub(crate) fn has(&self, hook: &HookName) -> bool {
        self.entries.iter().any(|(h, _)| h == hook)
    }

    /// Runs every intervention registered at `hook`, checking that each keeps the shape.
    pub(crate) fn apply(
        &self,
        hook: &HookName,
        mut x: Tensor<3>,
        ctx: &HookContext,
    ) -> Result<Tensor<3>, LmError> {
        for (h, f) in &self.entries {
            if h != hook {
                continue;
            }
            let expected = x.dims();
            x = f.apply(hook, x, ctx);
            let actual = x.dims();
            if actual != expected {
                return Err(LmError::InterventionShape {
                    hook: hook.to_string(),
                    expected: expected.to_vec(),
                    actual: actual.to_vec(),
                });
            }
        }
        Ok(x)
    }
}

impl fmt::Debug for Interventions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(h, _)| h.to_string()))
            .finish()
    }
}

/// Applies interventions and records activations as the forward pass reaches each hook.
pub(crate) struct HookRunner<'a> {
    pub record: &'a BTreeSet<HookName>,
    pub interventions: &'a Interventions,
    pub ctx: HookContext,
    pub out: BTreeMap<HookName, Tensor<3>>,
}

impl HookRunner<'_> {
    pub fn at(&mut self, hook: HookName, x: Tensor<3>) -> Result<Tensor<3>, LmError> {
        let x = if self.interventions.has(&hook) {
            self.interventions.apply(&hook, x, &self.ctx)?
        } else {
            x
        };
        if self.record.contains(&hook) {
            self.out.insert(hook, x.clone());
        }
        Ok(x)
    }

    /// [`HookRunner::at`] for an activation held on the host, row-major `dims`: a tensor is
    /// built only when the hook records or changes it (and the host copy is then a new
    /// buffer, so that changing it leaves a recorded tensor as it was).
    pub fn at_host(
        &mut self,
        hook: HookName,
        x: Vec<f32>,
        dims: [usize; 3],
        device: &Device,
    ) -> Result<Vec<f32>, LmError> {
        if !self.interventions.has(&hook) && !self.record.contains(&hook) {
            return Ok(x);
        }
        let t = Tensor::from_data(TensorData::new(x, dims), device);
        Ok(crate::fused::host_vec(self.at(hook, t)?))
    }
}
