//! The forward pass with hooks: record activations, replace them through interventions, stop
//! after the last block a caller needs, and extend a KV cache.

use std::collections::{BTreeMap, BTreeSet};

use burn::prelude::*;
use burn::tensor::module::embedding;

use crate::attention::{AttnShape, LayerCache, Rope};
use crate::fused::host_vec;
use crate::hooks::HookRunner;
use crate::host_block;
use crate::layers::{self, AttnExtras, KeyMask, NormKind};
use crate::rope::RopeFrequencies;
use crate::{HookContext, HookName, HookPoint, Interventions, LmError, Model, TokenBatch};

/// Which logits a forward pass computes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Logits {
    /// None: the unembedding (the largest matmul of a small model) is skipped.
    #[default]
    Skip,
    /// `[batch, seq, vocab]`.
    All,
    /// `[batch, 1, vocab]` at the last column (with left padding, every row's last token).
    Last,
}

/// What a forward pass records, changes and returns.
#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    /// Hooks whose activations to return (after any intervention at the same hook).
    pub record: Vec<HookName>,
    /// Functions that replace activations at hooks.
    pub interventions: Interventions,
    /// Stop after the last block the recorded hooks need. Ignored when logits are requested.
    pub stop_after_hooks: bool,
    pub logits: Logits,
}

impl ForwardOptions {
    /// Records `hooks` and stops as soon as they are computed: the capture stage's call.
    pub fn capture(hooks: Vec<HookName>) -> Self {
        Self {
            record: hooks,
            stop_after_hooks: true,
            ..Self::default()
        }
    }

    /// All logits, optionally under interventions.
    pub fn logits(interventions: Interventions) -> Self {
        Self {
            interventions,
            logits: Logits::All,
            ..Self::default()
        }
    }
}

/// The result of a forward pass. Activations are `[batch, seq, width]` (see
/// [`Model::hook_width`]).
#[derive(Debug, Clone, Default)]
pub struct ForwardOutput {
    pub logits: Option<Tensor<3>>,
    pub activations: BTreeMap<HookName, Tensor<3>>,
}

impl ForwardOutput {
    pub fn activation(&self, hook: &HookName) -> Result<&Tensor<3>, LmError> {
        self.activations
            .get(hook)
            .ok_or_else(|| LmError::InvalidHook {
                name: hook.to_string(),
                reason: "this hook was not recorded by the forward pass".into(),
            })
    }

    /// A recorded activation copied to the host, row-major `[batch, seq, width]`.
    pub fn activation_host(&self, hook: &HookName) -> Result<Vec<f32>, LmError> {
        to_host(self.activation(hook)?.clone(), &hook.to_string())
    }

    /// The logits copied to the host, row-major.
    pub fn logits_host(&self) -> Result<Vec<f32>, LmError> {
        let logits = self.logits.clone().ok_or_else(|| {
            LmError::EmptyInput("no logits: the forward pass ran with Logits::Skip".into())
        })?;
        to_host(logits, "logits")
    }
}

/// Copies any float tensor to a host `Vec<f32>`.
pub fn to_host<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>, LmError> {
    t.try_into_vec_as::<f32>().map_err(|e| LmError::TensorRead {
        what: what.to_string(),
        detail: format!("{e:?}"),
    })
}

/// Keys and values of every layer for the positions run so far, so that generation feeds one
/// new token per step instead of the whole sequence.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    /// Per row: which cached columns are real tokens.
    valid: Vec<Vec<bool>>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            valid: Vec::new(),
        }
    }

    /// Number of cached columns.
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of rows (0 before the first call fills it).
    pub fn rows(&self) -> usize {
        self.valid.len()
    }

    /// `n` copies of a one-row cache, so that a prefix shared by `n` sequences runs once.
    pub fn repeat_rows(&self, n: usize) -> Result<KvCache, LmError> {
        if self.rows() != 1 || n == 0 {
            return Err(LmError::Batch(format!(
                "repeat_rows({n}) needs a filled one-row cache; this one has {} rows",
                self.rows()
            )));
        }
        Ok(KvCache {
            layers: self
                .layers
                .iter()
                .map(|layer| {
                    layer.as_ref().map(|c| LayerCache {
                        k: c.k.clone().repeat_dim(0, n),
                        v: c.v.clone().repeat_dim(0, n),
                    })
                })
                .collect(),
            valid: vec![self.valid[0].clone(); n],
        })
    }
}

impl Model {
    /// Runs `batch` through the model. See [`ForwardOptions`].
    pub fn forward(
        &self,
        batch: &TokenBatch,
        options: &ForwardOptions,
    ) -> Result<ForwardOutput, LmError> {
        self.run(batch, options, None)
    }

    /// Runs `batch` as the continuation of the columns in `cache` (which it extends). The first
    /// call on an empty cache is an ordinary forward pass. Every layer runs, whatever
    /// `stop_after_hooks` says, so that the cache stays complete. After an error the cache is
    /// in an unspecified state; start a new one.
    pub fn forward_cached(
        &self,
        batch: &TokenBatch,
        options: &ForwardOptions,
        cache: &mut KvCache,
    ) -> Result<ForwardOutput, LmError> {
        self.run(batch, options, Some(cache))
    }

    fn run(
        &self,
        batch: &TokenBatch,
        options: &ForwardOptions,
        mut cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput, LmError> {
        let c = &self.config;
        for hook in options.record.iter().chain(options.interventions.hooks()) {
            self.check_hook(hook)?;
        }
        self.check_ids(batch)?;
        let (b, t) = (batch.batch(), batch.seq());
        let new_valid = batch.valid_rows();
        if let Some(cache) = cache.as_deref_mut() {
            if !cache.is_empty() && cache.valid.len() != b {
                return Err(LmError::Batch(format!(
                    "cache holds {} rows but the batch has {b}",
                    cache.valid.len()
                )));
            }
            if cache.valid.is_empty() {
                cache.valid = vec![Vec::new(); b];
            }
        }
        let past: Vec<Vec<bool>> = cache
            .as_deref()
            .map_or(vec![Vec::new(); b], |k| k.valid.clone());
        let offset = past[0].len();

        // A real token's position is the number of real tokens before it in its row.
        let mut positions = Vec::with_capacity(b * t);
        for (row, flags) in new_valid.iter().enumerate() {
            let mut pos = past[row].iter().filter(|&&v| v).count();
            for &valid in flags {
                positions.push(pos);
                pos += usize::from(valid);
            }
        }
        let mask = self.padding_mask(&past, &new_valid, t);
        // The same flags per key column for the host attention kernel.
        let keys_valid: Option<Vec<Vec<bool>>> = mask.as_ref().map(|_| {
            past.iter()
                .zip(&new_valid)
                .map(|(p, n)| p.iter().chain(n).copied().collect())
                .collect()
        });
        let key_mask = KeyMask {
            tensor: mask.as_ref(),
            valid: keys_valid.as_deref(),
        };

        let ids: Vec<i32> = batch.ids().iter().map(|&id| id as i32).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &self.device);
        let mut x = crate::linear::widen(embedding(self.weights.embed.clone(), ids));
        if let Some(m) = c.block.embedding_multiplier {
            x = x * m;
        }
        let longest = positions.iter().copied().max().unwrap_or(0);
        let rotary_dim = c.block.rotary_dim.unwrap_or(c.head_dim);
        let rope = if c.architecture.rotary() {
            let frequencies =
                RopeFrequencies::new(rotary_dim, c.rope_theta, c.rope_scaling.as_ref(), longest);
            Some(Rope::new(&positions, b, t, &frequencies, &self.device))
        } else {
            x = x + self.learned_positions(&positions, b, t)?;
            None
        };
        // Gemma 3's sliding layers rotate with their own base and no scaling.
        let local_rope = c.block.local_rope_theta.map(|theta| {
            let frequencies = RopeFrequencies::new(rotary_dim, theta, None, longest);
            Rope::new(&positions, b, t, &frequencies, &self.device)
        });

        let want_logits = options.logits != Logits::Skip;
        let record: BTreeSet<HookName> = options.record.iter().copied().collect();
        let blocks_to_run = if options.stop_after_hooks && !want_logits && cache.is_none() {
            record
                .iter()
                .map(|h| h.blocks_needed(c.n_layers))
                .max()
                .unwrap_or(0)
        } else {
            c.n_layers
        };
        let mut hooks = HookRunner {
            record: &record,
            interventions: &options.interventions,
            ctx: HookContext {
                offset,
                valid: new_valid,
            },
            out: BTreeMap::new(),
        };
        let shape = AttnShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        };
        let kind = self.norm_kind();
        let keys_after = offset + t;
        let window_acts =
            (0..c.n_layers).any(|l| c.block.window(l).is_some_and(|w| keys_after > w));

        let inner_hooks = record
            .iter()
            .chain(options.interventions.hooks())
            .any(|h| h.is_inner() || matches!(h.point(), HookPoint::ResidMid(_)));
        if self.matmul_kind() == crate::MatmulKind::Int8
            && kind == NormKind::Rms
            && self.plain_blocks()
            && !window_acts
            && !inner_hooks
            && host_block::supported(&self.weights.blocks)
        {
            let pass = host_block::Pass {
                dims: [b, t, c.d_model],
                shape,
                rope: rope.as_ref(),
                keys_valid: keys_valid.as_deref(),
                eps: c.norm_eps as f32,
                device: &self.device,
            };
            let mut xh = host_vec(x);
            let mut scratch = host_block::Scratch::default();
            for (l, w) in self.weights.blocks.iter().enumerate() {
                xh = hooks.at_host(HookName::resid_pre(l), xh, pass.dims, &self.device)?;
                if l >= blocks_to_run {
                    break;
                }
                let slot = cache.as_deref_mut().map(|k| &mut k.layers[l]);
                pass.block(l, &mut xh, w, slot, &mut hooks, &mut scratch)?;
            }
            x = Tensor::from_data(TensorData::new(xh, pass.dims), &self.device);
        } else {
            let host = self.host_kernels();
            let norm = |x: &Tensor<3>, w: &Option<crate::weights::NormWeights>| match w {
                Some(w) => layers::norm(x.clone(), w, kind, c.norm_eps, host),
                None => x.clone(),
            };
            let post = |x: Tensor<3>, w: &Option<crate::weights::NormWeights>| match w {
                Some(w) => layers::norm(x, w, kind, c.norm_eps, host),
                None => x,
            };
            for (l, w) in self.weights.blocks.iter().enumerate() {
                x = hooks.at(HookName::resid_pre(l), x)?;
                if l >= blocks_to_run {
                    break;
                }
                let window = c.block.window(l);
                let layer_rope = match (&local_rope, window) {
                    (Some(local), Some(_)) => Some(local),
                    _ => rope.as_ref(),
                };
                let extras = AttnExtras {
                    scale: c.block.attn_scale,
                    softcap: c.block.attn_logit_softcap,
                    window,
                    qk_norm_eps: c.norm_eps,
                };
                let slot = cache.as_deref_mut().map(|k| &mut k.layers[l]);
                let attn = layers::attention_block(
                    norm(&x, &w.attn_norm),
                    w,
                    shape,
                    layer_rope,
                    key_mask,
                    extras,
                    slot,
                    (l, &mut hooks),
                    host,
                )?;
                let attn = hooks.at(HookName::attn_out(l), post(attn, &w.post_attn_norm))?;
                if c.block.parallel_residual {
                    let mlp = layers::mlp_block(
                        norm(&x, &w.mlp_norm),
                        w,
                        c.block.mlp,
                        (l, &mut hooks),
                        host,
                    )?;
                    let mlp = hooks.at(HookName::mlp_out(l), post(mlp, &w.post_mlp_norm))?;
                    x = hooks.at(HookName::resid_post(l), x + attn + mlp)?;
                } else {
                    x = hooks.at(HookName::new(HookPoint::ResidMid(l)), x + attn)?;
                    let mlp = layers::mlp_block(
                        norm(&x, &w.mlp_norm),
                        w,
                        c.block.mlp,
                        (l, &mut hooks),
                        host,
                    )?;
                    let mlp = hooks.at(HookName::mlp_out(l), post(mlp, &w.post_mlp_norm))?;
                    x = hooks.at(HookName::resid_post(l), x + mlp)?;
                }
            }
        }
        if let Some(cache) = cache {
            for (row, flags) in hooks.ctx.valid.iter().enumerate() {
                cache.valid[row].extend_from_slice(flags);
            }
        }

        let need_final = want_logits || record.contains(&HookName::final_normalized());
        let mut logits = None;
        if need_final && blocks_to_run == c.n_layers {
            let normed = layers::normalize(x, kind, c.norm_eps);
            let normed = hooks.at(HookName::final_normalized(), normed)?;
            logits = match options.logits {
                Logits::Skip => None,
                Logits::All => Some(self.unembed(normed)),
                Logits::Last => Some(self.unembed(normed.narrow(1, t - 1, 1))),
            };
        }
        Ok(ForwardOutput {
            logits,
            activations: hooks.out,
        })
    }

    fn check_ids(&self, batch: &TokenBatch) -> Result<(), LmError> {
        let vocab = self.config.vocab_size;
        match batch.ids().iter().position(|&id| id as usize >= vocab) {
            Some(i) => Err(LmError::TokenOutOfRange {
                id: batch.ids()[i],
                row: i / batch.seq(),
                position: i % batch.seq(),
                vocab_size: vocab,
            }),
            None => Ok(()),
        }
    }

    /// `[batch, 1, seq, past + seq]`, `true` where the key is padding; `None` without padding.
    fn padding_mask(
        &self,
        past: &[Vec<bool>],
        new: &[Vec<bool>],
        t: usize,
    ) -> Option<Tensor<4, Bool>> {
        let any_pad = past.iter().chain(new).flatten().any(|&v| !v);
        if !any_pad {
            return None;
        }
        let b = new.len();
        let keys = past[0].len() + t;
        let mut mask = Vec::with_capacity(b * t * keys);
        for (p, n) in past.iter().zip(new) {
            let row: Vec<bool> = p.iter().chain(n).map(|&v| !v).collect();
            for _ in 0..t {
                mask.extend_from_slice(&row);
            }
        }
        Some(Tensor::from_data(
            TensorData::new(mask, [b, 1, t, keys]),
            &self.device,
        ))
    }

    fn learned_positions(
        &self,
        positions: &[usize],
        b: usize,
        t: usize,
    ) -> Result<Tensor<3>, LmError> {
        let max = self.config.max_positions;
        if let Some(&p) = positions.iter().find(|&&p| p >= max) {
            return Err(LmError::ContextTooLong {
                position: p,
                max_positions: max,
            });
        }
        let table = self
            .weights
            .positions
            .clone()
            .ok_or_else(|| LmError::Config("GPT-2 model without a position table".into()))?;
        let idx: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [b * t]), &self.device);
        Ok(table.select(0, idx).reshape([b, t, self.config.d_model]))
    }
}
