//! The SAELens v6 directory: `cfg.json` + `sae_weights.safetensors` with `W_enc [d_in, d_sae]`,
//! `W_dec [d_sae, d_in]`, `b_enc [d_sae]`, `b_dec [d_in]` and, for JumpReLU (and BatchTopK,
//! which SAELens saves as JumpReLU), `threshold [d_sae]`.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::tensors::{TensorFile, f32_entry, write_tensors};
use super::{read_json, write_dir_atomic};
use crate::{Architecture, Sae, SaeError, SaeMetadata};

pub const SAELENS_CFG: &str = "cfg.json";
/// `metadata.sae_lens_version` of the files this module writes: the SAELens release whose
/// layout they follow. SAELens reads any `cfg.json` without a version of at least 6 as its
/// pre-6 flat layout, which looks for the hook and model names at the top level and drops the
/// `metadata` object; with it, SAELens keeps them.
pub const SAELENS_LAYOUT_VERSION: &str = "6.0.0";
pub const SAELENS_WEIGHTS: &str = "sae_weights.safetensors";

/// Top-level `cfg.json` keys this module reads or writes itself; any other key is carried in
/// `Sae::extra_cfg` so that a loaded directory saves back unchanged.
const OWN_KEYS: &[&str] = &[
    "architecture",
    "d_in",
    "d_sae",
    "dtype",
    "device",
    "apply_b_dec_to_input",
    "normalize_activations",
    "metadata",
    "k",
    "rescale_acts_by_decoder_norm",
];

/// Metadata fields that pre-v6 configs kept at the top level.
const LEGACY_METADATA_KEYS: &[&str] = &[
    "model_name",
    "hook_name",
    "hook_head_index",
    "context_size",
    "prepend_bos",
    "dataset_path",
    "seqpos_slice",
    "model_from_pretrained_kwargs",
    "sae_lens_training_version",
    "neuronpedia_id",
];

/// Writes `sae` as a SAELens directory at `dir`, atomically (temporary sibling + rename).
pub fn save_saelens(sae: &Sae, dir: &Path) -> Result<(), SaeError> {
    sae.validate()?;
    let cfg = saelens_cfg(sae)?;
    write_dir_atomic(dir, |tmp| {
        let (d, s) = (sae.d_in, sae.d_sae);
        let mut entries = vec![
            f32_entry("W_enc", &[d, s], &sae.w_enc),
            f32_entry("b_enc", &[s], &sae.b_enc),
            f32_entry("W_dec", &[s, d], &sae.w_dec),
            f32_entry("b_dec", &[d], &sae.b_dec),
        ];
        if let Some(t) = &sae.threshold {
            entries.push(f32_entry("threshold", &[s], t));
        }
        write_tensors(&tmp.join(SAELENS_WEIGHTS), &entries)?;
        let path = tmp.join(SAELENS_CFG);
        let text = serde_json::to_vec_pretty(&cfg).map_err(|source| SaeError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(SaeError::io(&path))
    })
}

fn saelens_cfg(sae: &Sae) -> Result<Value, SaeError> {
    let mut cfg = sae.extra_cfg.clone();
    let mut metadata = serde_json::to_value(&sae.metadata).map_err(|source| SaeError::Json {
        path: SAELENS_CFG.into(),
        source,
    })?;
    if let Value::Object(m) = &mut metadata {
        m.entry("sae_lens_version")
            .or_insert_with(|| SAELENS_LAYOUT_VERSION.into());
    }
    let own = json!({
        "architecture": sae.architecture.saelens_name(),
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        // The input scale is folded into the weights before saving: the SAE takes raw input.
        "normalize_activations": "none",
        "metadata": metadata,
    });
    if let Value::Object(own) = own {
        cfg.extend(own);
    }
    cfg.entry("reshape_activations")
        .or_insert_with(|| Value::from("none"));
    if let Architecture::TopK { k } = sae.architecture {
        cfg.insert("k".into(), k.into());
        cfg.insert("rescale_acts_by_decoder_norm".into(), false.into());
    }
    Ok(Value::Object(cfg))
}

/// What an SAE directory says about itself, without its weights.
#[derive(Clone, Debug, PartialEq)]
pub struct SaeInfo {
    pub d_in: usize,
    pub d_sae: usize,
    /// As SAELens names it: `standard`, `topk`, `jumprelu`.
    pub architecture: String,
    pub k: Option<usize>,
    pub metadata: SaeMetadata,
}

/// Reads the `cfg.json` of a SAELens directory only; any other layout is loaded whole.
pub fn read_sae_info(dir: &Path) -> Result<SaeInfo, SaeError> {
    let cfg_path = dir.join(SAELENS_CFG);
    if !cfg_path.is_file() {
        let sae = super::load_sae(dir)?;
        return Ok(SaeInfo {
            d_in: sae.d_in,
            d_sae: sae.d_sae,
            architecture: sae.architecture.saelens_name().to_string(),
            k: match sae.architecture {
                Architecture::TopK { k } => Some(k),
                _ => None,
            },
            metadata: sae.metadata,
        });
    }
    let mut cfg = read_cfg(&cfg_path)?;
    let (d_in, d_sae) = (
        usize_key(&cfg, "d_in", &cfg_path)?,
        usize_key(&cfg, "d_sae", &cfg_path)?,
    );
    check_dims_fit(dir, &cfg_path, d_in, d_sae)?;
    Ok(SaeInfo {
        d_in,
        d_sae,
        architecture: architecture_name(&cfg),
        k: cfg.get("k").and_then(Value::as_u64).map(|k| k as usize),
        metadata: take_metadata(&mut cfg, &cfg_path)?,
    })
}

/// A `cfg.json` as its object of keys.
fn read_cfg(cfg_path: &Path) -> Result<Map<String, Value>, SaeError> {
    match read_json(cfg_path)? {
        Value::Object(cfg) => Ok(cfg),
        _ => Err(unsupported(
            cfg_path,
            "cfg.json",
            "not an object",
            "expected a JSON object",
        )),
    }
}

/// `architecture`, which SAELens leaves out for its standard (ReLU) SAEs.
fn architecture_name(cfg: &Map<String, Value>) -> String {
    cfg.get("architecture")
        .and_then(Value::as_str)
        .unwrap_or("standard")
        .to_owned()
}

/// Loads a SAELens directory (v6, and the pre-v6 flat `cfg.json`). Half-precision weights are
/// widened to f32; TopK SAEs trained with `rescale_acts_by_decoder_norm` are loaded with the
/// decoder norms folded in (same outputs, plain TopK).
pub fn load_saelens(dir: &Path) -> Result<Sae, SaeError> {
    let cfg_path = dir.join(SAELENS_CFG);
    let mut cfg = read_cfg(&cfg_path)?;
    let d_in = usize_key(&cfg, "d_in", &cfg_path)?;
    let d_sae = usize_key(&cfg, "d_sae", &cfg_path)?;
    check_dims_fit(dir, &cfg_path, d_in, d_sae)?;
    let arch_name = architecture_name(&cfg);
    match cfg.get("normalize_activations") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(other) => {
            return Err(unsupported(
                &cfg_path,
                "normalize_activations",
                &other.to_string(),
                "the scaling factor is not stored in the directory; fold it into the weights \
                 (SAELens: fold_activation_norm_scaling_factor) and save with \"none\"",
            ));
        }
    }
    let weights = TensorFile::open(&dir.join(SAELENS_WEIGHTS))?;
    let mut rescale = false;
    let architecture = match arch_name.as_str() {
        "standard" => Architecture::Relu,
        "topk" => {
            rescale = cfg
                .get("rescale_acts_by_decoder_norm")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Architecture::TopK {
                k: usize_key(&cfg, "k", &cfg_path)?,
            }
        }
        "jumprelu" => Architecture::JumpRelu,
        other => {
            return Err(unsupported(
                &cfg_path,
                "architecture",
                other,
                "supported: standard, topk, jumprelu",
            ));
        }
    };
    let threshold = if architecture == Architecture::JumpRelu {
        Some(if weights.contains("threshold") {
            weights.f32("threshold", &[d_sae])?
        } else {
            // SAELens before 6.18 stored the trained `log_threshold`.
            let log =
                weights
                    .f32("log_threshold", &[d_sae])
                    .map_err(|_| SaeError::MissingTensor {
                        path: dir.join(SAELENS_WEIGHTS),
                        key: "threshold".into(),
                    })?;
            log.into_iter().map(f32::exp).collect()
        })
    } else {
        None
    };
    let metadata = take_metadata(&mut cfg, &cfg_path)?;
    let apply_b_dec_to_input = cfg
        .get("apply_b_dec_to_input")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    cfg.retain(|k, _| !OWN_KEYS.contains(&k.as_str()));
    // "none" is what saving writes when the key is absent: keep only other values.
    if cfg.get("reshape_activations").and_then(Value::as_str) == Some("none") {
        cfg.remove("reshape_activations");
    }
    let mut sae = Sae {
        d_in,
        d_sae,
        architecture,
        w_enc: weights.f32("W_enc", &[d_in, d_sae])?,
        b_enc: weights.f32("b_enc", &[d_sae])?,
        w_dec: weights.f32("W_dec", &[d_sae, d_in])?,
        b_dec: weights.f32("b_dec", &[d_in])?,
        threshold,
        apply_b_dec_to_input,
        metadata,
        extra_cfg: cfg,
    };
    if rescale {
        sae.fold_decoder_norm();
    }
    validate_from(&sae, &cfg_path)?;
    Ok(sae)
}

/// [`Sae::validate`], its error naming `path`: whatever it finds wrong was read from there.
pub(super) fn validate_from(sae: &Sae, path: &Path) -> Result<(), SaeError> {
    sae.validate().map_err(|e| match e {
        SaeError::Config { key, value, reason } => SaeError::Unsupported {
            path: path.to_path_buf(),
            key,
            value,
            reason,
        },
        other => other,
    })
}

/// Refuses `d_in` and `d_sae` (from `cfg_path`) that the weights file beside it cannot hold:
/// it has `W_enc`, `W_dec`, `b_enc` and `b_dec`, at two bytes a value at the least. Readers of
/// [`SaeInfo`] size tables and loops by these numbers without loading the weights. A directory
/// with a `cfg.json` alone (a summary of an SAE kept elsewhere) is held to feature ids fitting
/// the u32 that every file downstream stores them in.
fn check_dims_fit(dir: &Path, cfg_path: &Path, d_in: usize, d_sae: usize) -> Result<(), SaeError> {
    let weights = dir.join(SAELENS_WEIGHTS);
    let file_len = match std::fs::metadata(&weights) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if u32::try_from(d_sae).is_err() || u32::try_from(d_in).is_err() {
                return Err(unsupported(
                    cfg_path,
                    "d_sae",
                    &d_sae.to_string(),
                    &format!("with d_in = {d_in}: feature ids and widths must fit in a u32"),
                ));
            }
            return Ok(());
        }
        Err(e) => return Err(SaeError::io(&weights)(e)),
    };
    let (d, s) = (d_in as u64, d_sae as u64);
    let need = d
        .checked_mul(s)
        .and_then(|n| n.checked_mul(2))
        .and_then(|n| n.checked_add(d))
        .and_then(|n| n.checked_add(s))
        .and_then(|n| n.checked_mul(2));
    if need.is_none_or(|need| need > file_len) {
        return Err(unsupported(
            cfg_path,
            "d_sae",
            &d_sae.to_string(),
            &format!(
                "with d_in = {d_in}, the weights need more than the {file_len} bytes of {}",
                weights.display()
            ),
        ));
    }
    Ok(())
}

fn take_metadata(cfg: &mut Map<String, Value>, path: &Path) -> Result<SaeMetadata, SaeError> {
    let meta = match cfg.remove("metadata") {
        Some(m) => m,
        None => {
            let mut m = Map::new();
            for key in LEGACY_METADATA_KEYS {
                if let Some(v) = cfg.remove(*key) {
                    m.insert((*key).to_owned(), v);
                }
            }
            Value::Object(m)
        }
    };
    let mut metadata: SaeMetadata =
        serde_json::from_value(meta).map_err(|source| SaeError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    // The layout marker saving writes is not data; another writer's version is, and is kept.
    if metadata
        .extra
        .get("sae_lens_version")
        .and_then(Value::as_str)
        == Some(SAELENS_LAYOUT_VERSION)
    {
        metadata.extra.remove("sae_lens_version");
    }
    Ok(metadata)
}

pub(super) fn usize_key(
    cfg: &Map<String, Value>,
    key: &str,
    path: &Path,
) -> Result<usize, SaeError> {
    cfg.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| {
            unsupported(
                path,
                key,
                &cfg.get(key).map_or("absent".into(), Value::to_string),
                "expected a non-negative integer",
            )
        })
}

pub(super) fn unsupported(path: &Path, key: &str, value: &str, reason: &str) -> SaeError {
    SaeError::Unsupported {
        path: path.to_path_buf(),
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}
