//! The local explainer: an instruction-tuned model through monoscope's own runtime.
//!
//! Labels are generated greedily after the chat template with `Label:` already written as
//! the start of the answer, which keeps a small model to the format; several features' prompts
//! run as one batch (their shared instructions once). Judging does not generate: all the
//! questions about one label run as one batch after the prompt prefix they share, and each
//! gets the margin between the best next-token logit of a `yes` token and of a `no` token.
//!
//! A small model says `no` (or `yes`) to nearly everything, whatever the text, so the raw
//! answer measures its bias more than the label. The scorers' sets are half firing and half
//! not by construction, so the judge answers `yes` for the items whose margin is above the
//! median of the set: it is scored on how it ranks the items, which the bias does not move.
//! Items with equal margins get the same answer, so a judge that cannot tell them apart
//! scores 0.5.

use monoscope_formats::ChatMessage;
use monoscope_lm::{ForwardOptions, GenerateOptions, Model};
use serde::{Deserialize, Serialize};

use super::{Explainer, Explanation, ResponseCache, Usage, UsageCounter};
use crate::LabelError;
use crate::format::FeatureEvidence;
use crate::prompt::{self, JudgeTask, Shown};

/// Where the answer starts, written by us rather than the model.
const PREFILL: &str = "Label:";

#[derive(Debug)]
pub struct LocalExplainer<'m> {
    model: &'m Model,
    cache: ResponseCache,
    max_new_tokens: usize,
    yes_ids: Vec<u32>,
    no_ids: Vec<u32>,
    stop_ids: Vec<u32>,
    usage: UsageCounter,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedText {
    text: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedMargin {
    margin: f32,
}

impl<'m> LocalExplainer<'m> {
    pub fn new(
        model: &'m Model,
        cache: ResponseCache,
        max_new_tokens: usize,
    ) -> Result<Self, LabelError> {
        let tokenizer = model.tokenizer();
        // The first token of each spelling: one token in real vocabularies, and still a
        // `y` against an `n` in tiny test ones.
        let first_tokens = |words: &[&str]| -> Result<Vec<u32>, LabelError> {
            let mut ids = Vec::new();
            for w in words {
                if let Some(&id) = tokenizer.encode(w, false)?.first()
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
            Ok(ids)
        };
        let mut yes_ids = first_tokens(&["yes", "Yes", " yes", " Yes"])?;
        let mut no_ids = first_tokens(&["no", "No", " no", " No"])?;
        // A first token both spellings share (a bare space) says nothing.
        let shared: Vec<u32> = yes_ids
            .iter()
            .filter(|y| no_ids.contains(y))
            .copied()
            .collect();
        yes_ids.retain(|y| !shared.contains(y));
        no_ids.retain(|n| !shared.contains(n));
        if yes_ids.is_empty() || no_ids.is_empty() {
            return Err(LabelError::Invalid(format!(
                "model {}: its tokenizer does not tell `yes` from `no` by their first token, which the local judge compares",
                model.name()
            )));
        }
        let mut stop_ids = tokenizer.eos_ids().to_vec();
        for special in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>"] {
            stop_ids.extend(tokenizer.special_token_id(special));
        }
        Ok(LocalExplainer {
            model,
            cache,
            max_new_tokens,
            yes_ids,
            no_ids,
            stop_ids,
            usage: UsageCounter::default(),
        })
    }

    fn encode(&self, messages: &[ChatMessage], prefill: &str) -> Result<Vec<u32>, LabelError> {
        let tokenizer = self.model.tokenizer();
        let text = tokenizer.apply_chat_template(messages, true)? + prefill;
        Ok(tokenizer.encode_chat_text(&text)?)
    }

    fn cache_key(&self, what: &str, messages: &[ChatMessage]) -> String {
        let prompt = serde_json::to_string(messages).unwrap_or_default();
        let params = format!("{}/{:?}", self.max_new_tokens, self.model.matmul_kind());
        ResponseCache::key(&["local", self.model.sha256(), what, &prompt, &params])
    }

    /// Greedy answers to several conversations, one batch for those not in the cache.
    fn generate(&self, conversations: &[Vec<ChatMessage>]) -> Vec<Result<String, LabelError>> {
        let keys: Vec<String> = conversations
            .iter()
            .map(|m| self.cache_key("explain", m))
            .collect();
        let mut out: Vec<Option<Result<String, LabelError>>> = keys
            .iter()
            .map(|k| {
                self.cache.get::<CachedText>(k).map(|hit| {
                    self.usage.hit();
                    Ok(hit.text)
                })
            })
            .collect();
        let missing: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_none()).collect();
        let mut prompts = Vec::with_capacity(missing.len());
        let mut runnable = Vec::with_capacity(missing.len());
        for &i in &missing {
            match self.encode(&conversations[i], PREFILL) {
                Ok(ids) => {
                    prompts.push(ids);
                    runnable.push(i);
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if !prompts.is_empty() {
            let mut options = GenerateOptions::greedy(self.max_new_tokens);
            options.stop_tokens = Some(self.stop_ids.clone());
            match self.model.generate_batch(&prompts, &options) {
                Ok(generations) => {
                    for ((&i, ids), generation) in runnable.iter().zip(&prompts).zip(generations) {
                        let tokens = match generation.stopped_on {
                            Some(_) => &generation.tokens[..generation.tokens.len() - 1],
                            None => &generation.tokens[..],
                        };
                        self.usage
                            .add(ids.len() as u64, generation.tokens.len() as u64);
                        let text = format!("{PREFILL}{}", self.model.tokenizer().decode(tokens));
                        self.cache.put(&keys[i], &CachedText { text: text.clone() });
                        out[i] = Some(Ok(text));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for &i in &runnable {
                        out[i] = Some(Err(LabelError::Answer(format!(
                            "generation failed: {message}"
                        ))));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(LabelError::Answer("no answer".into()))))
            .collect()
    }

    /// The `yes` − `no` logit margin of each conversation; one batched forward pass for those
    /// not in the cache.
    fn margins(&self, conversations: &[Vec<ChatMessage>]) -> Result<Vec<f32>, LabelError> {
        let keys: Vec<String> = conversations
            .iter()
            .map(|m| self.cache_key("judge", m))
            .collect();
        let mut out: Vec<Option<f32>> = keys
            .iter()
            .map(|k| self.cache.get::<CachedMargin>(k).map(|v| v.margin))
            .collect();
        let missing: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_none()).collect();
        for _ in 0..conversations.len() - missing.len() {
            self.usage.hit();
        }
        if !missing.is_empty() {
            let rows: Vec<Vec<u32>> = missing
                .iter()
                .map(|&i| self.encode(&conversations[i], ""))
                .collect::<Result<_, _>>()?;
            let pad = self.stop_ids.first().copied().unwrap_or(0);
            let logits = self
                .model
                .next_token_logits(&rows, pad, &ForwardOptions::default())?;
            let best = |row: &[f32], ids: &[u32]| {
                ids.iter()
                    .map(|&id| row[id as usize])
                    .fold(f32::NEG_INFINITY, f32::max)
            };
            for (k, &i) in missing.iter().enumerate() {
                let row = &logits[k];
                let margin = best(row, &self.yes_ids) - best(row, &self.no_ids);
                self.cache.put(&keys[i], &CachedMargin { margin });
                out[i] = Some(margin);
            }
            let tokens: usize = rows.iter().map(Vec::len).sum();
            self.usage.add(tokens as u64, rows.len() as u64);
        }
        Ok(out
            .into_iter()
            .map(|v| v.unwrap_or(f32::NEG_INFINITY))
            .collect())
    }
}

/// `true` for the values strictly above the median.
fn above_median(values: &[f32]) -> Vec<bool> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    values.iter().map(|&v| v > median).collect()
}

impl Explainer for LocalExplainer<'_> {
    fn describe(&self) -> String {
        format!(
            "local:{} ({:?} matmul, greedy)",
            self.model.name(),
            self.model.matmul_kind()
        )
    }

    fn explain(
        &self,
        evidence: &FeatureEvidence,
        examples: usize,
    ) -> Result<Explanation, LabelError> {
        self.explain_batch(&[evidence], examples)
            .pop()
            .unwrap_or_else(|| Err(LabelError::Answer("no answer".into())))
    }

    fn explain_batch(
        &self,
        evidence: &[&FeatureEvidence],
        examples: usize,
    ) -> Vec<Result<Explanation, LabelError>> {
        let conversations: Vec<Vec<ChatMessage>> = evidence
            .iter()
            .map(|e| prompt::explain_messages(e, examples))
            .collect();
        self.generate(&conversations)
            .into_iter()
            .map(|answer| answer.and_then(|a| prompt::parse_explanation(&a)))
            .collect()
    }

    fn judge(
        &self,
        task: JudgeTask,
        explanation: &Explanation,
        shown: &[Shown],
    ) -> Result<Vec<bool>, LabelError> {
        if shown.is_empty() {
            return Ok(Vec::new());
        }
        let conversations: Vec<Vec<ChatMessage>> = shown
            .iter()
            .map(|s| prompt::judge_messages(task, &explanation.label, None, s))
            .collect();
        Ok(above_median(&self.margins(&conversations)?))
    }

    fn usage(&self) -> Usage {
        self.usage.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_split_is_blind_to_a_constant_bias() {
        let margins = [-9.0, -3.0, -8.5, -2.0];
        assert_eq!(above_median(&margins), [false, true, false, true]);
        let shifted: Vec<f32> = margins.iter().map(|m| m + 20.0).collect();
        assert_eq!(above_median(&shifted), above_median(&margins));
        assert_eq!(above_median(&[1.0, 1.0, 1.0, 1.0]), [false; 4]);
    }
}
