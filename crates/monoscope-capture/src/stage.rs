//! The `capture` stage.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use monoscope_core::{
    ActivationBatch, Artifact, ArtifactKind, Message, PortSpec, Stage, StageConfig, StageContext,
    StageDescription, StageError, StreamKind, Work, port_names, register_stage,
};
use monoscope_lm::{ForwardOptions, HookName, MatmulKind, Model, ModelSpec, Precision, TokenBatch};
use monoscope_store::{
    Dtype, MANIFEST_FILE, Manifest, ModelIdentity, PROGRESS_FILE, StoreSpec, StoreWriter,
};
use serde::{Deserialize, Serialize};

use crate::corpus::{CorpusFormat, ParagraphSplit, read_corpus};
use crate::error::CaptureError;
use crate::windows::{PartSpec, Window, WindowOptions, plan_windows};

/// How stored activations are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    F32,
    F16,
    Bf16,
}

impl From<StoreDtype> for Dtype {
    fn from(d: StoreDtype) -> Dtype {
        match d {
            StoreDtype::F32 => Dtype::F32,
            StoreDtype::F16 => Dtype::F16,
            StoreDtype::Bf16 => Dtype::Bf16,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Model when the `model` input is not connected: a path or a known name.
    pub model: String,
    /// Corpus when the `corpus` input is not connected: a path or a known name.
    pub corpus: String,
    pub corpus_format: CorpusFormat,
    /// Field holding the text in JSON corpora (default: `extract` for a JSON object, as in the
    /// Wikipedia summaries; `text` for JSONL).
    pub text_field: Option<String>,
    /// What one document of a text file is.
    pub split: ParagraphSplit,
    /// Hook points to record, TransformerLens names (e.g. `blocks.15.hook_resid_post`).
    pub hooks: Vec<String>,
    /// Tokens per context window.
    pub context_length: usize,
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Stop after this many tokens (whole windows); the whole corpus when unset.
    pub max_tokens: Option<u64>,
    /// Prepend the model's BOS token to each document.
    pub prepend_bos: bool,
    /// Do not store BOS/EOS positions (their activations are huge outliers).
    pub skip_special: bool,
    /// Seed for the document order (default: the pipeline seed).
    pub seed: Option<u64>,
    /// `i/N`: capture the i-th of N disjoint parts of the corpus (for cluster job arrays).
    pub shard: String,
    /// Write an activation store (otherwise only stream downstream).
    pub write_store: bool,
    pub dtype: StoreDtype,
    pub zstd_level: i32,
    pub rows_per_shard: usize,
    /// Arithmetic of the model's linear layers: `f32` (the reference) or `int8`.
    pub matmul: MatmulKind,
    /// Float type of the model's weights and matrix products on a GPU device: `f32`, `f16` or
    /// `bf16` (residual stream, norms and softmax stay f32). The CPU takes `f32` only.
    pub precision: Precision,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            model: "smollm2".into(),
            corpus: "wiki".into(),
            corpus_format: CorpusFormat::Auto,
            text_field: Default::default(),
            split: ParagraphSplit::File,
            hooks: vec!["blocks.15.hook_resid_post".into()],
            context_length: 128,
            batch_size: 16,
            max_tokens: Default::default(),
            prepend_bos: true,
            skip_special: true,
            seed: Default::default(),
            shard: "0/1".into(),
            write_store: true,
            dtype: StoreDtype::F16,
            zstd_level: 3,
            rows_per_shard: 8192,
            matmul: Default::default(),
            precision: Default::default(),
        }
    }
}

impl StageConfig for CaptureConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.hooks.is_empty() {
            problems.push((
                "hooks".into(),
                "= []: expected at least one hook name".into(),
            ));
        }
        for (key, value) in [
            ("context_length", self.context_length),
            ("batch_size", self.batch_size),
            ("rows_per_shard", self.rows_per_shard),
        ] {
            if value == 0 {
                problems.push((key.into(), "= 0: expected at least 1".into()));
            }
        }
        if let Err(e) = self.shard.parse::<PartSpec>() {
            problems.push(("shard".into(), e));
        }
        if !(1..=22).contains(&self.zstd_level) {
            problems.push((
                "zstd_level".into(),
                format!("= {}: expected 1..=22", self.zstd_level),
            ));
        }
        problems
    }
}

/// Runs a model over a corpus and keeps its activations.
#[derive(Debug)]
pub struct Capture;

impl Stage for Capture {
    type Config = CaptureConfig;

    const PARTS: Option<&'static str> =
        Some("a contiguous range of the context windows (the whole capture's plan, cut in N)");

    fn description() -> StageDescription {
        StageDescription {
            kind: "capture".into(),
            doc: "Runs a model over a corpus; streams and stores activations at the chosen hooks"
                .into(),
            inputs: vec![
                PortSpec::artifact(
                    port_names::MODEL,
                    ArtifactKind::MODEL,
                    "the model (else `model`)",
                )
                .optional(),
                PortSpec::artifact(
                    port_names::CORPUS,
                    ArtifactKind::CORPUS,
                    "the corpus (else `corpus`)",
                )
                .optional(),
            ],
            outputs: vec![
                PortSpec::stream(
                    port_names::ACTIVATIONS,
                    StreamKind::ACTIVATIONS,
                    "batches of activations with tokens",
                ),
                PortSpec::artifact(
                    port_names::STORE,
                    ArtifactKind::ACTIVATION_STORE,
                    "the activation store",
                ),
            ],
        }
    }

    fn run(config: CaptureConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        if let Work::Merge { parts } = &ctx.work {
            let parts = parts.clone();
            return crate::parts::merge(&config, &parts, ctx);
        }
        let model_path =
            monoscope_fetch::stages::model_input(ctx, port_names::MODEL, &config.model)?;
        let corpus_path =
            monoscope_fetch::stages::corpus_input(ctx, port_names::CORPUS, &config.corpus)?;
        ctx.progress
            .set_message(format!("loading {}", model_path.display()));
        let device = monoscope_device::open(ctx.device).map_err(StageError::other)?;
        let model = ModelSpec::new(model_path)
            .with_matmul(config.matmul)
            .with_precision(config.precision)
            .with_device(device)
            .load()
            .map_err(CaptureError::from)?;
        capture(&model, &corpus_path, &config, ctx)
    }
}

register_stage!(Capture);

/// The capture itself, given a loaded model (tests call it with tiny models).
pub fn capture(
    model: &Model,
    corpus: &Path,
    config: &CaptureConfig,
    ctx: &mut StageContext<'_>,
) -> Result<(), StageError> {
    let hooks: Vec<HookName> = config
        .hooks
        .iter()
        .map(|h| model.hook(h))
        .collect::<Result<_, _>>()
        .map_err(CaptureError::from)?;
    let width = hook_width(model, &hooks)?;
    let part: PartSpec = config.shard.parse().map_err(CaptureError::Invalid)?;
    if ctx.work.part().is_some() && !config.write_store {
        return Err(CaptureError::Invalid(
            "`parts` joins the parts' stores: `write_store = false` leaves nothing to join".into(),
        )
        .into());
    }
    if ctx.work.part().is_some() && part != PartSpec::WHOLE {
        return Err(CaptureError::Invalid(format!(
            "`shard` = \"{part}\" and `parts` both split the corpus: use `parts` alone"
        ))
        .into());
    }
    let text_field = config
        .text_field
        .clone()
        .unwrap_or_else(|| match corpus.extension() {
            Some(e) if e == "jsonl" => "text".into(),
            _ => "extract".into(),
        });
    let documents = read_corpus(corpus, config.corpus_format, &text_field, config.split)?;
    let tokenizer = model.tokenizer();
    let bos = if config.prepend_bos {
        tokenizer.bos_id()
    } else {
        None
    };
    let skip_ids = match config.skip_special {
        true => tokenizer
            .bos_id()
            .into_iter()
            .chain(tokenizer.eos_ids().iter().copied())
            .collect(),
        false => Vec::new(),
    };
    let options = WindowOptions {
        context_length: config.context_length,
        bos,
        skip_ids,
        max_tokens: config.max_tokens,
        seed: config.seed.unwrap_or(ctx.seed),
        part,
    };
    let tokenize = |text: &str| {
        tokenizer
            .encode(text, false)
            .map_err(|e| CaptureError::Invalid(e.to_string()))
    };
    let mut plan = plan_windows(&documents, tokenize, &options)?;
    // A part takes its share of the whole capture's windows, so that its parts, joined in
    // order, hold exactly the rows of a capture in one piece.
    if let Some((index, count)) = ctx.work.part() {
        let share = Work::share(index, count, plan.windows.len());
        plan.windows = plan.windows.drain(share).collect();
    }
    let total_tokens = (plan.windows.len() * config.context_length) as u64;
    let share = match ctx.work.part() {
        Some((index, count)) => format!("part {index} of {count} of the capture"),
        None => format!("shard {part}"),
    };
    tracing::info!(
        stage = ctx.stage_id,
        "{} windows of {} tokens ({share}); the whole plan reads {} of {} documents",
        plan.windows.len(),
        config.context_length,
        plan.documents_used,
        plan.documents_in_part
    );
    ctx.progress.set_length(total_tokens);

    let dir = ctx.stage_dir.join(monoscope_artifacts::capture::STORE_DIR);
    let spec = config.write_store.then(|| {
        let mut spec = store_spec(model, width, config, part, corpus);
        if let Some((index, count)) = ctx.work.part() {
            spec.metadata[crate::parts::PART_KEY] = format!("{index}/{count}").into();
        }
        spec
    });
    // A consumer of the stream must see every row. A rerun whose store is already finished
    // (the executor reruns a capture when a stream consumer runs again) reads it back.
    let streaming = ctx.has_consumers(port_names::ACTIVATIONS);
    if let (Some(spec), true) = (&spec, streaming) {
        let rows: u64 = plan.windows.iter().map(|w| w.kept() as u64).sum();
        if let Some(store) = crate::replay::finished_store(&dir, spec, rows) {
            tracing::info!(
                stage = ctx.stage_id,
                "replaying the finished {}",
                dir.display()
            );
            crate::replay::send_rows(&store, ctx)?;
            return announce_store(ctx, &dir, store.manifest(), model.name());
        }
    }
    let mut writer = match spec {
        Some(spec) => Some(open_store(spec, &dir)?),
        None => None,
    };
    let already = writer.as_ref().map_or(0, |w| w.rows_stored());
    let dtype: Dtype = config.dtype.into();
    let mut rows_before = 0u64;
    for chunk in plan.windows.chunks(config.batch_size) {
        ctx.cancel.check()?;
        let kept: u64 = chunk.iter().map(|w| w.kept() as u64).sum();
        let tokens = (chunk.len() * config.context_length) as u64;
        // Rows an interrupted run stored are skipped, or, when the stream has a consumer,
        // computed again (the input is deterministic) and sent, not written twice.
        if rows_before + kept <= already && !streaming {
            rows_before += kept;
            ctx.progress.inc(tokens);
            continue;
        }
        let mut batch = forward_batch(model, chunk, &hooks)?;
        if writer.is_some() && streaming {
            // The stream carries exactly what the store holds.
            batch.hooks.values_mut().for_each(|v| dtype.round(v));
        }
        if let Some(writer) = writer.as_mut()
            && rows_before + kept > already
        {
            let skip = already.saturating_sub(rows_before) as usize;
            match skip {
                0 => writer.write_batch(&batch),
                _ => writer.write_batch(&monoscope_store::slice_batch(&batch, skip..batch.rows())),
            }
            .map_err(CaptureError::from)?;
        }
        rows_before += kept;
        ctx.send(
            port_names::ACTIVATIONS,
            Message::Activations(Arc::new(batch)),
        )?;
        ctx.progress.inc(tokens);
    }
    if let Some(writer) = writer {
        let manifest = writer.finish().map_err(CaptureError::from)?;
        announce_store(ctx, &dir, &manifest, model.name())?;
    }
    Ok(())
}

pub(crate) fn announce_store(
    ctx: &mut StageContext<'_>,
    dir: &Path,
    manifest: &Manifest,
    model_name: &str,
) -> Result<(), StageError> {
    let metadata = serde_json::json!({
        "hooks": manifest.hooks,
        "d_model": manifest.d_model,
        "rows": manifest.rows,
        "model": model_name,
    });
    ctx.emit_artifact(
        port_names::STORE,
        Artifact::new(ArtifactKind::ACTIVATION_STORE, dir).with_metadata(metadata),
    )
}

/// What the store of this capture is: model, hooks, dtype, layout and capture settings.
fn store_spec(
    model: &Model,
    width: usize,
    config: &CaptureConfig,
    part: PartSpec,
    corpus: &Path,
) -> StoreSpec {
    let mut spec = StoreSpec::new(
        ModelIdentity {
            name: model.name().to_string(),
            sha256: model.sha256().to_string(),
        },
        config.hooks.iter().map(|h| h.to_string()).collect(),
        width,
    );
    spec.dtype = config.dtype.into();
    spec.context_length = config.context_length;
    spec.rows_per_shard = config.rows_per_shard;
    spec.zstd_level = config.zstd_level;
    spec.metadata = serde_json::json!({
        "corpus": corpus.display().to_string(),
        "max_tokens": config.max_tokens,
        "seed": config.seed,
        "shard": part.to_string(),
        "prepend_bos": config.prepend_bos,
        "skip_special": config.skip_special,
    });
    spec
}

/// Creates the store, or resumes one that an interrupted run left (same spec).
pub(crate) fn open_store(spec: StoreSpec, dir: &Path) -> Result<StoreWriter, CaptureError> {
    let interrupted = dir.join(PROGRESS_FILE).exists() && !dir.join(MANIFEST_FILE).exists();
    if interrupted {
        match StoreWriter::resume(dir, spec.clone()) {
            Ok(writer) => {
                tracing::info!(
                    "resuming {} after {} stored rows",
                    dir.display(),
                    writer.rows_stored()
                );
                return Ok(writer);
            }
            Err(e) => tracing::warn!("cannot resume {} ({e}); starting it again", dir.display()),
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| CaptureError::Invalid(format!("cannot replace {}: {e}", dir.display())))?;
    }
    Ok(StoreWriter::create(dir, spec)?)
}

/// The one row width of `hooks`: a store holds rows of one width, so hooks of different widths
/// (`hook_resid_post` and `mlp.hook_post`) go to separate capture stages.
fn hook_width(model: &Model, hooks: &[HookName]) -> Result<usize, CaptureError> {
    let widths: Vec<(String, usize)> = hooks
        .iter()
        .map(|h| (h.to_string(), model.hook_width(h)))
        .collect();
    let first = widths.first().map_or(model.d_model(), |w| w.1);
    if widths.iter().any(|w| w.1 != first) {
        let list: Vec<String> = widths.iter().map(|(h, w)| format!("{h} ({w})")).collect();
        return Err(CaptureError::Invalid(format!(
            "`hooks`: one store holds rows of one width, but these differ: {}; capture them \
             in separate stages",
            list.join(", ")
        )));
    }
    Ok(first)
}

/// One forward pass over a batch of windows; the kept tokens' activations per hook.
fn forward_batch(
    model: &Model,
    windows: &[Window],
    hooks: &[HookName],
) -> Result<ActivationBatch, CaptureError> {
    let rows: Vec<Vec<u32>> = windows.iter().map(|w| w.tokens.clone()).collect();
    let output = model.forward(
        &TokenBatch::from_rows(&rows)?,
        &ForwardOptions::capture(hooks.to_vec()),
    )?;
    let d = hook_width(model, hooks)?;
    let keep: Vec<bool> = windows
        .iter()
        .flat_map(|w| w.keep.iter().copied())
        .collect();
    let mut batch = ActivationBatch {
        d_model: d,
        token_ids: Vec::new(),
        doc_ids: Vec::new(),
        positions: Vec::new(),
        hooks: BTreeMap::new(),
    };
    for w in windows {
        for i in (0..w.tokens.len()).filter(|&i| w.keep[i]) {
            batch.token_ids.push(w.tokens[i]);
            batch.doc_ids.push(w.doc_ids[i]);
            batch.positions.push(w.positions[i]);
        }
    }
    for hook in hooks {
        let all = output.activation_host(hook)?;
        let mut kept = Vec::with_capacity(batch.token_ids.len() * d);
        for (row, values) in all.chunks_exact(d).enumerate() {
            if keep[row] {
                kept.extend_from_slice(values);
            }
        }
        batch.hooks.insert(hook.to_string(), kept);
    }
    Ok(batch)
}
