//! sparsify (EleutherAI) directories: `cfg.json` (`SparseCoderConfig` + `d_in`) and
//! `sae.safetensors` with `encoder.weight [N, d_in]` (a torch `Linear`, so the transpose of
//! SAELens's `W_enc`), `encoder.bias [N]`, `W_dec [N, d_in]` (already SAELens's orientation)
//! and `b_dec [d_in]`. The encoder subtracts `b_dec` from its input and keeps the top k of
//! `relu(pre)`, which is SAELens's TopK with `apply_b_dec_to_input`.

use std::path::Path;

use serde_json::Value;

use super::read_json;
use super::saelens::{unsupported, usize_key, validate_from};
use super::tensors::TensorFile;
use crate::{Architecture, Sae, SaeError, SaeMetadata};

pub const SPARSIFY_CFG: &str = "cfg.json";
pub const SPARSIFY_WEIGHTS: &str = "sae.safetensors";

/// Loads a sparsify SAE directory (one hookpoint's folder) as a TopK [`Sae`].
pub fn load_sparsify(dir: &Path) -> Result<Sae, SaeError> {
    let cfg_path = dir.join(SPARSIFY_CFG);
    let Value::Object(cfg) = read_json(&cfg_path)? else {
        return Err(unsupported(
            &cfg_path,
            "cfg.json",
            "not an object",
            "expected a JSON object",
        ));
    };
    let d_in = usize_key(&cfg, "d_in", &cfg_path)?;
    let k = usize_key(&cfg, "k", &cfg_path)?;
    let num_latents = cfg.get("num_latents").and_then(Value::as_u64).unwrap_or(0) as usize;
    let d_sae = if num_latents > 0 {
        num_latents
    } else {
        let factor = usize_key(&cfg, "expansion_factor", &cfg_path)?;
        d_in.checked_mul(factor).ok_or_else(|| {
            unsupported(
                &cfg_path,
                "expansion_factor",
                &factor.to_string(),
                &format!("d_in {d_in} × {factor} latents overflows"),
            )
        })?
    };
    if let Some(act) = cfg.get("activation").and_then(Value::as_str)
        && act != "topk"
    {
        return Err(unsupported(
            &cfg_path,
            "activation",
            act,
            "only topk is supported",
        ));
    }
    for flag in ["transcode", "skip_connection", "multi_topk_inference"] {
        if cfg.get(flag).and_then(Value::as_bool) == Some(true) {
            return Err(unsupported(
                &cfg_path,
                flag,
                "true",
                "transcoders and skip connections are not SAEs of the input",
            ));
        }
    }
    let weights = TensorFile::open(&dir.join(SPARSIFY_WEIGHTS))?;
    let enc = weights.f32("encoder.weight", &[d_sae, d_in])?;
    let mut w_enc = vec![0.0; d_in * d_sae];
    for i in 0..d_sae {
        for r in 0..d_in {
            w_enc[r * d_sae + i] = enc[i * d_in + r];
        }
    }
    let mut metadata = SaeMetadata {
        training_architecture: Some("topk".into()),
        ..Default::default()
    };
    metadata
        .extra
        .insert("source_format".into(), "sparsify".into());
    if let Some(name) = dir.file_name() {
        // sparsify names each folder after the hookpoint (a module path such as `layers.10`).
        let name = name.to_string_lossy();
        metadata.hook_name = hook_of_hookpoint(&name);
        metadata
            .extra
            .insert("sparsify_hookpoint".into(), name.into_owned().into());
    }
    let sae = Sae {
        d_in,
        d_sae,
        architecture: Architecture::TopK { k },
        w_enc,
        b_enc: weights.f32("encoder.bias", &[d_sae])?,
        w_dec: weights.f32("W_dec", &[d_sae, d_in])?,
        b_dec: weights.f32("b_dec", &[d_in])?,
        threshold: None,
        apply_b_dec_to_input: true,
        metadata,
        extra_cfg: Default::default(),
    };
    validate_from(&sae, &cfg_path)?;
    Ok(sae)
}

/// The hookpoint directories of a multi-layer sparsify release (each with `cfg.json` and
/// `sae.safetensors`), sorted by layer; empty when `dir` is not one.
pub fn sparsify_hookpoints(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let p = e.path();
            p.join(SPARSIFY_CFG).is_file() && p.join(SPARSIFY_WEIGHTS).is_file()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| (hookpoint_layer(n), n.clone()));
    names
}

fn hookpoint_layer(name: &str) -> Option<usize> {
    let rest = name.split("layers.").nth(1)?;
    rest.split('.').next()?.parse().ok()
}

/// The TransformerLens hook a sparsify hookpoint (a module path of the base model) reads:
/// `layers.L` a block's output (`blocks.L.hook_resid_post`), `layers.L.mlp` its MLP's output,
/// `layers.L.self_attn` / `layers.L.attention` its attention's output. `None` for others.
fn hook_of_hookpoint(name: &str) -> Option<String> {
    let layer = hookpoint_layer(name)?;
    let tail = name
        .split("layers.")
        .nth(1)?
        .split_once('.')
        .map(|(_, t)| t);
    let hook = match tail {
        None => "hook_resid_post",
        Some("mlp") => "hook_mlp_out",
        Some("self_attn" | "attention" | "attn") => "hook_attn_out",
        Some(_) => return None,
    };
    Some(format!("blocks.{layer}.{hook}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hookpoints_map_to_transformer_lens_hooks() {
        assert_eq!(
            hook_of_hookpoint("layers.10").as_deref(),
            Some("blocks.10.hook_resid_post")
        );
        assert_eq!(
            hook_of_hookpoint("layers.3.mlp").as_deref(),
            Some("blocks.3.hook_mlp_out")
        );
        assert_eq!(
            hook_of_hookpoint("gpt_neox.layers.2.attention").as_deref(),
            Some("blocks.2.hook_attn_out")
        );
        assert_eq!(hook_of_hookpoint("layers.3.mlp.act_fn"), None);
        assert_eq!(hook_of_hookpoint("embed_tokens"), None);
    }
}
