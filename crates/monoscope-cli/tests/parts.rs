//! `parts = N`: a capture in 4 parts → training on 2 hooks in 2 parts → labels in 2 parts, run
//! with the local backend (child processes) and, where Slurm answers, as Slurm jobs. Each must
//! give the files of the same pipeline run in one piece (`parts = 1`); a rerun after a lost
//! part runs only that part.
//!
//! The Slurm tests need `sbatch` and a cluster that answers `sinfo` (CI starts a one-node
//! cluster with `tests/slurm/start-cluster.sh`); without one they pass with a note, unless
//! `MONOSCOPE_REQUIRE_SLURM=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Fixture, files, replace, without_timings};

const HOOKS: [&str; 2] = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"];

/// How a pipeline runs: the parts of capture, train and label, and extra `[pipeline]` and
/// `[capture.slurm]` lines.
struct Layout {
    parts: [usize; 3],
    capture_slurm: &'static str,
}

const IN_PARTS: Layout = Layout {
    parts: [4, 2, 2],
    capture_slurm: "",
};
const WHOLE: Layout = Layout {
    parts: [1, 1, 1],
    capture_slurm: "",
};

impl Fixture {
    /// The pipeline file and run directory `name`.
    fn pipeline(&self, name: &str, layout: &Layout) -> (PathBuf, PathBuf) {
        let run_dir = self.root.join(name);
        let path = self.root.join(format!("{name}.toml"));
        let [capture_parts, train_parts, label_parts] = layout.parts;
        let text = format!(
            r#"[pipeline]
name = "parts"
run_dir = {run_dir:?}
seed = 5
max_parallel = 2

[capture]
kind = "capture"
model = {model:?}
corpus = {corpus:?}
split = "paragraph"
hooks = {hooks:?}
context_length = 16
batch_size = 4
rows_per_shard = 256
parts = {capture_parts}
{capture_slurm}

[train]
kind = "train"
inputs = {{ store = "capture.store" }}
hooks = {hooks:?}
architecture = "topk"
d_sae = 64
k = 8
batch_size = 64
epochs = 2
holdout_shards = 1
splice_tokens = 0
parts = {train_parts}

[label]
kind = "autointerp-label"
inputs = {{ sae = "train.sae", store = "capture.store" }}
model = {model:?}
explainer = "statistical"
cache = false
top_n = 4
window = 3
parts = {label_parts}
"#,
            run_dir = run_dir.display().to_string(),
            model = self.model.display().to_string(),
            corpus = self.corpus.display().to_string(),
            hooks = HOOKS,
            capture_slurm = layout.capture_slurm,
        );
        std::fs::write(&path, text).unwrap();
        (path, run_dir)
    }
}

fn monoscope(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_monoscope"));
    command
        .args(args)
        .env("MONOSCOPE_LOG", "info")
        .env("MONOSCOPE_SLURM_POLL_MS", "300")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn run(pipeline: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", pipeline.to_str().unwrap()];
    args.extend(extra);
    monoscope(&args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_ok(pipeline: &Path, extra: &[&str]) {
    let out = run(pipeline, extra);
    assert!(out.status.success(), "{extra:?} failed:\n{}", stderr(&out));
}

/// What parts must not change: the store, every hook's SAE and held-out metrics (timings left
/// out), the evidence and the labels; the run directory's own path reads as `<run>`.
fn results(run_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let own = run_dir.display().to_string();
    let mut out = BTreeMap::new();
    for (name, bytes) in files(&run_dir.join("capture/store")) {
        out.insert(format!("store/{name}"), bytes);
    }
    for hook in HOOKS {
        let dir = run_dir.join("train/hooks").join(hook);
        for (name, bytes) in files(&dir.join("sae")) {
            out.insert(format!("{hook}/sae/{name}"), bytes);
        }
        let eval: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("eval.json")).unwrap()).unwrap();
        out.insert(
            format!("{hook}/eval.json"),
            serde_json::to_vec(&without_timings(eval)).unwrap(),
        );
    }
    for name in ["labels.jsonl", "evidence.jsonl"] {
        out.insert(
            name.into(),
            std::fs::read(run_dir.join("label").join(name)).unwrap(),
        );
    }
    out.into_iter()
        .map(|(name, bytes)| (name, replace(&bytes, own.as_bytes(), b"<run>")))
        .collect()
}

fn assert_same(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>, what: &str) {
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: different files");
    for (name, bytes) in want {
        assert!(
            got[name] == *bytes,
            "{what}: {name} differs:\n{}\n---- in one piece:\n{}",
            String::from_utf8_lossy(&got[name][..got[name].len().min(1500)]),
            String::from_utf8_lossy(&bytes[..bytes.len().min(1500)])
        );
    }
}

/// When each part of `stage` finished (its completion marker's time).
fn part_times(run_dir: &Path, stage: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let marker = run_dir
                .join(stage)
                .join("parts")
                .join(i.to_string())
                .join(".monoscope-complete.json");
            let value: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&marker).unwrap_or_else(|e| panic!("{}: {e}", marker.display())),
            )
            .unwrap();
            value["finished_at"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn local_parts_give_the_files_of_a_run_in_one_piece_and_a_rerun_runs_only_a_lost_part() {
    let fixture = Fixture::new();
    let (whole, whole_dir) = fixture.pipeline("whole", &WHOLE);
    run_ok(&whole, &[]);
    let (parts, parts_dir) = fixture.pipeline("in-parts", &IN_PARTS);
    run_ok(&parts, &[]);
    let reference = results(&whole_dir);
    assert_same(&results(&parts_dir), &reference, "local parts");
    let before = part_times(&parts_dir, "capture", 4);
    assert_eq!(part_times(&parts_dir, "train", 2).len(), 2);
    assert_eq!(part_times(&parts_dir, "label", 2).len(), 2);

    // Part 2 of the capture is lost before the merge (as when its process is killed): the
    // rerun runs it alone, then the merge.
    std::fs::remove_dir_all(parts_dir.join("capture/parts/2")).unwrap();
    std::fs::remove_file(parts_dir.join("capture/.monoscope-complete.json")).unwrap();
    run_ok(&parts, &[]);
    let after = part_times(&parts_dir, "capture", 4);
    for i in [0, 1, 3] {
        assert_eq!(after[i], before[i], "part {i} ran again");
    }
    assert_same(&results(&parts_dir), &reference, "after rerunning part 2");
}

#[test]
fn parts_are_refused_where_a_stream_would_cross_processes() {
    let fixture = Fixture::new();
    let (path, _) = fixture.pipeline("stream", &IN_PARTS);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        r#"inputs = { store = "capture.store" }"#,
        r#"inputs = { activations = "capture.activations" }"#,
    );
    std::fs::write(&path, text).unwrap();
    let out = monoscope(&["validate", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("train.inputs.activations"), "{message}");
    assert!(message.contains("`train` runs in 2 parts"), "{message}");
}

/// Whether a Slurm cluster answers here; panics when one is required and does not.
fn slurm_available() -> bool {
    let answers = Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers && std::env::var("MONOSCOPE_REQUIRE_SLURM").as_deref() == Ok("1") {
        panic!("MONOSCOPE_REQUIRE_SLURM=1 but no Slurm cluster answers `sinfo`");
    }
    if !answers {
        eprintln!("no Slurm cluster answers `sinfo`: the Slurm backend is not tested here");
    }
    answers
}

/// The submissions the Slurm backend recorded for a run.
fn submissions(run_dir: &Path) -> Vec<serde_json::Value> {
    let Ok(bytes) = std::fs::read(run_dir.join("slurm/jobs.json")) else {
        return Vec::new();
    };
    let jobs: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    jobs["submissions"].as_array().cloned().unwrap_or_default()
}

#[test]
fn slurm_jobs_give_the_local_files_and_a_cancelled_task_is_all_that_is_resubmitted() {
    if !slurm_available() {
        return;
    }
    let fixture = Fixture::new();
    let (local, local_dir) = fixture.pipeline("local", &IN_PARTS);
    run_ok(&local, &[]);
    let reference = results(&local_dir);
    let (slurm, slurm_dir) = fixture.pipeline("slurm", &IN_PARTS);
    run_ok(&slurm, &["--backend", "slurm"]);
    assert_same(&results(&slurm_dir), &reference, "Slurm backend");
    let roles: Vec<String> = submissions(&slurm_dir)
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["stage"].as_str().unwrap(),
                s["role"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            "capture parts",
            "capture merge",
            "train parts",
            "train merge",
            "label parts",
            "label merge"
        ]
    );
    let script = std::fs::read_to_string(slurm_dir.join("slurm/capture.parts.sbatch")).unwrap();
    assert!(
        script.contains("run-stage") && script.contains("--part \"$SLURM_ARRAY_TASK_ID\""),
        "{script}"
    );

    // The capture's jobs are submitted held, task 3 is cancelled, the rest released.
    const HELD: Layout = Layout {
        parts: [4, 2, 2],
        capture_slurm: "[capture.slurm]\nextra_args = [\"--hold\"]",
    };
    let (held, held_dir) = fixture.pipeline("cancelled", &HELD);
    let follower = monoscope(&["run", held.to_str().unwrap(), "--backend", "slurm"])
        .spawn()
        .unwrap();
    let capture_jobs = wait_for_submissions(&held_dir, 6);
    let parts_job = capture_jobs[0]["job_id"].as_str().unwrap().to_string();
    let status = Command::new("scancel")
        .arg(format!("{parts_job}_3"))
        .status()
        .unwrap();
    assert!(status.success());
    for job in capture_jobs.iter().map(|s| s["job_id"].as_str().unwrap()) {
        // The merge may already be gone (its dependency can no longer be met).
        let _ = Command::new("scontrol").args(["release", job]).status();
    }
    let out = follower.wait_with_output().unwrap();
    let message = stderr(&out);
    assert!(
        !out.status.success(),
        "the run with a cancelled part succeeded:\n{message}"
    );
    assert!(message.contains("part 3 of 4"), "{message}");
    assert!(message.contains(&format!("job {parts_job}_3")), "{message}");

    // The rerun submits only part 3 (without the hold: resources are not part of the results).
    let (rerun, _) = fixture.pipeline("cancelled", &IN_PARTS);
    run_ok(&rerun, &["--backend", "slurm"]);
    let resubmitted: Vec<serde_json::Value> = submissions(&held_dir).split_off(6);
    assert_eq!(resubmitted[0]["stage"], "capture");
    assert_eq!(resubmitted[0]["array"], "3");
    assert_same(&results(&held_dir), &reference, "after resubmitting part 3");

    // A follower killed while its jobs are queued: the next run refuses to submit beside them.
    let (orphaned, orphaned_dir) = fixture.pipeline("orphaned", &HELD);
    let mut follower = monoscope(&["run", orphaned.to_str().unwrap(), "--backend", "slurm"])
        .spawn()
        .unwrap();
    let jobs: Vec<String> = wait_for_submissions(&orphaned_dir, 6)
        .iter()
        .map(|s| s["job_id"].as_str().unwrap().to_string())
        .collect();
    follower.kill().unwrap();
    follower.wait().unwrap();
    let out = run(&orphaned, &["--backend", "slurm"]);
    let message = stderr(&out);
    let _ = Command::new("scancel").args(&jobs).status();
    assert!(
        !out.status.success(),
        "submitted beside queued jobs:\n{message}"
    );
    assert!(message.contains("still queued or running"), "{message}");
    assert!(message.contains(&jobs[0]), "{message}");

    // A job Slurm refuses (more memory than any node has): nothing of the run stays queued.
    let (refused, refused_dir) = fixture.pipeline("refused", &IN_PARTS);
    let mut text = std::fs::read_to_string(&refused).unwrap();
    text.push_str("\n[label.slurm]\nmem = \"100000G\"\n");
    std::fs::write(&refused, text).unwrap();
    let out = run(&refused, &["--backend", "slurm"]);
    let message = stderr(&out);
    assert!(!out.status.success(), "{message}");
    assert!(message.contains("sbatch"), "{message}");
    let earlier: Vec<String> = submissions(&refused_dir)
        .iter()
        .map(|s| s["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        earlier.len(),
        4,
        "capture and train were submitted before the label"
    );
    let started = Instant::now();
    loop {
        let queue = Command::new("squeue")
            .args(["-h", "-o", "%i"])
            .output()
            .unwrap();
        let queue = String::from_utf8_lossy(&queue.stdout).into_owned();
        let left: Vec<&str> = queue
            .lines()
            .filter(|l| {
                earlier
                    .iter()
                    .any(|id| l.split('_').next() == Some(id.as_str()))
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still queued: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first `count` submissions of a run, once the Slurm backend has recorded them.
fn wait_for_submissions(run_dir: &Path, count: usize) -> Vec<serde_json::Value> {
    let started = Instant::now();
    loop {
        let all = submissions(run_dir);
        if all.len() >= count {
            return all;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}: fewer than {count} submissions after a minute",
            run_dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubernetes_jobs_are_written_per_stage_and_pass_the_schema() {
    let fixture = Fixture::new();
    let (path, run_dir) = fixture.pipeline("k8s", &IN_PARTS);
    let out = monoscope(&[
        "export-jobs",
        "--k8s",
        path.to_str().unwrap(),
        "--image",
        "registry.example/monoscope:1",
        "--claim",
        "shared-runs",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8(out.stdout).unwrap();
    let names: Vec<String> = listed
        .lines()
        .map(|l| {
            Path::new(l)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "00-capture-parts.json",
            "00-capture-merge.json",
            "01-train-parts.json",
            "01-train-merge.json",
            "02-label-parts.json",
            "02-label-merge.json",
            "apply.sh",
        ]
    );
    assert!(run_dir.join("resolved.toml").exists());
    let capture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("k8s/00-capture-parts.json")).unwrap())
            .unwrap();
    assert_eq!(capture["spec"]["completionMode"], "Indexed");
    assert_eq!(capture["spec"]["completions"], 4);
    let command = capture["spec"]["template"]["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap();
    assert!(
        command.contains("run-stage") && command.contains("--part \"$JOB_COMPLETION_INDEX\""),
        "{command}"
    );

    // The schema check: `kubernetes-validate` (PyPI), where it is installed.
    let validator = std::env::var("MONOSCOPE_KUBERNETES_VALIDATE")
        .unwrap_or_else(|_| "kubernetes-validate".into());
    let manifests: Vec<String> = listed
        .lines()
        .filter(|l| l.ends_with(".json"))
        .map(String::from)
        .collect();
    match Command::new(&validator)
        .arg("--strict")
        .args(&manifests)
        .output()
    {
        Ok(check) => assert!(
            check.status.success(),
            "{validator}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        ),
        Err(e) if std::env::var("MONOSCOPE_REQUIRE_K8S_VALIDATE").as_deref() == Ok("1") => {
            panic!("MONOSCOPE_REQUIRE_K8S_VALIDATE=1 but {validator} cannot run: {e}")
        }
        Err(e) => {
            eprintln!("{validator} cannot run ({e}): the manifests' schema is not checked here")
        }
    }
}

/// A capture, one SAE, and its map with the neighbour search in `cluster_parts` parts.
fn cluster_pipeline(fixture: &Fixture, name: &str, cluster_parts: usize) -> (PathBuf, PathBuf) {
    let run_dir = fixture.root.join(name);
    let path = fixture.root.join(format!("{name}.toml"));
    let text = format!(
        r#"[pipeline]
name = "cluster-parts"
run_dir = {run_dir:?}
seed = 5
max_parallel = 2

[capture]
kind = "capture"
model = {model:?}
corpus = {corpus:?}
split = "paragraph"
hooks = ["{hook}"]
context_length = 16
batch_size = 4
rows_per_shard = 256
parts = 1

[train]
kind = "train"
inputs = {{ store = "capture.store" }}
hook = "{hook}"
architecture = "topk"
d_sae = 64
k = 8
batch_size = 64
epochs = 2
holdout_shards = 1
splice_tokens = 0

[cluster]
kind = "cluster"
inputs = {{ sae = "train.sae" }}
method = "exact"
parts = {cluster_parts}
"#,
        run_dir = run_dir.display().to_string(),
        model = fixture.model.display().to_string(),
        corpus = fixture.corpus.display().to_string(),
        hook = HOOKS[1],
    );
    std::fs::write(&path, text).unwrap();
    (path, run_dir)
}

#[test]
fn cluster_parts_give_the_files_of_a_whole_run() {
    let fixture = Fixture::new();
    let (whole, whole_dir) = cluster_pipeline(&fixture, "cluster-whole", 1);
    run_ok(&whole, &[]);
    let (parts, parts_dir) = cluster_pipeline(&fixture, "cluster-parts", 3);
    run_ok(&parts, &[]);
    let want = files(&whole_dir.join("cluster"));
    let got = files(&parts_dir.join("cluster"));
    for name in ["neighbours.jsonl", "clusters.json", "map.json", "map.png"] {
        let (got, want) = (&got[name], &want[name]);
        assert!(
            got == want,
            "{name} differs:\n{}\n---- in one piece:\n{}",
            String::from_utf8_lossy(&got[..got.len().min(1500)]),
            String::from_utf8_lossy(&want[..want.len().min(1500)])
        );
    }
    assert_eq!(part_times(&parts_dir, "cluster", 3).len(), 3);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(parts_dir.join("cluster/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["neighbours"]["parts"], 3);
    assert_eq!(summary["features"], 64);
}
