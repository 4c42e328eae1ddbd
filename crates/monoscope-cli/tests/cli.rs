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

/// Builds the example plugin and returns its library's path.
fn example_plugin() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "-p",
            "monoscope-plugin-neuronpedia-export",
        ])
        .args(cfg!(not(debug_assertions)).then_some("--release"))
        .status()
        .unwrap();
    assert!(status.success());
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_monoscope"));
    bin.parent().unwrap().join(format!(
        "{}monoscope_plugin_neuronpedia_export{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

#[test]
fn stages_lists_plugin_kinds_with_their_origin() {
    let plugin = example_plugin();
    let out = monoscope(&["stages", "--plugin", plugin.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "neuronpedia-export  (plugin neuronpedia-export 0.1.0, {})",
        plugin.display()
    );
    assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
    assert!(
        text.contains("input  labels         artifact `labels`, optional"),
        "{text}"
    );
}

#[test]
fn a_file_that_is_not_a_plugin_is_refused_with_its_path() {
    let out = monoscope(&["stages", "--plugin", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin Cargo.toml: not a dynamic library"),
        "{stderr}"
    );
}
