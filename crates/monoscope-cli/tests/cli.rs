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

// Every crate that registers stages, linked into this test too, so that the registry built
// here holds every built-in kind whether or not the binary names its crate.
use monoscope_browser as _;
use monoscope_capture as _;
use monoscope_cluster as _;
use monoscope_fetch as _;
use monoscope_label as _;
use monoscope_steer as _;
use monoscope_train as _;

#[test]
fn stages_lists_every_kind_the_stage_crates_register() {
    let registry = monoscope_core::Registry::builtin();
    let kinds: Vec<&str> = registry.kinds().collect();
    assert!(kinds.len() >= 9, "{kinds:?}");
    let out = monoscope(&["stages"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in kinds {
        assert!(
            text.contains(&format!("{kind}  (built-in)")),
            "`monoscope stages` does not list `{kind}`: the binary does not link its crate\n{text}"
        );
    }
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
fn a_file_that_is_not_a_plugin_is_refused_with_its_path_and_code_2() {
    let out = monoscope(&["stages", "--plugin", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin Cargo.toml: not a dynamic library"),
        "{stderr}"
    );
}

#[test]
fn model_run_writes_tokens_hooks_and_logits_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&model)
        .unwrap();
    let model = model.to_str().unwrap();
    let out = dir.path().join("run.safetensors");
    let args = [
        "model",
        "run",
        model,
        "--text",
        "hello world",
        "--hook",
        "blocks.1.hook_resid_post",
        "--out",
    ];
    let result = monoscope(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let n = tensors.tensor("token_ids").unwrap().shape()[0];
    assert_eq!(
        tensors.tensor("blocks.1.hook_resid_post").unwrap().shape(),
        [n, 64]
    );
    assert_eq!(tensors.tensor("logits").unwrap().shape()[0], n);

    let bad_hook = monoscope(&[
        "model",
        "run",
        model,
        "--text",
        "hi",
        "--hook",
        "blocks.99.hook_resid_post",
        "--out",
        "x.st",
    ]);
    assert_eq!(bad_hook.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_hook.stderr).contains("blocks.99.hook_resid_post"));
    let empty = monoscope(&["model", "run", model, "--text", "", "--out", "x.st"]);
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("the text is empty"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );

    let info = monoscope(&["model", "info", model]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        text.contains("layers        2") && text.contains("d_model       64"),
        "{text}"
    );
    // Every hook with its width: the tiny model has 4 heads of 16 and d_ff 128.
    for line in [
        "blocks.L.attn.hook_z             width 64",
        "blocks.L.mlp.hook_post           width ",
        "ln_final.hook_normalized         width 64",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
}

#[test]
fn a_model_setting_monoscope_does_not_compute_exits_with_code_2_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 96,
        "rope_scaling": {"rope_type": "mrope", "factor": 4.0},
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let out = monoscope(&["model", "info", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`rope_scaling.rope_type` = \"mrope\" is not supported"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_cancels_the_run_cleanly_and_leaves_no_stage_marked_complete() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&model)
        .unwrap();
    let corpus = dir.path().join("corpus.txt");
    let text: Vec<String> = (0..20_000)
        .map(|i| format!("Paragraph number {i} of a long corpus."))
        .collect();
    std::fs::write(&corpus, text.join("\n\n")).unwrap();
    let pipeline = dir.path().join("slow.toml");
    let run_dir = dir.path().join("run");
    std::fs::write(
        &pipeline,
        format!(
            "[pipeline]\nname = \"slow\"\nrun_dir = {:?}\n[capture]\nkind = \"capture\"\nmodel = {:?}\n\
             corpus = {:?}\nsplit = \"paragraph\"\nhooks = [\"blocks.1.hook_resid_post\"]\n\
             context_length = 16\nbatch_size = 1\n",
            run_dir.display().to_string(),
            model.display().to_string(),
            corpus.display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_monoscope"))
        .args(["run", pipeline.to_str().unwrap()])
        .env("MONOSCOPE_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the capture is writing, then press Ctrl-C once.
    let started = std::time::Instant::now();
    while !run_dir.join("capture/store").exists()
        && started.elapsed() < std::time::Duration::from_secs(60)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("run cancelled"), "{stderr}");
    assert!(!run_dir.join("capture/.monoscope-complete.json").exists());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "cancelled");
}

#[test]
fn sae_info_describes_a_saelens_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sae = monoscope_sae::Sae {
        d_in: 2,
        d_sae: 3,
        architecture: monoscope_sae::Architecture::TopK { k: 1 },
        w_enc: vec![1.0; 6],
        b_enc: vec![0.0; 3],
        w_dec: vec![3.0, 4.0, 0.0, 1.0, 1.0, 0.0],
        b_dec: vec![0.0; 2],
        threshold: None,
        apply_b_dec_to_input: true,
        metadata: monoscope_sae::SaeMetadata {
            hook_name: Some("blocks.3.hook_resid_post".into()),
            ..Default::default()
        },
        extra_cfg: Default::default(),
    };
    let path = dir.path().join("sae");
    monoscope_sae::save_saelens(&sae, &path).unwrap();
    let out = monoscope(&["sae", "info", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "TopK { k: 1 }",
        "d_in 2 → d_sae 3",
        "blocks.3.hook_resid_post",
        "min 1.0000",
        "max 5.0000",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn contrast_files_are_checked_before_anything_loads_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.txt");
    std::fs::write(&one, "a single text\n\n").unwrap();
    let (one, missing) = (one.to_str().unwrap(), "no/such/texts.txt");
    let out = monoscope(&["features", "no/such/run", "--contrast", "Cargo.toml", one]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("one.txt: 1 text(s); a contrast needs at least 2"),
        "{stderr}"
    );
    let out = monoscope(&[
        "features",
        "no/such/run",
        "--contrast",
        missing,
        "Cargo.toml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no/such/texts.txt: cannot read the texts"),
        "{stderr}"
    );
    let out = monoscope(&["features", "no/such/run", "--contrast", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(2), "one file is a usage error");
}

/// A backend this build lacks is refused before anything runs, naming the key that asked for
/// it and where the value came from (`--device`, `MONOSCOPE_DEVICE`, a stage's table).
#[test]
fn a_device_this_build_or_machine_lacks_is_invalid() {
    let absent = if monoscope_device::compiled().contains(&"metal") {
        return;
    } else {
        "metal"
    };
    let out = monoscope(&["validate", "pipelines/fetch.toml", "--device", absent]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "--device metal: `pipeline.device`: = \"metal\": this build has no `metal` backend"
        ) && stderr.contains("--features metal"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_monoscope"))
        .args([
            "run",
            "pipelines/fetch.toml",
            "--run-dir",
            "/nonexistent/never-written",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("MONOSCOPE_LOG", "warn")
        .env("MONOSCOPE_DEVICE", absent)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MONOSCOPE_DEVICE=metal: `pipeline.device`"),
        "{stderr}"
    );
    assert!(!std::path::Path::new("/nonexistent/never-written").exists());

    let out = monoscope(&["validate", "pipelines/fetch.toml", "--device", "gpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`gpu`: not a device"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A stage's own device is checked under its own key.
    let out = monoscope(&[
        "validate",
        "pipelines/fetch.toml",
        "--set",
        "model.device=\"metal\"",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`model.device`: = \"metal\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The commands that load a model outside a pipeline take `--device` and `--precision`, and
/// refuse what the build or device cannot run before writing anything.
#[test]
fn model_commands_take_a_device_and_refuse_one_this_build_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&model)
        .unwrap();
    let model = model.to_str().unwrap();
    let out = dir.path().join("run.safetensors");
    let run = |extra: &[&str]| {
        let base = ["model", "run", model, "--text", "hello", "--out"];
        monoscope(&[&base[..], &[out.to_str().unwrap()], extra].concat())
    };
    let cpu = run(&["--device", "cpu", "--precision", "f32"]);
    assert!(
        cpu.status.success(),
        "{}",
        String::from_utf8_lossy(&cpu.stderr)
    );
    std::fs::remove_file(&out).unwrap();

    if !monoscope_device::compiled().contains(&"metal") {
        let metal = run(&["--device", "metal"]);
        assert_eq!(metal.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&metal.stderr);
        assert!(
            stderr.contains("--device metal") && stderr.contains("--features metal"),
            "{stderr}"
        );
        assert!(
            !out.exists(),
            "nothing is written for a device that is not there"
        );
    }
    let half = run(&["--precision", "bf16"]);
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert!(
        stderr.contains("`precision` = bf16 is not supported here"),
        "{stderr}"
    );
    assert!(!out.exists());
    let unknown = run(&["--device", "gpu"]);
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "a bad flag value is a usage error"
    );
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("`gpu`: not a device"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    // `features`, `steer` and `attribute` share the flags.
    let features = monoscope(&["features", "no/such/run", "--text", "hi", "--device", "gpu"]);
    assert_eq!(features.status.code(), Some(2));
}

#[test]
fn devices_lists_the_cpu_and_every_backend() {
    let out = monoscope(&["devices", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices = listed["devices"].as_array().unwrap();
    assert_eq!(devices[0]["device"], "cpu");
    assert_eq!(devices[0]["state"], "available");
    let names: Vec<&str> = devices
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cpu", "cuda", "rocm", "wgpu", "vulkan", "metal"]);
    for d in devices {
        let compiled = listed["compiled"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == &d["device"]);
        assert_eq!(d["state"] != "not built", compiled, "{d}");
    }
    // Where the device tests run on a device, this build has it and finds it.
    if let Ok(name) = std::env::var("MONOSCOPE_TEST_DEVICE")
        && !name.is_empty()
    {
        let named = devices.iter().find(|d| d["device"] == name.as_str());
        assert!(
            named.is_some_and(|d| d["state"] == "available"),
            "MONOSCOPE_TEST_DEVICE={name}: {listed}"
        );
        let out = monoscope(&["validate", "pipelines/fetch.toml", "--device", &name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The pipeline's device reaches the resolved configuration.
    let out = monoscope(&["validate", "pipelines/fetch.toml", "--device", "cpu"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
