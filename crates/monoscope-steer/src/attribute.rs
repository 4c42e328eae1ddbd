//! Features as computational intermediates (`monoscope attribute`): which SAE features a
//! target's log-probability rests on, by a real backward pass, checked against real ablations.
//!
//! The SAE sits at its hook with its error term kept, `x = Σᵢ aᵢ·W_dec,i + b_dec + ε`, so the
//! model computes exactly what it computes without it and `∂ log p / ∂aᵢ = W_dec,i · g` with
//! `g = ∂ log p / ∂x`. One backward pass gives `g` at every position; a feature's attribution at
//! a position is `aᵢ · (W_dec,i · g)`, the first-order change of `log p` when the feature goes
//! from its value to 0 — with the opposite sign: ablating it is predicted to move `log p` by
//! minus the attribution. The strongest entries are then ablated for real (the feature's
//! contribution removed at that position, everything else kept) to show where the linear
//! prediction holds.
//!
//! The gradient comes from burn's autodiff: the activation at the hook becomes a leaf that
//! requires a gradient, and the rest of the forward pass runs on burn's ops (the model's
//! weights are constants). The CPU host kernels are skipped for tracked tensors, and the int8
//! matmul path, which runs on host buffers, is refused.

use std::sync::{Arc, Mutex};

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use monoscope_lm::{
    ForwardOptions, HookContext, HookName, Interventions, MatmulKind, Model, TokenBatch,
};
use monoscope_sae::Sae;

use crate::SteerError;
use crate::features::FeatureTable;

pub use monoscope_artifacts::steer::{Attribution, AttributionEntry};

/// How many entries an attribution keeps and how many of them it ablates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributionOptions {
    /// (feature, position) entries kept, strongest |attribution| first.
    pub top: usize,
    /// Of those, how many are ablated for real (one forward pass each).
    pub ablate: usize,
    /// Features at earlier positions are not attributed. The first position is the attention
    /// sink: its activation is far larger than any the SAE saw in training (capture skips it),
    /// so its codes mean nothing, yet their attributions would top the list.
    pub first_position: usize,
}

impl Default for AttributionOptions {
    fn default() -> Self {
        AttributionOptions {
            top: 20,
            ablate: 10,
            first_position: 1,
        }
    }
}

/// One prompt and target as token ids, with their text.
#[derive(Debug, Clone)]
pub struct AttributionInput<'a> {
    pub prompt: &'a str,
    pub target: &'a str,
    /// The prompt's tokens (BOS first when the model has one).
    pub prompt_ids: Vec<u32>,
    /// The target's tokens, which follow the prompt.
    pub target_ids: Vec<u32>,
}

/// The activation at the hook and the gradient of the target's log-probability with respect
/// to it, both `[seq, d_in]` row-major, and that log-probability.
#[derive(Debug, Clone)]
pub struct HookGradient {
    pub activation: Vec<f32>,
    pub gradient: Vec<f32>,
    pub target_logprob: f64,
}

/// Replaces an activation by a tracked leaf and keeps a handle on it for the gradient.
#[derive(Clone, Default)]
struct Leaf(Arc<Mutex<Option<Tensor<3>>>>);

impl Leaf {
    fn intervention(&self) -> impl Fn(&HookName, Tensor<3>, &HookContext) -> Tensor<3> + use<> {
        let slot = self.0.clone();
        move |_: &HookName, x: Tensor<3>, _: &HookContext| {
            let leaf = x.detach().autodiff().require_grad();
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(leaf.clone());
            leaf
        }
    }

    fn take(&self) -> Option<Tensor<3>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// `log p(target | prompt)` from logits `[1, seq, vocab]` of the concatenated ids.
fn target_logprob(logits: Tensor<3>, target_start: usize, target_ids: &[u32]) -> Tensor<1> {
    let n = target_ids.len();
    let logp = log_softmax(logits.narrow(1, target_start - 1, n), 2);
    let ids: Vec<i32> = target_ids.iter().map(|&id| id as i32).collect();
    let index = Tensor::<3, Int>::from_data(TensorData::new(ids, [1, n, 1]), &logp.device());
    logp.gather(2, index).sum()
}

fn check_input(input: &AttributionInput<'_>) -> Result<(), SteerError> {
    if input.prompt_ids.is_empty() {
        return Err(SteerError::config(
            "prompt",
            format!("{:?}", input.prompt),
            "the prompt has no tokens: the first target token needs a position before it",
        ));
    }
    if input.target_ids.is_empty() {
        return Err(SteerError::config(
            "target",
            format!("{:?}", input.target),
            "the target has no tokens",
        ));
    }
    Ok(())
}

/// `log p(target | prompt)` as a tensor, from one forward pass of prompt and target with
/// `interventions` (tracked by autodiff when an intervention made the activation a leaf).
fn forward_logprob(
    model: &Model,
    input: &AttributionInput<'_>,
    interventions: Interventions,
) -> Result<Tensor<1>, SteerError> {
    check_input(input)?;
    let ids: Vec<u32> = input
        .prompt_ids
        .iter()
        .chain(&input.target_ids)
        .copied()
        .collect();
    let out = model.forward(
        &TokenBatch::single(&ids)?,
        &ForwardOptions::logits(interventions),
    )?;
    let logits = out.logits.ok_or_else(|| {
        SteerError::config("target", input.target, "the forward pass gave no logits")
    })?;
    Ok(target_logprob(
        logits,
        input.prompt_ids.len(),
        &input.target_ids,
    ))
}

/// The forward and backward pass: the hook's activation, the gradient of `log p(target)` at
/// it, and `log p(target)`, with `interventions` applied first at the hook (none for the plain
/// model).
pub fn hook_gradient(
    model: &Model,
    hook: HookName,
    input: &AttributionInput<'_>,
) -> Result<HookGradient, SteerError> {
    check_input(input)?;
    if model.matmul_kind() == MatmulKind::Int8 {
        return Err(SteerError::config(
            "matmul",
            "int8",
            "attribution needs a gradient, which the int8 kernels do not give: use `f32`",
        ));
    }
    let leaf = Leaf::default();
    let loss = forward_logprob(
        model,
        input,
        Interventions::new().with(hook, leaf.intervention()),
    )?;
    let leaf = leaf.take().ok_or_else(|| {
        SteerError::config(
            "hook",
            hook,
            "the forward pass never reached the SAE's hook",
        )
    })?;
    let gradients = loss.backward();
    let gradient = leaf.grad(&gradients).ok_or_else(|| {
        SteerError::config(
            "hook",
            hook,
            "the target's log-probability does not depend on this hook's activation",
        )
    })?;
    Ok(HookGradient {
        activation: monoscope_lm::to_host(leaf.inner(), "the hook's activation")?,
        gradient: monoscope_lm::to_host(gradient, "the gradient")?,
        target_logprob: f64::from(monoscope_lm::to_host(loss.inner(), "log p")?[0]),
    })
}

/// `log p(target | prompt)` with `interventions`, without a gradient.
pub fn logprob_with(
    model: &Model,
    input: &AttributionInput<'_>,
    interventions: Interventions,
) -> Result<f64, SteerError> {
    let loss = forward_logprob(model, input, interventions)?;
    Ok(f64::from(monoscope_lm::to_host(loss, "log p")?[0]))
}

/// Removes `activation · W_dec,feature` from the hook's activation at one position of a
/// plain forward pass (a generation's later steps, at other offsets, are left alone).
pub fn ablation_at(
    sae: Arc<Sae>,
    feature: u32,
    position: usize,
    activation: f32,
) -> impl Fn(&HookName, Tensor<3>, &HookContext) -> Tensor<3> + use<> {
    move |_: &HookName, x: Tensor<3>, ctx: &HookContext| {
        let [b, t, d] = x.dims();
        if ctx.offset != 0 || position >= t {
            return x;
        }
        let f = feature as usize;
        let mut delta = vec![0.0f32; b * t * d];
        for row in 0..b {
            let at = (row * t + position) * d;
            for (out, w) in delta[at..at + d]
                .iter_mut()
                .zip(&sae.w_dec[f * d..(f + 1) * d])
            {
                *out = -activation * w;
            }
        }
        x.clone() + Tensor::<3>::from_data(TensorData::new(delta, [b, t, d]), &x.device())
    }
}

/// Attribution of `input`'s target to every active feature of `sae` at every position, the
/// `options.top` strongest kept and the first `options.ablate` of them ablated.
pub fn attribute(
    model: &Model,
    sae: Arc<Sae>,
    hook: HookName,
    table: &FeatureTable,
    input: &AttributionInput<'_>,
    options: AttributionOptions,
) -> Result<Attribution, SteerError> {
    let HookGradient {
        activation,
        gradient,
        target_logprob,
    } = hook_gradient(model, hook, input)?;
    let d = sae.d_in;
    let codes = sae.encode_sparse(&activation)?;
    let reconstruction = sae.decode_sparse(&codes);
    let dot = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    };
    let mut entries = Vec::new();
    let mut error_attribution = Vec::with_capacity(codes.n_rows());
    for position in 0..codes.n_rows() {
        let g = &gradient[position * d..(position + 1) * d];
        let x = &activation[position * d..(position + 1) * d];
        let x_hat = &reconstruction[position * d..(position + 1) * d];
        let error: Vec<f32> = x.iter().zip(x_hat).map(|(x, r)| x - r).collect();
        error_attribution.push(dot(&error, g));
        if position < options.first_position {
            continue;
        }
        let (features, values) = codes.row(position);
        for (&feature, &value) in features.iter().zip(values) {
            let f = feature as usize;
            let direction = &sae.w_dec[f * d..(f + 1) * d];
            entries.push(AttributionEntry {
                feature,
                position,
                activation: value,
                attribution: f64::from(value) * dot(direction, g),
                ablation_effect: None,
                label: table.label(feature).map(str::to_owned),
            });
        }
    }
    entries.sort_by(|a, b| {
        b.attribution
            .abs()
            .total_cmp(&a.attribution.abs())
            .then(a.position.cmp(&b.position))
            .then(a.feature.cmp(&b.feature))
    });
    entries.truncate(options.top);

    let mut sign_agreements = 0;
    let ablated = options.ablate.min(entries.len());
    for entry in &mut entries[..ablated] {
        let ablation = ablation_at(sae.clone(), entry.feature, entry.position, entry.activation);
        let logprob = logprob_with(model, input, Interventions::new().with(hook, ablation))?;
        let effect = logprob - target_logprob;
        sign_agreements += usize::from(effect * entry.attribution < 0.0);
        entry.ablation_effect = Some(effect);
    }

    let tokenizer = model.tokenizer();
    let tokens = input
        .prompt_ids
        .iter()
        .chain(&input.target_ids)
        .map(|&id| tokenizer.decode(&[id]))
        .collect();
    Ok(Attribution {
        prompt: input.prompt.to_owned(),
        target: input.target.to_owned(),
        hook: hook.to_string(),
        tokens,
        target_start: input.prompt_ids.len(),
        target_logprob,
        error_attribution,
        entries,
        ablated,
        sign_agreements,
    })
}

/// The attribution as a table for people: the prompt's tokens, then one line per entry with
/// the attribution (the predicted ablation effect is its negative) beside the real one.
pub fn to_table(result: &Attribution) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let shown: Vec<String> = result
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{i}:{t:?}"))
        .collect();
    let _ = writeln!(
        out,
        "log p({:?} | {:?}) = {:.4} at {}",
        result.target, result.prompt, result.target_logprob, result.hook
    );
    let _ = writeln!(
        out,
        "tokens: {} (target from {})",
        shown.join(" "),
        result.target_start
    );
    let _ = writeln!(
        out,
        "{:>7}  {:>4}  {:<14}  {:>10}  {:>11}  {:>9}  {:>9}  label",
        "feature", "pos", "token", "activation", "attribution", "predicted", "ablation"
    );
    for e in &result.entries {
        let token = result.tokens.get(e.position).map_or("", String::as_str);
        let ablation = e
            .ablation_effect
            .map_or("—".to_string(), |v| format!("{v:+.4}"));
        let _ = writeln!(
            out,
            "{:>7}  {:>4}  {:<14}  {:>10.3}  {:>+11.4}  {:>+9.4}  {:>9}  {}",
            e.feature,
            e.position,
            format!("{token:?}"),
            e.activation,
            e.attribution,
            -e.attribution,
            ablation,
            e.label.as_deref().unwrap_or("")
        );
    }
    // The first position is the attention sink, whose error term dwarfs the rest.
    let largest = result
        .error_attribution
        .iter()
        .enumerate()
        .skip(1)
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()));
    let _ = writeln!(
        out,
        "ablation moved log p the predicted way for {} of {} ablated",
        result.sign_agreements, result.ablated
    );
    if let Some((position, value)) = largest {
        let _ = writeln!(
            out,
            "the SAE error term's largest attribution after the first position: {value:+.4} at position {position}"
        );
    }
    out
}
