//! Reading and writing the JSON and JSON-lines files of a stage. Reads name the file and line
//! of anything malformed; writes are atomic ([`crate::atomic`]).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic;
use crate::error::{ArtifactError, Result};

/// Reads a JSON file.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(ArtifactError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| parse_error(path, e.line(), &e))
}

/// Reads a JSON file when it exists.
pub fn read_optional<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if path.is_file() {
        read(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Writes a value as pretty JSON, atomically.
pub fn write_pretty<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| serialise_error(path, &e))?;
    atomic::write(path, &bytes).map_err(ArtifactError::io(path))
}

/// Writes a value as JSON on one line, atomically (for files too large to indent).
pub fn write_compact<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| serialise_error(path, &e))?;
    atomic::write(path, &bytes).map_err(ArtifactError::io(path))
}

/// Calls `each` with every non-empty line of a JSON-lines file, parsed, in order.
pub fn for_each_line<T: DeserializeOwned>(
    path: &Path,
    mut each: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    for value in LineReader::open(path)? {
        each(value?)?;
    }
    Ok(())
}

/// A JSON-lines file read one value at a time, blank lines skipped.
pub struct LineReader<T> {
    path: std::path::PathBuf,
    lines: std::io::Lines<BufReader<std::fs::File>>,
    line: usize,
    _value: std::marker::PhantomData<T>,
}

impl<T: DeserializeOwned> LineReader<T> {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(ArtifactError::io(path))?;
        Ok(LineReader {
            path: path.to_path_buf(),
            lines: BufReader::new(file).lines(),
            line: 0,
            _value: std::marker::PhantomData,
        })
    }

    /// The line number (from 1) of the value last returned.
    pub fn line(&self) -> usize {
        self.line
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl<T> std::fmt::Debug for LineReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Iterator for LineReader<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            let line = self.lines.next()?;
            self.line += 1;
            let line = match line {
                Ok(line) => line,
                Err(e) => return Some(Err(ArtifactError::io(&self.path)(e))),
            };
            if !line.trim().is_empty() {
                return Some(parse_line(&self.path, self.line, &line));
            }
        }
    }
}

/// Reads a JSON-lines file into values.
pub fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for_each_line(path, |value| {
        out.push(value);
        Ok(())
    })?;
    Ok(out)
}

/// The value on line `index` (from 0) of a JSON-lines file, without parsing the lines before
/// it; `None` past the end.
pub fn read_line_at<T: DeserializeOwned>(path: &Path, index: usize) -> Result<Option<T>> {
    let file = std::fs::File::open(path).map_err(ArtifactError::io(path))?;
    match BufReader::new(file).lines().nth(index) {
        None => Ok(None),
        Some(line) => {
            let line = line.map_err(ArtifactError::io(path))?;
            parse_line(path, index + 1, &line).map(Some)
        }
    }
}

/// Number of lines of a text file.
pub fn count_lines(path: &Path) -> Result<usize> {
    let file = std::fs::File::open(path).map_err(ArtifactError::io(path))?;
    let mut lines = 0;
    for line in BufReader::new(file).lines() {
        line.map_err(ArtifactError::io(path))?;
        lines += 1;
    }
    Ok(lines)
}

/// Writes values as JSON lines, atomically.
pub fn write_lines<'a, T: Serialize + 'a>(
    path: &Path,
    values: impl IntoIterator<Item = &'a T>,
) -> Result<()> {
    write_lines_past(path, values, None)
}

/// [`write_lines`], reaching fault point `point` (if any) once the first line is written.
pub(crate) fn write_lines_past<'a, T: Serialize + 'a>(
    path: &Path,
    values: impl IntoIterator<Item = &'a T>,
    point: Option<crate::fault::FaultPoint>,
) -> Result<()> {
    atomic::write_with(path, |w| {
        for (i, value) in values.into_iter().enumerate() {
            serde_json::to_writer(&mut *w, value).map_err(std::io::Error::other)?;
            w.write_all(b"\n")?;
            if let (0, Some(point)) = (i, point) {
                w.flush()?;
                crate::fault::reach(point)?;
            }
        }
        Ok(())
    })
    .map_err(ArtifactError::io(path))
}

fn parse_line<T: DeserializeOwned>(path: &Path, line: usize, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| parse_error(path, line, &e))
}

fn parse_error(path: &Path, line: usize, e: &serde_json::Error) -> ArtifactError {
    ArtifactError::Parse {
        path: path.to_path_buf(),
        line,
        message: e.to_string(),
    }
}

fn serialise_error(path: &Path, e: &serde_json::Error) -> ArtifactError {
    ArtifactError::invalid(path, format!("cannot serialise: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        write_lines(&path, &[1u32, 2, 3]).unwrap();
        assert_eq!(read_lines::<u32>(&path).unwrap(), [1, 2, 3]);
        assert_eq!(read_line_at::<u32>(&path, 2).unwrap(), Some(3));
        assert_eq!(read_line_at::<u32>(&path, 3).unwrap(), None);
        assert_eq!(count_lines(&path).unwrap(), 3);
        std::fs::write(&path, "1\n\n{\n").unwrap();
        let err = read_lines::<u32>(&path).unwrap_err().to_string();
        assert!(err.contains("x.jsonl: line 3"), "{err}");
    }

    #[test]
    fn a_missing_optional_file_is_none_and_a_bad_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        assert!(read_optional::<u32>(&path).unwrap().is_none());
        std::fs::write(&path, "\"x\"").unwrap();
        let err = read_optional::<u32>(&path).unwrap_err().to_string();
        assert!(err.contains("a.json: line 1"), "{err}");
    }
}
