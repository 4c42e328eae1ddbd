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

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TinySaeConfig {
    #[serde(default = "four")]
    pub d_sae: usize,
}

fn four() -> usize {
    4
}

impl StageConfig for TinySaeConfig {}

/// Writes a tiny SAE in the SAELens layout: `W_dec` row i is `(i+1) * e_(i mod 3)`, `b_enc[i] = -i`.
#[derive(Debug)]
pub struct TestSae;

impl Stage for TestSae {
    type Config = TinySaeConfig;
    fn description() -> StageDescription {
        StageDescription {
            kind: "test-sae".into(),
            doc: "writes a tiny SAELens-layout SAE".into(),
            inputs: vec![],
            outputs: vec![PortSpec::artifact("sae", ArtifactKind::SAE, "the SAE")],
        }
    }
    fn run(config: TinySaeConfig, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let (d_in, d_sae) = (3usize, config.d_sae);
        let mut w_dec = vec![0f32; d_sae * d_in];
        for i in 0..d_sae {
            w_dec[i * d_in + i % d_in] = (i + 1) as f32;
        }
        let w_enc: Vec<f32> = (0..d_in * d_sae).map(|_| 0.0).collect();
        let b_enc: Vec<f32> = (0..d_sae).map(|i| -(i as f32)).collect();
        let b_dec = vec![0f32; d_in];
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (wd, we, be, bd) = (bytes(&w_dec), bytes(&w_enc), bytes(&b_enc), bytes(&b_dec));
        let view = |data: &'static [u8], shape: Vec<usize>| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, data).unwrap()
        };
        let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
        let tensors = vec![
            ("W_dec", view(leak(wd), vec![d_sae, d_in])),
            ("W_enc", view(leak(we), vec![d_in, d_sae])),
            ("b_enc", view(leak(be), vec![d_sae])),
            ("b_dec", view(leak(bd), vec![d_in])),
        ];
        let dir = ctx.stage_dir.join("sae");
        atomic::write_dir(&dir, |tmp| {
            let data = safetensors::serialize(tensors, None).map_err(std::io::Error::other)?;
            std::fs::write(tmp.join("sae_weights.safetensors"), data)?;
            let cfg = serde_json::json!({"d_in": d_in, "d_sae": d_sae, "architecture": "standard",
                "metadata": {"hook_name": "blocks.1.hook_resid_post", "model_name": "tiny"}});
            std::fs::write(tmp.join("cfg.json"), cfg.to_string())
        })
        .map_err(|e| StageError::io(&dir, e))?;
        ctx.emit_artifact("sae", Artifact::new(ArtifactKind::SAE, dir))
    }
}

register_stage!(TestSae);
register_stage!(TestSource);
register_stage!(TestRelay);
register_stage!(TestSink);
register_stage!(TestReader);

/// Builds the plugin crates under `plugins/` (once per test binary) and returns the directory
/// holding the built libraries.
pub fn built_plugins() -> std::path::PathBuf {
    static BUILT: OnceLock<std::path::PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--quiet"])
                .args(cfg!(not(debug_assertions)).then_some("--release"))
                .args(PLUGIN_CRATES.iter().flat_map(|c| ["-p", *c]))
                .status()
                .expect("running cargo build for the plugins");
            assert!(status.success(), "building the plugins failed");
            // Test binaries live in target/<profile>/deps; the libraries one level up.
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().to_path_buf()
        })
        .clone()
}

pub const PLUGIN_CRATES: [&str; 4] = [
    "monoscope-plugin-neuronpedia-export",
    "monoscope-plugin-test-panic",
    "monoscope-plugin-test-error",
    "monoscope-plugin-test-wrong-abi",
];

/// The file name of a plugin crate's library on this platform.
pub fn plugin_path(crate_name: &str) -> std::path::PathBuf {
    let stem = crate_name.replace('-', "_");
    built_plugins().join(format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}
