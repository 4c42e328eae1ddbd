//! The capture stage end to end, through the executor, on a tiny random-weight GGUF model and on
//! the real default model when it is cached.

use std::path::{Path, PathBuf};
use std::time::Duration;

use monoscope_config::{load_with_env, parse_override};
use monoscope_core::{CancelToken, Registry};
use monoscope_exec::{ExecError, ProgressMode, RunOptions};
use monoscope_lm::{Device, ForwardOptions, HookName, TokenBatch};
use monoscope_store::{SequentialOptions, Store};

fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    monoscope_formats::testing::TinyLlama::default()
        .write(&path)
        .unwrap();
    path
}

fn corpus(dir: &Path, paragraphs: usize) -> PathBuf {
    let text: Vec<String> = (0..paragraphs)
        .map(|i| {
            format!(
                "Paragraph {i} talks about rivers, mountains and the number {}.",
                i * 7
            )
        })
        .collect();
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text.join("\n\n")).unwrap();
    path
}

fn run(
    dir: &Path,
    run_name: &str,
    settings: &[String],
    cancel: CancelToken,
) -> Result<(), ExecError> {
    let pipeline = dir.join(format!("{run_name}.toml"));
    std::fs::write(
        &pipeline,
        format!(
            "[pipeline]\nname = \"{run_name}\"\nrun_dir = {:?}\n[capture]\nkind = \"capture\"\n",
            dir.join(run_name).display().to_string()
        ),
    )
    .unwrap();
    let overrides: Vec<_> = settings
        .iter()
        .map(|s| parse_override(s).unwrap())
        .collect();
    let mut p = load_with_env(&pipeline, &overrides, &Registry::builtin(), false)
        .unwrap_or_else(|e| panic!("{e}"));
    monoscope_exec::run(
        &mut p,
        &RunOptions {
            force: false,
            cancel,
            progress: ProgressMode::Hidden,
        },
    )
    .map(|_| ())
}

fn tiny_settings(model: &Path, corpus: &Path) -> Vec<String> {
    vec![
        format!("capture.model={:?}", model.display().to_string()),
        format!("capture.corpus={:?}", corpus.display().to_string()),
        "capture.split=\"paragraph\"".into(),
        "capture.hooks=[\"blocks.0.hook_resid_post\", \"blocks.1.hook_mlp_out\"]".into(),
        "capture.context_length=16".into(),
        "capture.batch_size=2".into(),
        "capture.dtype=\"f32\"".into(),
        "capture.rows_per_shard=15".into(),
    ]
}

#[test]
fn captured_rows_equal_the_model_run_on_the_same_windows() {
    let dir = tempfile::tempdir().unwrap();
    let (model_path, corpus_path) = (tiny_model(dir.path()), corpus(dir.path(), 12));
    run(
        dir.path(),
        "a",
        &tiny_settings(&model_path, &corpus_path),
        CancelToken::new(),
    )
    .unwrap();

    let store = Store::open(&dir.path().join("a/capture/store")).unwrap();
    let model = monoscope_lm::load(&model_path, &Device::flex()).unwrap();
    let hook = HookName::parse("blocks.1.hook_mlp_out").unwrap();
    let rows = store.rows(0..store.row_count()).unwrap();
    assert!(store.row_count() > 30);
    // Rebuild each stored row from its document and position: run the document alone, from
    // its BOS, and compare. Positions index the document's own token sequence.
    let bos = model.tokenizer().bos_id();
    let texts: Vec<String> = std::fs::read_to_string(&corpus_path)
        .unwrap()
        .split("\n\n")
        .map(String::from)
        .collect();
    let mut checked = 0;
    for r in 0..rows.token_ids.len() {
        let (doc, pos) = (rows.doc_ids[r] as usize, rows.positions[r] as usize);
        let mut ids: Vec<u32> = bos.into_iter().collect();
        ids.extend(model.tokenizer().encode(&texts[doc], false).unwrap());
        assert_eq!(
            ids[pos], rows.token_ids[r],
            "row {r}: stored token differs from the document's"
        );
        checked += 1;
    }
    assert_eq!(checked, rows.token_ids.len());

    assert_rows_match_model(&store, &model, &hook, &texts, 16, 1e-4);
}

/// Row-for-row equality of a store with the model run on the same windows, one at a time.
fn assert_rows_match_model(
    store: &Store,
    model: &monoscope_lm::Model,
    hook: &HookName,
    texts: &[String],
    context: usize,
    tolerance: f32,
) {
    let rows = store.rows(0..store.row_count()).unwrap();
    let mut reader = store
        .sequential(SequentialOptions::new(hook.to_string(), 1 << 20))
        .unwrap();
    let stored = reader.next().unwrap().unwrap();
    let d = model.hook_width(hook);
    let mut expected = Vec::new();
    for (tokens, keep) in windows_of(&rows.doc_ids, texts, model, context) {
        let out = model
            .forward(
                &TokenBatch::single(&tokens).unwrap(),
                &ForwardOptions::capture(vec![*hook]),
            )
            .unwrap();
        let acts = out.activation_host(hook).unwrap();
        for (i, keep) in keep.iter().enumerate() {
            if *keep {
                expected.extend_from_slice(&acts[i * d..(i + 1) * d]);
            }
        }
    }
    expected.truncate(stored.activations.len());
    assert_eq!(stored.activations.len(), expected.len());
    for (i, (a, b)) in stored.activations.iter().zip(&expected).enumerate() {
        assert!(
            (a - b).abs() <= tolerance * (1.0 + b.abs()),
            "value {i}: stored {a}, model {b}"
        );
    }
}

#[test]
fn real_model_capture_equals_the_model_run_on_the_same_windows() {
    let cache = monoscope_fetch::cache_dir();
    let (model_path, corpus_path) = (
        cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        cache.join("corpora/wiki-summaries-en.json"),
    );
    let how = "monoscope fetch smollm2 wiki";
    let present = |p: &std::path::Path| monoscope_formats::testing::real_file_present(p, how);
    if !present(&model_path) || !present(&corpus_path) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = vec![
        format!("capture.model={:?}", model_path.display().to_string()),
        format!("capture.corpus={:?}", corpus_path.display().to_string()),
        "capture.max_tokens=256".into(),
        "capture.dtype=\"f32\"".into(),
    ];
    run(dir.path(), "real", &settings, CancelToken::new()).unwrap();
    let store = Store::open(&dir.path().join("real/capture/store")).unwrap();
    // Two windows of 128 tokens, less the BOS positions of the documents they start.
    assert!(
        (200..256).contains(&store.row_count()),
        "{} rows",
        store.row_count()
    );
    let model = monoscope_lm::load(&model_path, &Device::flex()).unwrap();
    let docs = monoscope_capture::read_corpus(
        &corpus_path,
        monoscope_capture::CorpusFormat::Auto,
        "extract",
        monoscope_capture::ParagraphSplit::File,
    )
    .unwrap();
    let texts: Vec<String> = docs.into_iter().map(|d| d.text).collect();
    let hook = HookName::parse("blocks.15.hook_resid_post").unwrap();
    assert_rows_match_model(&store, &model, &hook, &texts, 128, 1e-3);
}

/// The windows a capture of `context` tokens made, rebuilt from the documents in stored order.
fn windows_of(
    doc_ids: &[u32],
    texts: &[String],
    model: &monoscope_lm::Model,
    context: usize,
) -> Vec<(Vec<u32>, Vec<bool>)> {
    // Concatenate the documents in the order they first appear, as the capture packed them.
    let mut order: Vec<u32> = Vec::new();
    for &d in doc_ids {
        if order.last() != Some(&d) && !order.contains(&d) {
            order.push(d);
        }
    }
    let bos = model.tokenizer().bos_id().unwrap();
    let mut stream = Vec::new();
    for d in &order {
        stream.push(bos);
        stream.extend(
            model
                .tokenizer()
                .encode(&texts[*d as usize], false)
                .unwrap(),
        );
    }
    let kept_rows = doc_ids.len();
    // Each window starts with BOS: a document's own, or one inserted before a window that starts
    // mid-document.
    let mut windows = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut kept = 0;
    for &token in &stream {
        if current.is_empty() && token != bos {
            current.push(bos);
        }
        current.push(token);
        if current.len() == context {
            let keep: Vec<bool> = current.iter().map(|&t| t != bos).collect();
            kept += keep.iter().filter(|&&k| k).count();
            windows.push((std::mem::take(&mut current), keep));
            if kept >= kept_rows {
                break;
            }
        }
    }
    windows
}

#[test]
fn an_interrupted_capture_resumes_to_a_byte_identical_store() {
    let dir = tempfile::tempdir().unwrap();
    let (model_path, corpus_path) = (tiny_model(dir.path()), corpus(dir.path(), 400));
    let settings = tiny_settings(&model_path, &corpus_path);
    run(dir.path(), "clean", &settings, CancelToken::new()).unwrap();

    let cancel = CancelToken::new();
    let watched = dir
        .path()
        .join("cut/capture/store")
        .join(monoscope_store::shard_file_name(3));
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            while !watched.exists() {
                std::thread::sleep(Duration::from_micros(200));
            }
            cancel.cancel();
        })
    };
    let err = run(dir.path(), "cut", &settings, cancel).unwrap_err();
    canceller.join().unwrap();
    assert!(matches!(err, ExecError::Cancelled), "{err:?}");
    let store = dir.path().join("cut/capture/store");
    assert!(
        !store.join(monoscope_store::MANIFEST_FILE).exists(),
        "an interrupted store has no manifest"
    );
    let shards_before = std::fs::read_dir(&store).unwrap().count();
    assert!(shards_before >= 4);

    run(dir.path(), "cut", &settings, CancelToken::new()).unwrap();
    let clean = dir.path().join("clean/capture/store");
    let mut names: Vec<_> = std::fs::read_dir(&clean)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let mut resumed: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    resumed.sort();
    assert_eq!(names, resumed);
    for name in names {
        let a = std::fs::read(clean.join(&name)).unwrap();
        let b = std::fs::read(store.join(&name)).unwrap();
        assert!(
            a == b,
            "{name:?} differs between the clean and the resumed capture"
        );
    }
}

#[test]
fn a_bad_hook_is_a_clear_stage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (model_path, corpus_path) = (tiny_model(dir.path()), corpus(dir.path(), 3));
    let mut settings = tiny_settings(&model_path, &corpus_path);
    settings.push("capture.hooks=[\"blocks.9.hook_resid_post\"]".into());
    let err = run(dir.path(), "bad", &settings, CancelToken::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.9.hook_resid_post"), "{err}");
}

#[test]
fn a_hook_inside_the_mlp_is_captured_at_its_own_width_and_widths_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let (model_path, corpus_path) = (tiny_model(dir.path()), corpus(dir.path(), 6));
    let mut settings = tiny_settings(&model_path, &corpus_path);
    settings.push("capture.hooks=[\"blocks.1.mlp.hook_post\"]".into());
    run(dir.path(), "mlp", &settings, CancelToken::new()).unwrap();
    let store = Store::open(&dir.path().join("mlp/capture/store")).unwrap();
    let model = monoscope_lm::load(&model_path, &Device::flex()).unwrap();
    let hook = HookName::parse("blocks.1.mlp.hook_post").unwrap();
    assert_eq!(store.d_model(), model.config().d_ff);
    let texts: Vec<String> = std::fs::read_to_string(&corpus_path)
        .unwrap()
        .split("\n\n")
        .map(String::from)
        .collect();
    assert_rows_match_model(&store, &model, &hook, &texts, 16, 1e-4);

    let mut mixed = tiny_settings(&model_path, &corpus_path);
    mixed.push("capture.hooks=[\"blocks.1.mlp.hook_post\", \"blocks.1.hook_resid_post\"]".into());
    let err = run(dir.path(), "mixed", &mixed, CancelToken::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("one store holds rows of one width") && err.contains("blocks.1.mlp.hook_post"),
        "{err}"
    );
    assert!(
        !dir.path()
            .join("mixed/capture/store/manifest.json")
            .exists()
    );
}
