//! Training from a capture's `activations` stream instead of a store.
//!
//! The stream arrives once, in corpus order. Its first `holdout_rows` rows are held out for
//! evaluation; the input scale is estimated on the rows after them; every later row reaches
//! the SAEs through a seeded mixing buffer (SAELens's scheme: fill `buffer_rows`, shuffle,
//! hand out half as batches, refill). The batch order is a function of the stream and the
//! seed alone, so a resumed run reads the stream again from its start (the capture sends every
//! row again, stored or not) and skips the batches its checkpoint already trained on.
//! Training ends after `training_tokens` rows or with the stream, whichever comes first; the
//! rest of the stream is read and dropped, so the capture is never left waiting.
//!
//! With the capture's `store` connected as well, the held-out rows are the store's first rows
//! (checked), which the CE-loss splice reads once the capture has finished.

use std::collections::VecDeque;
use std::path::PathBuf;

use monoscope_core::{InputPort, Message, StageContext, StageError, port_names};
use monoscope_sae::{Evaluator, NormSample};
use monoscope_store::Store;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::TrainStageConfig;
use crate::error::TrainStageError;
use monoscope_sae::train::{Batches, FitOptions, Fitted};

/// Trains the stage's SAEs on the stream at `port`, then evaluates and saves them.
pub(crate) fn train(
    port: InputPort,
    model_path: Option<PathBuf>,
    config: &TrainStageConfig,
    ctx: &mut StageContext<'_>,
) -> Result<(), StageError> {
    let invalid = |message: String| StageError::from(TrainStageError::Invalid(message));
    let Some(tokens) = config.training_tokens else {
        return Err(invalid(
            "training_tokens is unset: training from the `activations` stream needs the number \
             of rows to train on (a stream's length is not known in advance)"
                .into(),
        ));
    };
    if config.epochs != 1 {
        return Err(invalid(format!(
            "epochs = {}: a stream is read once; set epochs = 1, or train from the capture's \
             `store` instead",
            config.epochs
        )));
    }
    let total_steps = tokens / config.batch_size as u64;
    if total_steps == 0 {
        return Err(invalid(format!(
            "training_tokens = {tokens} makes no full batch of {}",
            config.batch_size
        )));
    }
    let mut rows = StreamRows::open(port, config.hook.clone())?;
    let (d_in, hook) = (rows.d_in, rows.hook.clone());
    let mut holdout = Vec::new();
    let held = rows.take(config.holdout_rows, &mut holdout)?;
    if held < config.holdout_rows {
        return Err(invalid(format!(
            "the stream ended after {held} rows, inside the held-out part (holdout_rows = {})",
            config.holdout_rows
        )));
    }
    let seed = config.seed.unwrap_or(ctx.seed);
    let mut mixer = Mixer::new(rows, config.buffer_rows, config.batch_size, seed);
    mixer.fill()?;
    let mut estimator = NormSample::new(d_in);
    let sample = mixer.buffer.len().min(config.scale_rows * d_in);
    estimator
        .add(&mixer.buffer[..sample])
        .map_err(TrainStageError::from)?;
    // Training rows, kept for BatchTopK's threshold after training.
    let sample = mixer.buffer[..sample].to_vec();
    let scale = estimator
        .scale_by(config.input_scale.into())
        .map_err(TrainStageError::from)?;
    let massive_norm = estimator.massive_norm(config.massive_norm_factor);

    let (runs, members) = crate::saes::members(config, d_in, total_steps, seed, massive_norm, ctx)?;
    let source = serde_json::json!({ "stream": { "d_in": d_in, "holdout": digest(&holdout) } });
    let fingerprint = crate::saes::fingerprint(config, seed, &hook, &members[0].config, &source);
    ctx.progress.set_message(format!(
        "{d_in} × {} on {hook} (stream), scale {scale:.4}",
        config.d_sae
    ));
    let mut mixer = Some(mixer);
    let mut reader = |_epoch: u64| -> Result<Batches<TrainStageError>, TrainStageError> {
        let mixer = mixer
            .take()
            .ok_or_else(|| TrainStageError::Invalid("a stream is read once".into()))?;
        Ok(Box::new(mixer))
    };
    let options = FitOptions {
        scale,
        epochs: 1,
        batch_size: config.batch_size,
        checkpoint_every: config.checkpoint_every,
        fingerprint,
    };
    let Fitted {
        trainers,
        resumed_from_step,
    } = crate::saes::fit(&members, &options, config.precision, &mut reader, ctx)?;
    let steps = trainers[0].step_count();
    if steps < total_steps {
        tracing::warn!(
            stage = ctx.stage_id,
            "the stream ended after {steps} of the {total_steps} steps training_tokens planned"
        );
    }

    // The capture's store, when connected, arrives once its stream has ended.
    let store = match ctx.has_input(port_names::STORE) {
        true => Some(held_out_store(ctx, &hook, &holdout, d_in)?),
        false => None,
    };
    let saes = crate::saes::export(trainers, &runs, &sample, &hook, store.as_ref())?;
    drop(sample);
    let mut evaluators: Vec<Evaluator> = crate::saes::evaluators(&saes, massive_norm);
    for evaluator in &mut evaluators {
        evaluator.add(&holdout).map_err(TrainStageError::from)?;
    }
    let splices = match &store {
        Some(store) => {
            let rows = 0..config.holdout_rows as u64;
            crate::ce_loss::run(
                crate::ce_loss::HeldOut {
                    store,
                    rows,
                    hook: &hook,
                    massive_norm,
                },
                &saes,
                model_path,
                config,
                ctx,
            )?
        }
        None => Err(
            "trained from a stream without the capture's `store` input, which the \
                     splice reads its windows from"
                .to_string(),
        ),
    };
    let extra = serde_json::json!({
        "resumed_from_step": resumed_from_step,
        "trained_on": "stream",
        "steps": steps,
        "steps_planned": total_steps,
    });
    crate::saes::save(&runs, &saes, evaluators, splices, &hook, d_in, extra, ctx)
}

/// Opens the store that arrives on the `store` input and checks that its first rows are the
/// rows held out from the stream.
fn held_out_store(
    ctx: &mut StageContext<'_>,
    hook: &str,
    holdout: &[f32],
    d_in: usize,
) -> Result<Store, StageError> {
    let path = ctx.recv_artifact(port_names::STORE)?.path;
    let store = Store::open(&path).map_err(TrainStageError::from)?;
    let rows = (holdout.len() / d_in) as u64;
    let mismatch = |what: String| {
        StageError::from(TrainStageError::Invalid(format!(
            "{}: {what}; connect the store of the capture whose stream this stage trains on",
            path.display()
        )))
    };
    if store.d_model() != d_in || store.row_count() < rows {
        return Err(mismatch(format!(
            "{} rows of width {} cannot hold the stream's {rows} held-out rows of width {d_in}",
            store.row_count(),
            store.d_model()
        )));
    }
    let first = store
        .rows_of(0..rows, &[hook])
        .map_err(TrainStageError::from)?;
    if first.hooks.get(hook).map(Vec::as_slice) != Some(holdout) {
        return Err(mismatch(
            "its first rows differ from the stream's held-out rows".into(),
        ));
    }
    Ok(store)
}

/// FNV-1a of the rows' bits: identifies the stream's start in the checkpoint fingerprint.
fn digest(rows: &[f32]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for v in rows {
        for byte in v.to_bits().to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// One hook's rows from the stream, in arrival order.
struct StreamRows {
    port: InputPort,
    hook: String,
    d_in: usize,
    /// The latest batch's rows not yet handed out, from `carry_at` on.
    carry: Vec<f32>,
    carry_at: usize,
    ended: bool,
}

impl StreamRows {
    /// Waits for the first batch, which fixes the hook (the configured one, else the only one
    /// the stream carries) and the row width.
    fn open(mut port: InputPort, hook: Option<String>) -> Result<Self, StageError> {
        let invalid = |message: String| StageError::from(TrainStageError::Invalid(message));
        let first = match port.recv()? {
            Some(Message::Activations(batch)) => batch,
            Some(Message::Artifact(a)) => {
                return Err(invalid(format!(
                    "the `activations` input carries an artifact ({}), not a stream",
                    a.path.display()
                )));
            }
            None => {
                return Err(invalid(
                    "the `activations` stream ended before its first row".into(),
                ));
            }
        };
        let hooks: Vec<&String> = first.hooks.keys().collect();
        let hook = match (hook, hooks.as_slice()) {
            (Some(h), _) if first.hooks.contains_key(&h) => h,
            (Some(h), _) => {
                return Err(invalid(format!(
                    "hook = {h:?}: the stream carries {hooks:?}"
                )));
            }
            (None, [only]) => (*only).clone(),
            (None, _) => {
                return Err(invalid(format!(
                    "the stream carries hooks {hooks:?}: set `hook` to the one to train on"
                )));
            }
        };
        Ok(StreamRows {
            carry: first.hooks[&hook].clone(),
            carry_at: 0,
            d_in: first.d_model,
            hook,
            port,
            ended: false,
        })
    }

    /// Appends up to `n` rows to `out` and returns how many: fewer only at the stream's end.
    fn take(&mut self, n: usize, out: &mut Vec<f32>) -> Result<usize, StageError> {
        let d = self.d_in;
        let mut got = 0;
        while got < n {
            let available = self.carry.len() / d - self.carry_at;
            if available > 0 {
                let count = available.min(n - got);
                out.extend_from_slice(&self.carry[self.carry_at * d..(self.carry_at + count) * d]);
                self.carry_at += count;
                got += count;
                continue;
            }
            if self.ended {
                break;
            }
            match self.port.recv()? {
                None => self.ended = true,
                Some(Message::Activations(batch)) => {
                    let rows = batch.hooks.get(&self.hook).ok_or_else(|| {
                        TrainStageError::Invalid(format!(
                            "a batch of the stream lacks hook {:?}",
                            self.hook
                        ))
                    })?;
                    if batch.d_model != d || rows.len() % d != 0 {
                        return Err(TrainStageError::Invalid(format!(
                            "a batch of the stream has width {} ({} values), the first had {d}",
                            batch.d_model,
                            rows.len()
                        ))
                        .into());
                    }
                    self.carry = rows.clone();
                    self.carry_at = 0;
                }
                Some(Message::Artifact(a)) => {
                    return Err(TrainStageError::Invalid(format!(
                        "the `activations` stream carried an artifact ({})",
                        a.path.display()
                    ))
                    .into());
                }
            }
        }
        Ok(got)
    }
}

/// The seeded mixing buffer: an iterator of training batches.
struct Mixer {
    rows: StreamRows,
    capacity: usize,
    batch: usize,
    /// Buffered rows, row-major.
    buffer: Vec<f32>,
    ready: VecDeque<Vec<f32>>,
    rng: ChaCha8Rng,
    done: bool,
}

impl Mixer {
    fn new(rows: StreamRows, capacity: usize, batch: usize, seed: u64) -> Self {
        Mixer {
            buffer: Vec::with_capacity(capacity * rows.d_in),
            rows,
            capacity,
            batch,
            ready: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            done: false,
        }
    }

    /// Tops the buffer up to its capacity (less only when the stream ends).
    fn fill(&mut self) -> Result<(), StageError> {
        let have = self.buffer.len() / self.rows.d_in;
        self.rows
            .take(self.capacity.saturating_sub(have), &mut self.buffer)?;
        Ok(())
    }

    /// Fills, shuffles, and queues half of the buffer as batches (all of it, in whole batches,
    /// once the stream has ended).
    fn hand_out(&mut self) -> Result<(), StageError> {
        self.fill()?;
        let d = self.rows.d_in;
        let n = self.buffer.len() / d;
        for i in (1..n).rev() {
            let j = self.rng.random_range(0..=i);
            if i != j {
                let (low, high) = self.buffer.split_at_mut(i * d);
                low[j * d..(j + 1) * d].swap_with_slice(&mut high[..d]);
            }
        }
        let give = match self.rows.ended {
            true => n / self.batch * self.batch,
            false => n / 2 / self.batch * self.batch,
        };
        for chunk in self.buffer[..give * d].chunks(self.batch * d) {
            self.ready.push_back(chunk.to_vec());
        }
        self.buffer.drain(..give * d);
        if self.rows.ended {
            self.buffer.clear();
            self.done = true;
        }
        Ok(())
    }
}

impl Iterator for Mixer {
    type Item = Result<Vec<f32>, TrainStageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.hand_out() {
                self.done = true;
                return Some(Err(e.into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use monoscope_core::{ActivationBatch, CancelToken};

    /// A stream of `batches` batches of `rows` rows of width 2; row r is `[r, −r]`.
    fn stream(batches: usize, rows: usize) -> InputPort {
        let (tx, rx) = crossbeam_channel::unbounded();
        for b in 0..batches {
            let values: Vec<f32> = (0..rows)
                .flat_map(|r| {
                    let v = (b * rows + r) as f32;
                    [v, -v]
                })
                .collect();
            let batch = ActivationBatch {
                d_model: 2,
                token_ids: vec![0; rows],
                doc_ids: vec![0; rows],
                positions: vec![0; rows],
                hooks: [("h".to_string(), values)].into_iter().collect(),
            };
            tx.send(Message::Activations(Arc::new(batch))).unwrap();
        }
        InputPort::new("activations", rx, CancelToken::new())
    }

    fn batches(seed: u64) -> Vec<Vec<f32>> {
        let rows = StreamRows::open(stream(7, 10), None).unwrap();
        Mixer::new(rows, 16, 4, seed).map(Result::unwrap).collect()
    }

    /// Every row comes out once (whole batches: 70 rows make 17 batches of 4, two rows
    /// dropped), rows stay intact, the order is mixed and fixed by the seed.
    #[test]
    fn mixer_hands_out_every_row_once_in_a_seeded_order() {
        let out = batches(3);
        assert_eq!(out.len(), 17);
        let mut seen: Vec<i64> = Vec::new();
        for batch in &out {
            assert_eq!(batch.len(), 8);
            for row in batch.chunks(2) {
                assert_eq!(row[0], -row[1], "a row was torn apart");
                seen.push(row[0] as i64);
            }
        }
        let order = seen.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 68, "a row came out twice");
        assert!(order.windows(2).any(|w| w[0] > w[1]), "not shuffled");
        assert_eq!(out, batches(3));
        assert_ne!(out, batches(4));
    }

    #[test]
    fn rows_are_taken_across_batches_and_the_hook_is_checked() {
        let mut rows = StreamRows::open(stream(3, 5), None).unwrap();
        let mut out = Vec::new();
        assert_eq!(rows.take(7, &mut out).unwrap(), 7);
        assert_eq!(out[12..14], [6.0, -6.0]);
        assert_eq!(rows.take(100, &mut out).unwrap(), 8);
        let error = StreamRows::open(stream(1, 5), Some("other".into()))
            .err()
            .unwrap();
        assert!(error.to_string().contains("hook = \"other\""), "{error}");
    }
}
