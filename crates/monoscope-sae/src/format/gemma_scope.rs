//! Gemma Scope (Google DeepMind) SAEs as published: one `params.npz` per SAE with `W_enc
//! [d_in, d_sae]`, `W_dec [d_sae, d_in]`, `b_enc [d_sae]`, `b_dec [d_in]` and `threshold
//! [d_sae]`. They are JumpReLU SAEs whose encoder does not subtract `b_dec` from its input:
//! `f = pre · [pre > threshold]` with `pre = x W_enc + b_enc`.
//!
//! The release lays them out as `<release>/layer_{L}/width_{W}/average_l0_{N}/params.npz`, with
//! the hook in the release's name: `-res` the residual stream after block L, `-mlp` the MLP
//! output, `-att` the attention heads' concatenated outputs before the output projection. When
//! the path says which, the SAE's `hook_name` is set to it in TransformerLens naming.

use std::path::Path;

use super::npy::{NpyArray, read_npz};
use crate::{Architecture, Sae, SaeError, SaeMetadata};

pub const GEMMA_SCOPE_PARAMS: &str = "params.npz";

/// Loads a Gemma Scope SAE: a `params.npz` file or the directory holding one.
pub fn load_gemma_scope(path: &Path) -> Result<Sae, SaeError> {
    let file = if path.is_dir() {
        path.join(GEMMA_SCOPE_PARAMS)
    } else {
        path.to_path_buf()
    };
    let mut arrays = read_npz(&file)?;
    let mut take = |key: &str| -> Result<NpyArray, SaeError> {
        arrays.remove(key).ok_or_else(|| SaeError::MissingTensor {
            path: file.clone(),
            key: key.into(),
        })
    };
    let w_enc = take("W_enc")?;
    let [d_in, d_sae] = w_enc.shape[..] else {
        return Err(SaeError::TensorShape {
            path: file.clone(),
            key: "W_enc".into(),
            found: w_enc.shape,
            expected: vec![0, 0],
        });
    };
    let mut checked = |key: &str, expected: Vec<usize>| -> Result<Vec<f32>, SaeError> {
        let a = take(key)?;
        if a.shape != expected {
            return Err(SaeError::TensorShape {
                path: file.clone(),
                key: key.into(),
                found: a.shape,
                expected,
            });
        }
        Ok(a.data)
    };
    let w_dec = checked("W_dec", vec![d_sae, d_in])?;
    let b_enc = checked("b_enc", vec![d_sae])?;
    let b_dec = checked("b_dec", vec![d_in])?;
    let threshold = checked("threshold", vec![d_sae])?;
    let mut metadata = SaeMetadata {
        hook_name: hook_from_path(&file),
        training_architecture: Some("jumprelu".into()),
        ..Default::default()
    };
    metadata
        .extra
        .insert("source_format".into(), "gemma-scope".into());
    let sae = Sae {
        d_in,
        d_sae,
        architecture: Architecture::JumpRelu,
        w_enc: w_enc.data,
        b_enc,
        w_dec,
        b_dec,
        threshold: Some(threshold),
        apply_b_dec_to_input: false,
        metadata,
        extra_cfg: Default::default(),
    };
    super::saelens::validate_from(&sae, &file)?;
    Ok(sae)
}

/// `blocks.{L}.hook_resid_post` (or `hook_mlp_out`, `attn.hook_z`) from a path with a
/// `layer_{L}` component under a release named `…-res…`, `…-mlp…` or `…-att…`.
fn hook_from_path(path: &Path) -> Option<String> {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let at = parts.iter().position(|p| {
        p.strip_prefix("layer_")
            .is_some_and(|n| n.parse::<usize>().is_ok())
    })?;
    let layer: usize = parts[at].strip_prefix("layer_")?.parse().ok()?;
    let release = parts[..at].last()?;
    let hook = if release.contains("-res") {
        "hook_resid_post"
    } else if release.contains("-mlp") {
        "hook_mlp_out"
    } else if release.contains("-att") {
        "attn.hook_z"
    } else {
        return None;
    };
    Some(format!("blocks.{layer}.{hook}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_comes_from_the_release_layout() {
        let h = |p: &str| hook_from_path(Path::new(p));
        assert_eq!(
            h("/d/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82/params.npz").as_deref(),
            Some("blocks.12.hook_resid_post")
        );
        assert_eq!(
            h("gemma-scope-9b-pt-mlp/layer_3/width_131k/average_l0_10/params.npz").as_deref(),
            Some("blocks.3.hook_mlp_out")
        );
        assert_eq!(
            h("gemma-scope-2b-pt-att/layer_0/width_16k/x/params.npz").as_deref(),
            Some("blocks.0.attn.hook_z")
        );
        assert_eq!(h("/somewhere/params.npz"), None);
        assert_eq!(h("my-sae/layer_x/params.npz"), None);
    }
}
