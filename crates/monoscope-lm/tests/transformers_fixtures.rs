//! monoscope against Hugging Face transformers on tiny random models of every architecture,
//! made by `tests/fixtures/make_models.py` (run by hand; its output is committed under
//! `tests/fixtures/transformers/`): every hook the reference recorded and this crate knows, and
//! the logits, within 1e-4 relative L2, with the same top-1 token everywhere. The same models
//! converted to GGUF as llama.cpp's converter would (`tests/fixtures/make_gguf.py`, `model.gguf`
//! beside each) are held to the same numbers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use monoscope_lm::{Device, ForwardOptions, Logits, TokenBatch};
use safetensors::{Dtype, SafeTensors};

const TOL: f64 = 1e-4;

/// The cases monoscope runs. Each must load and match; every other case in the fixture
/// directory must be refused at load by name (see `unsupported_cases_are_refused`).
const SUPPORTED: &[&str] = &[
    "llama",
    "llama-rope-linear",
    "llama-rope-dynamic",
    "llama-rope-llama3",
    "llama-rope-yarn",
    "qwen2",
    "qwen2-sliding",
    "mistral",
    "gpt2",
    "qwen3",
    "phi3",
    "phi3-longrope",
    "phi3-longrope-short",
    "gemma",
    "gemma2",
    "gemma3",
    "olmo2",
    "gpt_neox",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers")
}

fn cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixture directory")
        .filter_map(|e| {
            let e = e.ok()?;
            e.path()
                .join("reference.safetensors")
                .is_file()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}

/// Relative L2 error `|a - b| / |b|`.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        diff += (f64::from(*x) - f64::from(*y)).powi(2);
        norm += f64::from(*y).powi(2);
    }
    (diff / norm.max(1e-30)).sqrt()
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn open(dir: &Path) -> Self {
        Self {
            bytes: std::fs::read(dir.join("reference.safetensors")).expect("reference file"),
        }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("reference safetensors")
    }

    fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = self.tensors();
        let view = st.tensor(name).expect(name);
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        let data = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (view.shape().to_vec(), data)
    }

    /// `input_ids`, `[rows, seq]`.
    fn ids(&self) -> Vec<Vec<u32>> {
        let st = self.tensors();
        let view = st.tensor("input_ids").expect("input_ids");
        assert_eq!(view.dtype(), Dtype::I64);
        let seq = view.shape()[1];
        let flat: Vec<u32> = view
            .data()
            .chunks_exact(8)
            .map(|c| u32::try_from(i64::from_le_bytes(c.try_into().unwrap())).expect("token id"))
            .collect();
        flat.chunks(seq).map(<[u32]>::to_vec).collect()
    }

    fn names(&self) -> Vec<String> {
        self.tensors()
            .names()
            .into_iter()
            .map(String::from)
            .collect()
    }
}

/// The cases with a GGUF version (`model.gguf`): every architecture llama.cpp defines, with
/// the RoPE scalings GGUF can state.
const GGUF: &[&str] = &[
    "llama",
    "llama-rope-linear",
    "llama-rope-llama3",
    "qwen2",
    "mistral",
    "gpt2",
    "qwen3",
    "phi3",
    "gemma",
    "gemma2",
    "gemma3",
    "olmo2",
    "gpt_neox",
];

/// Every mismatch of one case, as messages; `file` is `None` for the Hugging Face directory,
/// or a file in it to load instead (`model.gguf`).
fn check_case(name: &str, file: Option<&str>) -> Vec<String> {
    let mut failures = Vec::new();
    let dir = fixtures().join(name);
    let path = file.map_or_else(|| dir.clone(), |f| dir.join(f));
    let name = &format!(
        "{name}{}",
        file.map(|f| format!(" ({f})")).unwrap_or_default()
    );
    let model = monoscope_lm::load(&path, &Device::flex())
        .unwrap_or_else(|e| panic!("{name}: does not load: {e}"));
    let reference = Reference::open(&dir);
    let rows = reference.ids();
    let batch = TokenBatch::from_rows(&rows).expect("batch");
    let hooks: Vec<_> = reference
        .names()
        .iter()
        .filter_map(|n| model.hook(n).ok())
        .collect();
    let known: BTreeSet<String> = model.hook_names().iter().map(ToString::to_string).collect();
    let compared: BTreeSet<String> = hooks.iter().map(ToString::to_string).collect();
    assert_eq!(
        compared, known,
        "{name}: every hook of the model has a reference"
    );
    let out = model
        .forward(
            &batch,
            &ForwardOptions {
                record: hooks.clone(),
                logits: Logits::All,
                ..ForwardOptions::default()
            },
        )
        .unwrap();
    for hook in &hooks {
        let (shape, want) = reference.f32(&hook.to_string());
        let got = out.activation_host(hook).unwrap();
        assert_eq!(got.len(), want.len(), "{name} {hook}: shape {shape:?}");
        let err = rel_l2(&got, &want);
        if err.is_nan() || err >= TOL {
            failures.push(format!("{name} {hook}: relative L2 error {err:e}"));
        }
    }
    let (shape, want) = reference.f32("logits");
    let got = out.logits_host().unwrap();
    let err = rel_l2(&got, &want);
    if err.is_nan() || err >= TOL {
        failures.push(format!("{name} logits: relative L2 error {err:e}"));
    }
    let vocab = shape[2];
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    for (i, (g, w)) in got.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
        if argmax(g) != argmax(w) {
            failures.push(format!("{name}: top-1 differs at position {i}"));
        }
    }
    failures
}

#[test]
fn supported_architectures_match_transformers() {
    let present = cases();
    let mut failures = Vec::new();
    for name in SUPPORTED {
        assert!(
            present.iter().any(|c| c == name),
            "fixture `{name}` is missing: run tests/fixtures/make_models.py"
        );
        failures.extend(check_case(name, None));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gguf_conversions_match_transformers() {
    let mut failures = Vec::new();
    for name in GGUF {
        assert!(
            fixtures().join(name).join("model.gguf").is_file(),
            "`{name}/model.gguf` is missing: run tests/fixtures/make_gguf.py"
        );
        failures.extend(check_case(name, Some("model.gguf")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unsupported_cases_are_refused() {
    for name in cases().iter().filter(|c| !SUPPORTED.contains(&c.as_str())) {
        let err = monoscope_lm::load(&fixtures().join(name), &Device::flex())
            .expect_err(&format!("{name} is not in SUPPORTED but loads"));
        let text = err.to_string();
        assert!(
            text.contains("unsupported architecture") || text.contains("is not supported"),
            "{name}: {text}"
        );
    }
}
