//! The binary's contract: exit codes and what it prints.

use std::process::Command;

fn monoscope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_monoscope"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("MONOSCOPE_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn invalid_pipelines_exit_with_code_2_and_name_the_key() {
    let out = monoscope(&["validate", "pipelines/fetch.toml", "--set", "model.modle=x"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`model.modle`: unknown key; did you mean `model`?"),
        "{stderr}"
    );

    let out = monoscope(&["run", "no/such/pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/pipeline.toml: cannot read"));
}

#[test]
fn validate_prints_the_resolved_pipeline() {
    let out = monoscope(&[
        "validate",
        "pipelines/fetch.toml",
        "--set",
        "pipeline.seed=5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(resolved["pipeline"]["seed"].as_integer(), Some(5));
    assert_eq!(resolved["model"]["kind"].as_str(), Some("fetch-model"));
}

#[test]
fn stages_lists_every_built_in_kind_with_parameters_and_defaults() {
    let out = monoscope(&["stages"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "fetch-model  (built-in)",
        "fetch-corpus  (built-in)",
        "model          string = \"smollm2\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}
