//! Which share of a stage's work one run does: all of it, one of `parts = N` disjoint parts,
//! or the merge of the finished parts.
//!
//! A stage kind that can run in parts says what a part is ([`crate::Stage::PARTS`]); the executor
//! runs each part with [`Work::Part`] in `<stage_dir>/parts/<index>/`, each in its own process
//! (locally or as a cluster job), then runs the stage once more with [`Work::Merge`] in the
//! stage's own directory. The merge announces the stage's artifacts: what downstream stages see.

use std::path::{Path, PathBuf};

use crate::message::Artifact;

/// The folder of a stage's directory that holds its parts' directories.
pub const PARTS_DIR: &str = "parts";

/// One run's share of a stage's work.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Work {
    /// All of it, in one run (`parts = 1`).
    #[default]
    Whole,
    /// Part `index` of `count` (`0 <= index < count`), written into the part's directory.
    Part { index: usize, count: usize },
    /// Join the finished parts: each part's announced artifacts (output port, artifact), in
    /// part order.
    Merge { parts: Vec<Vec<(String, Artifact)>> },
}

impl Work {
    /// `(index, count)` for a part, `(0, 1)` for the whole.
    pub fn part(&self) -> Option<(usize, usize)> {
        match self {
            Work::Part { index, count } => Some((*index, *count)),
            _ => None,
        }
    }

    /// The contiguous share `[start, end)` of `len` items that part `index` of `count` takes:
    /// every item in exactly one part, in order, part sizes differing by at most one.
    pub fn share(index: usize, count: usize, len: usize) -> std::ops::Range<usize> {
        let start = len * index / count;
        let end = len * (index + 1) / count;
        start..end
    }

    /// Each part's artifact announced on `port`, in part order; an error names a part that
    /// announced none.
    pub fn part_artifacts(
        parts: &[Vec<(String, Artifact)>],
        port: &str,
    ) -> Result<Vec<Artifact>, crate::StageError> {
        parts
            .iter()
            .enumerate()
            .map(|(i, announced)| {
                announced
                    .iter()
                    .find(|(p, _)| p == port)
                    .map(|(_, a)| a.clone())
                    .ok_or_else(|| crate::StageError::Port {
                        port: port.to_string(),
                        message: format!("part {i} announced nothing on it"),
                    })
            })
            .collect()
    }
}

/// The directory of part `index` of the stage whose directory is `stage_dir`.
pub fn part_dir(stage_dir: &Path, index: usize) -> PathBuf {
    stage_dir.join(PARTS_DIR).join(index.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once_in_order() {
        for len in 0..40 {
            for count in 1..9 {
                let mut next = 0;
                for index in 0..count {
                    let share = Work::share(index, count, len);
                    assert_eq!(share.start, next);
                    assert!(share.len() <= len / count + 1);
                    next = share.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
