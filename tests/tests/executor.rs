//! The executor, driven by test-only stages: backpressure, failure, panics, cancellation,
//! skipping, and the order of configuration layers.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use monoscope_config::{Pipeline, load_with_env, parse_override};
use monoscope_core::{CancelToken, Registry, StageError};
use monoscope_exec::{ExecError, ProgressMode, RunOptions, StageStatus, record};

fn pipeline(dir: &Path, body: &str, set: &[&str]) -> Pipeline {
    let path = dir.join("pipeline.toml");
    let run_dir = dir.join("run");
    let text = format!(
        "[pipeline]\nname = \"t\"\nrun_dir = {:?}\n{body}",
        run_dir.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    let overrides: Vec<_> = set.iter().map(|s| parse_override(s).unwrap()).collect();
    load_with_env(&path, &overrides, &Registry::builtin(), false).unwrap_or_else(|e| panic!("{e}"))
}

fn quiet() -> RunOptions {
    RunOptions {
        force: false,
        cancel: CancelToken::new(),
        progress: ProgressMode::Hidden,
    }
}

#[test]
fn a_slow_consumer_bounds_the_items_in_flight_to_the_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(
        dir.path(),
        "channel_capacity = 4\n[src]\nkind = \"test-source\"\ncount = 120\nprobe = \"bp\"\n\
         [sink]\nkind = \"test-sink\"\ninput = \"src\"\ndelay_ms = 2\nprobe = \"bp\"\n",
        &[],
    );
    monoscope_exec::run(&mut p, &quiet()).unwrap();
    let probe = common::probe("bp");
    assert_eq!(probe.received.load(Ordering::SeqCst), 120);
    let max = probe.max_in_flight.load(Ordering::SeqCst);
    // The producer counts an item after the channel accepted it and the consumer counts it
    // after taking it, so between the two updates one extra item can appear in flight.
    assert!(max <= 4 + 1, "{max} items in flight with capacity 4");
    assert!(
        max >= 3,
        "the producer should have filled the channel, saw at most {max}"
    );
}

#[test]
fn an_error_in_one_of_three_stages_stops_the_others_and_names_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(
        dir.path(),
        "[src]\nkind = \"test-source\"\ncount = 100000\ndelay_ms = 1\n\
         [middle]\nkind = \"test-relay\"\ninput = \"src\"\nfail_at = 5\n\
         [sink]\nkind = \"test-sink\"\ninput = \"middle\"\n",
        &[],
    );
    let started = std::time::Instant::now();
    let err = monoscope_exec::run(&mut p, &quiet()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the other stages did not stop"
    );
    match &err {
        ExecError::Stage {
            stage,
            source: StageError::Invalid(m),
            ..
        } => {
            assert_eq!(stage, "middle");
            assert!(m.contains("planted failure at item 5"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("stage `middle` (test-relay) failed"),
        "{err}"
    );
    let run: record::RunRecord =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/run.json")).unwrap()).unwrap();
    assert_eq!(run.status, "failed");
    for s in &run.stages {
        let expected = if s.id == "middle" {
            StageStatus::Failed
        } else {
            StageStatus::Cancelled
        };
        assert_eq!(s.status, expected, "{}", s.id);
    }
    assert!(
        !dir.path().join("run/sink/sum.txt").exists(),
        "sink wrote a result from a cut stream"
    );
}

#[test]
fn a_panicking_stage_is_reported_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(
        dir.path(),
        "[src]\nkind = \"test-source\"\ncount = 10\npanic_at = 3\n\
         [sink]\nkind = \"test-sink\"\ninput = \"src\"\n",
        &[],
    );
    let err = monoscope_exec::run(&mut p, &quiet()).unwrap_err();
    match err {
        ExecError::Stage {
            stage,
            source: StageError::Panicked(m),
            ..
        } => {
            assert_eq!(stage, "src");
            assert!(m.contains("planted panic at item 3"), "{m}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_cancelled_run_leaves_no_stage_marked_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(
        dir.path(),
        "[src]\nkind = \"test-source\"\ncount = 100000\ndelay_ms = 1\n\
         [sink]\nkind = \"test-sink\"\ninput = \"src\"\n\
         [reader]\nkind = \"test-reader\"\ninput = \"sink\"\n",
        &[],
    );
    let options = quiet();
    let cancel = options.cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        cancel.cancel();
    });
    let err = monoscope_exec::run(&mut p, &options).unwrap_err();
    canceller.join().unwrap();
    assert!(matches!(err, ExecError::Cancelled), "{err:?}");
    for stage in ["src", "sink", "reader"] {
        let marker = record::marker_path(&dir.path().join("run").join(stage));
        assert!(
            !marker.exists(),
            "{stage} is marked complete after a cancelled run"
        );
    }
    assert!(!dir.path().join("run/sink/sum.txt").exists());
}

#[test]
fn a_rerun_skips_completed_stages_and_force_reruns_them() {
    let dir = tempfile::tempdir().unwrap();
    let body = "[src]\nkind = \"test-source\"\ncount = 5\n\
                [sink]\nkind = \"test-sink\"\ninput = \"src\"\n\
                [reader]\nkind = \"test-reader\"\ninput = \"sink\"\n";
    let first = monoscope_exec::run(&mut pipeline(dir.path(), body, &[]), &quiet()).unwrap();
    assert!(first.stages.iter().all(|s| s.status == StageStatus::Ran));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run/reader/copy.txt")).unwrap(),
        "10"
    );

    let second = monoscope_exec::run(&mut pipeline(dir.path(), body, &[]), &quiet()).unwrap();
    assert!(
        second
            .stages
            .iter()
            .all(|s| s.status == StageStatus::Skipped),
        "{:?}",
        second.stages
    );

    // Changing the reader's input upstream invalidates both downstream stages, and the source,
    // whose stream feeds a stage that must run, runs again too.
    let changed =
        monoscope_exec::run(&mut pipeline(dir.path(), body, &["src.count=6"]), &quiet()).unwrap();
    assert!(
        changed.stages.iter().all(|s| s.status == StageStatus::Ran),
        "{:?}",
        changed.stages
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run/reader/copy.txt")).unwrap(),
        "15"
    );

    let forced = monoscope_exec::run(
        &mut pipeline(dir.path(), body, &["src.count=6"]),
        &RunOptions {
            force: true,
            ..quiet()
        },
    )
    .unwrap();
    assert!(forced.stages.iter().all(|s| s.status == StageStatus::Ran));
}

#[test]
fn only_the_downstream_of_a_changed_artifact_stage_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let body = "[src]\nkind = \"test-source\"\ncount = 5\n\
                [sink]\nkind = \"test-sink\"\ninput = \"src\"\n\
                [reader]\nkind = \"test-reader\"\ninput = \"sink\"\n";
    monoscope_exec::run(&mut pipeline(dir.path(), body, &[]), &quiet()).unwrap();
    std::fs::remove_file(record::marker_path(&dir.path().join("run/reader"))).unwrap();
    let report = monoscope_exec::run(&mut pipeline(dir.path(), body, &[]), &quiet()).unwrap();
    let status: Vec<_> = report
        .stages
        .iter()
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    assert_eq!(
        status,
        [
            ("src", StageStatus::Skipped),
            ("sink", StageStatus::Skipped),
            ("reader", StageStatus::Ran)
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run/reader/copy.txt")).unwrap(),
        "10"
    );
}

#[test]
fn the_run_directory_records_resolved_config_provenance_and_timings() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(
        dir.path(),
        "seed = 9\n[src]\nkind = \"test-source\"\ncount = 2\n[sink]\nkind = \"test-sink\"\ninput = \"src\"\n",
        &["src.delay_ms=1"],
    );
    monoscope_exec::run(&mut p, &quiet()).unwrap();
    let run: record::RunRecord =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/run.json")).unwrap()).unwrap();
    assert_eq!(run.seed, 9);
    assert_eq!(run.status, "succeeded");
    assert!(run.finished_at.is_some());
    assert_eq!(run.provenance["src.delay_ms"], "--set src.delay_ms=1");
    assert_eq!(run.provenance["src.probe"], "default");
    assert!(run.provenance["src.count"].ends_with("pipeline.toml"));
    assert_eq!(run.stages.len(), 2);

    // The resolved file reproduces the run: it loads to the same parameters.
    let resolved = dir.path().join("run").join(record::RESOLVED_FILE);
    let again = load_with_env(&resolved, &[], &Registry::builtin(), false).unwrap();
    let params = |p: &Pipeline| {
        p.stages
            .iter()
            .map(|s| (s.id.clone(), s.params.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(params(&again), params(&p));
    assert_eq!(again.settings.seed, 9);
}

#[test]
fn configuration_layers_apply_defaults_then_file_then_environment_then_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layers.toml");
    std::fs::write(
        &path,
        "[pipeline]\nname = \"layers\"\n[layerstest]\nkind = \"test-source\"\ncount = 1\ndelay_ms = 5\nfail_at = 7\n",
    )
    .unwrap();
    // SAFETY: this variable is read only by this test (its stage id is unique to it).
    unsafe {
        std::env::set_var("MONOSCOPE_LAYERSTEST__DELAY_MS", "6");
        std::env::set_var("MONOSCOPE_LAYERSTEST__FAIL_AT", "8");
    }
    let set = [parse_override("layerstest.fail_at=9").unwrap()];
    let p = load_with_env(&path, &set, &Registry::builtin(), true).unwrap();
    let params = &p.stages[0].params;
    assert_eq!(params["label"], "built-in", "default");
    assert_eq!(params["count"], 1, "file");
    assert_eq!(params["delay_ms"], 6, "environment beats file");
    assert_eq!(params["fail_at"], 9, "command line beats environment");
    assert_eq!(p.provenance["layerstest.label"], "default");
    assert_eq!(
        p.provenance["layerstest.delay_ms"],
        "environment variable MONOSCOPE_LAYERSTEST__DELAY_MS"
    );
    assert_eq!(
        p.provenance["layerstest.fail_at"],
        "--set layerstest.fail_at=9"
    );
}

#[test]
fn a_stage_is_timed_from_when_its_inputs_arrive_and_gets_its_own_memory_peak() {
    let dir = tempfile::tempdir().unwrap();
    // The sink's artifact arrives after the source's 20 × 20 ms; the reader then copies one
    // number. Its working time must not include the wait.
    let mut p = pipeline(
        dir.path(),
        "[src]\nkind = \"test-source\"\ncount = 20\ndelay_ms = 20\n\
         [sink]\nkind = \"test-sink\"\ninput = \"src\"\n\
         [reader]\nkind = \"test-reader\"\ninput = \"sink\"\n",
        &[],
    );
    let report = monoscope_exec::run(&mut p, &quiet()).unwrap();
    let reader = report.stages.iter().find(|s| s.id == "reader").unwrap();
    assert!(reader.waited_seconds >= 0.3, "{reader:?}");
    assert!(reader.seconds < 0.2, "{reader:?}");
    let source = report.stages.iter().find(|s| s.id == "src").unwrap();
    assert!(
        source.seconds >= 0.3 && source.waited_seconds < 0.1,
        "{source:?}"
    );
    if cfg!(target_os = "linux") {
        assert!(report.stages.iter().all(|s| s.peak_rss_bytes.is_some()));
        let run: record::RunRecord =
            serde_json::from_slice(&std::fs::read(dir.path().join("run/run.json")).unwrap())
                .unwrap();
        let whole = run.peak_rss_bytes.expect("the run's peak");
        assert!(
            run.stages
                .iter()
                .all(|s| s.peak_rss_bytes.unwrap() <= whole)
        );
    }
}
