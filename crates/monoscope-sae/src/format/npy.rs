//! NumPy `.npy` arrays and `.npz` archives (a zip of `.npy` members, stored or deflated), as
//! far as SAE weights need: little-endian `f4`, `f8`, `f2` (and big-endian `f4`) arrays in C
//! order, read to f32.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::SaeError;

/// One array: its shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn bad(path: &Path, member: &str, reason: impl Into<String>) -> SaeError {
    SaeError::Unsupported {
        path: path.to_path_buf(),
        key: member.to_string(),
        value: "npy array".into(),
        reason: reason.into(),
    }
}

/// The most deflate can expand, as zlib documents it (longest matches in the fewest bits): a
/// member claiming more than this per compressed byte is lying about its size.
const DEFLATE_MAX_EXPANSION: u64 = 1032;

/// Every member of the `.npz` archive at `path`, by name without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, NpyArray>, SaeError> {
    let file = std::fs::File::open(path).map_err(SaeError::io(path))?;
    let file_len = file.metadata().map_err(SaeError::io(path))?.len();
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| bad(path, "(archive)", format!("not a zip: {e}")))?;
    let mut out = BTreeMap::new();
    for i in 0..archive.len() {
        let mut member = archive
            .by_index(i)
            .map_err(|e| bad(path, "(archive)", format!("member {i}: {e}")))?;
        let name = member.name().to_string();
        let Some(key) = name.strip_suffix(".npy") else {
            continue;
        };
        // The sizes come from the archive's directory: both are checked against what the file
        // can hold before the claimed size reserves anything.
        let (size, packed) = (member.size(), member.compressed_size());
        if packed > file_len || size > packed.saturating_mul(DEFLATE_MAX_EXPANSION) {
            return Err(bad(
                path,
                &name,
                format!(
                    "claims {size} bytes from {packed} compressed bytes, which a file of \
                     {file_len} bytes cannot hold"
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        member
            .read_to_end(&mut bytes)
            .map_err(|e| bad(path, &name, format!("cannot read: {e}")))?;
        out.insert(
            key.to_string(),
            parse_npy(&bytes).map_err(|r| bad(path, &name, r))?,
        );
    }
    Ok(out)
}

/// Parses one `.npy` file's bytes.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("no NUMPY magic".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unknown format version {v}")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("header runs past the end of the file")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if dict_value(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let shape = parse_shape(shape_text)?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or("shape overflows")?;
    let body = &bytes[end..];
    let (width, read): (usize, fn(&[u8]) -> f32) = match descr {
        "<f4" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ">f4" => (4, |b| f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        "<f8" => (8, |b| {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
        }),
        "<f2" => (2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        other => {
            return Err(format!(
                "dtype {other:?} is not a float type this reader knows"
            ));
        }
    };
    let need = count.checked_mul(width).ok_or("size overflows")?;
    if body.len() < need {
        return Err(format!(
            "shape {shape:?} needs {need} bytes of data, the file holds {}",
            body.len()
        ));
    }
    let data = body[..need].chunks_exact(width).map(read).collect();
    Ok(NpyArray { shape, data })
}

/// The text of `key`'s value in the header's Python dict literal, up to the next top-level
/// comma (a tuple's commas are inside its parentheses).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("shape {text:?} is not a tuple"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("shape entry {s:?} is not a size"))
        })
        .collect()
}

/// A little-endian f32 `.npy` file as `numpy.save` writes it (version 1, header padded to a
/// multiple of 64 bytes): for tests and fixtures in the layouts published SAEs use.
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// Writes an `.npz` archive (stored members, as `numpy.savez`) of f32 arrays `(name, shape,
/// data)`.
pub fn write_npz(path: &Path, arrays: &[(&str, &[usize], &[f32])]) -> Result<(), SaeError> {
    use std::io::Write;
    let file = std::fs::File::create(path).map_err(SaeError::io(path))?;
    let mut zip = zip::ZipWriter::new(file);
    let options =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let fail = |e: String| bad(path, "(archive)", e);
    for (name, shape, data) in arrays {
        zip.start_file(format!("{name}.npy"), options)
            .map_err(|e| fail(e.to_string()))?;
        zip.write_all(&npy_bytes(shape, data))
            .map_err(SaeError::io(path))?;
    }
    zip.finish().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_what_numpy_writes() {
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        let a = parse_npy(&npy_bytes(&[2, 3], &data)).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, data);
        let v = parse_npy(&npy_bytes(&[4], &data[..4])).unwrap();
        assert_eq!(v.shape, vec![4]);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let mut b = npy_bytes(&[2, 3], &[0.0; 6]);
        assert!(
            parse_npy(&b[..b.len() - 4])
                .unwrap_err()
                .contains("needs 24 bytes")
        );
        let mut ints = b.clone();
        let at = ints.windows(3).position(|w| w == b"<f4").unwrap();
        ints[at + 1] = b'i';
        assert!(parse_npy(&ints).unwrap_err().contains("\"<i4\""));
        b[0] = b'x';
        assert!(parse_npy(&b).unwrap_err().contains("magic"));
    }

    proptest! {
        #[test]
        fn any_shape_round_trips(shape in proptest::collection::vec(1usize..5, 0..4)) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let a = parse_npy(&npy_bytes(&shape, &data)).unwrap();
            prop_assert_eq!(a.shape, shape);
            prop_assert_eq!(a.data, data);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut with_magic = b"\x93NUMPY\x01\x00".to_vec();
            with_magic.extend(&bytes);
            let _ = parse_npy(&bytes);
            let _ = parse_npy(&with_magic);
        }
    }
}
