//! On-disk formats: SAELens directories (read and write) and sparsify directories (read).

mod saelens;
mod sparsify;
mod tensors;

use std::path::Path;

pub use saelens::{SAELENS_CFG, SAELENS_WEIGHTS, load_saelens, save_saelens};
pub use sparsify::{SPARSIFY_CFG, SPARSIFY_WEIGHTS, load_sparsify};
pub(crate) use tensors::{Entry, TensorFile, f32_entry, write_tensors};

use crate::{Sae, SaeError};

/// Loads an SAE directory in whichever layout it is: SAELens (`sae_weights.safetensors`) or
/// sparsify (`sae.safetensors`).
pub fn load_sae(dir: &Path) -> Result<Sae, SaeError> {
    if dir.join(SAELENS_WEIGHTS).is_file() {
        load_saelens(dir)
    } else if dir.join(SPARSIFY_WEIGHTS).is_file() {
        load_sparsify(dir)
    } else {
        Err(SaeError::UnknownLayout {
            path: dir.to_path_buf(),
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
/// `dir` only once complete, so an interrupted save never leaves a half-written SAE under the
/// real name (same scheme as `monoscope_core::atomic::write_dir`, with our error type).
pub(crate) fn write_dir_atomic(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), SaeError>,
) -> Result<(), SaeError> {
    let sibling = |tag: &str| {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        dir.with_file_name(format!(
            ".{}.{tag}-{}",
            name.unwrap_or_default(),
            std::process::id()
        ))
    };
    let (tmp, old) = (sibling("tmp"), sibling("old"));
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(SaeError::io(parent))?;
    }
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(SaeError::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(SaeError::io(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(SaeError::io(dir))?;
        std::fs::rename(&tmp, dir).map_err(SaeError::io(dir))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    } else {
        std::fs::rename(&tmp, dir).map_err(SaeError::io(dir))
    }
}
