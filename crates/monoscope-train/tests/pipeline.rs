//! capture → train through the executor on a tiny random-weight GGUF model.

use std::path::Path;

use monoscope_capture as _;
use monoscope_config::{load_with_env, parse_override};
use monoscope_core::{CancelToken, Registry};
use monoscope_exec::{ProgressMode, RunOptions};
use monoscope_fetch as _;
use monoscope_train as _;

fn pipeline(dir: &Path, set: &[String]) -> monoscope_config::Pipeline {
    pipeline_with(dir, set, false)
}

/// With `with_model`, a fetch-model stage hands the model to train for the CE-loss splice.
fn pipeline_with(dir: &Path, set: &[String], with_model: bool) -> monoscope_config::Pipeline {
    let path = pipeline_file(dir, with_model);
    let overrides: Vec<_> = set.iter().map(|s| parse_override(s).unwrap()).collect();
    load_with_env(&path, &overrides, &Registry::builtin(), false).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes the tiny model, the corpus and the pipeline file; returns the file.
fn pipeline_file(dir: &Path, with_model: bool) -> std::path::PathBuf {
    let model = dir.join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&model)
        .unwrap();
    let corpus = dir.join("corpus.txt");
    let text: Vec<String> = (0..300)
        .map(|i| format!("Note {i}: the river {} flows past hill {}.", i % 17, i % 5))
        .collect();
    std::fs::write(&corpus, text.join("\n\n")).unwrap();
    let path = dir.join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[pipeline]\nname = \"t\"\nrun_dir = {:?}\n\
             [capture]\nkind = \"capture\"\nmodel = {:?}\ncorpus = {:?}\nsplit = \"paragraph\"\n\
             hooks = [\"blocks.1.hook_resid_post\"]\ncontext_length = 32\nrows_per_shard = 512\ndtype = \"f32\"\n\
             {}\
             [train]\nkind = \"train\"\n{}\nd_sae = 128\nk = 8\nbatch_size = 64\nepochs = 3\nmetrics_every = 10\n",
            dir.join("run").display().to_string(),
            model.display().to_string(),
            corpus.display().to_string(),
            match with_model {
                true => format!("[model]\nkind = \"fetch-model\"\nmodel = {:?}\n", model.display().to_string()),
                false => String::new(),
            },
            match with_model {
                true => "inputs = { store = \"capture.store\", model = \"model.model\" }\nsplice_tokens = 100",
                false => "inputs = { store = \"capture.store\" }",
            },
        ),
    )
    .unwrap();
    path
}

fn quiet() -> RunOptions {
    RunOptions {
        force: false,
        cancel: CancelToken::new(),
        progress: ProgressMode::Hidden,
    }
}

#[test]
fn a_topk_sae_trains_on_captured_activations_and_is_saved_and_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut pipeline(dir.path(), &[]), &quiet()).unwrap();
    let stage = dir.path().join("run/train");
    let sae = monoscope_sae::load_saelens(&stage.join("sae")).unwrap();
    assert_eq!((sae.d_in, sae.d_sae), (64, 128));
    assert_eq!(
        sae.metadata.hook_name.as_deref(),
        Some("blocks.1.hook_resid_post")
    );

    let eval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stage.join("eval.json")).unwrap()).unwrap();
    let (l0, fvu) = (eval["l0"].as_f64().unwrap(), eval["fvu"].as_f64().unwrap());
    assert!(
        (l0 - 8.0).abs() < 1e-9,
        "TopK 8 must have L0 8 on held-out rows, got {l0}"
    );
    // An untrained SAE reconstructs nothing (FVU about 1); a trained one explains most variance.
    assert!(fvu < 0.5, "held-out FVU {fvu}: training did not work");

    let metrics = std::fs::read_to_string(stage.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2);
    let first = lines.first().unwrap()["fvu"].as_f64().unwrap();
    let last = lines.last().unwrap()["fvu"].as_f64().unwrap();
    assert!(last < first, "training FVU went from {first} to {last}");
    let skipped = eval["splice_skipped"].as_str().unwrap();
    assert!(skipped.contains("no `model` input"), "{skipped}");
}

#[test]
fn with_the_model_connected_eval_json_has_the_ce_loss_splice() {
    let dir = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut pipeline_with(dir.path(), &[], true), &quiet()).unwrap();
    let eval: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/train/eval.json")).unwrap())
            .unwrap();
    let splice = &eval["splice"];
    assert_eq!(splice["tokens"].as_u64(), Some(100), "{splice}");
    let get = |k: &str| {
        splice[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {splice}"))
    };
    let (clean, zero) = (get("ce_loss_clean"), get("ce_loss_zero_ablation"));
    assert!(
        clean > 0.0 && zero.is_finite() && get("kl_div_with_sae") >= 0.0,
        "{splice}"
    );
    let expected = (zero - get("ce_loss_with_sae")) / (zero - clean);
    assert!((get("ce_loss_score") - expected).abs() < 1e-9, "{splice}");
    assert!(eval.get("splice_skipped").is_none());
}

#[test]
fn holding_out_every_shard_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = monoscope_exec::run(
        &mut pipeline(dir.path(), &["train.holdout_shards=100".into()]),
        &quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("holdout_shards = 100 leaves no shard to train on"),
        "{err}"
    );
}

/// The trainer's 16-bit products are for GPU devices: on the CPU, where the host kernels train
/// in f32, `precision` other than `f32` is refused by key and value instead of being ignored.
#[test]
fn sixteen_bit_products_on_the_cpu_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = monoscope_exec::run(
        &mut pipeline(dir.path(), &["train.precision=\"bf16\"".into()]),
        &quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`train.precision` = \"bf16\" on device `cpu`")
            && err.contains("for GPU devices"),
        "{err}"
    );
}

fn train_file(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join("run/train").join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn a_cancelled_run_resumes_from_its_checkpoint_to_the_same_sae() {
    resumes_to_the_same_saes(&[], &[]);
}

#[test]
fn a_cancelled_sweep_resumes_every_member_to_the_same_sae() {
    resumes_to_the_same_saes(
        &[r#"train.sweep=[{ name = "k4", k = 4 }]"#],
        &[
            "sweep/k4/sae/sae_weights.safetensors",
            "sweep/k4/metrics.jsonl",
            "sweep.json",
        ],
    );
}

/// Runs `pipeline`, cancelling it as soon as `watched` exists (or after two minutes).
fn run_cancelled_when(
    watched: &Path,
    pipeline: &mut monoscope_config::Pipeline,
) -> Result<monoscope_exec::RunReport, monoscope_exec::ExecError> {
    let cancel = CancelToken::new();
    let watcher = {
        let (cancel, watched) = (cancel.clone(), watched.to_path_buf());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !watched.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            cancel.cancel();
        })
    };
    let result = monoscope_exec::run(pipeline, &RunOptions { cancel, ..quiet() });
    watcher.join().unwrap();
    result
}

fn resumes_to_the_same_saes(more_set: &[&str], more_files: &[&str]) {
    let mut set: Vec<String> = vec!["train.checkpoint_every=4".into(), "train.epochs=12".into()];
    set.extend(more_set.iter().map(|s| s.to_string()));
    let straight = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut pipeline(straight.path(), &set), &quiet()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("run/train/checkpoint/trainer.json");
    let first = run_cancelled_when(&checkpoint, &mut pipeline(dir.path(), &set));
    assert!(first.is_err(), "the first run was to be cancelled");
    assert!(dir.path().join("run/train/checkpoint").exists());
    monoscope_exec::run(&mut pipeline(dir.path(), &set), &quiet()).unwrap();

    let marker: serde_json::Value =
        serde_json::from_slice(&train_file(dir.path(), ".monoscope-complete.json")).unwrap();
    let resumed = marker.to_string();
    assert!(
        marker["artifacts"][0][1]["metadata"]["resumed_from_step"]
            .as_u64()
            .is_some_and(|s| s >= 4),
        "the second run did not resume: {resumed}"
    );
    // cfg.json differs only in the dataset path (the two runs live in different directories).
    let cfg = |d: &Path| {
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&train_file(d, "sae/cfg.json")).unwrap();
        cfg["metadata"]["dataset_path"] = serde_json::Value::Null;
        cfg
    };
    assert_eq!(cfg(dir.path()), cfg(straight.path()));
    let files = ["sae/sae_weights.safetensors", "metrics.jsonl", "eval.json"];
    for file in files.iter().chain(more_files) {
        let (resumed, straight) = (
            train_file(dir.path(), file),
            train_file(straight.path(), file),
        );
        // sweep.json names the step the run resumed from; the rest must be identical.
        if *file == "sweep.json" {
            let strip = |b: &[u8]| {
                let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
                for row in v.as_array_mut().unwrap() {
                    row["resumed_from_step"] = serde_json::Value::Null;
                }
                v
            };
            assert_eq!(strip(&resumed), strip(&straight));
            continue;
        }
        assert!(
            resumed == straight,
            "{file} differs from the uninterrupted run's"
        );
    }
    assert!(
        !dir.path().join("run/train/checkpoint").exists(),
        "the checkpoint outlived the saved SAE"
    );
}

#[test]
fn a_diverging_loss_stops_with_the_step_and_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let set: Vec<String> = vec!["train.lr=1e30".into(), "train.checkpoint_every=1".into()];
    let err = monoscope_exec::run(&mut pipeline(dir.path(), &set), &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("training diverged: non-finite") && err.contains("at step"),
        "{err}"
    );
    assert!(
        err.contains("the last good checkpoint is") && err.contains("checkpoint (step"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let err = monoscope_exec::run(&mut pipeline(dir.path(), &set[..1]), &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no checkpoint was written"), "{err}");
}

#[test]
fn a_sweep_trains_every_member_on_the_same_batches_without_changing_the_main_sae() {
    let alone = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut pipeline(alone.path(), &[]), &quiet()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let set = vec![
        r#"train.sweep=[{ name = "k4", k = 4 }, { name = "wide", d_sae = 256 }, { name = "relu", architecture = "relu-l1" }]"#
            .to_string(),
    ];
    monoscope_exec::run(&mut pipeline(dir.path(), &set), &quiet()).unwrap();
    // The main SAE is bit for bit the one trained alone: members share the data, not state.
    for file in ["sae/sae_weights.safetensors", "metrics.jsonl", "eval.json"] {
        assert!(
            train_file(dir.path(), file) == train_file(alone.path(), file),
            "{file} differs from the main SAE trained alone"
        );
    }
    let stage = dir.path().join("run/train");
    let eval = |name: &str| -> serde_json::Value {
        let path = stage.join("sweep").join(name).join("eval.json");
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    };
    assert!((eval("k4")["l0"].as_f64().unwrap() - 4.0).abs() < 1e-9);
    let wide = monoscope_sae::load_saelens(&stage.join("sweep/wide/sae")).unwrap();
    assert_eq!((wide.d_in, wide.d_sae), (64, 256));
    assert!(eval("wide")["fvu"].as_f64().unwrap() < 0.5);
    let relu = monoscope_sae::load_saelens(&stage.join("sweep/relu/sae")).unwrap();
    assert_ne!(relu.architecture, wide.architecture);
    assert!(stage.join("sweep/relu/metrics.jsonl").exists());

    let table: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(stage.join("sweep.json")).unwrap()).unwrap();
    let names: Vec<&str> = table.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["main", "k4", "wide", "relu"]);
    assert_eq!(table[2]["d_sae"], 256);
}

#[test]
fn a_bad_sweep_member_is_named_by_its_index_and_key() {
    for (sweep, key, said) in [
        (r#"[{ name = "a", k = 500 }]"#, "sweep[0].k", "= 500"),
        (
            r#"[{ name = "a" }, { name = "a", k = 2 }]"#,
            "sweep[1].name",
            "another member",
        ),
        (
            r#"[{ name = "../x" }]"#,
            "sweep[0].name",
            "names a directory",
        ),
        (r#"[{ name = "a", kay = 2 }]"#, "sweep.0.kay", "unknown key"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = pipeline_file(dir.path(), false);
        let set = [parse_override(&format!("train.sweep={sweep}")).unwrap()];
        let err = load_with_env(&path, &set, &Registry::builtin(), false)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains(said), "{sweep}: {err}");
    }
}

#[test]
fn every_sweep_member_gets_its_own_ce_loss_splice() {
    let alone = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut pipeline_with(alone.path(), &[], true), &quiet()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let set = vec![r#"train.sweep=[{ name = "k2", k = 2 }]"#.to_string()];
    monoscope_exec::run(&mut pipeline_with(dir.path(), &set, true), &quiet()).unwrap();
    let splice = |d: &Path, file: &str| -> serde_json::Value {
        let eval: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("run/train").join(file)).unwrap())
                .unwrap();
        eval["splice"].clone()
    };
    // The main SAE's splice is the one it gets when trained alone.
    assert_eq!(
        splice(dir.path(), "eval.json"),
        splice(alone.path(), "eval.json")
    );
    let member = splice(dir.path(), "sweep/k2/eval.json");
    let main = splice(dir.path(), "eval.json");
    assert_eq!(member["tokens"].as_u64(), Some(100), "{member}");
    // Same model and windows: the clean and ablated losses agree; the spliced one is its own.
    assert_eq!(member["ce_loss_clean"], main["ce_loss_clean"]);
    assert_eq!(
        member["ce_loss_zero_ablation"],
        main["ce_loss_zero_ablation"]
    );
    assert_ne!(member["ce_loss_with_sae"], main["ce_loss_with_sae"]);
}

/// The pipeline with train reading the capture's stream (`with_store`: and its store, for
/// the splice and the held-out check, plus the model; the store then holds f16, so the check
/// also shows that the stream carries the rows rounded as stored).
fn stream_pipeline(dir: &Path, set: &[&str], with_store: bool) -> monoscope_config::Pipeline {
    let path = pipeline_file(dir, with_store);
    let text = std::fs::read_to_string(&path).unwrap();
    let inputs = match with_store {
        true => {
            "inputs = { activations = \"capture.activations\", store = \"capture.store\", model = \"model.model\" }"
        }
        false => "inputs = { activations = \"capture.activations\" }",
    };
    let dtype = match with_store {
        true => "dtype = \"f16\"",
        false => "dtype = \"f32\"",
    };
    let text = text
        .replace("dtype = \"f32\"", dtype)
        .replace(
            "inputs = { store = \"capture.store\", model = \"model.model\" }",
            inputs,
        )
        .replace("inputs = { store = \"capture.store\" }", inputs)
        .replace(
            "epochs = 3",
            "epochs = 1\ntraining_tokens = 4096\nholdout_rows = 256\nbuffer_rows = 512",
        );
    std::fs::write(&path, text).unwrap();
    let overrides: Vec<_> = set.iter().map(|s| parse_override(s).unwrap()).collect();
    load_with_env(&path, &overrides, &Registry::builtin(), false).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_sae_trains_on_the_capture_stream_and_splices_with_the_store_connected() {
    let dir = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut stream_pipeline(dir.path(), &[], true), &quiet()).unwrap();
    let eval: serde_json::Value =
        serde_json::from_slice(&train_file(dir.path(), "eval.json")).unwrap();
    assert!((eval["l0"].as_f64().unwrap() - 8.0).abs() < 1e-9, "{eval}");
    // 64 steps (the store test trains 3 epochs): less far, but far from an untrained SAE's
    // FVU of about 1.
    let fvu = eval["fvu"].as_f64().unwrap();
    assert!(
        fvu < 0.75,
        "held-out FVU {fvu}: training on the stream did not work"
    );
    assert!(eval["splice"]["ce_loss_score"].as_f64().is_some(), "{eval}");
    let marker: serde_json::Value =
        serde_json::from_slice(&train_file(dir.path(), ".monoscope-complete.json")).unwrap();
    let summary = &marker["artifacts"][0][1]["metadata"];
    assert_eq!(summary["trained_on"], "stream", "{summary}");
    assert_eq!(summary["steps"], summary["steps_planned"], "{summary}");
    assert_eq!(summary["steps"].as_u64(), Some(4096 / 64), "{summary}");
}

#[test]
fn a_stream_run_without_the_store_skips_the_splice_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut stream_pipeline(dir.path(), &[], false), &quiet()).unwrap();
    let eval: serde_json::Value =
        serde_json::from_slice(&train_file(dir.path(), "eval.json")).unwrap();
    let skipped = eval["splice_skipped"].as_str().unwrap();
    assert!(
        skipped.contains("without the capture's `store` input"),
        "{skipped}"
    );
}

#[test]
fn streaming_without_training_tokens_or_with_more_epochs_is_a_clear_error() {
    for (set, wanted) in [
        ("train.training_tokens=0", "makes no full batch"),
        ("train.epochs=2", "epochs = 2: a stream is read once"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = monoscope_exec::run(&mut stream_pipeline(dir.path(), &[set], false), &quiet())
            .unwrap_err()
            .to_string();
        assert!(err.contains(wanted), "{set}: {err}");
    }
}

/// A run cancelled after a checkpoint reads the stream again from its start (the capture
/// sends every row again) and ends with the SAE of an uninterrupted run.
#[test]
fn a_cancelled_stream_run_resumes_to_the_same_sae() {
    stream_run_resumes_to_the_same_sae("run/train/checkpoint/trainer.json", true);
}

/// Regression: a capture resumed after an interruption skipped the rows it had stored, so its
/// stream lacked them. It must send them again.
#[test]
fn a_capture_cut_mid_stream_sends_every_row_again_when_resumed() {
    let shard = monoscope_store::shard_file_name(2);
    stream_run_resumes_to_the_same_sae(&format!("run/capture/store/{shard}"), false);
}

/// Cancels a stream run once `watched` (relative to the run's directory) exists, reruns it,
/// and compares with an uninterrupted run.
fn stream_run_resumes_to_the_same_sae(watched: &str, expect_resume: bool) {
    let set = ["train.checkpoint_every=4"];
    let straight = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut stream_pipeline(straight.path(), &set, false), &quiet()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = run_cancelled_when(
        &dir.path().join(watched),
        &mut stream_pipeline(dir.path(), &set, false),
    );
    assert!(first.is_err(), "the first run was to be cancelled");
    monoscope_exec::run(&mut stream_pipeline(dir.path(), &set, false), &quiet()).unwrap();
    let marker: serde_json::Value =
        serde_json::from_slice(&train_file(dir.path(), ".monoscope-complete.json")).unwrap();
    let summary = &marker["artifacts"][0][1]["metadata"];
    if expect_resume {
        assert!(
            summary["resumed_from_step"]
                .as_u64()
                .is_some_and(|s| s >= 4),
            "the second run did not resume: {marker}"
        );
    }
    assert_eq!(summary["steps"], summary["steps_planned"], "{summary}");
    for file in ["sae/sae_weights.safetensors", "metrics.jsonl", "eval.json"] {
        assert!(
            train_file(dir.path(), file) == train_file(straight.path(), file),
            "{file} differs from the uninterrupted run's"
        );
    }
}

/// When only train reruns, the executor reruns the capture for its stream: the finished store
/// is read back and sent (left untouched, no forward pass), and train sees the same rows.
#[test]
fn a_rerun_of_train_replays_the_finished_store_onto_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    monoscope_exec::run(&mut stream_pipeline(dir.path(), &[], true), &quiet()).unwrap();
    let store = dir.path().join("run/capture/store");
    let shard = store.join(monoscope_store::shard_file_name(0));
    let written = std::fs::metadata(&shard).unwrap().modified().unwrap();
    let sae = train_file(dir.path(), "sae/sae_weights.safetensors");
    std::fs::remove_file(dir.path().join("run/train/.monoscope-complete.json")).unwrap();
    monoscope_exec::run(&mut stream_pipeline(dir.path(), &[], true), &quiet()).unwrap();
    assert_eq!(
        std::fs::metadata(&shard).unwrap().modified().unwrap(),
        written,
        "the store was written again instead of replayed"
    );
    assert!(train_file(dir.path(), "sae/sae_weights.safetensors") == sae);
}

#[test]
fn bad_stream_settings_are_named_before_anything_runs() {
    for (set, key) in [
        ("train.buffer_rows=64", "train.buffer_rows"),
        ("train.holdout_rows=0", "train.holdout_rows"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = pipeline_file(dir.path(), false);
        let overrides = vec![parse_override(set).unwrap()];
        let err = load_with_env(&path, &overrides, &Registry::builtin(), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{set}: {err}");
    }
}
