//! Atomic writes: an artifact either exists whole or not at all.
//!
//! Everything is written to a temporary sibling (same directory, so the rename stays on one
//! file system) and renamed into place only when complete. A crash or cancellation leaves at
//! worst a `*.tmp-*` sibling, never a truncated file under the real name, and
//! [`recover_dir`] (which every directory write runs first) puts an interrupted directory
//! swap back and removes the siblings of processes that no longer run.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary sibling used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    sibling(path, TMP)
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |file| file.write_all(bytes))
}

/// Creates `path` atomically, letting `fill` write its contents through a buffered writer.
/// The file and its directory entry are on disk when this returns.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    let parent = parent_of(path);
    fs::create_dir_all(parent)?;
    let tmp = temp_path(path);
    let result = (|| {
        let mut writer = io::BufWriter::new(fs::File::create(&tmp)?);
        fill(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Builds a directory atomically: `fill` populates a temporary directory, which then replaces
/// `path` (an existing directory of that name is removed only once the new one is complete).
pub fn write_dir(path: &Path, fill: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    write_dir_with(path, fill, |_, e| e)
}

/// [`write_dir`] for a `fill` with its own error type; `io_error` makes one from a failed
/// file-system call on a path.
///
/// A kill at any instant leaves `path` either as it was or as `fill` made it, once
/// [`recover_dir`] has run (every call of this function runs it first): the new directory
/// and every file in it are synced before the swap, and the swap is two renames, `path` to
/// an `.old-` sibling and the temporary to `path`, with the parent synced after each.
pub fn write_dir_with<E>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
    io_error: impl Fn(&Path, io::Error) -> E,
) -> Result<(), E> {
    let parent = parent_of(path);
    fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    recover_dir(path).map_err(|e| io_error(path, e))?;
    let tmp = temp_path(path);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
    let filled = fill(&tmp).and_then(|()| sync_tree(&tmp).map_err(|e| io_error(&tmp, e)));
    if let Err(e) = filled {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let swap = || -> io::Result<()> {
        if path.exists() {
            let old = sibling(path, OLD);
            fs::rename(path, &old)?;
            sync_dir(parent)?;
            crate::fault::reach(crate::fault::FaultPoint::DirSwap)?;
            fs::rename(&tmp, path)?;
            sync_dir(parent)?;
            let _ = fs::remove_dir_all(&old);
            Ok(())
        } else {
            fs::rename(&tmp, path)?;
            sync_dir(parent)
        }
    };
    swap().map_err(|e| {
        let _ = recover_dir(path);
        let _ = fs::remove_dir_all(&tmp);
        io_error(path, e)
    })
}

const TMP: &str = "tmp";
const OLD: &str = "old";

/// `.{name}.{tag}-{pid}` beside `path`.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}-{}", std::process::id()))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Puts back what an interrupted [`write_dir_with`] left: when `path` is missing but an
/// `.old-` sibling holds the previous directory (a kill between the two renames), that
/// directory returns to `path`; then the temporary and old siblings of processes that no
/// longer run are removed.
pub fn recover_dir(path: &Path) -> io::Result<()> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(());
    };
    let parent = parent_of(path);
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut stale = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(sibling) = Interrupted::parse(&file_name).filter(|s| s.name == name) else {
            continue;
        };
        if sibling.pid == std::process::id() || !process_runs(sibling.pid) {
            stale.push((sibling.tag, entry.path()));
        }
    }
    if !path.exists()
        && let Some((_, old)) = stale.iter().find(|(tag, _)| *tag == OLD)
    {
        fs::rename(old, path)?;
        sync_dir(parent)?;
    }
    for (_, leftover) in stale {
        if leftover.exists() {
            remove_any(&leftover)?;
        }
    }
    Ok(())
}

/// [`recover_dir`] for every name in `dir` (and, with `recursive`, in its subdirectories) that
/// an interrupted write left a temporary or old sibling of: what a killed process left in a
/// stage directory, cleaned before the stage runs again.
pub fn recover_tree(dir: &Path, recursive: bool) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut interrupted = std::collections::BTreeSet::new();
    let mut subdirs = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match Interrupted::parse(&name) {
            Some(sibling) => {
                interrupted.insert(sibling.name.to_string());
            }
            None if recursive && entry.file_type()?.is_dir() => subdirs.push(entry.path()),
            None => {}
        }
    }
    for name in interrupted {
        recover_dir(&dir.join(name))?;
    }
    for subdir in subdirs {
        recover_tree(&subdir, true)?;
    }
    Ok(())
}

/// A `.NAME.tmp-PID` or `.NAME.old-PID` entry: what an interrupted write of `NAME` left.
#[derive(Debug, PartialEq)]
struct Interrupted<'a> {
    name: &'a str,
    tag: &'static str,
    pid: u32,
}

impl<'a> Interrupted<'a> {
    fn parse(entry: &'a str) -> Option<Interrupted<'a>> {
        let (stem, pid) = entry.strip_prefix('.')?.rsplit_once('-')?;
        let pid = pid.parse().ok()?;
        let (name, tag) = [TMP, OLD]
            .into_iter()
            .find_map(|tag| Some((stem.strip_suffix(&format!(".{tag}"))?, tag)))?;
        (!name.is_empty()).then_some(Interrupted { name, tag, pid })
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Whether a process with this id runs (on Linux; elsewhere every process is taken to run,
/// so nothing another process may be writing is removed).
fn process_runs(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Syncs every file and directory under `dir`, and `dir` itself.
pub fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Syncs a directory, so that the names created or renamed in it survive a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    if cfg!(unix) {
        fs::File::open(dir)?.sync_all()
    } else {
        Ok(())
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

    /// Regression: a kill between the two renames of a swap left no directory under the
    /// real name (a training run then started again from step 0), and leftovers were never
    /// removed.
    #[test]
    fn an_interrupted_swap_is_put_back_and_leftovers_of_dead_processes_go() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("checkpoint");
        write_dir(&target, |d| fs::write(d.join("x"), b"old")).unwrap();
        // The state a kill between the renames leaves, by a process that no longer runs.
        let dead = u32::MAX - 1;
        let old = dir.path().join(format!(".checkpoint.old-{dead}"));
        let tmp = dir.path().join(format!(".checkpoint.tmp-{dead}"));
        fs::rename(&target, &old).unwrap();
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("x"), b"new").unwrap();
        let stray = dir.path().join(format!(".other.tmp-{dead}"));
        fs::write(&stray, b"not ours").unwrap();
        recover_dir(&target).unwrap();
        assert_eq!(fs::read(target.join("x")).unwrap(), b"old");
        assert!(!old.exists() && !tmp.exists());
        assert!(
            stray.exists(),
            "another name's leftovers are not this call's to remove"
        );
        // A leftover beside a complete directory is removed by the next write.
        fs::create_dir(&tmp).unwrap();
        write_dir(&target, |d| fs::write(d.join("x"), b"newer")).unwrap();
        assert!(!tmp.exists());
        assert_eq!(fs::read(target.join("x")).unwrap(), b"newer");
    }

    #[test]
    fn a_stage_directory_is_cleaned_of_what_killed_writes_left() {
        let dir = tempfile::tempdir().unwrap();
        let dead = u32::MAX - 1;
        let sae = dir.path().join("sae");
        write_dir(&sae, |d| fs::write(d.join("w"), b"1")).unwrap();
        fs::write(sae.join(format!(".cfg.json.tmp-{dead}")), b"half").unwrap();
        fs::write(
            dir.path().join(format!(".labels.jsonl.tmp-{dead}")),
            b"half",
        )
        .unwrap();
        fs::write(dir.path().join("labels.jsonl"), b"whole").unwrap();
        let checkpoint_old = dir.path().join(format!(".checkpoint.old-{dead}"));
        fs::create_dir(&checkpoint_old).unwrap();
        fs::write(checkpoint_old.join("state"), b"old").unwrap();
        recover_tree(dir.path(), true).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["checkpoint", "labels.jsonl", "sae"]);
        assert_eq!(
            fs::read(dir.path().join("checkpoint/state")).unwrap(),
            b"old"
        );
        assert_eq!(fs::read_dir(&sae).unwrap().count(), 1);
        let parsed = Interrupted::parse(".a.b.tmp-12");
        let expected = Interrupted {
            name: "a.b",
            tag: TMP,
            pid: 12,
        };
        assert_eq!(parsed, Some(expected));
        assert_eq!(Interrupted::parse(".a.tmp-x"), None);
        assert_eq!(Interrupted::parse("a.tmp-1"), None);
    }

    #[test]
    fn a_live_process_s_temporary_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sae");
        // Process 1 (init) always runs.
        let live = dir.path().join(".sae.tmp-1");
        fs::create_dir(&live).unwrap();
        recover_dir(&target).unwrap();
        assert!(live.exists());
    }
}
