//! Atomic writes: an artifact either exists whole or not at all.
//!
//! Everything is written to a temporary sibling (same directory, so the rename stays on one
//! file system) and renamed into place only when complete. A crash or cancellation leaves at
//! worst a `*.tmp-*` sibling, never a truncated file under the real name.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary sibling used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |file| file.write_all(bytes))
}

/// Creates `path` atomically, letting `fill` write its contents through a buffered writer.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut writer = io::BufWriter::new(fs::File::create(&tmp)?);
        fill(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Builds a directory atomically: `fill` populates a temporary directory, which then replaces
/// `path` (an existing directory of that name is removed only once the new one is complete).
pub fn write_dir(path: &Path, fill: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let tmp = temp_path(path);
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if path.exists() {
        let old = path.with_file_name(format!(
            ".{}.old-{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        fs::rename(path, &old)?;
        fs::rename(&tmp, path)?;
        let _ = fs::remove_dir_all(&old);
        Ok(())
    } else {
        fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write(&path, b"old").unwrap();
        let err = write_with(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn directory_is_replaced_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("store");
        write_dir(&target, |d| fs::write(d.join("x"), b"1")).unwrap();
        let err = write_dir(&target, |d| {
            fs::write(d.join("y"), b"2")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(err.is_err());
        assert!(target.join("x").exists());
        assert!(!target.join("y").exists());
        write_dir(&target, |d| fs::write(d.join("y"), b"2")).unwrap();
        assert!(!target.join("x").exists());
        assert!(target.join("y").exists());
    }
}
