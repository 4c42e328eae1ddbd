//! A small GGUF v3 writer: metadata of every type, and F32/F16/BF16/Q8_0/Q4_1 tensors
//! (quantised here) or raw pre-built blocks. Tests across the workspace use it to build tiny
//! random-weight models in the real on-disk format.

use std::path::{Path, PathBuf};

use crate::error::{FormatError, Result};
use crate::gguf::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MetadataValue};
use crate::quant::{GgmlType, quantize_f16, quantize_q4_1, quantize_q8_0};

/// Collects metadata and tensors, then writes them as one GGUF file.
#[derive(Debug, Default, Clone)]
pub struct GgufWriter {
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    /// GGUF order, innermost first.
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
}

fn writer_err(key: &str, detail: String) -> FormatError {
    FormatError::BadValue {
        path: PathBuf::from("<gguf writer>"),
        key: key.to_string(),
        detail,
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) a metadata entry. `general.alignment` (u32) sets the data alignment.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: MetadataValue) -> &mut Self {
        let key = key.into();
        self.metadata.retain(|(k, _)| *k != key);
        self.metadata.push((key, value));
        self
    }

    /// Add a tensor given row-major `shape` (outermost first) and f32 `data`, encoded as `ty`
    /// (F32, F16, BF16, Q8_0 or Q4_1; quantised types need a row length divisible by 32).
    pub fn add_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
        data: &[f32],
    ) -> Result<&mut Self> {
        let n: usize = shape.iter().product();
        if n != data.len() || shape.is_empty() {
            return Err(writer_err(
                name,
                format!("shape {shape:?} needs {n} values, got {}", data.len()),
            ));
        }
        let row = shape[shape.len() - 1];
        if !row.is_multiple_of(ty.block_len()) {
            return Err(writer_err(
                name,
                format!(
                    "row length {row} is not a multiple of the {} block size",
                    ty.name()
                ),
            ));
        }
        let bytes = match ty {
            GgmlType::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => quantize_f16(data),
            GgmlType::BF16 => data
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            GgmlType::Q8_0 => quantize_q8_0(data),
            GgmlType::Q4_1 => quantize_q4_1(data),
            other => {
                return Err(writer_err(
                    name,
                    format!("the writer cannot quantise to {}", other.name()),
                ));
            }
        };
        Ok(self.add_raw_tensor(name, shape, ty.id(), bytes))
    }

    /// Add a tensor whose encoded bytes are already built (any type id, even unknown ones, so
    /// tests can exercise the reader's checks).
    pub fn add_raw_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        type_id: u32,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            type_id,
            data,
        });
        self
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .filter(|a| a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The complete file contents.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let align = self.alignment() as usize;
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, k, v)?;
        }
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len()).div_ceil(align) * align;
        }
        let data_start = out.len().div_ceil(align) * align;
        out.resize(data_start, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(&t.data);
        }
        Ok(out)
    }

    /// Write the file to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|e| FormatError::io(path, e))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, key: &str, v: &MetadataValue) -> Result<()> {
    use MetadataValue as V;
    match v {
        V::U8(x) => out.push(*x),
        V::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::Bool(x) => out.push(u8::from(*x)),
        V::String(s) => put_str(out, s),
        V::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::Array(items) => {
            // GGUF arrays are homogeneous; an empty one is written as u8.
            let elem = items.first().map_or(0, MetadataValue::type_id);
            if let Some(bad) = items.iter().find(|i| i.type_id() != elem) {
                return Err(writer_err(
                    key,
                    format!("array mixes element types {elem} and {}", bad.type_id()),
                ));
            }
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, key, i)?;
            }
        }
    }
    Ok(())
}
