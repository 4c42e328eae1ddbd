//! Autoregressive generation with a KV cache. Interventions run at every position: over the
//! whole prompt on the first step, then on each generated token (their [`HookContext::offset`]
//! tells them which position they see).
//!
//! [`HookContext::offset`]: crate::HookContext

use crate::forward::{Logits, to_host};
use crate::{ForwardOptions, Interventions, LmError, Model, Sampling, TokenBatch};

/// What to generate and how.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Generation stops after emitting any of these. `None`: the model's EOS ids.
    pub stop_tokens: Option<Vec<u32>>,
    pub interventions: Interventions,
    /// Keep the logits each token was chosen from (`vocab` floats per step).
    pub keep_logits: bool,
}

impl GenerateOptions {
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            sampling: Sampling::Greedy,
            stop_tokens: None,
            interventions: Interventions::new(),
            keep_logits: false,
        }
    }

    pub fn with_interventions(mut self, interventions: Interventions) -> Self {
        self.interventions = interventions;
        self
    }
}

/// Generated tokens (without the prompt).
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// The stop token that ended generation (it is the last of `tokens`), if any.
    pub stopped_on: Option<u32>,
    /// With `keep_logits`: the logits of each step, `tokens.len()` rows of `vocab` floats.
    pub logits: Vec<Vec<f32>>,
}

impl Model {
    /// Continues `prompt` (token ids, BOS included if the model wants one): a batch of one
    /// (see [`Model::generate_batch`]), which runs the prompt as one pass.
    pub fn generate(
        &self,
        prompt: &[u32],
        options: &GenerateOptions,
    ) -> Result<Generation, LmError> {
        let mut one = self.generate_batch(&[prompt.to_vec()], options)?;
        Ok(one.pop().expect("one generation per prompt"))
    }

    /// Encodes `prompt` (with BOS when the model's tokenizer adds one by default), generates,
    /// and decodes the new text without the stop token.
    pub fn generate_text(
        &self,
        prompt: &str,
        options: &GenerateOptions,
    ) -> Result<String, LmError> {
        let tokenizer = self.tokenizer();
        let ids = tokenizer.encode(prompt, tokenizer.adds_bos_by_default())?;
        let generation = self.generate(&ids, options)?;
        let tokens = match generation.stopped_on {
            Some(_) => &generation.tokens[..generation.tokens.len() - 1],
            None => &generation.tokens[..],
        };
        Ok(self.tokenizer().decode(tokens))
    }

    /// Next-token probabilities (softmax of the last position's logits) after `prompt`.
    pub fn next_token_distribution(
        &self,
        prompt: &[u32],
        interventions: &Interventions,
    ) -> Result<Vec<f32>, LmError> {
        let options = ForwardOptions {
            interventions: interventions.clone(),
            logits: Logits::Last,
            ..ForwardOptions::default()
        };
        let out = self.forward(&TokenBatch::single(prompt)?, &options)?;
        let logits = out
            .logits
            .ok_or_else(|| LmError::EmptyInput("forward pass returned no logits".into()))?;
        to_host(
            burn::tensor::activation::softmax(logits, 2),
            "next-token distribution",
        )
    }

    /// `log p(token[i+1] | tokens[..=i])` for every row of `batch`: row-major `[batch, seq - 1]`.
    /// Entries whose context position or target is padding are `NaN`.
    pub fn log_probs(
        &self,
        batch: &TokenBatch,
        interventions: &Interventions,
    ) -> Result<Vec<f32>, LmError> {
        let (b, t) = (batch.batch(), batch.seq());
        if t < 2 {
            return Err(LmError::EmptyInput(
                "log_probs needs at least two tokens per row".into(),
            ));
        }
        let out = self.forward(batch, &ForwardOptions::logits(interventions.clone()))?;
        let logits = out
            .logits
            .ok_or_else(|| LmError::EmptyInput("forward pass returned no logits".into()))?;
        let logp = burn::tensor::activation::log_softmax(logits.narrow(1, 0, t - 1), 2);
        let targets: Vec<i32> = (0..b)
            .flat_map(|r| batch.row(r)[1..].iter().map(|&id| id as i32))
            .collect();
        let targets = burn::tensor::Tensor::<3, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(targets, [b, t - 1, 1]),
            &self.device,
        );
        let mut picked = to_host(logp.gather(2, targets), "log-probs")?;
        for r in 0..b {
            for c in 0..t - 1 {
                if !batch.is_valid(r, c) || !batch.is_valid(r, c + 1) {
                    picked[r * (t - 1) + c] = f32::NAN;
                }
            }
        }
        Ok(picked)
    }
}
