//! The Slurm backend (`[pipeline] backend = "slurm"`, `monoscope run --backend slurm`).
//!
//! Every stage that is not complete becomes jobs: a stage with `parts = N` a job array of its
//! missing parts (`sbatch --array`) and a merge job after it; any other stage one job. A job
//! waits for its inputs' jobs (`--dependency=afterok:…`, `--kill-on-invalid-dep=yes`, so a
//! failure removes what depends on it). Each job runs `monoscope run-stage RUN_DIR STAGE
//! [--part I | --merge]`, which reads its inputs from the upstream stages' completion markers:
//! the run directory, the pipeline's files and the `monoscope` executable must be on a file
//! system that every node sees, at the same paths.
//!
//! The batch scripts are written to `<run_dir>/slurm/` (the job list, `jobs.json`, beside
//! them, the jobs' output in `slurm/logs/`). `monoscope run` follows the jobs (`squeue`) until
//! none is left, reports each part that did not complete with its job's state (`scontrol`),
//! and, run again, submits only the parts and stages that are still missing. Ctrl-C cancels
//! the submitted jobs (`scancel`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use monoscope_artifacts::jobs::{self, JobRole, Jobs, LOGS_DIR, Submission};
use monoscope_config::{Pipeline, StageSpec};

use crate::executor::{
    ExecError, RunOptions, RunReport, StageReport, StageStatus, fingerprints, finish_record,
    io_err, lock_run_dir, new_record, prepare_run_dir, skippable, write_record,
};
use crate::parts::{RUN_STAGE_SUBCOMMAND, completed_part, worker_executable};
use crate::record;

/// How often the follower asks `squeue`; override with `MONOSCOPE_SLURM_POLL_MS`.
const POLL: Duration = Duration::from_secs(3);
const POLL_ENV: &str = "MONOSCOPE_SLURM_POLL_MS";

/// Submits the pipeline's incomplete stages as Slurm jobs, follows them to the end and reports
/// as [`crate::run`] does.
pub fn run(pipeline: &mut Pipeline, options: &RunOptions) -> Result<RunReport, ExecError> {
    let (run_dir, _lock) = lock_run_dir(pipeline)?;
    let run_dir = std::path::absolute(&run_dir).map_err(io_err(&run_dir))?;
    let mut jobs = jobs::read_jobs(&run_dir)?;
    // A follower that was killed leaves its jobs behind; new jobs beside them would write the
    // same directories (and the recovery below would take their temporaries for a dead
    // process's: their pids are other nodes').
    let earlier: BTreeSet<&str> = jobs.submissions.iter().map(|s| s.job_id.as_str()).collect();
    let still_queued = queued_jobs(&earlier)?;
    if !still_queued.is_empty() {
        let list: Vec<&str> = still_queued.keys().copied().collect();
        return Err(ExecError::Slurm(format!(
            "jobs of an earlier submission in {} are still queued or running ({}): wait for \
             them or cancel them (`scancel {}`) before running again",
            run_dir.display(),
            list.join(", "),
            list.join(" ")
        )));
    }
    prepare_run_dir(pipeline, &run_dir)?;
    let mut record = new_record(pipeline);
    write_record(&run_dir, &record)?;
    let fingerprints = fingerprints(pipeline);
    let skipped = skippable(pipeline, &run_dir, &fingerprints, options.force);
    let exe = worker_executable()
        .map_err(|e| ExecError::Slurm(format!("cannot find the monoscope executable: {e}")))?;
    let cwd = std::env::current_dir().map_err(io_err(Path::new(".")))?;
    let slurm_dir = jobs::slurm_dir(&run_dir);
    let logs = slurm_dir.join(LOGS_DIR);
    std::fs::create_dir_all(&logs).map_err(io_err(&logs))?;
    for path in [&run_dir, &cwd, &exe] {
        plain_path(path)?;
    }
    let context = ScriptContext {
        pipeline: &pipeline.settings.name,
        exe: &exe,
        run_dir: &run_dir,
        cwd: &cwd,
        logs: &logs,
    };

    // The job whose success means the stage is complete, by stage id.
    let mut last_job: BTreeMap<String, String> = BTreeMap::new();
    let mut submitted: Vec<Submitted> = Vec::new();
    let mut submit = || -> Result<(), ExecError> {
        for stage in &pipeline.stages {
            if skipped.contains(&stage.id) {
                continue;
            }
            let after: Vec<String> = stage
                .inputs
                .values()
                .filter_map(|from| last_job.get(&from.stage).cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let fingerprint = &fingerprints[&stage.id];
            let stage_dir = run_dir.join(&stage.id);
            let mut waits = after.clone();
            if stage.parts > 1 {
                let missing_parts: Vec<usize> = (0..stage.parts)
                    .filter(|&i| completed_part(&stage_dir, fingerprint, i, stage.parts).is_none())
                    .collect();
                if !missing_parts.is_empty() {
                    let array = array_spec(&missing_parts);
                    let script = context.write(stage, JobRole::Parts, &slurm_dir)?;
                    let id = sbatch(&script, Some(&array), &after)?;
                    record_submission(
                        &run_dir,
                        &mut jobs,
                        stage,
                        JobRole::Parts,
                        &id,
                        Some(array),
                        &after,
                        &script,
                    )?;
                    tracing::info!(stage = %stage.id, job = %id, "submitted {} part(s) as a job array", missing_parts.len());
                    waits = vec![id.clone()];
                    submitted.push(Submitted {
                        stage: stage.id.clone(),
                        role: JobRole::Parts,
                        job_id: id,
                    });
                }
            }
            let role = if stage.parts > 1 {
                JobRole::Merge
            } else {
                JobRole::Whole
            };
            let script = context.write(stage, role, &slurm_dir)?;
            let id = sbatch(&script, None, &waits)?;
            record_submission(&run_dir, &mut jobs, stage, role, &id, None, &waits, &script)?;
            tracing::info!(stage = %stage.id, job = %id, "submitted the {} job", match role { JobRole::Merge => "merge", _ => "stage" });
            submitted.push(Submitted {
                stage: stage.id.clone(),
                role,
                job_id: id.clone(),
            });
            last_job.insert(stage.id.clone(), id);
        }
        Ok(())
    };
    if let Err(e) = submit() {
        // Nothing of a run that could not be submitted whole is left to run unattended.
        cancel_jobs(submitted.iter().map(|s| s.job_id.as_str()));
        record.finished_at = Some(record::now_rfc3339());
        return finish_record(&run_dir, record, Err(e));
    }

    let started = Instant::now();
    let outcome = follow(&submitted, pipeline, &run_dir, &fingerprints, options);
    let seconds_waited = started.elapsed().as_secs_f64();

    let mut stages = Vec::new();
    let mut failures = Vec::new();
    for stage in &pipeline.stages {
        let fingerprint = fingerprints[&stage.id].clone();
        let marker =
            record::read_marker(&run_dir.join(&stage.id)).filter(|m| m.fingerprint == fingerprint);
        let status = if skipped.contains(&stage.id) {
            StageStatus::Skipped
        } else if marker.is_some() {
            StageStatus::Ran
        } else if outcome.is_err() {
            StageStatus::Cancelled
        } else {
            failures.push(describe_failure(stage, &submitted, &run_dir, &fingerprint));
            StageStatus::Failed
        };
        stages.push(StageReport {
            id: stage.id.clone(),
            kind: stage.kind.clone(),
            status,
            seconds: marker.as_ref().map_or(0.0, |m| m.seconds),
            waited_seconds: if status == StageStatus::Ran {
                seconds_waited
            } else {
                0.0
            },
            peak_rss_bytes: None,
            fingerprint,
        });
    }
    record.finished_at = Some(record::now_rfc3339());
    record.stages = stages.clone();
    let result = match outcome {
        Err(e) => Err(e),
        Ok(()) if !failures.is_empty() => Err(ExecError::Slurm(format!(
            "{}; run the same command again to resubmit only what is missing",
            failures.join("; ")
        ))),
        Ok(()) => Ok(RunReport {
            run_dir: run_dir.clone(),
            stages,
        }),
    };
    finish_record(&run_dir, record, result)
}

/// One job this run submitted.
#[derive(Debug, Clone)]
struct Submitted {
    stage: String,
    role: JobRole,
    job_id: String,
}

/// What every batch script of a run shares.
struct ScriptContext<'a> {
    pipeline: &'a str,
    exe: &'a Path,
    run_dir: &'a Path,
    cwd: &'a Path,
    logs: &'a Path,
}

impl ScriptContext<'_> {
    /// The batch script of one stage's jobs of one role, written (atomically) into the Slurm
    /// folder; returns its path.
    fn write(&self, stage: &StageSpec, role: JobRole, dir: &Path) -> Result<PathBuf, ExecError> {
        let text = self.script(stage, role);
        let name = match role {
            JobRole::Parts => format!("{}.parts.sbatch", stage.id),
            JobRole::Merge => format!("{}.merge.sbatch", stage.id),
            JobRole::Whole => format!("{}.sbatch", stage.id),
        };
        let path = dir.join(name);
        monoscope_core::atomic::write(&path, text.as_bytes()).map_err(io_err(&path))?;
        Ok(path)
    }

    /// The script's text: `#SBATCH` lines, then the one command.
    pub(crate) fn script(&self, stage: &StageSpec, role: JobRole) -> String {
        let (what, output, args) = match role {
            JobRole::Parts => (
                format!("part $SLURM_ARRAY_TASK_ID of the {} parts of", stage.parts),
                self.logs.join(format!("{}-%a.out", stage.id)),
                " --part \"$SLURM_ARRAY_TASK_ID\"".to_string(),
            ),
            JobRole::Merge => (
                format!("the merge of the {} parts of", stage.parts),
                self.logs.join(format!("{}-merge.out", stage.id)),
                " --merge".to_string(),
            ),
            JobRole::Whole => (
                String::new(),
                self.logs.join(format!("{}.out", stage.id)),
                String::new(),
            ),
        };
        let mut lines = vec![
            "#!/bin/bash".to_string(),
            format!(
                "# Written by `monoscope run --backend slurm`: {what} stage `{}` ({}) of pipeline `{}`.",
                stage.id, stage.kind, self.pipeline
            )
            .replace(":  stage", ": stage"),
        ];
        if role == JobRole::Parts {
            lines.push(format!(
                "# Submit by hand: sbatch --array=0-{} {}.parts.sbatch",
                stage.parts - 1,
                stage.id
            ));
        }
        lines.push(format!(
            "#SBATCH --job-name=monoscope-{}-{}",
            self.pipeline, stage.id
        ));
        lines.push(format!("#SBATCH --output={}", output.display()));
        lines.push(format!("#SBATCH --chdir={}", self.cwd.display()));
        lines.extend(
            stage
                .slurm
                .sbatch_options()
                .into_iter()
                .map(|o| format!("#SBATCH {o}")),
        );
        lines.push("set -euo pipefail".to_string());
        if stage.slurm.cpus.is_some() {
            // As many compute threads as the job was given CPUs, not as the node has.
            lines.push(
                "export RAYON_NUM_THREADS=\"${RAYON_NUM_THREADS:-$SLURM_CPUS_PER_TASK}\"".into(),
            );
        }
        lines.push(format!(
            "exec {} {RUN_STAGE_SUBCOMMAND} {} {}{args}",
            self.exe.display(),
            self.run_dir.display(),
            stage.id
        ));
        lines.join("\n") + "\n"
    }
}

/// Paths go into scripts and `#SBATCH` lines unquoted.
fn plain_path(path: &Path) -> Result<(), ExecError> {
    let text = path.display().to_string();
    let bad = text
        .chars()
        .find(|c| c.is_whitespace() || "'\"`$\\;&|<>*?()[]{}!#%".contains(*c));
    match bad {
        None => Ok(()),
        Some(c) => Err(ExecError::Slurm(format!(
            "{text}: the Slurm backend writes this path into batch scripts; it must not \
             contain {c:?}"
        ))),
    }
}

/// `--array` for these indices: ranges where they run on (`0-3,6`).
pub fn array_spec(indices: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(match end > start {
            true => format!("{start}-{end}"),
            false => start.to_string(),
        });
        i += 1;
    }
    parts.join(",")
}

fn slurm_command(program: &str, args: &[String]) -> Result<String, ExecError> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        ExecError::Slurm(format!(
            "cannot run `{program}` ({e}): the Slurm backend needs Slurm's commands on PATH"
        ))
    })?;
    if !out.status.success() {
        return Err(ExecError::Slurm(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits `script`; returns the job id.
fn sbatch(script: &Path, array: Option<&str>, after: &[String]) -> Result<String, ExecError> {
    let mut args = vec!["--parsable".to_string()];
    if let Some(array) = array {
        args.push(format!("--array={array}"));
    }
    if !after.is_empty() {
        args.push(format!("--dependency=afterok:{}", after.join(":")));
        args.push("--kill-on-invalid-dep=yes".into());
    }
    args.push(script.display().to_string());
    let out = slurm_command("sbatch", &args)?;
    // `--parsable` prints `id` or `id;cluster`.
    let id = out.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(ExecError::Slurm(format!(
            "sbatch {}: expected a job id, got {:?}",
            script.display(),
            out.trim()
        )));
    }
    Ok(id)
}

#[allow(clippy::too_many_arguments)]
fn record_submission(
    run_dir: &Path,
    jobs: &mut Jobs,
    stage: &StageSpec,
    role: JobRole,
    job_id: &str,
    array: Option<String>,
    after: &[String],
    script: &Path,
) -> Result<(), ExecError> {
    jobs.format_version = record::FORMAT_VERSION;
    jobs.submissions.push(Submission {
        stage: stage.id.clone(),
        role,
        job_id: job_id.to_string(),
        array,
        after: after.to_vec(),
        script: script.to_path_buf(),
        submitted_at: record::now_rfc3339(),
    });
    Ok(jobs::write_jobs(run_dir, jobs)?)
}

/// Waits until none of `submitted` is queued or running, logging each stage's progress;
/// cancels them all when the run is cancelled.
fn follow(
    submitted: &[Submitted],
    pipeline: &Pipeline,
    run_dir: &Path,
    fingerprints: &BTreeMap<String, String>,
    options: &RunOptions,
) -> Result<(), ExecError> {
    let poll = std::env::var(POLL_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(POLL, Duration::from_millis);
    let ids: BTreeSet<&str> = submitted.iter().map(|s| s.job_id.as_str()).collect();
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if options.cancel.is_cancelled() {
            cancel_jobs(ids.iter().copied());
            return Err(ExecError::Cancelled);
        }
        let queued = queued_jobs(&ids)?;
        let active = queued.len();
        for stage in &pipeline.stages {
            let jobs: Vec<&Submitted> = submitted.iter().filter(|s| s.stage == stage.id).collect();
            if jobs.is_empty() {
                continue;
            }
            let mut state = progress_of(stage, run_dir, &fingerprints[&stage.id]);
            let in_queue: Vec<String> = jobs
                .iter()
                .filter_map(|job| {
                    let states = queued.get(job.job_id.as_str())?;
                    Some(format!(
                        "job {} {}",
                        job.job_id,
                        states.join(" ").to_lowercase()
                    ))
                })
                .collect();
            if !in_queue.is_empty() {
                state = format!("{state}; {}", in_queue.join(", "));
            }
            if shown.get(&stage.id) != Some(&state) {
                tracing::info!(stage = %stage.id, "{state}");
                shown.insert(stage.id.clone(), state);
            }
        }
        if active == 0 {
            return Ok(());
        }
        std::thread::sleep(poll);
    }
}

/// `scancel` of these jobs; a failure is logged, not returned (the run is ending anyway).
fn cancel_jobs<'a>(ids: impl Iterator<Item = &'a str>) {
    let mut args = vec!["--quiet".to_string()];
    args.extend(ids.map(str::to_string));
    if args.len() > 1
        && let Err(e) = slurm_command("scancel", &args)
    {
        tracing::warn!("cancelling the jobs: {e}");
    }
}

/// Which of `ids` Slurm still has queued or running, with their lines' states (an array's
/// tasks each have one).
fn queued_jobs<'a>(ids: &BTreeSet<&'a str>) -> Result<BTreeMap<&'a str, Vec<String>>, ExecError> {
    let mut queued: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    if ids.is_empty() {
        return Ok(queued);
    }
    // By user, not by job id: `squeue --jobs` fails as a whole once one id is forgotten.
    let args = ["-h", "-u", &current_user(), "-o", "%i %T"].map(String::from);
    for line in slurm_command("squeue", &args)?.lines() {
        let mut fields = line.split_whitespace();
        let (Some(job), Some(state)) = (fields.next(), fields.next()) else {
            continue;
        };
        let base = job.split('_').next().unwrap_or_default();
        if let Some(&id) = ids.get(base) {
            queued.entry(id).or_default().push(state.to_string());
        }
    }
    Ok(queued)
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "root".into())
}

/// A stage's state as the run directory shows it.
fn progress_of(stage: &StageSpec, run_dir: &Path, fingerprint: &str) -> String {
    let dir = run_dir.join(&stage.id);
    if record::read_marker(&dir).is_some_and(|m| m.fingerprint == fingerprint) {
        return "complete".into();
    }
    match stage.parts {
        1 => "not complete".into(),
        n => {
            let done = (0..n)
                .filter(|&i| completed_part(&dir, fingerprint, i, n).is_some())
                .count();
            format!("{done} of {n} parts complete")
        }
    }
}

/// Why a submitted stage has no completion marker: its missing parts with their jobs' states
/// and output files, or its own job's.
fn describe_failure(
    stage: &StageSpec,
    submitted: &[Submitted],
    run_dir: &Path,
    fingerprint: &str,
) -> String {
    let logs = jobs::slurm_dir(run_dir).join(LOGS_DIR);
    let job_of = |role: JobRole| {
        submitted
            .iter()
            .rev()
            .find(|s| s.stage == stage.id && s.role == role)
            .map(|s| s.job_id.clone())
    };
    let dir = run_dir.join(&stage.id);
    if stage.parts > 1 {
        let missing: Vec<usize> = (0..stage.parts)
            .filter(|&i| completed_part(&dir, fingerprint, i, stage.parts).is_none())
            .collect();
        if !missing.is_empty() {
            let array = job_of(JobRole::Parts);
            let each: Vec<String> = missing
                .iter()
                .map(|i| {
                    let state = array
                        .as_ref()
                        .map(|id| job_state(&format!("{id}_{i}")))
                        .unwrap_or_default();
                    format!(
                        "part {i} of {}{state} (output {})",
                        stage.parts,
                        logs.join(format!("{}-{i}.out", stage.id)).display()
                    )
                })
                .collect();
            return format!("stage `{}` ({}): {}", stage.id, stage.kind, each.join(", "));
        }
    }
    let (role, output) = match stage.parts {
        1 => (JobRole::Whole, format!("{}.out", stage.id)),
        _ => (JobRole::Merge, format!("{}-merge.out", stage.id)),
    };
    let state = job_of(role)
        .map(|id: String| job_state(&id))
        .unwrap_or_default();
    let log = logs.join(&output);
    let last = match log.exists() {
        true => format!(": {}", crate::parts::last_line(&log)),
        false => " (it did not start: an input's job did not complete)".into(),
    };
    format!(
        "stage `{}` ({}) did not complete{state}{last} (output {})",
        stage.id,
        stage.kind,
        log.display()
    )
}

/// `": job 12_3 CANCELLED, exit code 0:15"`, from `scontrol` (no accounting database needed).
fn job_state(job: &str) -> String {
    let Ok(text) = slurm_command(
        "scontrol",
        &["-o".into(), "show".into(), "job".into(), job.into()],
    ) else {
        // Slurm forgets an array task cancelled before it started.
        return format!(": job {job} is no longer known to Slurm (cancelled before it started?)");
    };
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    match (field("JobState"), field("ExitCode")) {
        (Some(state), Some(code)) => format!(": job {job} {state}, exit code {code}"),
        (Some(state), None) => format!(": job {job} {state}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_join_runs_of_indices() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[2]), "2");
        assert_eq!(array_spec(&[0, 2, 3, 5]), "0,2-3,5");
    }

    /// The batch script of a stage's parts, as `sbatch` and a person read it.
    #[test]
    fn a_parts_script_asks_for_the_stage_resources_and_runs_its_part() {
        let stage = StageSpec {
            id: "capture".into(),
            kind: "capture".into(),
            description: monoscope_core::StageDescription {
                kind: "capture".into(),
                doc: "".into(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            },
            inputs: BTreeMap::new(),
            params: serde_json::Value::Null,
            parts: 4,
            slurm: monoscope_config::SlurmResources {
                cpus: Some(8),
                mem: Some("32G".into()),
                gres: Some("gpu:1".into()),
                time: Some("04:00:00".into()),
                partition: Some("gpu".into()),
                extra_args: vec!["--account=lab".into()],
            },
            own_device: None,
            device: Default::default(),
            configured: None,
        };
        let context = ScriptContext {
            pipeline: "demo",
            exe: Path::new("/shared/bin/monoscope"),
            run_dir: Path::new("/shared/runs/demo"),
            cwd: Path::new("/shared/work"),
            logs: Path::new("/shared/runs/demo/slurm/logs"),
        };
        let expected = "#!/bin/bash
# Written by `monoscope run --backend slurm`: part $SLURM_ARRAY_TASK_ID of the 4 parts of stage `capture` (capture) of pipeline `demo`.
# Submit by hand: sbatch --array=0-3 capture.parts.sbatch
#SBATCH --job-name=monoscope-demo-capture
#SBATCH --output=/shared/runs/demo/slurm/logs/capture-%a.out
#SBATCH --chdir=/shared/work
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
#SBATCH --time=04:00:00
#SBATCH --partition=gpu
#SBATCH --account=lab
set -euo pipefail
export RAYON_NUM_THREADS=\"${RAYON_NUM_THREADS:-$SLURM_CPUS_PER_TASK}\"
exec /shared/bin/monoscope run-stage /shared/runs/demo capture --part \"$SLURM_ARRAY_TASK_ID\"
";
        assert_eq!(context.script(&stage, JobRole::Parts), expected);
        let merge = context.script(&stage, JobRole::Merge);
        assert!(
            merge.ends_with("run-stage /shared/runs/demo capture --merge\n"),
            "{merge}"
        );
        assert!(!merge.contains("--array"), "{merge}");
    }

    #[test]
    fn paths_with_shell_characters_are_refused() {
        assert!(plain_path(Path::new("/shared/runs/a-b_c.1")).is_ok());
        for bad in ["/a b", "/a$b", "/a'b", "/a;b"] {
            assert!(plain_path(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
