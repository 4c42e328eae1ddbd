//! Plugins built from `plugins/` and loaded through the C ABI: the example end to end, and each
//! way a plugin can be wrong.

mod common;

use std::path::Path;

use monoscope_config::{load_with_env, plugin_paths};
use monoscope_core::{CancelToken, Registry, StageError, StageOrigin};
use monoscope_exec::{ExecError, ProgressMode, RunOptions};
use monoscope_plugins::{PluginError, load_plugin};

fn registry_with(crates: &[&str]) -> Registry {
    let mut registry = Registry::builtin();
    for c in crates {
        load_plugin(&common::plugin_path(c), &mut registry).unwrap_or_else(|e| panic!("{e}"));
    }
    registry
}

fn run(dir: &Path, body: &str, registry: &Registry) -> Result<(), ExecError> {
    let path = dir.join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nname = \"p\"\nrun_dir = {:?}\n{body}",
            dir.join("run").display().to_string()
        ),
    )
    .unwrap();
    let mut pipeline = load_with_env(&path, &[], registry, false).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        force: false,
        cancel: CancelToken::new(),
        progress: ProgressMode::Hidden,
    };
    monoscope_exec::run(&mut pipeline, &options).map(|_| ())
}

#[test]
fn the_example_plugin_exports_an_sae_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = common::plugin_path("monoscope-plugin-neuronpedia-export");
    let labels = dir.path().join("labels.jsonl");
    std::fs::write(
        &labels,
        "{\"feature\": 2, \"label\": \"the number three\", \"explainer\": \"stats\"}\n",
    )
    .unwrap();
    // The pipeline names its plugin itself, as a user's would.
    let body = format!(
        "[[plugins]]\npath = {:?}\n[sae]\nkind = \"test-sae\"\n[export]\nkind = \"neuronpedia-export\"\ninput = \"sae\"\nmodel_id = \"tiny\"\n",
        plugin.display().to_string()
    );
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nname = \"p\"\nrun_dir = {:?}\n{body}",
            dir.path().join("run").display().to_string()
        ),
    )
    .unwrap();
    let mut registry = Registry::builtin();
    for p in plugin_paths(&path).unwrap() {
        load_plugin(&p, &mut registry).unwrap();
    }
    let mut pipeline = load_with_env(&path, &[], &registry, false).unwrap();
    let options = RunOptions {
        force: false,
        cancel: CancelToken::new(),
        progress: ProgressMode::Hidden,
    };
    monoscope_exec::run(&mut pipeline, &options).unwrap();

    let out: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("run/export/neuronpedia.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(out["modelId"], "tiny");
    assert_eq!(out["hookName"], "blocks.1.hook_resid_post");
    let features = out["features"].as_array().unwrap();
    assert_eq!(features.len(), 4);
    for (i, f) in features.iter().enumerate() {
        assert_eq!(f["decoderNorm"].as_f64().unwrap(), (i + 1) as f64);
        assert_eq!(f["encoderBias"].as_f64().unwrap(), -(i as f64));
    }
    assert!(
        out["explanations"].as_array().unwrap().is_empty(),
        "no labels input connected"
    );
    // resolved.toml keeps the plugin so the run can be reproduced.
    let resolved = std::fs::read_to_string(dir.path().join("run/resolved.toml")).unwrap();
    assert!(resolved.contains("[[plugins]]"), "{resolved}");
}

#[test]
fn a_panicking_plugin_is_a_stage_error_naming_the_plugin_and_the_host_carries_on() {
    let registry = registry_with(&[
        "monoscope-plugin-test-panic",
        "monoscope-plugin-neuronpedia-export",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        dir.path(),
        "[boom]\nkind = \"test-plugin-panic\"\n",
        &registry,
    )
    .unwrap_err();
    match err {
        ExecError::Stage {
            stage,
            source: StageError::Panicked(message),
            ..
        } => {
            assert_eq!(stage, "boom");
            assert!(message.contains("plugin test-panic 0.1.0"), "{message}");
            assert!(
                message.contains("deliberate panic inside the plugin"),
                "{message}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The same process runs another plugin stage afterwards.
    let dir = tempfile::tempdir().unwrap();
    run(
        dir.path(),
        "[sae]\nkind = \"test-sae\"\n[export]\nkind = \"neuronpedia-export\"\ninput = \"sae\"\n",
        &registry,
    )
    .unwrap();
}

#[test]
fn a_plugin_error_and_a_rejected_config_are_reported_with_the_plugin_and_key() {
    let registry = registry_with(&["monoscope-plugin-test-error"]);
    let dir = tempfile::tempdir().unwrap();
    let err = run(
        dir.path(),
        "[fail]\nkind = \"test-plugin-error\"\nlimit = 3\n",
        &registry,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("stage `fail`") && text.contains("deliberate failure (limit 3)"),
        "{text}"
    );
    assert!(text.contains("plugin test-error 0.1.0"), "{text}");

    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[pipeline]\nname = \"x\"\n[fail]\nkind = \"test-plugin-error\"\nlimit = 0\n",
    )
    .unwrap();
    let err = load_with_env(&path, &[], &registry, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`fail.limit`: = 0: expected at least 1"),
        "{err}"
    );
    std::fs::write(
        &path,
        "[pipeline]\nname = \"x\"\n[fail]\nkind = \"test-plugin-error\"\nlimt = 2\n",
    )
    .unwrap();
    let err = load_with_env(&path, &[], &registry, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `limt`"), "{err}");
}

#[test]
fn a_plugin_built_for_another_abi_is_refused_before_any_of_its_code_runs() {
    // Its entry points abort the process: reaching this test's end proves none was called.
    let path = common::plugin_path("monoscope-plugin-test-wrong-abi");
    let err = load_plugin(&path, &mut Registry::builtin()).unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::WrongAbi {
                found: 999,
                expected: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("built for plugin ABI version 999"),
        "{err}"
    );
}

#[test]
fn files_that_are_not_plugins_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.so");
    std::fs::write(&text, "this is not a library").unwrap();
    let err = load_plugin(&text, &mut Registry::builtin()).unwrap_err();
    assert!(matches!(err, PluginError::NotALibrary { .. }), "{err:?}");
    assert!(err.to_string().contains("not a dynamic library"), "{err}");

    let missing = load_plugin(&dir.path().join("nope.so"), &mut Registry::builtin()).unwrap_err();
    assert!(
        matches!(missing, PluginError::NotFound { .. }),
        "{missing:?}"
    );

    // A real shared library that is not a monoscope plugin.
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists());
    if let Some(libm) = libm {
        let err = load_plugin(libm, &mut Registry::builtin()).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not export `MONOSCOPE_PLUGIN_ABI_VERSION`"),
            "{err}"
        );
    }
}

#[test]
fn a_kind_that_collides_is_refused_and_plugin_kinds_carry_their_origin() {
    let path = common::plugin_path("monoscope-plugin-neuronpedia-export");
    let mut registry = Registry::builtin();
    let loaded = load_plugin(&path, &mut registry).unwrap();
    assert_eq!(loaded.kinds, ["neuronpedia-export"]);
    match registry.origin("neuronpedia-export") {
        Some(StageOrigin::Plugin {
            path: p,
            name,
            version,
        }) => {
            assert_eq!(p, &path);
            assert_eq!(name, "neuronpedia-export");
            assert_eq!(version, "0.1.0");
        }
        other => panic!("unexpected origin {other:?}"),
    }
    let err = load_plugin(&path, &mut registry).unwrap_err();
    assert!(err.to_string().contains("collides"), "{err}");
}

/// A built-in stage kind that happens to share the example plugin's kind name.
#[derive(Debug)]
struct BuiltinNamedLikeThePlugin;

impl monoscope_core::Stage for BuiltinNamedLikeThePlugin {
    type Config = common::ReaderConfig;
    fn description() -> monoscope_core::StageDescription {
        monoscope_core::StageDescription {
            kind: "neuronpedia-export".into(),
            doc: "a built-in".into(),
            inputs: vec![],
            outputs: vec![],
        }
    }
    fn run(
        _: common::ReaderConfig,
        _: &mut monoscope_core::StageContext<'_>,
    ) -> Result<(), StageError> {
        Ok(())
    }
}

#[test]
fn a_plugin_kind_that_collides_with_a_built_in_is_refused() {
    let mut registry = Registry::default();
    let builtin =
        monoscope_core::TypedFactory::<BuiltinNamedLikeThePlugin>(std::marker::PhantomData);
    registry
        .register(std::sync::Arc::new(builtin), StageOrigin::Builtin)
        .unwrap();
    let err = load_plugin(
        &common::plugin_path("monoscope-plugin-neuronpedia-export"),
        &mut registry,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`neuronpedia-export`") && text.contains("collides with the built-in kind"),
        "{text}"
    );
    assert_eq!(
        registry.origin("neuronpedia-export"),
        Some(&StageOrigin::Builtin),
        "the built-in stays"
    );
}
