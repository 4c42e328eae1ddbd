//! The outputs of a browser stage: `site/` (the static feature browser; its files are
//! `monoscope-browser`'s) and `summary.txt` (the lines a run prints when it ends).

use std::path::PathBuf;

/// The stage kind whose directory has this layout.
pub const KIND: &str = "browser";
pub const SITE_DIR: &str = "site";
pub const SUMMARY_FILE: &str = "summary.txt";

/// A browser stage directory.
#[derive(Debug, Clone, PartialEq)]
pub struct BrowserOutputs {
    pub dir: PathBuf,
}

impl BrowserOutputs {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BrowserOutputs { dir: dir.into() }
    }

    pub fn site_dir(&self) -> PathBuf {
        self.dir.join(SITE_DIR)
    }

    pub fn summary_path(&self) -> PathBuf {
        self.dir.join(SUMMARY_FILE)
    }
}
