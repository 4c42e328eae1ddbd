//! [`Steerer`]: a model and an SAE at its hook, ready to find features on a text, choose
//! features, and build the interventions that steer them.

use std::collections::BTreeMap;
use std::sync::Arc;

use monoscope_formats::ChatMessage;
use monoscope_lm::{ForwardOptions, HookName, Interventions, Model, TokenBatch};
use monoscope_sae::Sae;
use serde::{Deserialize, Serialize};

use crate::SteerError;
use crate::attribute::{Attribution, AttributionInput, AttributionOptions};
use crate::contrast::ContrastHit;
use crate::edit::{FeatureEdit, SaeSteering};
use crate::features::{FeatureSpec, FeatureTable};

pub use monoscope_artifacts::steer::SelectedFeature;

/// A feature that fires on a text: its peak over the text's positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureHit {
    pub feature: u32,
    pub activation: f32,
    /// The token at the peak and its position in the tokenised text (BOS at 0).
    pub token: String,
    pub position: usize,
    /// Positions (after the first) where the feature fires.
    pub positions_active: usize,
    pub max_activation: Option<f32>,
    pub frequency: Option<f64>,
    pub label: Option<String>,
    /// Whether `max_activation` rests on enough firings ([`MIN_FIRINGS_FOR_MAX`]) to rank by.
    #[serde(default)]
    pub max_is_reliable: bool,
}

/// Held-out firings below which a feature's recorded maximum is too noisy to divide by: a
/// feature seen a handful of times has a maximum far below what it reaches, so any text that
/// touches it looks like a record peak (the quickstart's `text:Photosynthesis in green plants`
/// picked such a feature, seen on 3 of 10,789 tokens, over a "plant / plants / botanist" one).
pub const MIN_FIRINGS_FOR_MAX: u64 = 10;

impl FeatureHit {
    /// What [`Steerer::top_features`] ranks by, after putting the features with a reliable
    /// maximum first: the peak as a multiple of the training maximum when known, else the raw
    /// peak.
    pub fn strength(&self) -> f32 {
        match self.max_activation {
            Some(max) if max > 0.0 => self.activation / max,
            _ => self.activation,
        }
    }
}

/// Orders hits as [`Steerer::top_features`] returns them: a reliable maximum first, then by
/// [`FeatureHit::strength`], then by id.
fn rank(hits: &mut [FeatureHit]) {
    hits.sort_by(|a, b| {
        b.max_is_reliable
            .cmp(&a.max_is_reliable)
            .then(b.strength().total_cmp(&a.strength()))
            .then(a.feature.cmp(&b.feature))
    });
}

/// A model with an SAE at one of its hooks.
#[derive(Debug)]
pub struct Steerer<'m> {
    model: &'m Model,
    sae: Arc<Sae>,
    hook: HookName,
    table: FeatureTable,
    first_position: usize,
}

impl<'m> Steerer<'m> {
    /// `hook` defaults to the SAE's `metadata.hook_name`; its width must be the SAE's `d_in`.
    pub fn new(
        model: &'m Model,
        sae: Sae,
        hook: Option<&str>,
        table: FeatureTable,
    ) -> Result<Self, SteerError> {
        let name = match hook.or(sae.metadata.hook_name.as_deref()) {
            Some(name) => name.to_string(),
            None => {
                return Err(SteerError::config(
                    "hook",
                    "unset",
                    "the SAE's cfg.json names no metadata.hook_name: set `hook`",
                ));
            }
        };
        let hook = model.hook(&name)?;
        if sae.d_in != model.hook_width(&hook) {
            return Err(SteerError::config(
                "hook",
                &name,
                format!(
                    "the SAE takes d_in = {} but {name} of the model {} is {} wide",
                    sae.d_in,
                    model.name(),
                    model.hook_width(&hook)
                ),
            ));
        }
        Ok(Self {
            model,
            sae: Arc::new(sae),
            hook,
            table,
            first_position: 1,
        })
    }

    /// Steer the first position too (the paper's "every position"); off by default, see
    /// [`crate::edit`].
    pub fn steer_first_position(mut self, yes: bool) -> Self {
        self.first_position = usize::from(!yes);
        self
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    pub fn sae(&self) -> &Sae {
        &self.sae
    }

    pub fn hook(&self) -> HookName {
        self.hook
    }

    pub fn table(&self) -> &FeatureTable {
        &self.table
    }

    /// Token ids of a text as capture saw its windows: BOS (when the model has one), then the
    /// text.
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>, SteerError> {
        let tokenizer = self.model.tokenizer();
        Ok(match tokenizer.bos_id() {
            Some(bos) => std::iter::once(bos)
                .chain(tokenizer.encode(text, false)?)
                .collect(),
            None => tokenizer.encode(text, tokenizer.adds_bos_by_default())?,
        })
    }

    /// Token ids of a prompt: a user message in the model's chat template (ending with the
    /// opening of the assistant's turn), or the plain text after BOS.
    pub fn prompt_ids(&self, prompt: &str, chat: bool) -> Result<Vec<u32>, SteerError> {
        if !chat {
            return self.text_ids(prompt);
        }
        let tokenizer = self.model.tokenizer();
        Ok(tokenizer.encode_chat(&[ChatMessage::new("user", prompt)], true)?)
    }

    /// The SAE's feature activations at every position of `ids` (row 0 is the first token).
    pub fn encode_ids(&self, ids: &[u32]) -> Result<monoscope_sae::SparseCodes, SteerError> {
        let out = self.model.forward(
            &TokenBatch::single(ids)?,
            &ForwardOptions::capture(vec![self.hook]),
        )?;
        Ok(self.sae.encode_sparse(&out.activation_host(&self.hook)?)?)
    }

    /// The `n` features that fire most on `text`, strongest first.
    ///
    /// Strength is the peak activation over the text as a multiple of the feature's maximum
    /// activation in training when `eval.json` gives it (else the raw peak): raw values favour
    /// features with a large scale, whatever the text. BOS and the first token after it are
    /// skipped (unless the text is one token): position features dominate there, the same
    /// whatever the token (on the quickstart SAE the top features at position 1 are identical
    /// for "Paris…" and "Photosynthesis…").
    pub fn top_features(&self, text: &str, n: usize) -> Result<Vec<FeatureHit>, SteerError> {
        let ids = self.text_ids(text)?;
        let mut hits: Vec<FeatureHit> = self
            .peaks(&ids)?
            .into_iter()
            .map(|(feature, (activation, position, active))| FeatureHit {
                feature,
                activation,
                token: self.model.tokenizer().decode(&ids[position..=position]),
                position,
                positions_active: active,
                max_activation: self.table.max_activation(feature),
                frequency: self.table.frequency(feature),
                label: self.table.label(feature).map(str::to_owned),
                max_is_reliable: self
                    .table
                    .firings(feature)
                    .is_some_and(|n| n >= MIN_FIRINGS_FOR_MAX),
            })
            .collect();
        rank(&mut hits);
        hits.truncate(n);
        Ok(hits)
    }

    /// Each feature's peak activation on `text`, over the positions [`Steerer::top_features`]
    /// searches.
    pub fn text_peaks(&self, text: &str) -> Result<BTreeMap<u32, f32>, SteerError> {
        let peaks = self.peaks(&self.text_ids(text)?)?;
        Ok(peaks
            .into_iter()
            .map(|(f, (peak, _, _))| (f, peak))
            .collect())
    }

    /// Feature → (peak, its position, positions where it fires) over the positions of `ids`
    /// that are searched: BOS and the first token after it are skipped unless the text is one
    /// token.
    fn peaks(&self, ids: &[u32]) -> Result<BTreeMap<u32, (f32, usize, usize)>, SteerError> {
        let codes = self.encode_ids(ids)?;
        let first = if codes.n_rows() > 2 { 2 } else { 1 };
        let mut peaks = BTreeMap::<u32, (f32, usize, usize)>::new();
        for pos in first..codes.n_rows() {
            let (idx, val) = codes.row(pos);
            for (&f, &v) in idx.iter().zip(val) {
                let e = peaks.entry(f).or_insert((v, pos, 0));
                if v > e.0 {
                    (e.0, e.1) = (v, pos);
                }
                e.2 += 1;
            }
        }
        Ok(peaks)
    }

    /// The features that fire more on `positive` texts than on `negative` ones, with their
    /// labels, ranked as [`crate::contrast::contrast`] ranks them; `n` at most.
    pub fn contrast(
        &self,
        positive: &[String],
        negative: &[String],
        n: usize,
    ) -> Result<Vec<ContrastHit>, SteerError> {
        let peaks = |texts: &[String]| -> Result<Vec<_>, SteerError> {
            texts.iter().map(|t| self.text_peaks(t)).collect()
        };
        let reliable_max = |f: u32| {
            let reliable = self
                .table
                .firings(f)
                .is_some_and(|n| n >= MIN_FIRINGS_FOR_MAX);
            self.table.max_activation(f).filter(|_| reliable)
        };
        let mut hits =
            crate::contrast::contrast(&peaks(positive)?, &peaks(negative)?, reliable_max);
        hits.truncate(n);
        for hit in &mut hits {
            hit.label = self.table.label(hit.feature).map(str::to_owned);
        }
        Ok(hits)
    }

    /// Which features `target`'s log-probability after `prompt` rests on: see
    /// [`crate::attribute`]. The model must run the `f32` arithmetic. Positions before the
    /// first steered one are not attributed.
    pub fn attribute(
        &self,
        prompt: &str,
        target: &str,
        chat: bool,
        options: AttributionOptions,
    ) -> Result<Attribution, SteerError> {
        let options = AttributionOptions {
            first_position: self.first_position,
            ..options
        };
        let input = AttributionInput {
            prompt,
            target,
            prompt_ids: self.prompt_ids(prompt, chat)?,
            target_ids: self.model.tokenizer().encode(target, false)?,
        };
        crate::attribute::attribute(
            self.model,
            self.sae.clone(),
            self.hook,
            &self.table,
            &input,
            options,
        )
    }

    /// Resolves a feature selection.
    pub fn select(&self, spec: &FeatureSpec) -> Result<SelectedFeature, SteerError> {
        let selected_by = spec.to_string();
        let (id, activation, token) = match spec {
            FeatureSpec::Id(id) => {
                if *id as usize >= self.sae.d_sae {
                    return Err(SteerError::selection(
                        &selected_by,
                        format!("the SAE has features 0..{}", self.sae.d_sae),
                    ));
                }
                (*id, None, None)
            }
            FeatureSpec::Label(query) => (self.table.search_labels(query)?.0, None, None),
            FeatureSpec::Text(text) => {
                let top = self.top_features(text, 1)?;
                let hit = top.into_iter().next().ok_or_else(|| {
                    SteerError::selection(
                        &selected_by,
                        "no feature fires on this text (BOS and the first token are not searched)",
                    )
                })?;
                (hit.feature, Some(hit.activation), Some(hit.token))
            }
        };
        Ok(SelectedFeature {
            id,
            label: self.table.label(id).map(str::to_owned),
            selected_by,
            max_activation: self.table.max_activation(id),
            activation,
            token,
        })
    }

    /// The interventions that apply `edits` at the SAE's hook (none for no edits).
    pub fn interventions(&self, edits: Vec<FeatureEdit>) -> Result<Interventions, SteerError> {
        if edits.is_empty() {
            return Ok(Interventions::new());
        }
        let steering = SaeSteering::new(self.sae.clone(), edits)?.starting_at(self.first_position);
        Ok(Interventions::new().with(self.hook, steering))
    }

    /// The tokens a feature's decoder direction promotes most when read through the final norm
    /// and unembedding (its logit effects), as trimmed words, at most `n`.
    pub fn promoted_words(&self, feature: u32, n: usize) -> Result<Vec<String>, SteerError> {
        use burn::prelude::*;
        let d = self.sae.d_in;
        let f = feature as usize;
        let row = self.sae.w_dec[f * d..(f + 1) * d].to_vec();
        let resid = Tensor::<3>::from_data(TensorData::new(row, [1, 1, d]), self.model.device());
        let logits = monoscope_lm::to_host(self.model.logits_from_residual(resid), "logits")?;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let tokenizer = self.model.tokenizer();
        let mut words: Vec<String> = Vec::new();
        for id in order {
            let word = tokenizer.decode(&[id as u32]).trim().to_string();
            if word.chars().any(char::is_alphanumeric) && !words.contains(&word) {
                words.push(word);
            }
            if words.len() == n {
                break;
            }
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(feature: u32, activation: f32, max: f32, max_is_reliable: bool) -> FeatureHit {
        FeatureHit {
            feature,
            activation,
            token: String::new(),
            position: 2,
            positions_active: 1,
            max_activation: Some(max),
            frequency: None,
            label: None,
            max_is_reliable,
        }
    }

    /// Regression: a feature seen on 3 held-out tokens (peak 1.39 × its maximum) outranked
    /// a common one at 1.32 × for the quickstart's photosynthesis text.
    #[test]
    fn a_feature_with_a_reliable_maximum_ranks_first() {
        let mut hits = vec![hit(485, 0.891, 0.639, false), hit(3723, 3.373, 2.555, true)];
        rank(&mut hits);
        assert_eq!(hits[0].feature, 3723);
        // Among equals, the strength decides.
        let mut hits = vec![hit(1, 1.0, 2.0, true), hit(2, 3.0, 2.0, true)];
        rank(&mut hits);
        assert_eq!(hits[0].feature, 2);
    }
}
