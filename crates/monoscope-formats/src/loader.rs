//! Shared plumbing for the loaders: collecting tensors under canonical names with shape checks,
//! splitting fused QKV matrices, and hashing the source files.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{FormatError, Result};
use crate::model::{HostTensor, ModelConfig};

/// Canonical tensors being assembled from one source file (or directory).
#[derive(Debug)]
pub(crate) struct TensorSink {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
}

impl TensorSink {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            tensors: BTreeMap::new(),
        }
    }

    /// Check `t` (read from the file as `source_name`) against `expected` and store it.
    pub fn put(
        &mut self,
        source_name: &str,
        canonical: String,
        expected: &[usize],
        t: HostTensor,
    ) -> Result<()> {
        self.check(source_name, expected, &t.shape)?;
        self.tensors.insert(canonical, t);
        Ok(())
    }

    pub fn check(&self, source_name: &str, expected: &[usize], actual: &[usize]) -> Result<()> {
        if actual != expected {
            return Err(FormatError::ShapeMismatch {
                path: self.path.clone(),
                tensor: source_name.to_string(),
                expected: expected.to_vec(),
                actual: actual.to_vec(),
            });
        }
        Ok(())
    }

    pub fn missing(&self, source_name: &str) -> FormatError {
        FormatError::MissingTensor {
            path: self.path.clone(),
            tensor: source_name.to_string(),
        }
    }

    /// Split a fused `[q_rows + k_rows + v_rows, ...]` tensor (weight or bias) by rows into
    /// `layers.{l}.{q,k,v}_proj.{suffix}`.
    pub fn put_split_qkv(
        &mut self,
        source_name: &str,
        layer: usize,
        suffix: &str,
        rows: [usize; 3],
        t: HostTensor,
    ) -> Result<()> {
        let parts = [
            ("q_proj", rows[0]),
            ("k_proj", rows[1]),
            ("v_proj", rows[2]),
        ];
        self.put_split(source_name, layer, suffix, &parts, t)
    }

    /// Split a tensor fused along its rows into `layers.{l}.{name}.{suffix}` for each
    /// `(name, rows)` of `parts`, in order.
    pub fn put_split(
        &mut self,
        source_name: &str,
        layer: usize,
        suffix: &str,
        parts: &[(&str, usize)],
        t: HostTensor,
    ) -> Result<()> {
        let cols: usize = t.shape.iter().skip(1).product();
        let mut expected = t.shape.clone();
        expected[0] = parts.iter().map(|p| p.1).sum();
        self.check(source_name, &expected, &t.shape)?;
        let mut start = 0;
        for &(name, r) in parts {
            let mut shape = t.shape.clone();
            shape[0] = r;
            let data = t.data.slice(start * cols..(start + r) * cols);
            start += r;
            self.tensors.insert(
                format!("layers.{layer}.{name}.{suffix}"),
                HostTensor { shape, data },
            );
        }
        Ok(())
    }
}

/// Checks the sizes of `c`, read from `path`, before any loader computes with them: each width
/// positive, so that every weight holds values and its bytes in the file bound its dims; and
/// every row count a loader derives (heads × head_dim, fused projections) free of overflow,
/// which would panic or, wrapped, let a wrong tensor pass the shape check.
pub(crate) fn check_sizes(path: &Path, c: &ModelConfig) -> Result<()> {
    let bad = |key: &str, detail: String| FormatError::BadValue {
        path: path.to_path_buf(),
        key: key.to_string(),
        detail,
    };
    for (key, v) in [
        ("d_model", c.d_model),
        ("n_heads", c.n_heads),
        ("n_kv_heads", c.n_kv_heads),
        ("head_dim", c.head_dim),
        ("d_ff", c.d_ff),
    ] {
        if v == 0 {
            return Err(bad(key, "0 is not a usable size".into()));
        }
    }
    let mul = |key: &str, a: usize, b: usize| {
        a.checked_mul(b)
            .ok_or_else(|| bad(key, format!("{a} × {b} overflows")))
    };
    let q_rows = mul("n_heads × head_dim", c.n_heads, c.head_dim)?;
    let kv_rows = mul("n_kv_heads × head_dim", c.n_kv_heads, c.head_dim)?;
    mul("3 × n_heads × head_dim", q_rows, 3)?;
    mul("fused q/k/v rows", kv_rows, 2)?
        .checked_add(q_rows)
        .ok_or_else(|| {
            bad(
                "fused q/k/v rows",
                format!("{q_rows} + 2 × {kv_rows} overflows"),
            )
        })?;
    mul("2 × d_ff", c.d_ff, 2)?;
    mul("3 × d_model", c.d_model, 3)?;
    Ok(())
}

/// Transpose a row-major 2-D tensor (GPT-2's Conv1D `[in, out]` → `[out, in]`).
pub(crate) fn transpose(t: HostTensor) -> HostTensor {
    let [rows, cols] = t.shape[..] else {
        return t;
    };
    HostTensor {
        shape: vec![cols, rows],
        data: t.data.transposed(rows, cols),
    }
}

/// sha256 over the concatenated contents of `paths`, streamed, as lowercase hex.
pub(crate) fn sha256_files(paths: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in paths {
        let mut f = std::fs::File::open(p).map_err(|e| FormatError::io(p, e))?;
        loop {
            let n = f.read(&mut buf).map_err(|e| FormatError::io(p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(hex::encode(h.finalize()))
}
