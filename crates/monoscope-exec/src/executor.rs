use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use monoscope_config::{Pipeline, StageSpec};
use monoscope_core::{
    CancelToken, InputPort, Message, OutputPort, PortType, Progress, StageContext, StageError,
    atomic, fingerprint,
};

use crate::memory::{self, RssSampler};
use crate::record::{self, CompletionMarker, RunRecord};

/// Often enough to catch a stage's peak, rarely enough to cost nothing (one small file read).
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// How stages show their progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars when stderr is a terminal, periodic log lines otherwise.
    Auto,
    /// Nothing (tests).
    Hidden,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Rerun every stage even when its outputs are complete and unchanged.
    pub force: bool,
    /// Set it to stop the run (the CLI's Ctrl-C handler does).
    pub cancel: CancelToken,
    pub progress: ProgressMode,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            force: false,
            cancel: CancelToken::new(),
            progress: ProgressMode::Auto,
        }
    }
}

pub use monoscope_artifacts::run::{StageReport, StageStatus};

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_dir: PathBuf,
    pub stages: Vec<StageReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("stage `{stage}` ({kind}) failed: {source}")]
    Stage {
        stage: String,
        kind: String,
        #[source]
        source: StageError,
    },
    #[error("the run was cancelled")]
    Cancelled,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Artifact(#[from] monoscope_artifacts::ArtifactError),
    #[error("stage `{0}` was already run from this pipeline value; load the pipeline again")]
    AlreadyRun(String),
    /// `run-stage` was asked for something the run directory cannot give.
    #[error("{0}")]
    Standalone(String),
    /// The Slurm backend: a command failed, or jobs did not complete.
    #[error("{0}")]
    Slurm(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs every stage of `pipeline`, skipping those whose outputs are complete and whose
/// fingerprint (config, seed, inputs) is unchanged, unless `options.force`.
pub fn run(pipeline: &mut Pipeline, options: &RunOptions) -> Result<RunReport, ExecError> {
    if pipeline.settings.backend == monoscope_config::Backend::Slurm {
        return crate::slurm::run(pipeline, options);
    }
    let (run_dir, _lock) = open_run_dir(pipeline)?;

    let fingerprints = fingerprints(pipeline);
    let skipped = skippable(pipeline, &run_dir, &fingerprints, options.force);
    let mut record = new_record(pipeline);
    write_record(&run_dir, &record)?;

    let (mut senders, mut receivers) = channels(pipeline, &skipped);
    let progress = ProgressFactory::new(options.progress);
    let first_error: Mutex<Option<(String, String, StageError)>> = Mutex::new(None);
    let reports: Mutex<Vec<StageReport>> = Mutex::new(Vec::new());
    let cancel = &options.cancel;
    let seed = pipeline.settings.seed;
    let sampler = &RssSampler::start(RSS_SAMPLE_INTERVAL);
    let slots = &crate::parts::Slots::new(
        pipeline
            .settings
            .max_parallel
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    );

    let mut jobs = Vec::new();
    for stage in &mut pipeline.stages {
        let id = stage.id.clone();
        let outputs: Vec<OutputPort> = stage
            .description
            .outputs
            .iter()
            .map(|p| {
                let to = senders
                    .remove(&(id.clone(), p.name.to_string()))
                    .unwrap_or_default();
                OutputPort::new(p.name.to_string(), to, cancel.clone())
            })
            .collect();
        let inputs: Vec<InputPort> = stage
            .inputs
            .keys()
            .filter_map(|port| {
                let rx = receivers.remove(&(id.clone(), port.clone()))?;
                Some(InputPort::new(port.clone(), rx, cancel.clone()))
            })
            .collect();
        let configured = if skipped.contains(&id) {
            None
        } else {
            Some(
                stage
                    .configured
                    .take()
                    .ok_or_else(|| ExecError::AlreadyRun(id.clone()))?,
            )
        };
        let upstream: Vec<(String, String)> = stage
            .inputs
            .values()
            .map(|from| (from.stage.clone(), fingerprints[&from.stage].clone()))
            .collect();
        jobs.push((
            (
                stage.id.clone(),
                stage.kind.clone(),
                stage.parts,
                stage.device,
                upstream,
            ),
            configured,
            inputs,
            outputs,
        ));
    }
    drop(senders);
    drop(receivers);

    std::thread::scope(|scope| {
        for ((id, kind, parts, device, upstream), configured, inputs, outputs) in jobs {
            let fingerprint = fingerprints[&id].clone();
            let stage_dir = run_dir.join(&id);
            let (run_dir, progress, first_error, reports) =
                (&run_dir, &progress, &first_error, &reports);
            scope.spawn(move || {
                let Some(configured) = configured else {
                    replay(&id, &stage_dir, outputs);
                    tracing::info!(stage = %id, "skipped: outputs complete, config and inputs unchanged");
                    reports.lock().unwrap_or_else(|p| p.into_inner()).push(StageReport {
                        id, kind, status: StageStatus::Skipped, seconds: 0.0, waited_seconds: 0.0,
                        peak_rss_bytes: None, fingerprint,
                    });
                    return;
                };
                let started = Instant::now();
                let mut ready = started;
                let outcome = prepare_dir(&stage_dir).and_then(|()| {
                    let mut ctx = StageContext::new(
                        &id, run_dir, stage_dir.clone(), seed, cancel.clone(),
                        progress.bar(&id), inputs, outputs,
                    );
                    ctx.device = device;
                    let parts_done = match parts {
                        1 => Ok(()),
                        count => crate::parts::LocalParts {
                            run_dir, stage: &id, count, fingerprint: &fingerprint, upstream, slots,
                        }
                        .run(&mut ctx)
                        .map(|announced| ctx.work = monoscope_core::Work::Merge { parts: announced }),
                    };
                    let result = parts_done.and_then(|()| {
                        catch_unwind(AssertUnwindSafe(|| configured.run(&mut ctx)))
                            .unwrap_or_else(|payload| Err(StageError::Panicked(panic_message(&*payload))))
                    });
                    // Cancel before closing the ports: a consumer that sees its input end must
                    // already see the cancellation, or it would take a cut stream as complete.
                    if result.as_ref().is_err_and(|e| !matches!(e, StageError::Cancelled)) {
                        cancel.cancel();
                    }
                    ctx.progress.finish();
                    ready = ctx.inputs_ready_at().unwrap_or(started);
                    let emitted = ctx.emitted().to_vec();
                    ctx.close_ports();
                    result.map(|()| emitted)
                });
                let finished = Instant::now();
                let seconds = finished.duration_since(ready).as_secs_f64();
                let waited_seconds = ready.duration_since(started).as_secs_f64();
                let peak_rss_bytes = sampler.peak_between(ready, finished);
                let status = match outcome {
                    Ok(artifacts) if !cancel.is_cancelled() => {
                        let marker = CompletionMarker {
                            format_version: record::FORMAT_VERSION,
                            kind: kind.clone(), fingerprint: fingerprint.clone(),
                            finished_at: record::now_rfc3339(), seconds, artifacts,
                        };
                        match write_marker(&stage_dir, &marker) {
                            Ok(()) => StageStatus::Ran,
                            Err(e) => {
                                fail(first_error, cancel, &id, &kind, e);
                                StageStatus::Failed
                            }
                        }
                    }
                    Ok(_) | Err(StageError::Cancelled) => StageStatus::Cancelled,
                    Err(e) => {
                        fail(first_error, cancel, &id, &kind, e);
                        StageStatus::Failed
                    }
                };
                tracing::info!(stage = %id, ?status, seconds = format!("{seconds:.2}"), "stage finished");
                reports.lock().unwrap_or_else(|p| p.into_inner()).push(StageReport {
                    id, kind, status, seconds, waited_seconds, peak_rss_bytes, fingerprint,
                });
            });
        }
    });

    let mut stages = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    let order: BTreeMap<&str, usize> = pipeline
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    stages.sort_by_key(|r| order.get(r.id.as_str()).copied());
    let error = first_error.into_inner().unwrap_or_else(|p| p.into_inner());
    record.finished_at = Some(record::now_rfc3339());
    record.peak_rss_bytes = memory::process_peak_rss();
    record.stages = stages.clone();
    let result = match error {
        Some((stage, kind, source)) => Err(ExecError::Stage {
            stage,
            kind,
            source,
        }),
        None if cancel.is_cancelled() => Err(ExecError::Cancelled),
        None => Ok(RunReport {
            run_dir: run_dir.clone(),
            stages,
        }),
    };
    finish_record(&run_dir, record, result)
}

/// Writes the final `run.json` of a run that ended with `result`, and hands `result` on.
pub(crate) fn finish_record(
    run_dir: &Path,
    mut record: RunRecord,
    result: Result<RunReport, ExecError>,
) -> Result<RunReport, ExecError> {
    (record.status, record.error) = match &result {
        Ok(_) => ("succeeded".into(), None),
        Err(ExecError::Cancelled) => ("cancelled".into(), None),
        Err(e) => ("failed".into(), Some(error_chain(e))),
    };
    write_record(run_dir, &record)?;
    result
}

/// `run.json` as a run starts.
pub(crate) fn new_record(pipeline: &Pipeline) -> RunRecord {
    RunRecord {
        format_version: record::FORMAT_VERSION,
        tool: "monoscope".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("MONOSCOPE_GIT_COMMIT").into(),
        pipeline: pipeline.settings.name.clone(),
        pipeline_file: pipeline.file.clone(),
        seed: pipeline.settings.seed,
        overrides: pipeline.overrides.clone(),
        provenance: pipeline.provenance.clone(),
        started_at: record::now_rfc3339(),
        finished_at: None,
        status: "running".into(),
        error: None,
        peak_rss_bytes: None,
        stages: Vec::new(),
    }
}

/// Prepares a run directory as every backend does: [`lock_run_dir`], then [`prepare_run_dir`].
pub(crate) fn open_run_dir(
    pipeline: &Pipeline,
) -> Result<(PathBuf, monoscope_artifacts::run::RunLock), ExecError> {
    let (run_dir, lock) = lock_run_dir(pipeline)?;
    prepare_run_dir(pipeline, &run_dir)?;
    Ok((run_dir, lock))
}

/// Creates the run directory and takes its lock, held while the guard lives.
pub(crate) fn lock_run_dir(
    pipeline: &Pipeline,
) -> Result<(PathBuf, monoscope_artifacts::run::RunLock), ExecError> {
    let run_dir = pipeline.run_dir();
    std::fs::create_dir_all(&run_dir).map_err(io_err(&run_dir))?;
    // Held to the end of the run: a second run in this directory would remove this one's
    // markers and outputs as it prepared its own stages.
    let lock = monoscope_artifacts::run::RunLock::acquire(&run_dir)?;
    Ok((run_dir, lock))
}

/// Recovers what an interrupted run left in a locked run directory and writes `resolved.toml`.
pub(crate) fn prepare_run_dir(pipeline: &Pipeline, run_dir: &Path) -> Result<(), ExecError> {
    atomic::recover_tree(run_dir, false).map_err(io_err(run_dir))?;
    let resolved_path = run_dir.join(record::RESOLVED_FILE);
    atomic::write(&resolved_path, pipeline.resolved_toml().as_bytes())
        .map_err(io_err(&resolved_path))?;
    Ok(())
}

/// The error and all its sources, joined: what `run.json` and the CLI show.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

fn fail(
    first: &Mutex<Option<(String, String, StageError)>>,
    cancel: &CancelToken,
    id: &str,
    kind: &str,
    e: StageError,
) {
    let mut first = first.lock().unwrap_or_else(|p| p.into_inner());
    if first.is_none() {
        tracing::error!(stage = %id, "{}", error_chain(&e));
        *first = Some((id.to_string(), kind.to_string(), e));
    }
    cancel.cancel();
}

pub(crate) fn prepare_dir(stage_dir: &Path) -> Result<(), StageError> {
    std::fs::create_dir_all(stage_dir).map_err(|e| StageError::io(stage_dir, e))?;
    // A killed earlier run may have left temporaries, or a directory swap half done.
    atomic::recover_tree(stage_dir, true).map_err(|e| StageError::io(stage_dir, e))?;
    let marker = record::marker_path(stage_dir);
    match std::fs::remove_file(&marker) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StageError::io(marker, e)),
    }
}

pub(crate) fn write_marker(stage_dir: &Path, marker: &CompletionMarker) -> Result<(), StageError> {
    use monoscope_artifacts::fault::{FaultPoint, reach};
    reach(FaultPoint::BeforeMarker)
        .map_err(|e| StageError::io(record::marker_path(stage_dir), e))?;
    Ok(monoscope_artifacts::run::write_marker(stage_dir, marker)?)
}

pub(crate) fn write_record(run_dir: &Path, record: &RunRecord) -> Result<(), ExecError> {
    Ok(monoscope_artifacts::run::write_run_record(run_dir, record)?)
}

/// A skipped stage hands its recorded artifacts to its consumers again.
fn replay(id: &str, stage_dir: &Path, outputs: Vec<OutputPort>) {
    let Some(marker) = record::read_marker(stage_dir) else {
        return;
    };
    for output in &outputs {
        for (port, artifact) in &marker.artifacts {
            if port == output.name() && output.send(Message::Artifact(artifact.clone())).is_err() {
                tracing::debug!(stage = %id, "replay interrupted by cancellation");
                return;
            }
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// Each stage's fingerprint: kind, parameters, seed, tool version and commit, and its inputs' fingerprints
/// (so a change upstream invalidates everything downstream).
pub(crate) fn fingerprints(pipeline: &Pipeline) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for stage in &pipeline.stages {
        let inputs: BTreeMap<&String, String> = stage
            .inputs
            .iter()
            .map(|(port, from)| (port, format!("{}:{}", out[&from.stage], from.port)))
            .collect();
        let value = serde_json::json!({
            "kind": stage.kind,
            "params": stage.params,
            "seed": pipeline.settings.seed,
            "version": env!("CARGO_PKG_VERSION"),
            // A stage's code can change its outputs without any config changing: a build from
            // another commit never reuses them (a released build keeps one commit).
            "git_commit": env!("MONOSCOPE_GIT_COMMIT"),
            "inputs": inputs,
        });
        // Parts change where the outputs are made, not what they are; a count change still
        // makes the stage run again, as its parts' directories no longer fit.
        let value = match stage.parts {
            1 => value,
            parts => serde_json::json!({ "stage": value, "parts": parts }),
        };
        out.insert(stage.id.clone(), fingerprint::of_json(&value));
    }
    out
}

/// Stages that need not run: complete, same fingerprint, recorded artifacts still present, and
/// every consumer of their streams is skipped too (a stream cannot be replayed).
pub(crate) fn skippable(
    pipeline: &Pipeline,
    run_dir: &Path,
    fingerprints: &BTreeMap<String, String>,
    force: bool,
) -> BTreeSet<String> {
    let mut skipped = BTreeSet::new();
    if force {
        return skipped;
    }
    for stage in pipeline.stages.iter().rev() {
        let complete = record::read_marker(&run_dir.join(&stage.id)).is_some_and(|m| {
            m.fingerprint == fingerprints[&stage.id]
                && m.artifacts.iter().all(|(_, a)| a.path.exists())
        });
        let streams_consumed_by_runners = pipeline.stages.iter().any(|consumer| {
            !skipped.contains(&consumer.id)
                && consumer
                    .inputs
                    .values()
                    .any(|from| from.stage == stage.id && is_stream(stage, &from.port))
        });
        if complete && !streams_consumed_by_runners {
            skipped.insert(stage.id.clone());
        }
    }
    skipped
}

fn is_stream(stage: &StageSpec, port: &str) -> bool {
    stage
        .description
        .output(port)
        .is_some_and(|p| matches!(p.ty, PortType::Stream(_)))
}

type PortKey = (String, String);
type Senders = BTreeMap<PortKey, Vec<Sender<Message>>>;
type Receivers = BTreeMap<PortKey, Receiver<Message>>;

/// One bounded channel per connection; an output feeding several inputs gets one sender each.
fn channels(pipeline: &Pipeline, skipped: &BTreeSet<String>) -> (Senders, Receivers) {
    let capacity = pipeline.settings.channel_capacity;
    let mut senders: Senders = BTreeMap::new();
    let mut receivers = BTreeMap::new();
    for consumer in &pipeline.stages {
        if skipped.contains(&consumer.id) {
            continue;
        }
        for (port, from) in &consumer.inputs {
            let (tx, rx) = bounded(capacity);
            senders
                .entry((from.stage.clone(), from.port.clone()))
                .or_default()
                .push(tx);
            receivers.insert((consumer.id.clone(), port.clone()), rx);
        }
    }
    (senders, receivers)
}

/// Makes each stage's progress handle.
struct ProgressFactory {
    multi: Option<MultiProgress>,
    log_lines: bool,
}

impl ProgressFactory {
    fn new(mode: ProgressMode) -> Self {
        match mode {
            ProgressMode::Hidden => ProgressFactory {
                multi: None,
                log_lines: false,
            },
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressFactory {
                multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
                log_lines: false,
            },
            ProgressMode::Auto => ProgressFactory {
                multi: None,
                log_lines: true,
            },
        }
    }

    fn bar(&self, stage: &str) -> Progress {
        let Some(multi) = &self.multi else {
            return Progress::new(stage, ProgressBar::hidden(), self.log_lines);
        };
        let bar = multi.add(ProgressBar::new(0));
        let style = ProgressStyle::with_template(
            "{prefix:>12.bold} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(stage.to_string());
        Progress::new(stage, bar, false)
    }
}
