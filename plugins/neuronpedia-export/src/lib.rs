//! An example monoscope plugin: exports a sparse autoencoder's features, and their labels when
//! a labels artifact is connected, as Neuronpedia-style JSON.
//!
//! Input `sae`: a SAELens-layout directory (`cfg.json` + `sae_weights.safetensors`).
//! Optional input `labels`: an autointerp-label stage directory (its labels read through
//! `monoscope-artifacts`).
//! Output `export`: `<stage_dir>/neuronpedia.json`:
//!
//! ```json
//! { "modelId": "...", "saeId": "...", "hookName": "...", "dIn": 576, "dSae": 4608,
//!   "features": [ { "index": 0, "decoderNorm": 0.98, "encoderBias": -0.1, "label": "..." } ],
//!   "explanations": [ { "modelId": "...", "layer": "...", "index": 0,
//!                       "description": "...", "explanationModelName": "..." } ] }
//! ```
//!
//! `explanations` follows the shape of Neuronpedia's explanation uploads.

use std::collections::BTreeMap;
use std::path::Path;

use monoscope_artifacts::label::LabelOutputs;
use monoscope_plugin_abi::sdk::{PluginContext, PluginStage, port};
use monoscope_plugin_abi::wire::{ArtifactRef, PortDecl};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Neuronpedia's id of the model (e.g. `smollm2-135m-instruct`).
    #[serde(default = "default_model_id")]
    pub model_id: String,
    /// The SAE's id; defaults to its hook name.
    #[serde(default)]
    pub sae_id: Option<String>,
    /// Export only the first N features (all when unset).
    #[serde(default)]
    pub limit: Option<usize>,
}

fn default_model_id() -> String {
    "unknown-model".into()
}

#[derive(Debug)]
pub struct NeuronpediaExport;

impl PluginStage for NeuronpediaExport {
    type Config = Config;
    const KIND: &'static str = "neuronpedia-export";
    const DOC: &'static str = "Exports an SAE's features and labels as Neuronpedia-style JSON";

    fn inputs() -> Vec<PortDecl> {
        let mut labels = port("labels", "labels", "feature labels (labels.jsonl)");
        labels.required = false;
        vec![port("sae", "sae", "a SAELens-layout SAE directory"), labels]
    }

    fn outputs() -> Vec<PortDecl> {
        vec![port("export", "neuronpedia-export", "neuronpedia.json")]
    }

    fn validate(config: &Config) -> Vec<(String, String)> {
        match config.limit {
            Some(0) => vec![(
                "limit".into(),
                "= 0: expected at least 1, or leave it unset".into(),
            )],
            _ => vec![],
        }
    }

    fn run(config: Config, ctx: &mut PluginContext<'_>) -> Result<(), String> {
        let sae = ctx
            .input("sae")
            .ok_or("input `sae` is not connected")?
            .path
            .clone();
        let labels = match ctx.input("labels") {
            Some(artifact) => read_labels(&artifact.path)?,
            None => BTreeMap::new(),
        };
        let document = export(&sae, &labels, &config, |done, total| {
            ctx.progress(done, total)
        })?;
        let path = ctx.stage_dir().join("neuronpedia.json");
        write_atomically(
            &path,
            &serde_json::to_vec_pretty(&document).map_err(|e| e.to_string())?,
        )?;
        ctx.log(&format!(
            "exported {} features to {}",
            document.features.len(),
            path.display()
        ));
        ctx.emit(
            "export",
            ArtifactRef {
                kind: "neuronpedia-export".into(),
                path,
                metadata: serde_json::Value::Null,
            },
        );
        Ok(())
    }
}

monoscope_plugin_abi::export_plugin!(name: "neuronpedia-export", version: env!("CARGO_PKG_VERSION"), stages: [NeuronpediaExport]);

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    pub model_id: String,
    pub sae_id: String,
    pub hook_name: String,
    pub d_in: usize,
    pub d_sae: usize,
    pub features: Vec<Feature>,
    pub explanations: Vec<Explanation>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    pub index: usize,
    pub decoder_norm: f32,
    pub encoder_bias: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub model_id: String,
    pub layer: String,
    pub index: usize,
    pub description: String,
    pub explanation_model_name: String,
}

/// Builds the export document from a SAELens directory.
pub fn export(
    sae_dir: &Path,
    labels: &BTreeMap<usize, (String, String)>,
    config: &Config,
    mut progress: impl FnMut(u64, u64),
) -> Result<Export, String> {
    let cfg_path = sae_dir.join("cfg.json");
    let cfg: serde_json::Value = serde_json::from_slice(&read(&cfg_path)?)
        .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let hook_name = cfg
        .pointer("/metadata/hook_name")
        .or_else(|| cfg.get("hook_name"))
        .and_then(|v| v.as_str())
        .unwrap_or("unknown-hook")
        .to_string();
    let weights_path = sae_dir.join("sae_weights.safetensors");
    let bytes = read(&weights_path)?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: {e}", weights_path.display()))?;
    let (w_dec, shape) = tensor_f32(&tensors, "W_dec", &weights_path)?;
    let (b_enc, _) = tensor_f32(&tensors, "b_enc", &weights_path)?;
    let [d_sae, d_in] = shape[..] else {
        return Err(format!(
            "{}: W_dec has shape {shape:?}, expected [d_sae, d_in]",
            weights_path.display()
        ));
    };
    if b_enc.len() != d_sae {
        return Err(format!(
            "{}: b_enc has {} entries but W_dec has {d_sae} rows",
            weights_path.display(),
            b_enc.len()
        ));
    }
    let sae_id = config.sae_id.clone().unwrap_or_else(|| hook_name.clone());
    let n = config.limit.unwrap_or(d_sae).min(d_sae);
    let mut features = Vec::with_capacity(n);
    let mut explanations = Vec::new();
    for index in 0..n {
        let row = &w_dec[index * d_in..(index + 1) * d_in];
        let label = labels.get(&index);
        features.push(Feature {
            index,
            decoder_norm: row.iter().map(|v| v * v).sum::<f32>().sqrt(),
            encoder_bias: b_enc[index],
            label: label.map(|(l, _)| l.clone()),
        });
        if let Some((description, explainer)) = label {
            explanations.push(Explanation {
                model_id: config.model_id.clone(),
                layer: sae_id.clone(),
                index,
                description: description.clone(),
                explanation_model_name: explainer.clone(),
            });
        }
        if index % 1024 == 0 {
            progress(index as u64, n as u64);
        }
    }
    progress(n as u64, n as u64);
    Ok(Export {
        model_id: config.model_id.clone(),
        sae_id,
        hook_name,
        d_in,
        d_sae,
        features,
        explanations,
    })
}

fn tensor_f32(
    tensors: &safetensors::SafeTensors<'_>,
    name: &str,
    file: &Path,
) -> Result<(Vec<f32>, Vec<usize>), String> {
    use safetensors::Dtype;
    let view = tensors
        .tensor(name)
        .map_err(|_| format!("{}: missing tensor `{name}`", file.display()))?;
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(format!(
                "{}: tensor `{name}` has dtype {other:?}; expected f32, f16 or bf16",
                file.display()
            ));
        }
    };
    Ok((values, view.shape().to_vec()))
}

/// The labels of an autointerp-label stage directory: feature index → (label, explainer).
fn read_labels(dir: &Path) -> Result<BTreeMap<usize, (String, String)>, String> {
    let records = LabelOutputs::new(dir).labels().map_err(|e| e.to_string())?;
    Ok(records
        .into_iter()
        .map(|r| (r.feature as usize, (r.label, r.explainer)))
        .collect())
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
