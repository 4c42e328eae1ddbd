//! On-disk formats: SAELens directories (read and write), sparsify directories and
//! multi-layer releases (read), Gemma Scope `params.npz` (read).

mod gemma_scope;
mod npy;
mod saelens;
mod sparsify;
mod tensors;

use std::path::Path;

pub use gemma_scope::{GEMMA_SCOPE_PARAMS, load_gemma_scope};
pub use npy::{NpyArray, npy_bytes, parse_npy, read_npz, write_npz};
pub use saelens::{
    SAELENS_CFG, SAELENS_WEIGHTS, SaeInfo, load_saelens, read_sae_info, save_saelens,
};
pub use sparsify::{SPARSIFY_CFG, SPARSIFY_WEIGHTS, load_sparsify, sparsify_hookpoints};
pub(crate) use tensors::{Entry, TensorFile, f32_entry, write_tensors};

use crate::{Sae, SaeError};

/// Loads an SAE in whichever layout it is: an SAELens directory (`sae_weights.safetensors`), a
/// sparsify hookpoint directory (`sae.safetensors`), or Gemma Scope's `params.npz` (the file or
/// its directory). A multi-layer sparsify release (one directory per hookpoint) is refused
/// with the list of its hookpoints, so that the caller names one.
pub fn load_sae(dir: &Path) -> Result<Sae, SaeError> {
    let is_npz = dir.extension().is_some_and(|e| e == "npz") && dir.is_file();
    if dir.join(SAELENS_WEIGHTS).is_file() {
        load_saelens(dir)
    } else if dir.join(SPARSIFY_WEIGHTS).is_file() {
        load_sparsify(dir)
    } else if is_npz || dir.join(GEMMA_SCOPE_PARAMS).is_file() {
        load_gemma_scope(dir)
    } else {
        let hookpoints = sparsify_hookpoints(dir);
        if hookpoints.is_empty() {
            return Err(SaeError::UnknownLayout {
                path: dir.to_path_buf(),
            });
        }
        Err(SaeError::Unsupported {
            path: dir.to_path_buf(),
            key: "sae".into(),
            value: "a multi-layer sparsify release".into(),
            reason: format!(
                "name one hookpoint directory inside it: {}",
                hookpoints.join(", ")
            ),
        })
    }
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, SaeError> {
    let text = std::fs::read(path).map_err(SaeError::io(path))?;
    serde_json::from_slice(&text).map_err(|source| SaeError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds directory `dir` atomically: `fill` writes into a temporary sibling, which replaces
/// `dir` only once complete and synced, so an interrupted save never leaves a half-written
/// SAE under the real name (`monoscope_artifacts::atomic::write_dir_with`).
pub(crate) fn write_dir_atomic(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), SaeError>,
) -> Result<(), SaeError> {
    monoscope_artifacts::atomic::write_dir_with(dir, fill, |path, e| SaeError::io(path)(e))
}
