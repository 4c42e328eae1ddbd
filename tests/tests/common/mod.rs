//! Test-only stage kinds, registered in each test binary that includes this module. They are
//! not shipped: the `monoscope` binary never links them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use monoscope_core::{
    ActivationBatch, Artifact, ArtifactKind, Message, PortSpec, Stage, StageConfig, StageContext,
    StageDescription, StageError, StreamKind, atomic, register_stage,
};
use serde::{Deserialize, Serialize};

/// Counters a test reads back, keyed by a name the test puts in the stage config (tests run in
/// parallel, so each uses its own).
#[derive(Debug, Default)]
pub struct Probe {
    pub sent: AtomicUsize,
    pub received: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

pub fn probe(name: &str) -> Arc<Probe> {
    static PROBES: OnceLock<Mutex<BTreeMap<String, Arc<Probe>>>> = OnceLock::new();
    let mut map = PROBES.get_or_init(Default::default).lock().unwrap();
    map.entry(name.to_string()).or_default().clone()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default)]
    pub warmup: u64,
    #[serde(default)]
    pub decay: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// How many items to emit.
    pub count: u64,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub fail_at: Option<u64>,
    #[serde(default)]
    pub panic_at: Option<u64>,
    #[serde(default)]
    pub probe: String,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default = "default_label")]
    pub label: String,
}

fn default_label() -> String {
    "built-in".into()
}

impl StageConfig for SourceConfig {}

/// Emits `count` small activation batches.
#[derive(Debug)]
pub struct TestSource;

impl Stage for TestSource {
    type Config = SourceConfig;
    fn description() -> StageDescription {
        StageDescription {
            kind: "test-source".into(),
            doc: "emits numbered batches".into(),
            inputs: vec![],
            outputs: vec![PortSpec::stream(
                "items",
                StreamKind::ACTIVATIONS,
                "batches",
            )],
        }
    }
    fn run(config: SourceConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let probe = probe(&config.probe);
        for i in 0..config.count {
            ctx.cancel.check()?;
            if config.fail_at == Some(i) {
                return Err(StageError::invalid(format!("planted failure at item {i}")));
            }
            if config.panic_at == Some(i) {
                panic!("planted panic at item {i}");
            }
            let batch = ActivationBatch {
                d_model: 1,
                token_ids: vec![i as u32],
                doc_ids: vec![0],
                positions: vec![i as u32],
                hooks: BTreeMap::from([("h".to_string(), vec![i as f32])]),
            };
            ctx.send("items", Message::Activations(Arc::new(batch)))?;
            let sent = probe.sent.fetch_add(1, Ordering::SeqCst) + 1;
            let in_flight = sent.saturating_sub(probe.received.load(Ordering::SeqCst));
            probe.max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(config.delay_ms));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub fail_at: Option<u64>,
}

impl StageConfig for RelayConfig {}

/// Passes items on, optionally failing.
#[derive(Debug)]
pub struct TestRelay;

impl Stage for TestRelay {
    type Config = RelayConfig;
    fn description() -> StageDescription {
        StageDescription {
            kind: "test-relay".into(),
            doc: "passes batches on".into(),
            inputs: vec![PortSpec::stream(
                "items",
                StreamKind::ACTIVATIONS,
                "batches",
            )],
            outputs: vec![PortSpec::stream(
                "items",
                StreamKind::ACTIVATIONS,
                "batches",
            )],
        }
    }
    fn run(config: RelayConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let mut n = 0;
        while let Some(message) = ctx.input("items")?.recv()? {
            if config.fail_at == Some(n) {
                return Err(StageError::invalid(format!("planted failure at item {n}")));
            }
            std::thread::sleep(Duration::from_millis(config.delay_ms));
            ctx.send("items", message)?;
            n += 1;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub probe: String,
}

impl StageConfig for SinkConfig {}

/// Consumes a stream slowly and writes the sum of what it saw as its artifact.
#[derive(Debug)]
pub struct TestSink;

impl Stage for TestSink {
    type Config = SinkConfig;
    fn description() -> StageDescription {
        StageDescription {
            kind: "test-sink".into(),
            doc: "consumes batches, writes their sum".into(),
            inputs: vec![PortSpec::stream(
                "items",
                StreamKind::ACTIVATIONS,
                "batches",
            )],
            outputs: vec![PortSpec::artifact(
                "sum",
                ArtifactKind::new("test-sum"),
                "the sum",
            )],
        }
    }
    fn run(config: SinkConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let probe = probe(&config.probe);
        let mut sum = 0.0f64;
        while let Some(message) = ctx.input("items")?.recv()? {
            probe.received.fetch_add(1, Ordering::SeqCst);
            if let Message::Activations(batch) = message {
                sum += batch
                    .hooks
                    .values()
                    .flatten()
                    .map(|&v| f64::from(v))
                    .sum::<f64>();
            }
            std::thread::sleep(Duration::from_millis(config.delay_ms));
        }
        let path = ctx.stage_dir.join("sum.txt");
        atomic::write(&path, sum.to_string().as_bytes()).map_err(|e| StageError::io(&path, e))?;
        ctx.emit_artifact("sum", Artifact::new(ArtifactKind::new("test-sum"), path))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {}

impl StageConfig for ReaderConfig {}

/// Reads a `test-sum` artifact and copies it.
#[derive(Debug)]
pub struct TestReader;

impl Stage for TestReader {
    type Config = ReaderConfig;
    fn description() -> StageDescription {
        StageDescription {
            kind: "test-reader".into(),
            doc: "copies a sum".into(),
            inputs: vec![PortSpec::artifact(
                "sum",
                ArtifactKind::new("test-sum"),
                "a sum",
            )],
            outputs: vec![],
        }
    }
    fn run(_: ReaderConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let artifact = ctx.recv_artifact("sum")?;
        let text = std::fs::read_to_string(&artifact.path)
            .map_err(|e| StageError::io(&artifact.path, e))?;
        let path = ctx.stage_dir.join("copy.txt");
        atomic::write(&path, text.as_bytes()).map_err(|e| StageError::io(&path, e))
    }
}

register_stage!(TestSource);
register_stage!(TestRelay);
register_stage!(TestSink);
register_stage!(TestReader);
