//! Shard files: encoding on write, checked decoding on read. The byte layout is documented in
//! [`crate::format`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Result, StoreError};
use crate::manifest::{Manifest, ShardEntry};
use crate::planes;
use crate::spec::{Dtype, StoreSpec};

pub const MAGIC: &[u8; 8] = b"MONOSHRD";
pub const SHARD_VERSION: u32 = 1;
const FIXED: usize = 32;
const ENTRY: usize = 40;
/// The most a zstd frame can decode to per byte of it: a block decodes to at most 128 KiB and
/// takes at least 4 bytes (its 3-byte header and, run-length coded, one byte of content). A
/// decoded size claimed beyond this cannot be true, so nothing is allocated for it.
pub(crate) const ZSTD_MAX_EXPANSION: u64 = 128 * 1024 / 4;
/// The id columns, in file order, before the hook columns.
pub const ID_COLUMNS: [&str; 3] = ["token_ids", "doc_ids", "positions"];

/// The file name of the `index`-th shard of a store.
pub fn shard_file_name(index: usize) -> String {
    format!("shard-{index:06}.mss")
}

/// One column of a shard as its header describes it.
#[derive(Debug, Clone)]
struct Column {
    offset: u64,
    compressed: u64,
    uncompressed: u64,
    checksum: u64,
    elem_size: u32,
    name: String,
}

/// The rows of one shard, borrowed from the writer's buffers.
pub struct ShardRows<'a> {
    pub token_ids: &'a [u32],
    pub doc_ids: &'a [u32],
    pub positions: &'a [u32],
    /// One `[rows, d_model]` matrix per hook, in the spec's (sorted) hook order.
    pub hooks: Vec<&'a [f32]>,
}

/// Encodes a shard and writes it atomically to `dir/file`; returns its manifest entry.
pub fn write(dir: &Path, file: &str, spec: &StoreSpec, rows: &ShardRows<'_>) -> Result<ShardEntry> {
    let n = rows.token_ids.len();
    let id_planes = |v: &[u32]| {
        let mut out = vec![0u8; v.len() * 4];
        planes::split_u32(v, &mut out);
        out
    };
    let mut raw: Vec<(String, u32, Vec<u8>)> = Vec::with_capacity(3 + rows.hooks.len());
    for (name, ids) in ID_COLUMNS
        .iter()
        .zip([rows.token_ids, rows.doc_ids, rows.positions])
    {
        raw.push((name.to_string(), 4, id_planes(ids)));
    }
    let hook_planes: Vec<Vec<u8>> = rows
        .hooks
        .par_iter()
        .map(|m| planes::quantise(m, spec.dtype))
        .collect();
    for (name, planes) in spec.hooks.iter().zip(hook_planes) {
        raw.push((name.clone(), spec.dtype.size() as u32, planes));
    }
    let level = spec.zstd_level;
    let frames: Vec<Vec<u8>> = raw
        .par_iter()
        .enumerate()
        .map(|(i, (_, _, bytes))| compress(bytes, level, i >= ID_COLUMNS.len()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| StoreError::io(dir.join(file), e))?;

    let names_len: usize = raw.iter().map(|(name, _, _)| name.len()).sum();
    let header_len = FIXED + ENTRY * raw.len() + names_len;
    let mut header = Vec::with_capacity(header_len);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&SHARD_VERSION.to_le_bytes());
    header.extend_from_slice(&(header_len as u32).to_le_bytes());
    header.extend_from_slice(&(n as u64).to_le_bytes());
    header.extend_from_slice(&(spec.d_model as u32).to_le_bytes());
    header.push(spec.dtype.code());
    header.push(0);
    header.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    let mut offset = header_len as u64;
    for ((name, elem, bytes), frame) in raw.iter().zip(&frames) {
        for v in [
            offset,
            frame.len() as u64,
            bytes.len() as u64,
            xxh3_64(frame),
        ] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        header.extend_from_slice(&elem.to_le_bytes());
        header.extend_from_slice(&(name.len() as u32).to_le_bytes());
        offset += frame.len() as u64;
    }
    for (name, _, _) in &raw {
        header.extend_from_slice(name.as_bytes());
    }
    debug_assert_eq!(header.len(), header_len);

    let path = dir.join(file);
    monoscope_core::atomic::write_with(&path, |w| {
        use std::io::Write;
        w.write_all(&header)?;
        w.flush()?;
        monoscope_core::fault::reach(monoscope_core::fault::FaultPoint::ShardWrite)?;
        frames.iter().try_for_each(|f| w.write_all(f))
    })
    .map_err(|e| StoreError::io(&path, e))?;
    Ok(ShardEntry {
        file: file.to_string(),
        rows: n as u64,
        compressed_bytes: offset,
        uncompressed_bytes: raw.iter().map(|(_, _, b)| b.len() as u64).sum(),
        checksum: format!("{:016x}", xxh3_64(&header)),
    })
}

/// Compresses one column into one frame at `level`, with the match finder capped for
/// activations.
///
/// The planes of activations that carry information are the sign/exponent byte (a few bits of
/// entropy, nearly independent from value to value) and noisy mantissa bytes. In such bytes
/// short repeats occur by chance everywhere; zstd's default tables at levels 1–19 find and take
/// them, and each costs more bits (offset, length) than Huffman-coding its bytes as literals
/// would, and makes decoding several times slower. Capping matches at seven bytes or more and
/// the match tables at 2^10 entries leaves zstd little but its literal coder and real repeats.
/// On SmolLM2 residual streams at level 3 (and alike on the bench's synthetic ones) this gives
/// a better ratio for those columns (f32 2.11× → 2.29×, bf16 1.38× → 1.46×, f16 unchanged),
/// 3.5–5× faster compression and ~3.7× faster decoding; level 19 with its default tables
/// compresses no better. Id columns (runs, small counters) do profit from matches and keep
/// the level's defaults.
fn compress(bytes: &[u8], level: i32, activations: bool) -> std::io::Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let mut z = zstd::bulk::Compressor::new(level)?;
    if activations {
        z.set_parameter(CParameter::MinMatch(7))?;
        z.set_parameter(CParameter::HashLog(10))?;
        z.set_parameter(CParameter::ChainLog(10))?;
    }
    z.compress(bytes)
}

/// An open shard whose header has been checked against the manifest; columns are read,
/// checksummed and decoded on demand.
pub struct ShardReader {
    name: String,
    path: PathBuf,
    file: File,
    rows: usize,
    d_model: usize,
    dtype: Dtype,
    columns: Vec<Column>,
}

impl ShardReader {
    /// Opens `entry` of the store in `dir`, checking existence, size, header checksum and
    /// that the header agrees with the manifest (rows, d_model, dtype, columns, hook names).
    pub fn open(dir: &Path, entry: &ShardEntry, manifest: &Manifest) -> Result<ShardReader> {
        let name = entry.file.clone();
        let path = dir.join(&entry.file);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::ShardMissing { shard: name, path });
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let size = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        check_size(&name, entry, size)?;
        let unreadable = |reason: String| StoreError::ShardUnreadable {
            shard: name.clone(),
            part: "header".into(),
            reason,
        };
        let mut fixed = [0u8; FIXED];
        file.read_exact(&mut fixed)
            .map_err(|e| StoreError::io(&path, e))?;
        if &fixed[..8] != MAGIC {
            return Err(unreadable("not a monoscope shard (bad magic bytes)".into()));
        }
        let header_len = u32_at(&fixed, 12) as usize;
        let column_count = u16::from_le_bytes([fixed[30], fixed[31]]) as usize;
        if header_len < FIXED + ENTRY * column_count || header_len as u64 > size {
            return Err(unreadable(format!(
                "header length {header_len} is impossible"
            )));
        }
        let mut header = fixed.to_vec();
        header.resize(header_len, 0);
        file.read_exact(&mut header[FIXED..])
            .map_err(|e| StoreError::io(&path, e))?;
        let checksum = xxh3_64(&header);

        let reader = ShardReader {
            rows: u64_at(&header, 16) as usize,
            d_model: u32_at(&header, 24) as usize,
            dtype: Dtype::from_code(header[28]).unwrap_or(manifest.dtype),
            columns: parse_columns(&header, column_count),
            name,
            path,
            file,
        };
        let disagreement = reader.disagreement(&header, entry, manifest);
        let expected = entry.checksum_value().unwrap_or_default();
        // A header that disagrees with the manifest is most likely another store's shard (or
        // an edited manifest): say what disagrees. Otherwise a bad checksum is damage.
        if let Some(e) = disagreement {
            return Err(e);
        }
        if checksum != expected {
            return Err(StoreError::ShardCorrupt {
                shard: reader.name,
                part: "header".into(),
                expected,
                found: checksum,
            });
        }
        reader.check_layout(size)?;
        Ok(reader)
    }

    fn disagreement(&self, header: &[u8], entry: &ShardEntry, m: &Manifest) -> Option<StoreError> {
        let shard = &self.name;
        let version = u32_at(header, 8);
        if version != SHARD_VERSION {
            return Some(StoreError::mismatch(
                shard,
                "shard format version",
                SHARD_VERSION,
                version,
            ));
        }
        if self.rows as u64 != entry.rows {
            return Some(StoreError::mismatch(
                shard,
                "row count",
                entry.rows,
                self.rows,
            ));
        }
        if self.d_model != m.d_model {
            return Some(StoreError::mismatch(
                shard,
                "d_model",
                m.d_model,
                self.d_model,
            ));
        }
        if header[28] != m.dtype.code() {
            let found = Dtype::from_code(header[28])
                .map_or(format!("code {}", header[28]), |d| d.to_string());
            return Some(StoreError::mismatch(shard, "dtype", m.dtype, found));
        }
        let expected: Vec<&str> = ID_COLUMNS
            .iter()
            .copied()
            .chain(m.hooks.iter().map(String::as_str))
            .collect();
        let found: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        if expected != found {
            return Some(StoreError::mismatch(
                shard,
                "columns (ids and hooks)",
                expected.join(", "),
                found.join(", "),
            ));
        }
        None
    }

    /// Frames inside the file and sizes consistent with rows × width × element size.
    fn check_layout(&self, size: u64) -> Result<()> {
        for (i, c) in self.columns.iter().enumerate() {
            let (elem, width) = if i < ID_COLUMNS.len() {
                (4, 1)
            } else {
                (self.dtype.size() as u64, self.d_model as u64)
            };
            let want = (self.rows as u64)
                .checked_mul(width)
                .and_then(|n| n.checked_mul(elem));
            if c.elem_size as u64 != elem || Some(c.uncompressed) != want {
                return Err(StoreError::mismatch(
                    &self.name,
                    &format!("decoded size of column `{}`", c.name),
                    want.map_or_else(
                        || format!("{} rows × {width} × {elem} bytes (overflows)", self.rows),
                        |w| format!("{w} bytes"),
                    ),
                    format!("{} bytes of {}-byte values", c.uncompressed, c.elem_size),
                ));
            }
            if c.uncompressed > c.compressed.saturating_mul(ZSTD_MAX_EXPANSION) {
                return Err(StoreError::ShardUnreadable {
                    shard: self.name.clone(),
                    part: format!("column `{}`", c.name),
                    reason: format!(
                        "{} decoded bytes cannot come from a frame of {} bytes (zstd expands \
                         at most {ZSTD_MAX_EXPANSION}×)",
                        c.uncompressed, c.compressed
                    ),
                });
            }
            if c.offset
                .checked_add(c.compressed)
                .is_none_or(|end| end > size)
            {
                return Err(StoreError::ShardUnreadable {
                    shard: self.name.clone(),
                    part: format!("column `{}`", c.name),
                    reason: format!(
                        "frame {}+{} lies beyond the file's {size} bytes",
                        c.offset, c.compressed
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Column `index`: read, checksummed, decompressed to its byte planes.
    fn planes(&mut self, index: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.planes_into(index, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    /// Column `index` decompressed into `out` (its byte planes), with `frame` as the buffer for
    /// the compressed bytes; both are cleared first and reuse their capacity, so that a reader
    /// that recycles them touches no fresh memory (faulting in fresh buffers took about a tenth
    /// of the decoding threads' time).
    fn planes_into(&mut self, index: usize, frame: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
        let c = &self.columns[index];
        // Buffers are filled through their spare capacity, never zeroed first: at several
        // GB/s a memset of each buffer would be a visible share of the read time.
        frame.clear();
        frame.reserve(c.compressed as usize);
        self.file
            .seek(SeekFrom::Start(c.offset))
            .and_then(|_| (&mut self.file).take(c.compressed).read_to_end(frame))
            .map_err(|e| StoreError::io(&self.path, e))?;
        if frame.len() as u64 != c.compressed {
            return Err(StoreError::ShardTruncated {
                shard: self.name.clone(),
                expected: c.offset + c.compressed,
                found: c.offset + frame.len() as u64,
            });
        }
        let found = xxh3_64(frame);
        if found != c.checksum {
            return Err(StoreError::ShardCorrupt {
                shard: self.name.clone(),
                part: format!("column `{}`", c.name),
                expected: c.checksum,
                found,
            });
        }
        out.clear();
        out.reserve(c.uncompressed as usize);
        let unreadable = |reason: String| StoreError::ShardUnreadable {
            shard: self.name.clone(),
            part: format!("column `{}`", c.name),
            reason,
        };
        // The generic `Decompressor` method writes into the Vec's capacity (the free
        // function of the same name takes a slice, i.e. only the Vec's initialised length).
        // A recycled buffer may have more capacity than this column needs, so the size is
        // checked here rather than left to zstd's "destination too small".
        let written = zstd::bulk::Decompressor::new()
            .and_then(|mut z| z.decompress_to_buffer(frame.as_slice(), out))
            .map_err(|e| unreadable(format!("zstd: {e}")))?;
        if written as u64 != c.uncompressed {
            return Err(unreadable(format!(
                "decoded {written} bytes, expected {}",
                c.uncompressed
            )));
        }
        Ok(())
    }

    /// Id column `index` (0 token ids, 1 doc ids, 2 positions).
    pub fn ids(&mut self, index: usize) -> Result<Vec<u32>> {
        Ok(planes::join_u32(&self.planes(index)?))
    }

    /// The activations of hook `hook` (its index in the manifest's hooks), as f32.
    pub fn activations(&mut self, hook: usize) -> Result<Vec<f32>> {
        let planes = self.planes(ID_COLUMNS.len() + hook)?;
        Ok(planes::dequantise(&planes, self.dtype))
    }

    /// The activations of hook `hook` as byte planes of the store's dtype, into `out` (see
    /// [`ShardReader::planes_into`] for the buffers).
    pub fn activation_planes_into(
        &mut self,
        hook: usize,
        frame: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.planes_into(ID_COLUMNS.len() + hook, frame, out)
    }

    /// Reads and decodes every column, discarding the result: the check `verify` runs.
    pub fn check_all(&mut self) -> Result<()> {
        for i in 0..ID_COLUMNS.len() {
            self.ids(i)?;
        }
        for h in 0..self.columns.len() - ID_COLUMNS.len() {
            self.activations(h)?;
        }
        Ok(())
    }
}

fn check_size(shard: &str, entry: &ShardEntry, size: u64) -> Result<()> {
    if size < entry.compressed_bytes {
        return Err(StoreError::ShardTruncated {
            shard: shard.to_string(),
            expected: entry.compressed_bytes,
            found: size,
        });
    }
    if size > entry.compressed_bytes {
        return Err(StoreError::mismatch(
            shard,
            "file size",
            entry.compressed_bytes,
            size,
        ));
    }
    Ok(())
}

/// The column table, parsed without trusting it (lengths are clamped to the header).
fn parse_columns(header: &[u8], count: usize) -> Vec<Column> {
    let mut names_at = FIXED + ENTRY * count;
    (0..count)
        .map(|i| {
            let e = FIXED + ENTRY * i;
            let name_len = u32_at(header, e + 36) as usize;
            let end = names_at.saturating_add(name_len).min(header.len());
            let name = String::from_utf8_lossy(&header[names_at.min(end)..end]).into_owned();
            names_at = end;
            Column {
                offset: u64_at(header, e),
                compressed: u64_at(header, e + 8),
                uncompressed: u64_at(header, e + 16),
                checksum: u64_at(header, e + 24),
                elem_size: u32_at(header, e + 32),
                name,
            }
        })
        .collect()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
