//! A validated stage and where its inputs come from.

use std::collections::BTreeMap;

use monoscope_core::{ConfiguredStage, DeviceSpec, StageDescription};

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
    /// The stage's own `device`, when its table names one.
    pub own_device: Option<DeviceSpec>,
    /// The device the stage computes on: its own, else `[pipeline] device`.
    pub device: DeviceSpec,
    /// Taken by the executor when the stage runs.
    pub configured: Option<ConfiguredStage>,
}

impl StageSpec {
    /// The setting that chose the stage's device: `<stage>.device` or `pipeline.device`.
    pub fn device_key(&self) -> String {
        match self.own_device {
            Some(_) => format!("{}.device", self.id),
            None => "pipeline.device".to_string(),
        }
    }
}
