//! The response cache: one small JSON file per answer, named by a hash of everything that
//! determines it, in the monoscope cache directory. Writes are atomic; a cache that cannot
//! be written is reported once in the log and otherwise ignored.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub struct ResponseCache {
    dir: Option<PathBuf>,
    warned: AtomicBool,
}

impl ResponseCache {
    /// A cache in `dir`; `None` disables it.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ResponseCache {
            dir,
            warned: AtomicBool::new(false),
        }
    }

    /// The default place: `<monoscope cache>/label-responses`.
    pub fn default_dir() -> PathBuf {
        monoscope_fetch::cache_dir().join("label-responses")
    }

    /// A key from the parts that determine an answer.
    pub fn key(parts: &[&str]) -> String {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        format!("{:032x}", hasher.digest128())
    }

    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let path = self.dir.as_ref()?.join(format!("{key}.json"));
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn put<T: Serialize>(&self, key: &str, value: &T) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(format!("{key}.json"));
        let result = serde_json::to_vec(value)
            .map_err(std::io::Error::other)
            .and_then(|bytes| monoscope_core::atomic::write(&path, &bytes));
        if let Err(e) = result
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "response cache {}: {e}; answers are not cached",
                dir.display()
            );
        }
    }
}
