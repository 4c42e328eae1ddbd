//! The CE-loss splice: how much of the model's next-token loss survives when the SAE's
//! reconstruction replaces the activation at its hook.
//!
//! For held-out token windows the model runs three times: clean, with the hook's activation
//! replaced by the SAE reconstruction, and with it zero-ablated. Reported (SAELens's
//! definitions): the three mean next-token CE losses, `ce_loss_score = (zero − spliced) /
//! (zero − clean)`, and the mean KL(clean ‖ spliced) of the next-token distributions.
//!
//! Windows are rebuilt from the store as capture ran them: `[BOS] + tokens`, BOS unstored.
//! The BOS position is left clean in every run and its prediction is not scored: capture never
//! stores it (its residual is an attention-sink outlier the SAE never saw), so splicing there
//! would measure something the SAE was not trained on, and would wreck every later position
//! through attention.

use std::ops::Range;

use monoscope_lm::{
    Device, ForwardOptions, HookContext, HookName, Interventions, Logits, Model, PadSide, Tensor,
    TokenBatch,
};
use monoscope_sae::{Sae, SaeError, SpliceEvaluator, SpliceReport, SpliceWithoutMassive};
use monoscope_store::Store;
use rayon::prelude::*;

/// Windows per forward pass: the logits of one 128-token window of a 49k-token vocabulary are
/// 25 MB, and each pass keeps three sets alive.
const BATCH_WINDOWS: usize = 4;
/// Store rows read per request while collecting windows.
const READ_ROWS: u64 = 4096;

/// Token windows from rows `rows` of `store`: maximal runs of one document at consecutive
/// positions, cut into pieces of at most `context_length − 1` tokens, each prefixed with `bos`
/// (when the model has one). Stops once the windows hold `max_predictions` scored next-token
/// predictions (the last window is shortened to hit it exactly).
pub fn held_out_windows(
    store: &Store,
    rows: Range<u64>,
    bos: Option<u32>,
    context_length: usize,
    max_predictions: usize,
) -> Result<Vec<Vec<u32>>, monoscope_store::StoreError> {
    let lead = usize::from(bos.is_some());
    let per_window = context_length.saturating_sub(lead).max(2);
    let mut windows = Vec::new();
    let mut predictions = 0;
    let mut run: Vec<u32> = Vec::new();
    let mut last: Option<(u32, u32)> = None;
    let flush = |run: &mut Vec<u32>, windows: &mut Vec<Vec<u32>>, predictions: &mut usize| {
        // A window of n tokens scores n − 1 predictions (none from BOS).
        if run.len() >= 2 && *predictions < max_predictions {
            run.truncate((max_predictions - *predictions + 1).min(run.len()));
            *predictions += run.len() - 1;
            windows.push(bos.into_iter().chain(run.iter().copied()).collect());
        }
        run.clear();
    };
    let mut start = rows.start;
    while start < rows.end && predictions < max_predictions {
        let end = (start + READ_ROWS).min(rows.end);
        let batch = store.rows_of(start..end, &[])?;
        for ((&token, &doc), &position) in batch
            .token_ids
            .iter()
            .zip(&batch.doc_ids)
            .zip(&batch.positions)
        {
            let continues = last.is_some_and(|(d, p)| d == doc && p + 1 == position);
            if !continues || run.len() == per_window {
                flush(&mut run, &mut windows, &mut predictions);
            }
            run.push(token);
            last = Some((doc, position));
        }
        start = end;
    }
    flush(&mut run, &mut windows, &mut predictions);
    Ok(windows)
}

/// Runs `model` over fixed windows with an SAE spliced in at `hook`.
#[derive(Debug)]
pub struct ModelSplice<'m> {
    model: &'m Model,
    hook: HookName,
    windows: Vec<Vec<u32>>,
    /// Columns at the start of every window left clean and unscored (1 with BOS, else 0).
    lead: usize,
    /// Activations with a norm above this are massive: the report also gives the CE loss
    /// with them left clean.
    massive_norm: Option<f32>,
}

impl<'m> ModelSplice<'m> {
    /// `windows` start with the model's BOS when `with_bos` (see the module docs).
    pub fn new(model: &'m Model, hook: HookName, windows: Vec<Vec<u32>>, with_bos: bool) -> Self {
        ModelSplice {
            model,
            hook,
            windows,
            lead: usize::from(with_bos),
            massive_norm: None,
        }
    }

    /// Also reports the CE loss with the positions whose activation norm is above `threshold`
    /// left clean.
    pub fn with_massive_norm(mut self, threshold: f32) -> Self {
        self.massive_norm = Some(threshold);
        self
    }

    /// Scored predictions in all windows.
    pub fn predictions(&self) -> usize {
        self.windows
            .iter()
            .map(|w| w.len().saturating_sub(self.lead + 1))
            .sum()
    }
}

/// Sums over scored positions, in f64.
#[derive(Default)]
struct Sums {
    clean: f64,
    spliced: f64,
    zero: f64,
    kl: f64,
    count: u64,
    /// The spliced NLL with massive positions left clean, and how many there were.
    spliced_without_massive: f64,
    massive_positions: u64,
}

impl SpliceEvaluator for ModelSplice<'_> {
    fn evaluate_splice(&mut self, sae: &Sae) -> Result<SpliceReport, SaeError> {
        let d = self.model.hook_width(&self.hook);
        if sae.d_in != d {
            return Err(SaeError::Splice(format!(
                "the SAE takes d_in = {} but the model's {} is {d} wide",
                sae.d_in, self.hook
            )));
        }
        let lm = |e: monoscope_lm::LmError| SaeError::Splice(e.to_string());
        let mut sums = Sums::default();
        for chunk in self.windows.chunks(BATCH_WINDOWS) {
            // Any id pads: padded columns come after every real one and are never scored.
            let pad = chunk.iter().find_map(|w| w.first().copied()).unwrap_or(0);
            let batch = TokenBatch::padded(chunk, PadSide::Right, pad).map_err(lm)?;
            let (b, t) = (batch.batch(), batch.seq());
            let clean = self
                .model
                .forward(
                    &batch,
                    &ForwardOptions {
                        record: vec![self.hook],
                        logits: Logits::All,
                        ..ForwardOptions::default()
                    },
                )
                .map_err(lm)?;
            let activation = clean.activation_host(&self.hook).map_err(lm)?;
            let mut spliced = sae.reconstruct(&activation)?;
            let mut zero = vec![0.0; activation.len()];
            for r in 0..b {
                let kept = r * t * d..(r * t + self.lead) * d;
                spliced[kept.clone()].copy_from_slice(&activation[kept.clone()]);
                zero[kept.clone()].copy_from_slice(&activation[kept]);
            }
            // Massive positions (past the lead, real tokens) and the splice that spares them.
            let massive: Vec<usize> = match self.massive_norm {
                None => Vec::new(),
                Some(limit) => (0..b)
                    .flat_map(|r| (self.lead..t).map(move |c| (r, c)))
                    .filter(|&(r, c)| batch.is_valid(r, c))
                    .map(|(r, c)| r * t + c)
                    .filter(|&p| {
                        let x = &activation[p * d..(p + 1) * d];
                        x.iter().map(|v| v * v).sum::<f32>().sqrt() > limit
                    })
                    .collect(),
            };
            let spared = (!massive.is_empty()).then(|| {
                let mut spared = spliced.clone();
                for &p in &massive {
                    spared[p * d..(p + 1) * d].copy_from_slice(&activation[p * d..(p + 1) * d]);
                }
                spared
            });
            sums.massive_positions += massive.len() as u64;
            let device = self.model.device();
            let logits_clean = clean.logits_host().map_err(lm)?;
            let logits_spliced =
                self.logits_with(&batch, replacement(spliced, [b, t, d], device))?;
            let logits_spared = match spared {
                Some(v) => Some(self.logits_with(&batch, replacement(v, [b, t, d], device))?),
                None => None,
            };
            let logits_zero = self.logits_with(&batch, replacement(zero, [b, t, d], device))?;
            let vocab = logits_clean.len() / (b * t);
            let scored: Vec<(usize, usize)> = (0..b)
                .flat_map(|r| (self.lead..t - 1).map(move |c| (r, c)))
                .filter(|&(r, c)| batch.is_valid(r, c) && batch.is_valid(r, c + 1))
                .collect();
            let parts: Vec<[f64; 4]> = scored
                .par_iter()
                .map(|&(r, c)| {
                    let at = (r * t + c) * vocab..(r * t + c + 1) * vocab;
                    let target = batch.row(r)[c + 1] as usize;
                    position_terms(
                        &logits_clean[at.clone()],
                        &logits_spliced[at.clone()],
                        &logits_zero[at],
                        target,
                    )
                })
                .collect();
            for [c, s, z, kl] in &parts {
                sums.clean += c;
                sums.spliced += s;
                sums.zero += z;
                sums.kl += kl;
            }
            sums.spliced_without_massive += match &logits_spared {
                None => parts.iter().map(|p| p[1]).sum::<f64>(),
                Some(spared) => scored
                    .par_iter()
                    .map(|&(r, c)| {
                        let at = (r * t + c) * vocab..(r * t + c + 1) * vocab;
                        let target = batch.row(r)[c + 1] as usize;
                        log_sum_exp(&spared[at.clone()]) - f64::from(spared[at][target])
                    })
                    .sum::<f64>(),
            };
            sums.count += scored.len() as u64;
        }
        if sums.count == 0 {
            return Err(SaeError::Splice(
                "no scored positions: every window is shorter than two tokens after BOS".into(),
            ));
        }
        let n = sums.count as f64;
        let mut report =
            SpliceReport::new(sums.clean / n, sums.spliced / n, sums.zero / n, sums.kl / n);
        report.tokens = sums.count;
        report.massive = self.massive_norm.map(|norm_threshold| {
            let with_sae = sums.spliced_without_massive / n;
            let (clean, zero) = (sums.clean / n, sums.zero / n);
            SpliceWithoutMassive {
                norm_threshold,
                positions: sums.massive_positions,
                ce_loss_with_sae: with_sae,
                ce_loss_score: (zero - with_sae) / (zero - clean),
            }
        });
        Ok(report)
    }
}

impl ModelSplice<'_> {
    fn logits_with(&self, batch: &TokenBatch, activation: Tensor<3>) -> Result<Vec<f32>, SaeError> {
        let interventions = Interventions::new().with(
            self.hook,
            move |_: &HookName, _: Tensor<3>, _: &HookContext| activation.clone(),
        );
        let out = self
            .model
            .forward(batch, &ForwardOptions::logits(interventions))
            .and_then(|out| out.logits_host())
            .map_err(|e| SaeError::Splice(e.to_string()))?;
        Ok(out)
    }
}

/// A fixed activation to substitute at the hook. Substituting a precomputed reconstruction is
/// the same as splicing the SAE live: nothing upstream of the hook changes.
fn replacement(values: Vec<f32>, shape: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
}

/// `[nll clean, nll spliced, nll zero, KL(clean ‖ spliced)]` at one position.
fn position_terms(clean: &[f32], spliced: &[f32], zero: &[f32], target: usize) -> [f64; 4] {
    let (lse_c, lse_s, lse_z) = (log_sum_exp(clean), log_sum_exp(spliced), log_sum_exp(zero));
    let kl: f64 = clean
        .iter()
        .zip(spliced)
        .map(|(&c, &s)| {
            let lp_c = f64::from(c) - lse_c;
            lp_c.exp() * (lp_c - (f64::from(s) - lse_s))
        })
        .sum();
    [
        lse_c - f64::from(clean[target]),
        lse_s - f64::from(spliced[target]),
        lse_z - f64::from(zero[target]),
        kl,
    ]
}

fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    f64::from(max) + sum.ln()
}

/// The cached copy of a known default model (`monoscope fetch`) that the store was captured
/// with, if there is one: its file name contains the store's model name. The caller still
/// compares checksums after loading. Never downloads.
pub fn cached_default_model(model_name: &str) -> Option<std::path::PathBuf> {
    if model_name.is_empty() {
        return None;
    }
    let cache = monoscope_fetch::cache_dir();
    monoscope_fetch::ASSETS
        .iter()
        .filter(|a| a.kind == monoscope_fetch::AssetKind::Model)
        .map(|a| cache.join(a.dest))
        .find(|path| {
            path.is_file()
                && path
                    .file_name()
                    .is_some_and(|f| f.to_string_lossy().contains(model_name))
        })
}
