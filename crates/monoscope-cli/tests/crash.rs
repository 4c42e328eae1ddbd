//! Crashes and failing disks: `monoscope run` on a small capture → train → label pipeline,
//! killed (`SIGKILL`) at seeded instants and aborted, or given `ENOSPC`/`EIO`, at every fault
//! point, then run again. Each rerun must complete, `store verify` must pass, and the store,
//! the SAE, the `eval.json` metrics and the labels must be byte-identical to those of a run
//! that was never interrupted.
//!
//! `MONOSCOPE_CRASH_KILLS` sets how many timed kills are tried (default 6).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use monoscope_artifacts::fault::{FAULT_ENV, FaultPoint};

mod common;
use common::{Fixture, files, replace, without_timings};

const HOOK: &str = "blocks.1.hook_resid_post";

impl Fixture {
    /// A pipeline writing into its own run directory `name`.
    fn pipeline(&self, name: &str) -> (PathBuf, PathBuf) {
        let run_dir = self.root.join(name);
        let path = self.root.join(format!("{name}.toml"));
        let text = format!(
            r#"[pipeline]
name = "crash"
run_dir = {run_dir:?}
seed = 3

[capture]
kind = "capture"
model = {model:?}
corpus = {corpus:?}
split = "paragraph"
hooks = ["{HOOK}"]
context_length = 16
batch_size = 4
rows_per_shard = 128

[train]
kind = "train"
inputs = {{ store = "capture.store" }}
architecture = "topk"
d_sae = 128
k = 8
batch_size = 64
epochs = 3
holdout_shards = 1
checkpoint_every = 4
splice_tokens = 0

[label]
kind = "autointerp-label"
inputs = {{ sae = "train.sae", store = "capture.store" }}
model = {model:?}
explainer = "statistical"
cache = false
top_n = 4
window = 3
"#,
            run_dir = run_dir.display().to_string(),
            model = self.model.display().to_string(),
            corpus = self.corpus.display().to_string(),
        );
        std::fs::write(&path, text).unwrap();
        (path, run_dir)
    }
}

fn command(pipeline: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_monoscope"));
    command
        .args(["run", pipeline.to_str().unwrap()])
        .env("MONOSCOPE_LOG", "warn")
        .env_remove(FAULT_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn run(pipeline: &Path, fault: Option<&str>) -> Output {
    let mut command = command(pipeline);
    if let Some(spec) = fault {
        command.env(FAULT_ENV, spec);
    }
    command.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_to_completion(pipeline: &Path, after: &str) {
    let out = run(pipeline, None);
    assert!(
        out.status.success(),
        "the rerun after {after} failed:\n{}",
        stderr(&out)
    );
}

/// What must not change with interruptions: the store, the SAE, the held-out metrics and
/// the labels. Timings (`seconds`, `tokens_per_second`) are left out of `eval.json`, and the
/// run directory's own path (recorded as the SAE's dataset) reads as `<run>`.
fn results(run_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let own_path = run_dir.display().to_string();
    raw_results(run_dir)
        .into_iter()
        .map(|(name, bytes)| (name, replace(&bytes, own_path.as_bytes(), b"<run>")))
        .collect()
}

fn raw_results(run_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (name, bytes) in files(&run_dir.join("capture/store")) {
        out.insert(format!("store/{name}"), bytes);
    }
    for (name, bytes) in files(&run_dir.join("train/sae")) {
        out.insert(format!("sae/{name}"), bytes);
    }
    let eval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("train/eval.json")).unwrap()).unwrap();
    out.insert(
        "eval.json".into(),
        serde_json::to_vec(&without_timings(eval)).unwrap(),
    );
    out.insert(
        "labels.jsonl".into(),
        std::fs::read(run_dir.join("label/labels.jsonl")).unwrap(),
    );
    out
}

fn assert_same_results(run_dir: &Path, reference: &BTreeMap<String, Vec<u8>>, after: &str) {
    let got = results(run_dir);
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(reference), "files differ after {after}");
    for (name, bytes) in reference {
        if got[name] != *bytes {
            let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(2000)]).into_owned();
            match name.ends_with(".json") || name.ends_with(".jsonl") {
                true => panic!(
                    "{name} differs after {after}:\n{}\n---- uninterrupted:\n{}",
                    text(&got[name]),
                    text(bytes)
                ),
                false => panic!("{name} differs after {after}"),
            }
        }
    }
    let verify = Command::new(env!("CARGO_BIN_EXE_monoscope"))
        .args(["store", "verify"])
        .arg(run_dir.join("capture/store"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "store verify after {after}: {}",
        stderr(&verify)
    );
    // Nothing an interrupted write leaves behind survives the rerun.
    let leftovers: Vec<String> = files(run_dir)
        .into_keys()
        .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
        .collect();
    assert!(leftovers.is_empty(), "after {after}: {leftovers:?}");
}

/// An uninterrupted run's results and how long it took.
fn reference(fixture: &Fixture) -> (BTreeMap<String, Vec<u8>>, Duration) {
    let (pipeline, run_dir) = fixture.pipeline("reference");
    let started = Instant::now();
    run_to_completion(&pipeline, "nothing");
    (results(&run_dir), started.elapsed())
}

/// The points every run of this pipeline reaches, and how often (`n` of the last time).
fn fault_specs(action: &str) -> Vec<String> {
    let mut specs = Vec::new();
    for point in FaultPoint::ALL {
        // The second checkpoint save is the first to replace a directory; the third marker
        // is the label stage's.
        let nths: &[u32] = match point {
            FaultPoint::ShardWrite => &[1, 3],
            FaultPoint::DirSwap => &[1, 2],
            FaultPoint::CheckpointSave => &[1, 3],
            FaultPoint::LabelsWrite => &[1],
            FaultPoint::BeforeMarker => &[1, 2, 3],
        };
        for n in nths {
            specs.push(format!("{}:{action}:{n}", point.name()));
        }
    }
    specs
}

#[test]
fn an_abort_at_every_fault_point_loses_nothing_a_rerun_cannot_rebuild_exactly() {
    let fixture = Fixture::new();
    let (reference, _) = reference(&fixture);
    let specs = fault_specs("abort");
    for (i, spec) in specs.iter().enumerate() {
        let (pipeline, run_dir) = fixture.pipeline(&format!("abort-{i}"));
        let out = run(&pipeline, Some(spec));
        let text = stderr(&out);
        assert!(
            !out.status.success() && text.contains("aborting at"),
            "{spec}: the fault point was not reached:\n{text}"
        );
        run_to_completion(&pipeline, spec);
        assert_same_results(&run_dir, &reference, spec);
    }
    eprintln!(
        "{} aborts at fault points, each rerun complete and identical",
        specs.len()
    );
}

#[test]
fn a_full_or_failing_disk_at_every_fault_point_fails_naming_the_file_and_damages_nothing() {
    let fixture = Fixture::new();
    let (reference, _) = reference(&fixture);
    for action in ["enospc", "eio"] {
        for (i, spec) in fault_specs(action).iter().enumerate() {
            let (pipeline, run_dir) = fixture.pipeline(&format!("{action}-{i}"));
            let out = run(&pipeline, Some(spec));
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{spec}:\n{text}");
            let expected = match action {
                "enospc" => "No space left on device",
                _ => "Input/output error",
            };
            assert!(text.contains(expected), "{spec}:\n{text}");
            assert!(
                text.contains(&run_dir.display().to_string()),
                "{spec}: the error names no file of the run:\n{text}"
            );
            // What a completed stage wrote before the fault is intact.
            let complete = |stage: &str| run_dir.join(stage).join(".monoscope-complete.json");
            let own_path = run_dir.display().to_string();
            for (stage, dir, prefix) in [
                ("train", "train/sae", "sae"),
                ("capture", "capture/store", "store"),
            ] {
                if !complete(stage).exists() {
                    continue;
                }
                for (name, bytes) in files(&run_dir.join(dir)) {
                    let bytes = replace(&bytes, own_path.as_bytes(), b"<run>");
                    assert!(
                        reference[&format!("{prefix}/{name}")] == bytes,
                        "{spec}: {name}"
                    );
                }
            }
            run_to_completion(&pipeline, spec);
            assert_same_results(&run_dir, &reference, spec);
        }
    }
}

#[test]
fn sigkill_at_seeded_instants_loses_nothing_a_rerun_cannot_rebuild_exactly() {
    let fixture = Fixture::new();
    let (reference, took) = reference(&fixture);
    let kills: u64 = std::env::var("MONOSCOPE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    // A small LCG: the instants are the same on every run of the test.
    let mut state: u64 = 0x5eed;
    let mut killed_early = 0;
    for i in 0..kills {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let fraction = (state >> 11) as f64 / (1u64 << 53) as f64;
        let delay = took.mul_f64(fraction);
        let (pipeline, run_dir) = fixture.pipeline(&format!("kill-{i}"));
        let mut child = command(&pipeline).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed_early += 1;
        }
        child.wait().unwrap();
        let after = format!("SIGKILL after {delay:?}");
        run_to_completion(&pipeline, &after);
        assert_same_results(&run_dir, &reference, &after);
    }
    eprintln!(
        "{kills} SIGKILLs at seeded instants of a {took:?} run: {killed_early} during the run, \
         each rerun complete and identical"
    );
    assert!(
        kills == 0 || killed_early > 0,
        "every run ended before its kill"
    );
}

#[test]
fn a_second_run_in_the_same_directory_fails_at_once_naming_the_first() {
    let fixture = Fixture::new();
    let (reference, _) = reference(&fixture);
    let (pipeline, run_dir) = fixture.pipeline("concurrent");
    let mut first = command(&pipeline).spawn().unwrap();
    let lock = run_dir.join(".monoscope.lock");
    let started = Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim().is_empty()) {
        assert!(started.elapsed() < Duration::from_secs(60), "no lock taken");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second_started = Instant::now();
    let second = run(&pipeline, None);
    let second_took = second_started.elapsed();
    let first_status = first.wait().unwrap();
    let text = stderr(&second);
    if first_status.success() && second.status.success() {
        // The first finished before the second started: nothing was concurrent.
        panic!("the runs did not overlap; make the pipeline longer");
    }
    assert!(first_status.success(), "the first run failed");
    assert_eq!(second.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("pid {}", first.id())) && text.contains("run directory"),
        "{text}"
    );
    assert!(second_took < Duration::from_secs(10), "{second_took:?}");
    assert_same_results(&run_dir, &reference, "a concurrent second run");
}
