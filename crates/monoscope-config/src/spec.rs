//! A validated stage and where its inputs come from.

use std::collections::BTreeMap;

use monoscope_core::{ConfiguredStage, StageDescription};

use crate::scale::SlurmResources;

/// Where an input port's data comes from: `stage.port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub stage: String,
    pub port: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stage, self.port)
    }
}

/// One validated stage, ready to run.
#[derive(Debug)]
pub struct StageSpec {
    pub id: String,
    pub kind: String,
    pub description: StageDescription,
    /// Input port name to the upstream output feeding it.
    pub inputs: BTreeMap<String, Endpoint>,
    /// Every parameter's final value, defaults included.
    pub params: serde_json::Value,
    /// `parts = N`: disjoint parts the stage's work runs in, each its own process (1: whole).
    pub parts: usize,
    /// `[<stage>.slurm]`: what each of the stage's jobs asks for under the Slurm backend.
    pub slurm: SlurmResources,
    /// Taken by the executor when the stage runs.
    pub configured: Option<ConfiguredStage>,
}
