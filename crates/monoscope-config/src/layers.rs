//! The figment stack: file < environment < command line, and where each value came from.
//!
//! Built-in defaults are the lowest layer; they live in each stage kind's config type
//! (`#[serde(default)]`), so a key that no layer sets gets its default during extraction and
//! is reported as coming from `default`.

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use crate::problems::Problem;

/// Environment variables that set pipeline values look like `MONOSCOPE_TRAIN__LR`; variables
/// without the double underscore (`MONOSCOPE_CACHE`, `MONOSCOPE_LOG`) are settings of the
/// tool, not of a pipeline, and are left alone.
pub(crate) const ENV_PREFIX: &str = "MONOSCOPE_";
const ENV_SEPARATOR: &str = "__";

/// One `--set stage.key=value` from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandLineOverride {
    pub key: String,
    pub value: toml::Value,
    /// The argument as typed, for provenance.
    pub raw: String,
}

/// Parses `stage.key=value`. The value is read as a TOML value (`1e-3`, `true`, `[1, 2]`,
/// `"text"`); anything that is not valid TOML is taken as a bare string.
pub fn parse_override(raw: &str) -> Result<CommandLineOverride, Problem> {
    let problem = |message: String| Problem {
        source: format!("--set {raw}"),
        key: None,
        message,
    };
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| problem("expected `stage.key=value`".to_string()))?;
    let key = key.trim();
    if key.is_empty() || !key.contains('.') || key.split('.').any(str::is_empty) {
        return Err(problem(format!(
            "`{key}` is not a dotted key: expected `stage.key=value` (e.g. `train.lr=1e-3`)"
        )));
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok(CommandLineOverride {
        key: key.to_string(),
        value: parsed,
        raw: raw.to_string(),
    })
}

/// The command-line layer as a figment provider, so its values carry their own provenance.
struct CommandLine(Vec<CommandLineOverride>);

impl Provider for CommandLine {
    fn metadata(&self) -> Metadata {
        Metadata::named("command line")
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut dict = Dict::new();
        for o in &self.0 {
            let value = Value::serialize(&o.value)?;
            merge_nested(&mut dict, &o.key, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn merge_nested(dict: &mut Dict, dotted: &str, value: Value) {
    match dotted.split_once('.') {
        None => {
            dict.insert(dotted.to_string(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                merge_nested(inner, rest, value);
            }
        }
    }
}

/// The merged figment of a pipeline file.
pub(crate) fn stack(path: &Path, overrides: &[CommandLineOverride], use_env: bool) -> Figment {
    let mut figment = Figment::new().merge(Toml::file_exact(path));
    if use_env {
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains(ENV_SEPARATOR))
                .split(ENV_SEPARATOR),
        );
    }
    figment.merge(CommandLine(overrides.to_vec()))
}

/// Where the value at `key` came from: the file path, the environment variable, the `--set`
/// argument, or `default` when no layer set it.
pub(crate) fn provenance(
    figment: &Figment,
    key: &str,
    overrides: &[CommandLineOverride],
) -> String {
    match figment.find_metadata(key) {
        None => "default".to_string(),
        Some(metadata) => describe(metadata, key, overrides),
    }
}

pub(crate) fn describe(
    metadata: &Metadata,
    key: &str,
    overrides: &[CommandLineOverride],
) -> String {
    if metadata.name == "command line" {
        let set = overrides
            .iter()
            .rev()
            .find(|o| o.key == key || key.starts_with(&format!("{}.", o.key)));
        return match set {
            // Options other than `--set` (`--device cuda`, `--run-dir`) and the variables
            // they read are given as typed.
            Some(o) if o.raw.starts_with("--") || o.raw.starts_with(ENV_PREFIX) => o.raw.clone(),
            Some(o) => format!("--set {}", o.raw),
            None => "command line".to_string(),
        };
    }
    match &metadata.source {
        Some(Source::File(path)) => path.display().to_string(),
        _ if metadata.name.contains("environment") => {
            let name: Vec<String> = key.split('.').map(str::to_ascii_uppercase).collect();
            format!(
                "environment variable {ENV_PREFIX}{}",
                name.join(ENV_SEPARATOR)
            )
        }
        Some(Source::Custom(custom)) => custom.clone(),
        _ => metadata.name.to_string(),
    }
}
