use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use monoscope_core::{ConfigureError, DeviceSpec, Registry, closest_name};
use serde::{Deserialize, Serialize};

use crate::graph;
use crate::layers::{self, CommandLineOverride};
use crate::problems::show;
use crate::problems::{ConfigErrors, Problem};
use crate::scale::{Backend, SlurmResources};
use crate::source;
use crate::spec::StageSpec;

/// Top-level keys that are not stages.
const PIPELINE_TABLE: &str = "pipeline";
const PLUGINS_KEY: &str = "plugins";
/// Keys of a stage table that belong to the pipeline, not to the stage's parameters.
pub(crate) const STRUCTURAL_KEYS: [&str; 6] =
    ["kind", "input", "inputs", PARTS_KEY, SLURM_KEY, DEVICE_KEY];
const PARTS_KEY: &str = "parts";
const DEVICE_KEY: &str = "device";
const SLURM_KEY: &str = "slurm";

/// The `[pipeline]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// The pipeline's name; also the default run directory `runs/<name>`.
    pub name: String,
    /// Seed from which every stage derives its random streams.
    #[serde(default)]
    pub seed: u64,
    /// Where the run writes its outputs (relative paths are relative to the working directory).
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// Items in flight per channel between two stages: the bound on memory between them.
    #[serde(default = "default_capacity")]
    pub channel_capacity: usize,
    /// Where stages and their parts run: `local` (this machine) or `slurm` (cluster jobs).
    #[serde(default)]
    pub backend: Backend,
    /// Local backend: parts (child processes) running at once, over all stages (default: the
    /// number of CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// The device stages compute on unless a stage names its own: `cpu`, `cuda`, `cuda:N`,
    /// `rocm`, `wgpu`, `vulkan`, `metal` (`--device` and `MONOSCOPE_DEVICE` set it too).
    #[serde(default, skip_serializing_if = "DeviceSpec::is_cpu")]
    #[schemars(with = "String")]
    pub device: DeviceSpec,
}

fn default_capacity() -> usize {
    8
}

/// An `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// The plugin library. Relative to the pipeline file's directory as written; absolute once
    /// read.
    pub path: PathBuf,
    /// Where the plugin's stages run.
    #[serde(default)]
    pub isolation: Isolation,
    /// With `isolation = "process"`: seconds a stage of this plugin may run before its process
    /// is stopped (unset: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

/// `isolation` of an `[[plugins]]` entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// In the monoscope process: a plugin that aborts or crashes ends the whole run.
    #[default]
    None,
    /// Each stage run in a child process: a plugin that aborts, crashes, hangs past
    /// `timeout_s` or writes outside its stage directory fails that stage alone.
    Process,
}

impl PluginEntry {
    /// Problems no type can express, as `(key under plugins.<i>, message)`.
    fn problems(&self) -> Vec<(&'static str, String)> {
        match (self.isolation, self.timeout_s) {
            (_, Some(0)) => vec![("timeout_s", "= 0: expected at least 1".into())],
            (Isolation::None, Some(_)) => vec![(
                "timeout_s",
                "needs `isolation = \"process\"`: a plugin in the monoscope process cannot be \
                 stopped"
                    .into(),
            )],
            _ => Vec::new(),
        }
    }
}

/// The `plugins` key alone, read from the whole file (other keys are the stages').
#[derive(Debug, Deserialize)]
struct PluginsOnly {
    #[serde(default)]
    plugins: Vec<PluginEntry>,
}

/// A validated pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// The file it was read from.
    pub file: PathBuf,
    pub settings: PipelineSettings,
    pub plugins: Vec<PluginEntry>,
    /// Stages in an order where every stage comes after the stages it reads from.
    pub stages: Vec<StageSpec>,
    /// Dotted key (`train.lr`) to where its value came from (file, environment variable,
    /// `--set`, or `default`).
    pub provenance: BTreeMap<String, String>,
    /// The `--set` overrides given, as typed.
    pub overrides: Vec<String>,
}

impl Pipeline {
    /// Checks that every stage's device can be used, with `open` saying why one cannot (the
    /// build lacks its backend, or the machine lacks the device). A problem names the key that
    /// chose the device (`<stage>.device` or `pipeline.device`) and where its value came from;
    /// each key is reported once.
    pub fn check_devices(
        &self,
        open: impl Fn(DeviceSpec) -> Result<(), String>,
    ) -> Result<(), ConfigErrors> {
        let mut seen = std::collections::BTreeSet::new();
        let mut problems = Vec::new();
        for stage in &self.stages {
            let key = stage.device_key();
            if !seen.insert(key.clone()) {
                continue;
            }
            if let Err(why) = open(stage.device) {
                let source = match self.provenance.get(&key) {
                    Some(source) if source != "default" => source.clone(),
                    _ => self.file.display().to_string(),
                };
                problems.push(Problem {
                    source,
                    key: Some(key),
                    message: format!("= \"{}\": {why}", stage.device),
                });
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(ConfigErrors { problems }),
        }
    }

    pub fn run_dir(&self) -> PathBuf {
        self.settings
            .run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(&self.settings.name))
    }

    /// The fully resolved configuration as TOML: every stage with every parameter, defaults
    /// included. Running this file reproduces the run.
    pub fn resolved_toml(&self) -> String {
        let mut root = toml::Table::new();
        let mut settings = toml::Table::try_from(&self.settings).unwrap_or_default();
        settings.insert(
            "run_dir".into(),
            toml::Value::String(self.run_dir().display().to_string()),
        );
        root.insert(PIPELINE_TABLE.into(), toml::Value::Table(settings));
        if !self.plugins.is_empty() {
            let plugins = self
                .plugins
                .iter()
                .filter_map(|p| toml::Table::try_from(p).ok())
                .map(toml::Value::Table)
                .collect();
            root.insert(PLUGINS_KEY.into(), toml::Value::Array(plugins));
        }
        for stage in &self.stages {
            let mut table = toml::Table::new();
            table.insert("kind".into(), toml::Value::String(stage.kind.clone()));
            if !stage.inputs.is_empty() {
                let inputs = stage
                    .inputs
                    .iter()
                    .map(|(port, from)| (port.clone(), toml::Value::String(from.to_string())))
                    .collect();
                table.insert("inputs".into(), toml::Value::Table(inputs));
            }
            if stage.parts > 1 {
                table.insert(PARTS_KEY.into(), toml::Value::Integer(stage.parts as i64));
            }
            if let Some(device) = stage.own_device {
                table.insert(DEVICE_KEY.into(), toml::Value::String(device.to_string()));
            }
            if stage.slurm != SlurmResources::default()
                && let Ok(slurm) = toml::Table::try_from(&stage.slurm)
            {
                table.insert(SLURM_KEY.into(), toml::Value::Table(slurm));
            }
            if let Some(toml::Value::Table(params)) = json_to_toml(&stage.params) {
                table.extend(params);
            }
            root.insert(stage.id.clone(), toml::Value::Table(table));
        }
        toml::to_string_pretty(&root).unwrap_or_default()
    }
}

/// The `[[plugins]]` paths of a pipeline file, read before the rest so that the plugins' stage
/// kinds can be registered before the stages are validated. A relative path is relative to
/// the pipeline file's directory (the file and its plugins travel together), and is returned
/// absolute, so that `resolved.toml` in a run directory names the same files.
pub fn plugin_paths(path: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    Ok(plugin_entries(path)?.into_iter().map(|e| e.path).collect())
}

/// As [`plugin_paths`], with each entry's isolation settings.
pub fn plugin_entries(path: &Path) -> Result<Vec<PluginEntry>, ConfigErrors> {
    let (_, table) = source::read(path)?;
    let Some(plugins) = table.get(PLUGINS_KEY) else {
        return Ok(Vec::new());
    };
    let problem = |message: String| Problem {
        source: path.display().to_string(),
        key: Some(PLUGINS_KEY.into()),
        message,
    };
    let entries: Vec<PluginEntry> = plugins.clone().try_into().map_err(|e: toml::de::Error| {
        problem(format!(
            "expected `[[plugins]]` tables each with a `path`: {}",
            e.message()
        ))
    })?;
    let problems: Vec<Problem> = entries
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            e.problems().into_iter().map(move |(key, message)| Problem {
                source: path.display().to_string(),
                key: Some(format!("{PLUGINS_KEY}.{i}.{key}")),
                message,
            })
        })
        .collect();
    if !problems.is_empty() {
        return Err(ConfigErrors { problems });
    }
    Ok(entries
        .into_iter()
        .map(|e| PluginEntry {
            path: beside_file(path, e.path),
            ..e
        })
        .collect())
}

/// `plugin` as named in the pipeline file at `file`: relative to the file's directory.
fn beside_file(file: &Path, plugin: PathBuf) -> PathBuf {
    if plugin.is_absolute() {
        return plugin;
    }
    let joined = file.parent().unwrap_or(Path::new("")).join(plugin);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Reads, layers and validates a pipeline file, taking `MONOSCOPE_*__*` variables from the
/// environment.
pub fn load(
    path: &Path,
    overrides: &[CommandLineOverride],
    registry: &Registry,
) -> Result<Pipeline, ConfigErrors> {
    load_with_env(path, overrides, registry, true)
}

/// As [`load`], with the environment layer optional (tests turn it off to stay hermetic).
pub fn load_with_env(
    path: &Path,
    overrides: &[CommandLineOverride],
    registry: &Registry,
    use_env: bool,
) -> Result<Pipeline, ConfigErrors> {
    let file = path.display().to_string();
    source::read(path)?;
    let figment = layers::stack(path, overrides, use_env);
    let root = figment
        .find_value("")
        .ok()
        .and_then(|v| v.into_dict())
        .unwrap_or_default();

    let mut problems = Vec::new();
    let mut provenance = BTreeMap::new();
    let at = |key: &str| source_of(&figment, key, overrides, &file);

    let settings = match root.get(PIPELINE_TABLE) {
        None => {
            problems.push(Problem {
                source: file.clone(),
                key: Some(PIPELINE_TABLE.into()),
                message: "missing required table `[pipeline]` (with at least `name`)".into(),
            });
            None
        }
        Some(_) => match figment.focus(PIPELINE_TABLE).extract::<PipelineSettings>() {
            Ok(settings) if settings.channel_capacity == 0 => {
                problems.push(Problem {
                    source: at("pipeline.channel_capacity"),
                    key: Some("pipeline.channel_capacity".into()),
                    message: "= 0: expected at least 1".into(),
                });
                None
            }
            Ok(settings) if settings.max_parallel == Some(0) => {
                problems.push(Problem {
                    source: at("pipeline.max_parallel"),
                    key: Some("pipeline.max_parallel".into()),
                    message: "= 0: expected at least 1".into(),
                });
                None
            }
            Ok(settings) => Some(settings),
            Err(e) => {
                let schema = schemars::schema_for!(PipelineSettings).to_value();
                problems.extend(figment_problems(
                    e,
                    PIPELINE_TABLE,
                    Some(&schema),
                    &figment,
                    overrides,
                    &file,
                ));
                None
            }
        },
    };

    let plugins = match root.get(PLUGINS_KEY) {
        None => Vec::new(),
        Some(_) => match figment.extract::<PluginsOnly>() {
            Ok(only) => {
                for (i, entry) in only.plugins.iter().enumerate() {
                    for (key, message) in entry.problems() {
                        let key = format!("{PLUGINS_KEY}.{i}.{key}");
                        problems.push(Problem {
                            source: at(&key),
                            key: Some(key),
                            message,
                        });
                    }
                }
                only.plugins
                    .into_iter()
                    .map(|e| PluginEntry {
                        path: beside_file(path, e.path),
                        ..e
                    })
                    .collect()
            }
            Err(e) => {
                problems.extend(figment_problems(e, "", None, &figment, overrides, &file));
                Vec::new()
            }
        },
    };

    let mut stages = Vec::new();
    let mut raw_inputs = BTreeMap::new();
    for (id, value) in &root {
        if id == PIPELINE_TABLE || id == PLUGINS_KEY {
            continue;
        }
        let Some(table) = value.as_dict() else {
            problems.push(Problem {
                source: at(id),
                key: Some(id.clone()),
                message: format!(
                    "= {}: expected a stage table (`[{id}]` with a `kind`) or the `[pipeline]` table",
                    show(value)
                ),
            });
            continue;
        };
        let kind = match table.get("kind") {
            Some(Value::String(_, kind)) => kind.clone(),
            Some(other) => {
                problems.push(Problem {
                    source: at(&format!("{id}.kind")),
                    key: Some(format!("{id}.kind")),
                    message: format!("= {}: expected a string naming a stage kind", show(other)),
                });
                continue;
            }
            None => {
                problems.push(Problem {
                    source: at(id),
                    key: Some(format!("{id}.kind")),
                    message: "missing required key `kind` (`monoscope stages` lists the kinds)"
                        .to_string(),
                });
                continue;
            }
        };
        let Some(factory) = registry.get(&kind) else {
            let known = match registry.closest(&kind) {
                Some(k) => format!("; did you mean `{k}`? (`monoscope stages` lists them all)"),
                None => format!(
                    " (known kinds: {})",
                    registry.kinds().collect::<Vec<_>>().join(", ")
                ),
            };
            problems.push(Problem {
                source: at(&format!("{id}.kind")),
                key: Some(format!("{id}.kind")),
                message: format!("= \"{kind}\": unknown stage kind{known}"),
            });
            continue;
        };
        raw_inputs.insert(
            id.clone(),
            (table.get("input").cloned(), table.get("inputs").cloned()),
        );

        let parts = stage_parts(id, table, factory.parts(), &kind, &at, &mut problems);
        let own_device = stage_device(id, table, &at, &mut problems);
        let slurm = match table.get(SLURM_KEY) {
            None => SlurmResources::default(),
            Some(_) => match figment
                .focus(&format!("{id}.{SLURM_KEY}"))
                .extract::<SlurmResources>()
            {
                Ok(slurm) => {
                    for (key, message) in slurm.problems() {
                        let key = format!("{id}.{SLURM_KEY}.{key}");
                        problems.push(Problem {
                            source: at(&key),
                            key: Some(key),
                            message,
                        });
                    }
                    slurm
                }
                Err(e) => {
                    let schema = schemars::schema_for!(SlurmResources).to_value();
                    problems.extend(figment_problems(
                        e,
                        &format!("{id}.{SLURM_KEY}"),
                        Some(&schema),
                        &figment,
                        overrides,
                        &file,
                    ));
                    SlurmResources::default()
                }
            },
        };

        let params = Figment::from(StageParams {
            figment: figment.focus(id),
        });
        match factory.configure(&params) {
            Ok(configured) => {
                collect_provenance(
                    &configured.resolved,
                    id,
                    &figment,
                    overrides,
                    &mut provenance,
                );
                stages.push(StageSpec {
                    id: id.clone(),
                    kind,
                    description: factory.description(),
                    inputs: BTreeMap::new(),
                    params: configured.resolved.clone(),
                    parts,
                    slurm,
                    own_device,
                    device: own_device.unwrap_or_default(),
                    configured: Some(configured),
                });
            }
            Err(ConfigureError::Deserialize(e)) => {
                let schema = factory.schema();
                problems.extend(figment_problems(
                    *e,
                    id,
                    Some(&schema),
                    &figment,
                    overrides,
                    &file,
                ));
            }
            Err(ConfigureError::Invalid(list)) => {
                for (key, message) in list {
                    let key = if key.is_empty() {
                        id.clone()
                    } else {
                        format!("{id}.{key}")
                    };
                    problems.push(Problem {
                        source: at(&key),
                        key: Some(key),
                        message,
                    });
                }
            }
        }
    }

    if let Some(settings) = &settings {
        for key in [
            "name",
            "seed",
            "run_dir",
            "channel_capacity",
            "backend",
            "max_parallel",
            "device",
        ] {
            let full = format!("pipeline.{key}");
            provenance.insert(full.clone(), layers::provenance(&figment, &full, overrides));
        }
        if stages.is_empty() && problems.is_empty() {
            problems.push(Problem {
                source: file.clone(),
                key: None,
                message: format!("pipeline `{}` has no stages", settings.name),
            });
        }
    }

    let all_ids: std::collections::BTreeSet<String> = root
        .keys()
        .filter(|k| *k != PIPELINE_TABLE && *k != PLUGINS_KEY)
        .cloned()
        .collect();
    for stage in &mut stages {
        match stage.own_device {
            Some(_) => {
                let key = format!("{}.{DEVICE_KEY}", stage.id);
                provenance.insert(key.clone(), layers::provenance(&figment, &key, overrides));
            }
            None => stage.device = settings.as_ref().map(|s| s.device).unwrap_or_default(),
        }
    }
    let ordered = graph::connect(&mut stages, &raw_inputs, &all_ids, &at, &mut problems);
    if problems.is_empty() {
        let backend = settings.as_ref().map(|s| s.backend).unwrap_or_default();
        graph::check_process_boundaries(&stages, backend, &at, &mut problems);
    }
    match settings {
        Some(settings) if problems.is_empty() => Ok(Pipeline {
            file: path.to_path_buf(),
            settings,
            plugins,
            stages: {
                let mut slots: Vec<Option<StageSpec>> = stages.into_iter().map(Some).collect();
                ordered
                    .into_iter()
                    .filter_map(|i| slots[i].take())
                    .collect()
            },
            provenance,
            overrides: overrides.iter().map(|o| o.raw.clone()).collect(),
        }),
        _ => Err(ConfigErrors { problems }),
    }
}

/// A stage's `parts`: 1 when unset; more only for a kind that can run in parts.
fn stage_parts(
    id: &str,
    table: &Dict,
    splits: Option<&'static str>,
    kind: &str,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<Problem>,
) -> usize {
    let key = format!("{id}.{PARTS_KEY}");
    let parts = match table.get(PARTS_KEY) {
        None => return 1,
        Some(value) => match value.to_i128() {
            Some(n) if (1..=1 << 20).contains(&n) => n as usize,
            _ => {
                problems.push(Problem {
                    source: at(&key),
                    key: Some(key),
                    message: format!(
                        "= {}: expected a whole number from 1 to 1048576",
                        value
                            .to_i128()
                            .map_or_else(|| show(value), |n| n.to_string())
                    ),
                });
                return 1;
            }
        },
    };
    if parts > 1 && splits.is_none() {
        problems.push(Problem {
            source: at(&key),
            key: Some(key),
            message: format!(
                "= {parts}: stages of kind `{kind}` cannot run in parts (kinds that can: \
                 capture, train, autointerp-label, cluster; `monoscope stages` says what a part is)"
            ),
        });
        return 1;
    }
    parts
}

/// A stage's own `device`, if its table names one.
fn stage_device(
    id: &str,
    table: &Dict,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<Problem>,
) -> Option<DeviceSpec> {
    let value = table.get(DEVICE_KEY)?;
    let key = format!("{id}.{DEVICE_KEY}");
    let parsed = match value {
        Value::String(_, name) => name.parse::<DeviceSpec>().map_err(|e| format!("= {e}")),
        other => Err(format!(
            "= {}: expected a device name such as \"cpu\" or \"cuda:1\"",
            show(other)
        )),
    };
    match parsed {
        Ok(device) => Some(device),
        Err(message) => {
            problems.push(Problem {
                source: at(&key),
                key: Some(key),
                message,
            });
            None
        }
    }
}

/// TOML has no null: an unset optional parameter is left out, which reads back as unset.
fn json_to_toml(value: &serde_json::Value) -> Option<toml::Value> {
    use serde_json::Value as J;
    Some(match value {
        J::Null => return None,
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(items) => toml::Value::Array(items.iter().filter_map(json_to_toml).collect()),
        J::Object(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect(),
        ),
    })
}

/// A stage's table without the structural keys, keeping each value's provenance.
///
/// figment keeps provenance in a per-figment tag→metadata map; handing that map on (the
/// `__metadata_map` hook, which `Figment` itself uses when merged into another figment) is what
/// lets errors and provenance of the filtered table still name the file or variable.
struct StageParams {
    figment: Figment,
}

impl Provider for StageParams {
    fn metadata(&self) -> Metadata {
        Metadata::named("stage parameters")
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut data = self.figment.data()?;
        for dict in data.values_mut() {
            for key in STRUCTURAL_KEYS {
                dict.remove(key);
            }
        }
        Ok(data)
    }

    fn __metadata_map(&self) -> Option<Map<figment::value::Tag, Metadata>> {
        self.figment.__metadata_map()
    }
}

fn source_of(
    figment: &Figment,
    key: &str,
    overrides: &[CommandLineOverride],
    file: &str,
) -> String {
    match layers::provenance(figment, key, overrides).as_str() {
        "default" => file.to_string(),
        other => other.to_string(),
    }
}

fn collect_provenance(
    value: &serde_json::Value,
    prefix: &str,
    figment: &Figment,
    overrides: &[CommandLineOverride],
    out: &mut BTreeMap<String, String>,
) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                collect_provenance(v, &format!("{prefix}.{k}"), figment, overrides, out);
            }
        }
        _ => {
            out.insert(
                prefix.to_string(),
                layers::provenance(figment, prefix, overrides),
            );
        }
    }
}

/// One [`Problem`] per error in figment's chain.
fn figment_problems(
    error: figment::Error,
    stage: &str,
    schema: Option<&serde_json::Value>,
    figment: &Figment,
    overrides: &[CommandLineOverride],
    file: &str,
) -> Vec<Problem> {
    use figment::error::Kind;
    error
        .into_iter()
        .map(|e| {
            let mut path: Vec<String> = Vec::new();
            if !stage.is_empty() {
                path.push(stage.to_string());
            }
            path.extend(e.path.iter().cloned());
            let (key, message) = match &e.kind {
                Kind::UnknownField(field, expected) => {
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    let hint = closest_name(field, expected.iter().copied())
                        .map(|k| format!("; did you mean `{k}`?"))
                        .unwrap_or_default();
                    let expected = expected.iter().filter(|k| !STRUCTURAL_KEYS.contains(k));
                    (
                        path.join("."),
                        format!(
                            "unknown key{hint} (expected one of: {})",
                            expected.copied().collect::<Vec<_>>().join(", ")
                        ),
                    )
                }
                Kind::MissingField(field) => {
                    if path.last().map(String::as_str) != Some(field.as_ref()) {
                        path.push(field.to_string());
                    }
                    let what = schema
                        .and_then(|s| describe_property(s, field))
                        .unwrap_or_default();
                    (path.join("."), format!("missing required key{what}"))
                }
                Kind::InvalidType(actual, expected) => (
                    path.join("."),
                    format!("= {actual}: wrong type, expected {}", humanize(expected)),
                ),
                Kind::InvalidValue(actual, expected) => (
                    path.join("."),
                    format!("= {actual}: invalid value, expected {}", humanize(expected)),
                ),
                Kind::UnknownVariant(actual, expected) => {
                    let hint = closest_name(actual, expected.iter().copied())
                        .map(|k| format!("; did you mean `{k}`?"))
                        .unwrap_or_default();
                    (
                        path.join("."),
                        format!(
                            "= \"{actual}\": unknown value{hint} (expected one of: {})",
                            expected.join(", ")
                        ),
                    )
                }
                other => (path.join("."), other.to_string()),
            };
            let source = match &e.metadata {
                Some(metadata) => layers::describe(metadata, &key, overrides),
                None => source_of(figment, &key, overrides, file),
            };
            let source = if source == "stage parameters" {
                source_of(figment, &key, overrides, file)
            } else {
                source
            };
            Problem {
                source,
                key: Some(key),
                message,
            }
        })
        .collect()
}

/// serde's Rust type names, in words.
fn humanize(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number ≥ 0".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a boolean" | "bool" => "true or false".to_string(),
        other => other.to_string(),
    }
}

/// ` (type: doc)` for a parameter, from the kind's JSON Schema.
fn describe_property(schema: &serde_json::Value, field: &str) -> Option<String> {
    let property = schema.get("properties")?.get(field)?;
    let ty = property.get("type").map(|t| match t {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let doc = property.get("description").and_then(|d| d.as_str());
    Some(match (ty, doc) {
        (Some(ty), Some(doc)) => format!(" ({ty}: {doc})"),
        (Some(ty), None) => format!(" ({ty})"),
        (None, Some(doc)) => format!(" ({doc})"),
        (None, None) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: plugin paths resolved against the working directory, so a pipeline
    /// naming a plugin beside it loaded nothing (or another file) when run from elsewhere.
    #[test]
    fn plugin_paths_are_relative_to_the_pipeline_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("pipelines");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("p.toml");
        let absolute = dir.path().join("elsewhere/b.so");
        std::fs::write(
            &file,
            format!(
                "[[plugins]]\npath = \"lib/a.so\"\n[[plugins]]\npath = {:?}\n",
                absolute.display().to_string()
            ),
        )
        .unwrap();
        assert_eq!(
            plugin_paths(&file).unwrap(),
            vec![sub.join("lib/a.so"), absolute]
        );
    }

    #[test]
    fn plugin_entries_carry_their_isolation_and_refuse_a_timeout_they_cannot_keep() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "[[plugins]]\npath = \"a.so\"\n[[plugins]]\npath = \"b.so\"\nisolation = \"process\"\ntimeout_s = 5\n",
        )
        .unwrap();
        let entries = plugin_entries(&file).unwrap();
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.isolation, e.timeout_s))
                .collect::<Vec<_>>(),
            [(Isolation::None, None), (Isolation::Process, Some(5))]
        );
        assert_eq!(entries[1].path, dir.path().join("b.so"));

        for (body, expected) in [
            (
                "isolation = \"process\"\ntimeout_s = 0\n",
                "`plugins.0.timeout_s`: = 0: expected at least 1",
            ),
            ("timeout_s = 3\n", "needs `isolation = \"process\"`"),
            ("isolation = \"proces\"\n", "proces"),
        ] {
            std::fs::write(&file, format!("[[plugins]]\npath = \"a.so\"\n{body}")).unwrap();
            let err = plugin_entries(&file).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
