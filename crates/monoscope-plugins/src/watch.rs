//! Which files an isolated plugin stage changed outside its own stage directory: detected by
//! comparing listings taken before and after its process ran, not prevented.
//!
//! Watched (every entry's kind, and for non-directories their size and modification time):
//! - each input artifact of the stage, wherever it lies: it was handed over complete and must
//!   not change;
//! - the directory of every other stage that was complete when the child started and still is
//!   when it ended (its completion marker unchanged), or that vanished: nothing else in this
//!   run writes there;
//! - the run directory's own entries, except the host's bookkeeping (`run.json`,
//!   `resolved.toml`, the run lock and their temporary siblings) and new directories named
//!   after a stage of the run (the executor creates those).
//!
//! Not watched: the stage's own directory; directories of stages that are not complete
//! (they may be running beside this one, and their changes are theirs); anything outside the
//! run directory but the inputs. A write that keeps a file's size and modification time, and a
//! completed stage's directory whose marker the child removed as well, look like no change and
//! like that stage being rerun.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use monoscope_artifacts::atomic;
use monoscope_artifacts::run::{LOCK_FILE, MARKER_FILE, RESOLVED_FILE, RUN_FILE};

/// At most this many changes are named in a message; the rest are counted.
const LISTED: usize = 10;

/// What to watch around one stage run.
#[derive(Debug)]
pub(crate) struct Watch {
    run_dir: PathBuf,
    stage_dir: PathBuf,
    inputs: Vec<PathBuf>,
    /// The host's own files at the top of the run directory.
    bookkeeping: BTreeSet<OsString>,
    /// Every stage id of the run, from its `resolved.toml`.
    stage_ids: BTreeSet<OsString>,
}

/// A listing: path to what it was.
#[derive(Debug, Default)]
pub(crate) struct Snapshot(BTreeMap<PathBuf, Entry>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Its contents are listed entry by entry.
    Dir,
    File {
        len: u64,
        modified: Option<SystemTime>,
    },
    Link {
        target: Option<PathBuf>,
    },
    Other,
}

impl Watch {
    pub(crate) fn new(
        run_dir: &Path,
        stage_dir: &Path,
        inputs: impl IntoIterator<Item = PathBuf>,
    ) -> Watch {
        let bookkeeping = [RUN_FILE, RESOLVED_FILE, LOCK_FILE]
            .into_iter()
            .flat_map(|name| {
                let path = run_dir.join(name);
                [path.clone(), atomic::temp_path(&path)]
            })
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect();
        let stage_ids = std::fs::read_to_string(run_dir.join(RESOLVED_FILE))
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .map(|table| table.keys().map(OsString::from).collect())
            .unwrap_or_default();
        Watch {
            run_dir: run_dir.to_path_buf(),
            stage_dir: stage_dir.to_path_buf(),
            inputs: inputs.into_iter().collect(),
            bookkeeping,
            stage_ids,
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        if let Ok(entries) = std::fs::read_dir(&self.run_dir) {
            for entry in entries.flatten() {
                if !self.bookkeeping.contains(&entry.file_name()) {
                    self.list(&entry.path(), &mut snapshot);
                }
            }
        }
        for input in &self.inputs {
            self.list(input, &mut snapshot);
        }
        snapshot
    }

    fn list(&self, path: &Path, snapshot: &mut Snapshot) {
        if path == self.stage_dir || snapshot.0.contains_key(path) {
            return;
        }
        let Ok(metadata) = std::fs::symlink_metadata(path) else {
            return;
        };
        let kind = metadata.file_type();
        let entry = if kind.is_dir() {
            Entry::Dir
        } else if kind.is_file() {
            Entry::File {
                len: metadata.len(),
                modified: metadata.modified().ok(),
            }
        } else if kind.is_symlink() {
            Entry::Link {
                target: std::fs::read_link(path).ok(),
            }
        } else {
            Entry::Other
        };
        snapshot.0.insert(path.to_path_buf(), entry.clone());
        if entry == Entry::Dir
            && let Ok(entries) = std::fs::read_dir(path)
        {
            for child in entries.flatten() {
                self.list(&child.path(), snapshot);
            }
        }
    }

    /// What changed between two snapshots of this watch, in words, at most [`LISTED`] named.
    pub(crate) fn changes(&self, before: &Snapshot, after: &Snapshot) -> Vec<String> {
        let paths: BTreeSet<&PathBuf> = before.0.keys().chain(after.0.keys()).collect();
        let mut changes = Vec::new();
        for path in paths {
            let (was, is) = (before.0.get(path), after.0.get(path));
            let what = match (was, is) {
                (Some(a), Some(b)) if a == b => continue,
                (None, Some(_)) => "created",
                (Some(_), None) => "removed",
                _ => "modified",
            };
            if self.is_watched(path, what == "created", before, after) {
                changes.push(format!("{what} {}", self.show(path)));
            }
        }
        if changes.len() > LISTED {
            let more = changes.len() - LISTED;
            changes.truncate(LISTED);
            changes.push(format!("and {more} more"));
        }
        changes
    }

    fn is_watched(&self, path: &Path, created: bool, before: &Snapshot, after: &Snapshot) -> bool {
        if self.inputs.iter().any(|input| path.starts_with(input)) {
            return true;
        }
        let Ok(inside) = path.strip_prefix(&self.run_dir) else {
            return false;
        };
        let mut parts = inside.components();
        let Some(top) = parts.next() else {
            return false;
        };
        let top_path = self.run_dir.join(top);
        if parts.next().is_none() {
            // An entry of the run directory itself.
            let is_dir = matches!(before.0.get(path).or(after.0.get(path)), Some(Entry::Dir));
            if !is_dir {
                return true;
            }
            if created {
                return !self.stage_ids.contains(top.as_os_str());
            }
            return settled(&top_path, before, after);
        }
        settled(&top_path, before, after)
    }

    fn show(&self, path: &Path) -> String {
        match path.strip_prefix(&self.run_dir) {
            Ok(inside) => format!("{} (in the run directory)", inside.display()),
            Err(_) => path.display().to_string(),
        }
    }
}

/// Whether `dir` holds a stage that was complete throughout (or was removed whole).
fn settled(dir: &Path, before: &Snapshot, after: &Snapshot) -> bool {
    let marker = dir.join(MARKER_FILE);
    match (before.0.get(&marker), after.0.get(&marker)) {
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => !after.0.contains_key(dir),
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Run {
        _dir: tempfile::TempDir,
        run_dir: PathBuf,
    }

    /// A run directory with a completed stage `done`, a stage `busy` still running, this
    /// stage `me`, and an input artifact outside the run directory.
    fn run() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        for stage in ["done", "busy", "me"] {
            std::fs::create_dir_all(run_dir.join(stage)).unwrap();
        }
        std::fs::write(run_dir.join("done").join("out.txt"), "kept").unwrap();
        std::fs::write(run_dir.join("done").join(MARKER_FILE), "{}").unwrap();
        std::fs::write(run_dir.join(RUN_FILE), "{}").unwrap();
        std::fs::write(
            run_dir.join(RESOLVED_FILE),
            "[pipeline]\nname = \"p\"\n[done]\nkind = \"a\"\n[busy]\nkind = \"a\"\n[me]\nkind = \"a\"\n[later]\nkind = \"a\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("input.txt"), "in").unwrap();
        Run { _dir: dir, run_dir }
    }

    fn watch(run: &Run) -> Watch {
        let input = run.run_dir.parent().unwrap().join("input.txt");
        Watch::new(&run.run_dir, &run.run_dir.join("me"), [input])
    }

    fn changes_after(run: &Run, change: impl FnOnce(&Path)) -> Vec<String> {
        let watch = watch(run);
        let before = watch.snapshot();
        change(&run.run_dir);
        let after = watch.snapshot();
        watch.changes(&before, &after)
    }

    #[test]
    fn what_a_stage_and_its_neighbours_do_is_not_a_change() {
        let run = run();
        let changes = changes_after(&run, |r| {
            std::fs::write(r.join("me/out.txt"), "mine").unwrap();
            std::fs::write(r.join("busy/part.txt"), "theirs").unwrap();
            std::fs::create_dir(r.join("later")).unwrap();
            std::fs::write(r.join(RUN_FILE), "{\"status\": \"failed\"}").unwrap();
            // A stage rerun in this run: the executor removes its marker first.
            std::fs::remove_file(r.join("done").join(MARKER_FILE)).unwrap();
            std::fs::write(r.join("done/out.txt"), "rewritten").unwrap();
        });
        assert_eq!(changes, Vec::<String>::new());
    }

    #[test]
    fn writes_to_a_completed_stage_the_run_directory_and_inputs_are_changes() {
        let run = run();
        let changes = changes_after(&run, |r| {
            std::fs::write(r.join("done/out.txt"), "overwritten").unwrap();
            std::fs::write(r.join("done/new.txt"), "x").unwrap();
            std::fs::write(r.join("escaped.txt"), "x").unwrap();
            std::fs::create_dir(r.join("elsewhere")).unwrap();
            std::fs::write(r.parent().unwrap().join("input.txt"), "changed").unwrap();
        });
        let input = run.run_dir.parent().unwrap().join("input.txt");
        assert_eq!(
            changes,
            vec![
                format!("modified {}", input.display()),
                "created done/new.txt (in the run directory)".to_string(),
                "modified done/out.txt (in the run directory)".to_string(),
                "created elsewhere (in the run directory)".to_string(),
                "created escaped.txt (in the run directory)".to_string(),
            ]
        );
    }

    #[test]
    fn removing_a_completed_stage_is_a_change_and_long_lists_are_cut() {
        let run = run();
        let changes = changes_after(&run, |r| std::fs::remove_dir_all(r.join("done")).unwrap());
        assert_eq!(
            changes,
            vec![
                "removed done (in the run directory)".to_string(),
                format!("removed done/{MARKER_FILE} (in the run directory)"),
                "removed done/out.txt (in the run directory)".to_string(),
            ]
        );
        let run = self::run();
        let changes = changes_after(&run, |r| {
            for i in 0..LISTED + 3 {
                std::fs::write(r.join(format!("f{i:02}")), "x").unwrap();
            }
        });
        assert_eq!(changes.len(), LISTED + 1);
        assert_eq!(changes.last().unwrap(), "and 3 more");
    }
}
