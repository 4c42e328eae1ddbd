//! One stage, one part of it, or its merge, run on its own from a run directory: what a part's
//! child process, a Slurm job or a Kubernetes pod does (`monoscope run-stage`).
//!
//! Its inputs are the artifacts its upstream stages recorded in their completion markers, which
//! must carry the fingerprints this configuration gives them; it writes its own marker (a
//! part's in `<stage>/parts/<i>/`) when it succeeds. It takes no run lock: the process that
//! scheduled it (`monoscope run`) holds it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crossbeam_channel::bounded;
use monoscope_config::Pipeline;
use monoscope_core::{
    CancelToken, InputPort, Message, OutputPort, Progress, StageContext, StageError, Work, part_dir,
};

use crate::executor::{ExecError, fingerprints, panic_message, prepare_dir, write_marker};
use crate::parts::{completed_part, part_fingerprint};
use crate::record::{self, CompletionMarker};

/// Which share of a stage [`run_stage`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageWork {
    /// The whole stage (one with `parts = 1`).
    Whole,
    /// Part `I` of a stage with `parts = N`.
    Part(usize),
    /// The merge of a stage's finished parts.
    Merge,
}

impl std::fmt::Display for StageWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageWork::Whole => f.write_str("whole"),
            StageWork::Part(i) => write!(f, "part {i}"),
            StageWork::Merge => f.write_str("merge"),
        }
    }
}

/// Runs one stage (or part, or merge) of `pipeline`, whose run directory must hold its
/// upstream stages' completion markers. Returns the seconds it took.
pub fn run_stage(
    pipeline: &mut Pipeline,
    stage_id: &str,
    work: StageWork,
    cancel: &CancelToken,
) -> Result<f64, ExecError> {
    let run_dir = pipeline.run_dir();
    let fingerprints = fingerprints(pipeline);
    let seed = pipeline.settings.seed;
    let known: Vec<String> = pipeline.stages.iter().map(|s| s.id.clone()).collect();
    let Some(spec) = pipeline.stages.iter_mut().find(|s| s.id == stage_id) else {
        return Err(ExecError::Standalone(format!(
            "no stage `{stage_id}` in {} (stages: {})",
            run_dir.join(record::RESOLVED_FILE).display(),
            known.join(", ")
        )));
    };
    let kind = spec.kind.clone();
    let invalid = |message: String| ExecError::Stage {
        stage: stage_id.to_string(),
        kind: kind.clone(),
        source: StageError::Invalid(message),
    };
    let count = spec.parts;
    let fingerprint = fingerprints[stage_id].clone();
    let stage_dir = run_dir.join(stage_id);
    let (dir, marker_fingerprint, work) = match work {
        StageWork::Whole if count > 1 => {
            return Err(invalid(format!(
                "runs in {count} parts: run one with `--part I` (0 <= I < {count}) or join them \
                 with `--merge`"
            )));
        }
        StageWork::Part(_) | StageWork::Merge if count == 1 => {
            return Err(invalid(
                "runs whole (`parts` is 1): run it without `--part` or `--merge`".into(),
            ));
        }
        StageWork::Whole => (stage_dir.clone(), fingerprint.clone(), Work::Whole),
        StageWork::Part(index) if index >= count => {
            return Err(invalid(format!(
                "--part {index}: the stage has parts 0 to {}",
                count - 1
            )));
        }
        StageWork::Part(index) => (
            part_dir(&stage_dir, index),
            part_fingerprint(&fingerprint, index, count),
            Work::Part { index, count },
        ),
        StageWork::Merge => {
            let mut parts = Vec::with_capacity(count);
            let mut missing = Vec::new();
            for index in 0..count {
                match completed_part(&stage_dir, &fingerprint, index, count) {
                    Some(announced) => parts.push(announced),
                    None => missing.push(index.to_string()),
                }
            }
            if !missing.is_empty() {
                return Err(invalid(format!(
                    "cannot merge: part(s) {} of {count} are not complete with this configuration",
                    missing.join(", ")
                )));
            }
            (
                stage_dir.clone(),
                fingerprint.clone(),
                Work::Merge { parts },
            )
        }
    };

    let mut inputs = Vec::new();
    for (port, from) in &spec.inputs {
        let marker = record::read_marker(&run_dir.join(&from.stage))
            .filter(|m| m.fingerprint == fingerprints[&from.stage])
            .ok_or_else(|| {
                invalid(format!(
                    "input `{port}` = \"{from}\": stage `{}` has not completed with this \
                     configuration (no completion marker with its fingerprint in {})",
                    from.stage,
                    run_dir.join(&from.stage).display()
                ))
            })?;
        let (tx, rx) = bounded(marker.artifacts.len().max(1));
        for (announced, artifact) in marker.artifacts {
            if announced == from.port {
                let _ = tx.send(Message::Artifact(artifact));
            }
        }
        drop(tx);
        inputs.push(InputPort::new(port.clone(), rx, cancel.clone()));
    }
    let outputs: Vec<OutputPort> = spec
        .description
        .outputs
        .iter()
        .map(|p| OutputPort::new(p.name.to_string(), Vec::new(), cancel.clone()))
        .collect();
    let device = spec.device;
    let configured = spec
        .configured
        .take()
        .ok_or_else(|| ExecError::AlreadyRun(stage_id.to_string()))?;
    let fail = |source: StageError| ExecError::Stage {
        stage: stage_id.to_string(),
        kind: kind.clone(),
        source,
    };

    let started = Instant::now();
    prepare_dir(&dir).map_err(fail)?;
    let progress = Progress::new(stage_id, indicatif::ProgressBar::hidden(), true);
    let mut ctx = StageContext::new(
        stage_id,
        &run_dir,
        dir.clone(),
        seed,
        cancel.clone(),
        progress,
        inputs,
        outputs,
    );
    ctx.work = work;
    ctx.device = device;
    let result = catch_unwind(AssertUnwindSafe(|| configured.run(&mut ctx)))
        .unwrap_or_else(|payload| Err(StageError::Panicked(panic_message(&*payload))));
    ctx.progress.finish();
    let artifacts = ctx.emitted().to_vec();
    ctx.close_ports();
    result.map_err(fail)?;
    let seconds = started.elapsed().as_secs_f64();
    let marker = CompletionMarker {
        format_version: record::FORMAT_VERSION,
        kind: kind.clone(),
        fingerprint: marker_fingerprint,
        finished_at: record::now_rfc3339(),
        seconds,
        artifacts,
    };
    write_marker(&dir, &marker).map_err(fail)?;
    Ok(seconds)
}
