//! Hook points in TransformerLens naming, and the interventions that can replace an activation.
//!
//! | hook | what it holds (`[batch, seq, width]`) | width |
//! |---|---|---|
//! | `blocks.{L}.hook_resid_pre` | the residual stream entering block `L` | d_model |
//! | `blocks.{L}.attn.hook_q` | the query projection (with bias), before any q norm and RoPE; heads flattened | heads × head_dim |
//! | `blocks.{L}.attn.hook_k`, `attn.hook_v` | the key and value projections, likewise | kv_heads × head_dim |
//! | `blocks.{L}.attn.hook_z` | each head's attention-weighted values, the output projection's input | heads × head_dim |
//! | `blocks.{L}.hook_attn_out` | what attention adds to the residual: the output projection (and bias), after the post-attention norm where the family has one | d_model |
//! | `blocks.{L}.hook_resid_mid` | the residual between attention and MLP (not in parallel-residual models) | d_model |
//! | `blocks.{L}.mlp.hook_pre` | the MLP's first pre-activation: the gate projection (gated MLPs) or the up projection | d_mlp |
//! | `blocks.{L}.mlp.hook_post` | the MLP's hidden activation, the down projection's input | d_mlp |
//! | `blocks.{L}.hook_mlp_out` | what the MLP adds to the residual, after the post-MLP norm where the family has one | d_model |
//! | `blocks.{L}.hook_resid_post` | the residual stream leaving block `L` (equal to `hook_resid_pre` of `L+1`) | d_model |
//! | `ln_final.hook_normalized` | the final norm's output *before* its elementwise weight and bias, as in TransformerLens | d_model |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use burn::prelude::*;

use crate::LmError;

/// Where in a block (or after the blocks) a hook sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    ResidPre(usize),
    Q(usize),
    K(usize),
    V(usize),
    Z(usize),
    AttnOut(usize),
    ResidMid(usize),
    MlpPre(usize),
    MlpPost(usize),
    MlpOut(usize),
    ResidPost(usize),
    FinalNormalized,
}

impl HookPoint {
    /// (layer, place within the block): the forward order.
    fn order(self) -> (usize, u8) {
        match self {
            Self::ResidPre(l) => (l, 0),
            Self::Q(l) => (l, 1),
            Self::K(l) => (l, 2),
            Self::V(l) => (l, 3),
            Self::Z(l) => (l, 4),
            Self::AttnOut(l) => (l, 5),
            Self::ResidMid(l) => (l, 6),
            Self::MlpPre(l) => (l, 7),
            Self::MlpPost(l) => (l, 8),
            Self::MlpOut(l) => (l, 9),
            Self::ResidPost(l) => (l, 10),
            Self::FinalNormalized => (usize::MAX, 0),
        }
    }
}

impl PartialOrd for HookPoint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HookPoint {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

/// A block hook's point at a given layer.
type AtLayer = fn(usize) -> HookPoint;

/// The hooks after `blocks.{L}.` and what each is.
const BLOCK_HOOKS: [(&str, AtLayer); 11] = [
    ("hook_resid_pre", HookPoint::ResidPre),
    ("attn.hook_q", HookPoint::Q),
    ("attn.hook_k", HookPoint::K),
    ("attn.hook_v", HookPoint::V),
    ("attn.hook_z", HookPoint::Z),
    ("hook_attn_out", HookPoint::AttnOut),
    ("hook_resid_mid", HookPoint::ResidMid),
    ("mlp.hook_pre", HookPoint::MlpPre),
    ("mlp.hook_post", HookPoint::MlpPost),
    ("hook_mlp_out", HookPoint::MlpOut),
    ("hook_resid_post", HookPoint::ResidPost),
];

/// A parsed hook name such as `blocks.15.hook_resid_post`.
///
/// [`HookName::parse`] checks the syntax only; [`crate::Model::hook`] also checks the layer
/// (and that the model has the hook) against the model. Ordering follows the forward pass
/// (layer, then position in the block).
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
        match self.0.order() {
            (usize::MAX, _) => None,
            (l, _) => Some(l),
        }
    }

    /// Whether the hook sits inside attention or the MLP (not on the residual stream or a
    /// sublayer's output): only the tensor path of the forward pass computes these.
    pub fn is_inner(&self) -> bool {
        matches!(
            self.0,
            HookPoint::Q(_)
                | HookPoint::K(_)
                | HookPoint::V(_)
                | HookPoint::Z(_)
                | HookPoint::MlpPre(_)
                | HookPoint::MlpPost(_)
        )
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
        let known = || {
            BLOCK_HOOKS
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rest = name.strip_prefix("blocks.").ok_or_else(|| {
            invalid(format!(
                "expected `blocks.{{L}}.{{{}}}` or `{}`",
                known(),
                Self::FINAL_NORMALIZED
            ))
        })?;
        let (layer, hook) = rest
            .split_once('.')
            .ok_or_else(|| invalid("missing `.hook_...` after the layer number".into()))?;
        let layer: usize = layer
            .parse()
            .map_err(|_| invalid(format!("`{layer}` is not a layer number")))?;
        let point = BLOCK_HOOKS
            .iter()
            .find(|(s, _)| *s == hook)
            .map(|(_, point)| point(layer))
            .ok_or_else(|| invalid(format!("unknown hook `{hook}` (known: {})", known())))?;
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
            HookPoint::FinalNormalized => n_layers,
            _ => self.layer().map_or(n_layers, |l| l + 1),
        }
    }

    /// Every hook of a model with `n_layers` blocks, in forward order; `resid_mid`: whether
    /// the blocks have a residual between attention and MLP (not parallel-residual ones).
    pub fn all(n_layers: usize, resid_mid: bool) -> Vec<Self> {
        let mut names = Vec::with_capacity(BLOCK_HOOKS.len() * n_layers + 1);
        for l in 0..n_layers {
            names.extend(
                BLOCK_HOOKS
                    .iter()
                    .map(|(_, point)| Self(point(l)))
                    .filter(|h| resid_mid || !matches!(h.0, HookPoint::ResidMid(_))),
            );
        }
        names.push(Self::final_normalized());
        names
    }
}

impl fmt::Display for HookName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == HookPoint::FinalNormalized {
            return f.write_str(Self::FINAL_NORMALIZED);
        }
        let (layer, place) = self.0.order();
        write!(f, "blocks.{layer}.{}", BLOCK_HOOKS[usize::from(place)].0)
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

/// A function that replaces the activation at a hook: given `[batch, seq, width]`, it returns a
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
    /// Whether `hook` records or is changed in this pass.
    pub fn active(&self, hook: &HookName) -> bool {
        self.record.contains(hook) || self.interventions.has(hook)
    }

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
