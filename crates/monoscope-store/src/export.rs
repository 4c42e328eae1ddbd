//! `monoscope store export`: a row range of one hook as `.npy` or `.safetensors`.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use safetensors::tensor::{Dtype as StDtype, TensorView};

use crate::error::{Result, StoreError};
use crate::store::Store;

/// Writes rows `rows` of `hook` from the store in `dir` to `out`, as f32 `[rows, d_model]`.
///
/// - `.npy`: NPY format 1.0, `<f4`, C order; streamed shard by shard, so any range fits.
/// - `.safetensors`: the activations under the hook's name, plus `token_ids`, `doc_ids` and
///   `positions` (u32 `[rows]`), and the model and row range as metadata. Built in memory
///   (about twice the exported size); use `.npy` for very large ranges.
///
/// The file is written atomically.
pub fn export(dir: &Path, hook: &str, rows: Range<u64>, out: &Path) -> Result<()> {
    let store = Store::open(dir)?;
    store.hook_index(hook)?;
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or_default();
    match ext {
        "npy" => export_npy(&store, hook, rows, out),
        "safetensors" => export_safetensors(&store, hook, rows, out),
        _ => Err(StoreError::Export {
            path: out.into(),
            reason: format!("unknown extension `.{ext}` (use .npy or .safetensors)"),
        }),
    }
}

/// The NPY 1.0 header for a C-order little-endian f32 array of `shape`.
pub fn npy_header(shape: &[u64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + dict + '\n' is padded to a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header
}

fn export_npy(store: &Store, hook: &str, rows: Range<u64>, out: &Path) -> Result<()> {
    store.check_range(&rows)?;
    let d = store.d_model() as u64;
    let mut failure = None;
    monoscope_core::atomic::write_with(out, |w| {
        w.write_all(&npy_header(&[rows.end - rows.start, d]))?;
        for i in 0..store.shard_count() {
            let shard = store.shard_rows(i);
            let (lo, hi) = (rows.start.max(shard.start), rows.end.min(shard.end));
            if lo >= hi {
                continue;
            }
            match store.rows_of(lo..hi, &[hook]) {
                Ok(batch) => w.write_all(bytemuck::cast_slice(&le(batch.hooks[hook].clone())))?,
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("store read failed"));
                }
            }
        }
        Ok(())
    })
    .map_err(|e| failure.take().unwrap_or_else(|| StoreError::io(out, e)))
}

fn export_safetensors(store: &Store, hook: &str, rows: Range<u64>, out: &Path) -> Result<()> {
    let batch = store.rows_of(rows.clone(), &[hook])?;
    let n = batch.rows();
    let acts = le(batch.hooks[hook].clone());
    let ids = [
        ("token_ids", le_u32(batch.token_ids)),
        ("doc_ids", le_u32(batch.doc_ids)),
        ("positions", le_u32(batch.positions)),
    ];
    fn view<'a>(
        out: &Path,
        dtype: StDtype,
        shape: Vec<usize>,
        data: &'a [u8],
    ) -> Result<TensorView<'a>> {
        TensorView::new(dtype, shape, data).map_err(|e| StoreError::Export {
            path: out.into(),
            reason: e.to_string(),
        })
    }
    let mut tensors = vec![(
        hook.to_string(),
        view(
            out,
            StDtype::F32,
            vec![n, store.d_model()],
            bytemuck::cast_slice(&acts),
        )?,
    )];
    for (name, values) in &ids {
        tensors.push((
            name.to_string(),
            view(out, StDtype::U32, vec![n], bytemuck::cast_slice(values))?,
        ));
    }
    let m = store.manifest();
    let metadata = HashMap::from([
        ("model".to_string(), m.model.name.clone()),
        ("model_sha256".to_string(), m.model.sha256.clone()),
        ("hook".to_string(), hook.to_string()),
        ("rows".to_string(), format!("{}..{}", rows.start, rows.end)),
    ]);
    let bytes = safetensors::tensor::serialize(tensors, Some(metadata)).map_err(|e| {
        StoreError::Export {
            path: out.into(),
            reason: e.to_string(),
        }
    })?;
    monoscope_core::atomic::write(out, &bytes).map_err(|e| StoreError::io(out, e))
}

/// f32 values in little-endian byte order (a no-op on little-endian machines).
fn le(values: Vec<f32>) -> Vec<f32> {
    if cfg!(target_endian = "little") {
        values
    } else {
        values
            .into_iter()
            .map(|v| f32::from_bits(v.to_bits().to_le()))
            .collect()
    }
}

fn le_u32(values: Vec<u32>) -> Vec<u32> {
    values.into_iter().map(u32::to_le).collect()
}
