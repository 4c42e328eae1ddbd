//! Fuzzing the pipeline reader with random edits of a valid pipeline file: lines deleted,
//! duplicated or swapped, values replaced by extreme numbers, odd strings, arrays and tables,
//! keys renamed, table headers inserted, text inserted (Unicode included) and the file cut
//! short. Each edited file is loaded and validated against a registry of three test stage
//! kinds. Property: no panic and no abort; every problem reported names the file; and no
//! single allocation exceeds `ALLOCATION_BOUND`.
//!
//! Cases: `MONOSCOPE_FUZZ_CASES`, by default
//! `monoscope_formats::testing::fuzz::DEFAULT_CASES`.

use monoscope_config::{load_with_env, plugin_paths};
use monoscope_core::{
    ArtifactKind, PortSpec, Registry, Stage, StageConfig, StageContext, StageDescription,
    StageError, StreamKind, register_stage,
};
use monoscope_formats::testing::fuzz::{
    self, ALLOCATION_BOUND, CountingAllocator, largest_allocation, serial,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Schedule {
    #[serde(default)]
    warmup: u64,
    #[serde(default)]
    decay: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SourceConfig {
    count: u64,
    #[serde(default)]
    rate: f64,
    #[serde(default)]
    label: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    schedule: Schedule,
}

impl StageConfig for SourceConfig {
    fn validate(&self) -> Vec<(String, String)> {
        if self.rate > 1.0 {
            return vec![("rate".into(), "must be at most 1".into())];
        }
        Vec::new()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct PassConfig {
    every: usize,
    names: Vec<String>,
}

impl StageConfig for PassConfig {}

struct FuzzSource;
struct FuzzRelay;
struct FuzzSink;

fn items() -> PortSpec {
    PortSpec::stream("items", StreamKind::ACTIVATIONS, "batches")
}

impl Stage for FuzzSource {
    type Config = SourceConfig;
    fn description() -> StageDescription {
        StageDescription {
            kind: "fuzz-source".into(),
            doc: "emits nothing".into(),
            inputs: vec![],
            outputs: vec![items()],
        }
    }
    fn run(_: SourceConfig, _: &mut StageContext<'_>) -> Result<(), StageError> {
        Ok(())
    }
}

impl Stage for FuzzRelay {
    type Config = PassConfig;
    fn description() -> StageDescription {
        StageDescription {
            kind: "fuzz-relay".into(),
            doc: "passes nothing on".into(),
            inputs: vec![items()],
            outputs: vec![items()],
        }
    }
    fn run(_: PassConfig, _: &mut StageContext<'_>) -> Result<(), StageError> {
        Ok(())
    }
}

impl Stage for FuzzSink {
    type Config = PassConfig;
    fn description() -> StageDescription {
        StageDescription {
            kind: "fuzz-sink".into(),
            doc: "writes nothing".into(),
            inputs: vec![items()],
            outputs: vec![PortSpec::artifact(
                "sum",
                ArtifactKind::new("fuzz-sum"),
                "nothing",
            )],
        }
    }
    fn run(_: PassConfig, _: &mut StageContext<'_>) -> Result<(), StageError> {
        Ok(())
    }
}

register_stage!(FuzzSource);
register_stage!(FuzzRelay);
register_stage!(FuzzSink);

const VALID: &str = r#"# A pipeline every edit starts from.
[pipeline]
name = "fuzz"
seed = 7
channel_capacity = 4

[[plugins]]
path = "plugins/none.so"

[src]
kind = "fuzz-source"
count = 3
rate = 0.5
label = "a"
tags = ["x", "y"]
limit = 10
schedule = { warmup = 10, decay = 0.9 }

[relay]
kind = "fuzz-relay"
input = "src"
every = 2

[sink]
kind = "fuzz-sink"
inputs = { items = "relay.items" }
names = ["n"]
"#;

/// One edit of the file's lines; `line` picks a line modulo their number.
#[derive(Debug, Clone)]
enum TextEdit {
    Delete {
        line: usize,
    },
    Duplicate {
        line: usize,
        to: usize,
    },
    Swap {
        a: usize,
        b: usize,
    },
    /// Replace what follows the first `=` of a line that has one (`line` picks among those).
    Value {
        line: usize,
        value: String,
    },
    /// Replace what precedes the first `=` of a line that has one.
    Key {
        line: usize,
        key: String,
    },
    InsertLine {
        line: usize,
        text: String,
    },
    /// Insert `text` at byte `at` (moved back to a character boundary).
    Insert {
        at: usize,
        text: String,
    },
    Truncate {
        at: usize,
    },
}

fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551615".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("99999999999999999999999999".to_string()),
        Just("1e400".to_string()),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("0x7fffffff".to_string()),
        Just("true".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("\"\"".to_string()),
        Just("\"İ\u{212A}\\u0000\"".to_string()),
        Just("'''multi\nline'''".to_string()),
        Just("\"src.items\"".to_string()),
        Just("\"relay\"".to_string()),
        Just("\"fuzz-sink\"".to_string()),
        Just("\"sink\"".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        "[a-z.\\-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        "\\PC{0,8}",
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", fields.join(", "))
            }),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "kind", "input", "inputs", "name", "seed", "run_dir", "channel_capacity", "count",
            "rate", "label", "tags", "limit", "schedule", "schedule.warmup", "every", "names",
            "path", "inputs.items", "src", "\"quoted key\"", "a.b.c",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{1,6}|\\PC{0,6}",
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[pipeline]".to_string()),
        Just("[[plugins]]".to_string()),
        Just("[src]".to_string()),
        Just("[src.schedule]".to_string()),
        Just("[loop]\nkind = \"fuzz-relay\"\ninput = \"loop\"".to_string()),
        Just("[other]\nkind = \"fuzz-sink\"\ninput = \"src\"".to_string()),
        Just("[[src]]".to_string()),
        (key(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        "\\PC{0,16}",
    ]
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    let n = any::<usize>();
    prop_oneof![
        2 => n.prop_map(|line| TextEdit::Delete { line }),
        1 => (n, n).prop_map(|(line, to)| TextEdit::Duplicate { line, to }),
        1 => (n, n).prop_map(|(a, b)| TextEdit::Swap { a, b }),
        6 => (n, toml_value()).prop_map(|(line, value)| TextEdit::Value { line, value }),
        2 => (n, key()).prop_map(|(line, key)| TextEdit::Key { line, key }),
        2 => (n, line()).prop_map(|(line, text)| TextEdit::InsertLine { line, text }),
        1 => (n, "[\\[\\]={}\"'.,#\\\\\n]{1,3}|\\PC{1,3}").prop_map(|(at, text)| TextEdit::Insert { at, text }),
        1 => n.prop_map(|at| TextEdit::Truncate { at }),
    ]
}

/// The `pick`-th (modulo their number) of the lines that assign a value.
fn assignment(lines: &mut [String], pick: usize) -> Option<&mut String> {
    let n = lines.iter().filter(|l| l.contains('=')).count();
    if n == 0 {
        return None;
    }
    lines.iter_mut().filter(|l| l.contains('=')).nth(pick % n)
}

fn apply(text: &str, edits: &[TextEdit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for edit in edits {
        let n = lines.len().max(1);
        let pick = |i: usize| i % n;
        if lines.is_empty() {
            lines.push(String::new());
        }
        match edit {
            TextEdit::Delete { line } => {
                lines.remove(pick(*line));
            }
            TextEdit::Duplicate { line, to } => {
                let copy = lines[pick(*line)].clone();
                lines.insert(pick(*to), copy);
            }
            TextEdit::Swap { a, b } => lines.swap(pick(*a), pick(*b)),
            TextEdit::Value { line, value } => {
                if let Some(l) = assignment(&mut lines, *line) {
                    let k = l.split_once('=').map_or("", |(k, _)| k).to_string();
                    *l = format!("{k}= {value}");
                }
            }
            TextEdit::Key { line, key } => {
                if let Some(l) = assignment(&mut lines, *line) {
                    let v = l.split_once('=').map_or("", |(_, v)| v).to_string();
                    *l = format!("{key} ={v}");
                }
            }
            TextEdit::InsertLine { line, text } => lines.insert(pick(*line), text.clone()),
            TextEdit::Insert { at, text } => {
                let mut joined = lines.join("\n");
                let mut at = at % (joined.len() + 1);
                while !joined.is_char_boundary(at) {
                    at -= 1;
                }
                joined.insert_str(at, text);
                lines = joined.lines().map(str::to_string).collect();
            }
            TextEdit::Truncate { at } => {
                let mut joined = lines.join("\n");
                let mut at = at % (joined.len() + 1);
                while !joined.is_char_boundary(at) {
                    at -= 1;
                }
                joined.truncate(at);
                lines = joined.lines().map(str::to_string).collect();
            }
        }
    }
    lines.join("\n")
}

#[test]
fn pipeline_toml_edits() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    let file = path.display().to_string();
    let registry = Registry::builtin();
    std::fs::write(&path, VALID).unwrap();
    // The unedited pipeline is valid: the edits start from one that loads.
    load_with_env(&path, &[], &registry, false).unwrap();

    let mut runner = fuzz::runner(256);
    let edits = proptest::collection::vec(text_edit(), 1..5);
    runner
        .run(&edits, |edits| {
            std::fs::write(&path, apply(VALID, &edits)).unwrap();
            let (problems, largest) = largest_allocation(|| {
                let mut problems = Vec::new();
                if let Err(e) = load_with_env(&path, &[], &registry, false) {
                    problems.extend(e.problems);
                }
                if let Err(e) = plugin_paths(&path) {
                    problems.extend(e.problems);
                }
                problems
            });
            for p in problems {
                prop_assert!(
                    p.source.contains(&file),
                    "a problem that does not name the file: {p}"
                );
            }
            prop_assert!(
                largest <= ALLOCATION_BOUND,
                "an allocation of {largest} bytes (bound {ALLOCATION_BOUND})"
            );
            Ok(())
        })
        .unwrap();
}
