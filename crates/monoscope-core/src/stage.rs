use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use figment::Figment;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::StageContext;
use crate::error::StageError;
use crate::ports::PortSpec;

/// A stage kind: capture, train, autointerp-label, cluster, steer, or a plugin's.
///
/// The executor calls [`Stage::run`] once per pipeline stage of this kind, on its own thread,
/// with the stage's validated parameters and a [`StageContext`] holding its ports, run
/// directory, seed, progress handle and cancellation token.
///
/// Register a built-in kind with [`crate::register_stage!`].
pub trait Stage: 'static {
    /// The stage's parameters, deserialised from its table in the pipeline file.
    ///
    /// Use `#[serde(deny_unknown_fields)]` so typos are reported, `#[serde(default)]` for
    /// parameters with built-in defaults, and doc comments: they become the parameter docs that
    /// `monoscope stages` prints.
    type Config: StageConfig;

    /// Kind name, one-line doc and ports.
    fn description() -> StageDescription;

    /// What one of `parts = N` parts is (e.g. "documents"), for a kind whose work splits into
    /// disjoint parts; `None` (the default) for a kind that always runs whole. A kind that
    /// sets it handles [`crate::Work::Part`] and [`crate::Work::Merge`] in `run`
    /// (`ctx.work`).
    const PARTS: Option<&'static str> = None;

    /// Does the work. Must return `Err(StageError::Cancelled)` promptly once
    /// `ctx.cancel.is_cancelled()`, and must write every artifact atomically
    /// (see [`crate::atomic`]) before announcing it on an output port.
    fn run(config: Self::Config, ctx: &mut StageContext<'_>) -> Result<(), StageError>;
}

/// Parameters of a stage kind. Implement it (usually with an empty body) for the config struct.
pub trait StageConfig:
    DeserializeOwned + Serialize + schemars::JsonSchema + Send + 'static
{
    /// Checks that go beyond types (ranges, combinations). Each problem is `(key, message)`,
    /// the key relative to the stage's table.
    fn validate(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The static facts about a stage kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageDescription {
    pub kind: Cow<'static, str>,
    /// One line: what the stage does.
    pub doc: Cow<'static, str>,
    pub inputs: Vec<PortSpec>,
    pub outputs: Vec<PortSpec>,
}

impl StageDescription {
    pub fn input(&self, name: &str) -> Option<&PortSpec> {
        self.inputs.iter().find(|p| p.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&PortSpec> {
        self.outputs.iter().find(|p| p.name == name)
    }
}

/// A stage kind with its types erased, as the registry and executor hold it.
///
/// Built-in kinds get this for free through [`TypedFactory`]; the plugin loader implements it
/// over the plugin C ABI.
pub trait StageFactory: Send + Sync {
    fn description(&self) -> StageDescription;

    /// JSON Schema of the parameters: names, types, defaults and docs.
    fn schema(&self) -> serde_json::Value;

    /// What one of `parts = N` parts is, when the kind can run in parts ([`Stage::PARTS`]).
    fn parts(&self) -> Option<&'static str> {
        None
    }

    /// Deserialises and checks the parameters. `params` holds exactly the stage's parameter
    /// keys (the pipeline-level keys `kind`, `input` and `inputs` are removed), with their
    /// provenance, so errors can name the file a bad value came from.
    fn configure(&self, params: &Figment) -> Result<ConfiguredStage, ConfigureError>;
}

/// Why [`StageFactory::configure`] refused a stage's parameters.
#[derive(Debug)]
pub enum ConfigureError {
    /// A type or key problem found while deserialising (unknown key, wrong type, missing key).
    Deserialize(Box<figment::Error>),
    /// Problems found by [`StageConfig::validate`]: `(key, message)`.
    Invalid(Vec<(String, String)>),
}

type RunFn = Box<dyn FnOnce(&mut StageContext<'_>) -> Result<(), StageError> + Send>;

/// A stage whose parameters passed validation, ready to run once.
pub struct ConfiguredStage {
    /// Every parameter with its final value, defaults included: what `resolved.toml` records and
    /// what the stage's fingerprint hashes.
    pub resolved: serde_json::Value,
    run: RunFn,
}

impl ConfiguredStage {
    pub fn new(
        resolved: serde_json::Value,
        run: impl FnOnce(&mut StageContext<'_>) -> Result<(), StageError> + Send + 'static,
    ) -> Self {
        ConfiguredStage {
            resolved,
            run: Box::new(run),
        }
    }

    pub fn run(self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        (self.run)(ctx)
    }
}

impl fmt::Debug for ConfiguredStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredStage")
            .field("resolved", &self.resolved)
            .finish_non_exhaustive()
    }
}

/// The [`StageFactory`] of a statically typed [`Stage`].
pub struct TypedFactory<S>(pub PhantomData<fn() -> S>);

impl<S> fmt::Debug for TypedFactory<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypedFactory")
    }
}

impl<S: Stage> StageFactory for TypedFactory<S> {
    fn description(&self) -> StageDescription {
        S::description()
    }

    fn schema(&self) -> serde_json::Value {
        schemars::schema_for!(S::Config).to_value()
    }

    fn parts(&self) -> Option<&'static str> {
        S::PARTS
    }

    fn configure(&self, params: &Figment) -> Result<ConfiguredStage, ConfigureError> {
        let config: S::Config = params
            .extract()
            .map_err(|e| ConfigureError::Deserialize(Box::new(e)))?;
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(ConfigureError::Invalid(problems));
        }
        let resolved = serde_json::to_value(&config).map_err(|e| {
            ConfigureError::Invalid(vec![(
                String::new(),
                format!("cannot serialise config: {e}"),
            )])
        })?;
        Ok(ConfiguredStage::new(resolved, move |ctx| {
            S::run(config, ctx)
        }))
    }
}
