//! `isolation = "process"` on a `[[plugins]]` entry: `monoscope run` with a plugin whose stage
//! aborts, crashes, hangs or writes outside its stage directory must fail that stage with a
//! message naming the plugin, the stage and what happened, and must itself survive: print its
//! own error, exit 1, record the failure in `run.json` and leave other stages' outputs alone.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use monoscope_artifacts::run::{MARKER_FILE, RUN_FILE};

const PLUGIN_CRATE: &str = "monoscope-plugin-test-misbehave";

/// Builds the test plugin (once per test binary) and returns its library.
fn plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--quiet", "-p", PLUGIN_CRATE])
            .args(cfg!(not(debug_assertions)).then_some("--release"))
            .status()
            .expect("running cargo build for the test plugin");
        assert!(status.success(), "building {PLUGIN_CRATE} failed");
        // Test binaries live in target/<profile>/deps; the libraries one level up.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap();
        dir.join(format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            PLUGIN_CRATE.replace('-', "_"),
            std::env::consts::DLL_SUFFIX
        ))
    })
}

/// A pipeline in `dir`: stage `first` (mode `ok`) feeding stage `second` (mode `mode`), both
/// of the test plugin, loaded with `plugin_keys` on its `[[plugins]]` entry.
fn pipeline(dir: &Path, plugin_keys: &str, mode: &str) -> PathBuf {
    let path = dir.join("p.toml");
    let text = format!(
        "[pipeline]\nname = \"isolation\"\nseed = 4\nrun_dir = {run:?}\n\n\
         [[plugins]]\npath = {plugin:?}\n{plugin_keys}\n\n\
         [first]\nkind = \"test-misbehave\"\nmode = \"ok\"\ntext = \"kept\"\n\n\
         [second]\nkind = \"test-misbehave\"\ninput = \"first\"\nmode = \"{mode}\"\n",
        run = dir.join("run").display().to_string(),
        plugin = plugin().display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn monoscope(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_monoscope"));
    command
        .args(args)
        .env("MONOSCOPE_LOG", "info")
        .env_remove("MONOSCOPE_PLUGIN_HOST");
    command
}

fn run(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = monoscope(args).output().unwrap();
    (out, started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_record(run_dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run_dir.join(RUN_FILE)).unwrap()).unwrap()
}

fn stage_status(record: &serde_json::Value, id: &str) -> String {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no stage {id} in {record}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Completes `first` in one run, then runs the pipeline with `second` in `mode`, which must
/// fail: returns the second run's output, its duration and the run directory, having checked
/// what every failure must leave behind.
fn fail_second_stage(dir: &Path, plugin_keys: &str, mode: &str) -> (Output, Duration, PathBuf) {
    let path = pipeline(dir, plugin_keys, mode);
    let path_arg = path.to_str().unwrap();
    let (out, _) = run(&["run", path_arg, "--set", "second.mode=\"ok\""]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run_dir = dir.join("run");
    let note = std::fs::read(run_dir.join("first/note.txt")).unwrap();
    let marker = std::fs::read(run_dir.join("first").join(MARKER_FILE)).unwrap();

    let (out, took) = run(&["run", path_arg]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // The host's own report, after the stage failed.
    assert!(
        text.contains("error: pipeline") && text.contains("stage `second` (test-misbehave) failed"),
        "{text}"
    );
    assert!(text.contains("plugin test-misbehave 0.1.0 ("), "{text}");
    let record = run_record(&run_dir);
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("plugin test-misbehave 0.1.0"),
        "{record}"
    );
    assert_eq!(stage_status(&record, "first"), "skipped");
    assert_eq!(stage_status(&record, "second"), "failed");
    assert_eq!(
        std::fs::read(run_dir.join("first/note.txt")).unwrap(),
        note,
        "the completed stage's output"
    );
    assert_eq!(
        std::fs::read(run_dir.join("first").join(MARKER_FILE)).unwrap(),
        marker,
        "the completed stage's marker"
    );
    assert!(
        !run_dir.join("second").join(MARKER_FILE).exists(),
        "the failed stage is not complete"
    );
    (out, took, run_dir)
}

const ISOLATED: &str = "isolation = \"process\"";

#[test]
fn an_aborting_isolated_plugin_fails_its_stage_with_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, _) = fail_second_stage(dir.path(), ISOLATED, "abort");
    let text = stderr(&out);
    assert!(
        text.contains("stage `second`: its process was killed by signal 6 (SIGABRT)")
            && text.contains("before returning a result"),
        "{text}"
    );
}

#[test]
fn a_segfaulting_isolated_plugin_fails_its_stage_with_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, _) = fail_second_stage(dir.path(), ISOLATED, "segfault");
    let text = stderr(&out);
    assert!(
        text.contains("stage `second`: its process was killed by signal 11 (SIGSEGV)"),
        "{text}"
    );
}

#[test]
fn a_hanging_isolated_plugin_is_killed_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("{ISOLATED}\ntimeout_s = 2");
    let (out, took, run_dir) = fail_second_stage(dir.path(), &keys, "hang");
    let text = stderr(&out);
    assert!(
        text.contains("stage `second`: timed out after 2 s"),
        "{text}"
    );
    // The plugin ignores the polite request: only the kill after the grace period ends it.
    let grace = monoscope_plugins::isolate::KILL_GRACE;
    assert!(
        took >= Duration::from_secs(2) + grace && took < Duration::from_secs(60),
        "took {took:?}"
    );
    let pid = std::fs::read_to_string(run_dir.join("second/pid")).unwrap();
    assert!(
        !Path::new("/proc").join(pid.trim()).exists(),
        "the plugin process {pid} still exists"
    );
}

#[test]
fn an_isolated_plugin_writing_outside_its_stage_directory_fails_its_stage() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, run_dir) = fail_second_stage(dir.path(), ISOLATED, "write-outside");
    let text = stderr(&out);
    assert!(
        text.contains("stage `second`: it changed files outside its stage directory")
            && text.contains("created escaped.txt (in the run directory)"),
        "{text}"
    );
    // Detected, not prevented: the file is there.
    assert!(run_dir.join("escaped.txt").exists());
}

#[test]
fn an_isolated_plugin_gives_the_same_outputs_and_logs_as_in_process() {
    let mut results = Vec::new();
    for keys in ["isolation = \"none\"", ISOLATED] {
        let dir = tempfile::tempdir().unwrap();
        let path = pipeline(dir.path(), keys, "ok");
        let (out, _) = run(&["run", path.to_str().unwrap()]);
        let text = stderr(&out);
        assert!(out.status.success(), "{keys}: {text}");
        assert!(
            text.contains("misbehave: stage second writes its note"),
            "{keys}: the plugin's log line reaches the host's log: {text}"
        );
        let run_dir = dir.path().join("run");
        let mut outputs = Vec::new();
        for stage in ["first", "second"] {
            let stage_dir = run_dir.join(stage);
            outputs.push(std::fs::read_to_string(stage_dir.join("note.txt")).unwrap());
            let marker: serde_json::Value =
                serde_json::from_slice(&std::fs::read(stage_dir.join(MARKER_FILE)).unwrap())
                    .unwrap();
            let artifacts = marker["artifacts"].to_string();
            outputs.push(artifacts.replace(&run_dir.display().to_string(), "<run>"));
        }
        assert_eq!(stage_status(&run_record(&run_dir), "second"), "ran");
        results.push(outputs);
    }
    assert!(
        results[1][2].contains("input: stage first, seed 4, text \"kept\""),
        "{:?}",
        results[1]
    );
    assert_eq!(results[0], results[1]);
}

#[test]
fn cancelling_a_run_stops_its_isolated_plugin_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = pipeline(dir.path(), ISOLATED, "hang");
    let mut child = monoscope(&["run", path.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("run/second/pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    let plugin_pid = loop {
        // Written whole by the plugin, but possibly seen empty a moment after its creation.
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .filter(|p| p.trim().parse::<u32>().is_ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the plugin never started");
        assert!(child.try_wait().unwrap().is_none(), "monoscope ended early");
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("run cancelled"), "{text}");
    assert_eq!(run_record(&dir.path().join("run"))["status"], "cancelled");
    assert!(
        !Path::new("/proc").join(plugin_pid.trim()).exists(),
        "the plugin process {plugin_pid} still exists"
    );
}
