//! What the tests that run `monoscope` on a small pipeline and compare run directories share.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file of `dir`, by its path below `dir`.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// `bytes` with every `from` replaced by `to`.
pub fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// `value` without its timings (keys naming seconds or a rate per second).
pub fn without_timings(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter(|(k, _)| !(k.contains("seconds") || k.contains("per_second")))
            .map(|(k, v)| (k, without_timings(v)))
            .collect(),
        serde_json::Value::Array(values) => values.into_iter().map(without_timings).collect(),
        other => other,
    }
}

/// A tiny model and a corpus of short paragraphs in a temporary directory, shared by the runs
/// of one test.
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub model: PathBuf,
    pub corpus: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let model = root.join("tiny.gguf");
        monoscope_formats::testing::TinyLlama::default()
            .write(&model)
            .unwrap();
        let corpus = root.join("corpus.txt");
        let words = [
            "river", "stone", "light", "north", "glass", "seven", "field",
        ];
        let text: Vec<String> = (0..160)
            .map(|i| {
                let a = words[i % words.len()];
                let b = words[(i * 3 + 1) % words.len()];
                format!("Paragraph {i}: the {a} and the {b} near {} {a}.", i * 7)
            })
            .collect();
        std::fs::write(&corpus, text.join("\n\n")).unwrap();
        Fixture {
            _dir: dir,
            root,
            model,
            corpus,
        }
    }
}
