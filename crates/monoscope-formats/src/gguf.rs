//! GGUF (v2/v3) reader: header, metadata, tensor directory, and tensor data through a memory map.
//!
//! Layout (all little endian): magic `GGUF`, version u32, tensor count u64, metadata count u64,
//! the metadata key/values, the tensor infos (name, dims innermost-first, type, offset), padding
//! to `general.alignment` (default 32), then the tensor data. Everything is validated at
//! [`GgufFile::open`], so later accessors only fail on a missing name.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;

use crate::error::{FormatError, Result};

use crate::model::{HostData, HostTensor};
use crate::quant::{GgmlType, dequantize};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;

/// One metadata value. Type ids as in the GGUF spec (`GGUF_TYPE_*`).
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetadataValue {
    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::String(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }

    /// Any integer type that is non-negative, widened.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric type, widened to f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// GGUF dims, innermost first (`ne[0]` is the row length).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Row-major shape, outermost first: GGUF `ne = [d_model, vocab]` is `[vocab, d_model]`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of data; validated at open, so always a whole number of blocks.
    pub fn byte_len(&self) -> u64 {
        self.ggml_type.byte_len(self.n_elements()).unwrap_or(0)
    }
}

/// The fewest bytes a metadata value of type `ty` takes in the file (a string: its length; an
/// array: its element type and length); `None` for an unknown type.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 4 + 8,
        _ => return None,
    })
}

/// An open, validated GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<GgufTensorInfo>,
    index: HashMap<String, usize>,
    data_offset: u64,
}

/// Whether `path` starts with the GGUF magic.
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == GGUF_MAGIC
}

impl GgufFile {
    /// Map and parse `path`, checking every tensor's type, dims, alignment and extent.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us by another process
        // would fault, which is the same contract every mmap-based model loader accepts.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        let mut r = Reader {
            buf: &mmap,
            pos: 0,
            path,
        };
        let magic = r.bytes(4, "magic")?;
        if magic != GGUF_MAGIC {
            return Err(FormatError::NotAModel {
                path: path.to_path_buf(),
                detail: format!(
                    "file does not start with the GGUF magic (found {:02x?})",
                    magic
                ),
            });
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            let hint = if version.swap_bytes() <= 3 {
                " (big-endian GGUF is not supported)"
            } else {
                ""
            };
            return Err(r.err(format!("unsupported GGUF version {version}{hint}")));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(&format!("key of metadata entry {i}"))?;
            let ty = r.u32(&format!("type of `{key}`"))?;
            let value = r.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(FormatError::BadValue {
                        path: path.to_path_buf(),
                        key: "general.alignment".into(),
                        detail: format!("{v:?} is not a power of two"),
                    });
                }
            },
        };
        let mut tensors = Vec::new();
        for i in 0..n_tensors {
            tensors.push(r.tensor_info(i)?);
        }
        let data_offset = r.pos.div_ceil(alignment) * alignment;
        let file_len = mmap.len() as u64;
        let mut index = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if t.offset % alignment != 0 {
                return Err(r.err(format!(
                    "tensor `{}` offset {} is not a multiple of the alignment {alignment}",
                    t.name, t.offset
                )));
            }
            let expected = t.byte_len();
            let start = data_offset.saturating_add(t.offset);
            if start.saturating_add(expected) > file_len {
                return Err(FormatError::Truncated {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    expected,
                    actual: file_len.saturating_sub(start),
                });
            }
            if index.insert(t.name.clone(), i).is_some() {
                return Err(r.err(format!("tensor `{}` appears twice", t.name)));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            version,
            metadata,
            tensors,
            index,
            data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetadataValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Raw bytes of a tensor (still quantised).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self
            .tensor_info(name)
            .ok_or_else(|| FormatError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?;
        // In range: checked against the file length at open.
        let start = (self.data_offset + t.offset) as usize;
        Ok(&self.mmap[start..start + t.byte_len() as usize])
    }

    /// A tensor dequantised to f32, with its row-major shape.
    pub fn tensor_f32(&self, name: &str) -> Result<HostTensor> {
        let bytes = self.tensor_bytes(name)?;
        let t = &self.tensors[self.index[name]];
        let mut data = vec![0f32; t.n_elements() as usize];
        dequantize(t.ggml_type, bytes, &mut data);
        Ok(HostTensor::f32(t.shape(), data))
    }

    /// A tensor as the model keeps it: F32, F16 and BF16 in their own type, block-quantised
    /// types as their blocks (dequantised where the model needs the values).
    pub fn tensor_host(&self, name: &str) -> Result<HostTensor> {
        let t = &self.tensors[*self
            .index
            .get(name)
            .ok_or_else(|| FormatError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?];
        let pairs = || self.tensor_bytes(name).map(|b| b.chunks_exact(2));
        let data = match t.ggml_type {
            GgmlType::F16 => {
                HostData::F16(pairs()?.map(|c| f16::from_le_bytes([c[0], c[1]])).collect())
            }
            GgmlType::BF16 => HostData::Bf16(
                pairs()?
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            GgmlType::F32 => return self.tensor_f32(name),
            ty => HostData::Quantized {
                ty,
                len: t.n_elements() as usize,
                bytes: self.tensor_bytes(name)?.to_vec(),
            },
        };
        Ok(HostTensor {
            shape: t.shape(),
            data,
        })
    }

    /// A required metadata value.
    pub fn require(&self, key: &str) -> Result<&MetadataValue> {
        self.get(key).ok_or_else(|| FormatError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    pub(crate) fn bad_value(&self, key: &str, detail: impl Into<String>) -> FormatError {
        FormatError::BadValue {
            path: self.path.clone(),
            key: key.to_string(),
            detail: detail.into(),
        }
    }

    /// A non-negative integer under `key`, if present; error if present with another type.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    self.bad_value(key, format!("expected an unsigned integer, found {v:?}"))
                })
            })
            .transpose()
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.bad_value(key, format!("expected a number, found {v:?}")))
            })
            .transpose()
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.bad_value(key, format!("expected a boolean, found {v:?}")))
            })
            .transpose()
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.bad_value(key, format!("expected a string, found {v:?}")))
            })
            .transpose()
    }

    pub fn req_u64(&self, key: &str) -> Result<u64> {
        self.require(key)?;
        self.opt_u64(key).map(|v| v.unwrap_or_default())
    }
}

/// A bounds-checked little-endian cursor over the mapped file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: u64,
    path: &'a Path,
}

impl Reader<'_> {
    fn err(&self, detail: String) -> FormatError {
        FormatError::Gguf {
            path: self.path.to_path_buf(),
            detail,
        }
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len() as u64);
        let Some(end) = end else {
            return Err(self.err(format!(
                "unexpected end of file reading {what} at byte {} (needs {n} bytes, file has {})",
                self.pos,
                self.buf.len()
            )));
        };
        let s = &self.buf[self.pos as usize..end as usize];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let b = self.bytes(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(format!("{what} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetadataValue> {
        use MetadataValue as V;
        Ok(match ty {
            0 => V::U8(self.array::<1>(key)?[0]),
            1 => V::I8(self.array::<1>(key)?[0] as i8),
            2 => V::U16(u16::from_le_bytes(self.array(key)?)),
            3 => V::I16(i16::from_le_bytes(self.array(key)?)),
            4 => V::U32(self.u32(key)?),
            5 => V::I32(i32::from_le_bytes(self.array(key)?)),
            6 => V::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => return Err(self.err(format!("`{key}`: bool byte {b} is neither 0 nor 1"))),
            },
            8 => V::String(self.string(&format!("value of `{key}`"))?),
            9 => {
                if depth > 8 {
                    return Err(self.err(format!("`{key}`: arrays nested too deeply")));
                }
                let elem = self.u32(key)?;
                let len = self.u64(key)?;
                // The file must hold every element: a length it cannot back is refused before
                // anything is allocated for it.
                let min = min_value_bytes(elem).ok_or_else(|| {
                    self.err(format!("`{key}`: unknown array element type {elem}"))
                })?;
                self.count_fits(len, min, &format!("`{key}`"), "array elements")?;
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                V::Array(items)
            }
            10 => V::U64(self.u64(key)?),
            11 => V::I64(i64::from_le_bytes(self.array(key)?)),
            12 => V::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(self.err(format!("`{key}`: unknown metadata value type {t}"))),
        })
    }

    /// Refuses a `count` of items of at least `min_bytes` each that the rest of the file cannot
    /// hold, so that no count read from the file sizes an allocation or a loop beyond it.
    fn count_fits(&self, count: u64, min_bytes: u64, field: &str, items: &str) -> Result<()> {
        let left = (self.buf.len() as u64).saturating_sub(self.pos);
        if count.checked_mul(min_bytes).is_none_or(|need| need > left) {
            return Err(self.err(format!(
                "{field} {count} is impossible: {count} {items} of at least {min_bytes} bytes \
                 each cannot fit in the {left} bytes left at byte {}",
                self.pos
            )));
        }
        Ok(())
    }

    fn tensor_info(&mut self, i: u64) -> Result<GgufTensorInfo> {
        let name = self.string(&format!("name of tensor {i}"))?;
        let n_dims = self.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.err(format!("tensor `{name}` has {n_dims} dims (1..=4 allowed)")));
        }
        let dims = (0..n_dims)
            .map(|_| self.u64(&name))
            .collect::<Result<Vec<_>>>()?;
        let type_id = self.u32(&name)?;
        let offset = self.u64(&name)?;
        let ggml_type =
            GgmlType::from_id(type_id).ok_or_else(|| FormatError::UnknownTensorType {
                path: self.path.to_path_buf(),
                tensor: name.clone(),
                type_id,
            })?;
        let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let bl = ggml_type.block_len() as u64;
        match n {
            None => return Err(self.err(format!("tensor `{name}` dims {dims:?} overflow"))),
            Some(_) if dims[0] % bl != 0 => {
                return Err(self.err(format!(
                    "tensor `{name}` row length {} is not a multiple of the {} block size {bl}",
                    dims[0],
                    ggml_type.name()
                )));
            }
            // Checked here so that every later size (bytes to map, values to dequantise into)
            // is known to fit; the file length check at open then bounds them all.
            Some(n) if ggml_type.byte_len(n).is_none() => {
                return Err(self.err(format!(
                    "tensor `{name}` dims {dims:?}: {n} {} values overflow a byte count",
                    ggml_type.name()
                )));
            }
            Some(_) => {}
        }
        Ok(GgufTensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        })
    }
}
