//! Reading f32 tensors out of safetensors files (converting F16/BF16/F64) and writing them.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::SaeError;

/// A safetensors file read into memory.
pub(crate) struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    pub(crate) fn open(path: &Path) -> Result<Self, SaeError> {
        let bytes = std::fs::read(path).map_err(SaeError::io(path))?;
        let file = TensorFile {
            path: path.to_path_buf(),
            bytes,
        };
        file.parsed()?;
        Ok(file)
    }

    fn parsed(&self) -> Result<SafeTensors<'_>, SaeError> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| SaeError::Safetensors {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.parsed().is_ok_and(|t| t.names().contains(&key))
    }

    /// Tensor `key` as f32, checking that its shape is `expected`.
    pub(crate) fn f32(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>, SaeError> {
        let (shape, data) = self.any_shape(key)?;
        if shape != expected {
            return Err(SaeError::TensorShape {
                path: self.path.clone(),
                key: key.to_owned(),
                found: shape,
                expected: expected.to_vec(),
            });
        }
        Ok(data)
    }

    /// Tensor `key` as f32 with whatever shape it has.
    pub(crate) fn any_shape(&self, key: &str) -> Result<(Vec<usize>, Vec<f32>), SaeError> {
        let tensors = self.parsed()?;
        let view = tensors.tensor(key).map_err(|_| SaeError::MissingTensor {
            path: self.path.clone(),
            key: key.to_owned(),
        })?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => {
                return Err(SaeError::TensorDtype {
                    path: self.path.clone(),
                    key: key.to_owned(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok((view.shape().to_vec(), data))
    }

    /// Raw little-endian bytes and shape of a tensor of any dtype (checkpoints store u64s).
    pub(crate) fn raw(&self, key: &str) -> Result<(Dtype, Vec<usize>, Vec<u8>), SaeError> {
        let tensors = self.parsed()?;
        let view = tensors.tensor(key).map_err(|_| SaeError::MissingTensor {
            path: self.path.clone(),
            key: key.to_owned(),
        })?;
        Ok((view.dtype(), view.shape().to_vec(), view.data().to_vec()))
    }
}

/// One tensor to write: name, dtype, shape, little-endian bytes.
pub(crate) type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

pub(crate) fn f32_entry(name: &str, shape: &[usize], data: &[f32]) -> Entry {
    let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    (name.to_owned(), Dtype::F32, shape.to_vec(), bytes)
}

/// Writes `entries` as one safetensors file (the caller makes it atomic).
pub(crate) fn write_tensors(path: &Path, entries: &[Entry]) -> Result<(), SaeError> {
    let views = entries
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| SaeError::Safetensors {
                    path: path.to_path_buf(),
                    message: format!("tensor `{name}`: {e}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| SaeError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, bytes).map_err(SaeError::io(path))
}
