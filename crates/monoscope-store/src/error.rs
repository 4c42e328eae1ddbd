use std::path::PathBuf;

/// Everything that can go wrong with an activation store.
///
/// Every message names the file (and, for shards, the shard) and says what was expected and
/// what was found, so that a user can act on it without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path}: no manifest.json; the store is missing or unfinished \
         (an interrupted write leaves progress.json: continue it with StoreWriter::resume)"
    )]
    ManifestMissing { path: PathBuf },

    #[error("{path}: garbled manifest: {reason}")]
    ManifestGarbled { path: PathBuf, reason: String },

    #[error("{path}: inconsistent manifest: {reason}")]
    ManifestInvalid { path: PathBuf, reason: String },

    #[error("shard {shard}: missing ({path} does not exist)")]
    ShardMissing { shard: String, path: PathBuf },

    #[error(
        "shard {shard}: truncated: {found} bytes on disk, the manifest says {expected} \
         (re-run the capture for this shard or restore it from a copy)"
    )]
    ShardTruncated {
        shard: String,
        expected: u64,
        found: u64,
    },

    #[error(
        "shard {shard}: corrupted: checksum of the {part} is {found:016x}, expected \
         {expected:016x} (the file was damaged on disk or in transfer)"
    )]
    ShardCorrupt {
        shard: String,
        part: String,
        expected: u64,
        found: u64,
    },

    #[error(
        "shard {shard}: does not match the manifest: {what}: shard has {found}, manifest says {expected}"
    )]
    ShardMismatch {
        shard: String,
        what: String,
        expected: String,
        found: String,
    },

    #[error("shard {shard}: unreadable {part}: {reason}")]
    ShardUnreadable {
        shard: String,
        part: String,
        reason: String,
    },

    /// Decoding a shard panicked on a worker thread; caught there so that a reader reports it
    /// like any unreadable shard instead of the process aborting.
    #[error("shard {shard}: decoding failed: it panicked: {message}")]
    DecodePanicked { shard: String, message: String },

    #[error("batch does not fit the store: {what}: store has {expected}, batch has {found}")]
    BatchMismatch {
        what: String,
        expected: String,
        found: String,
    },

    #[error(
        "{path}: cannot resume: {field} differs: the interrupted store was written with \
         {stored}, now {given}"
    )]
    SpecMismatch {
        path: PathBuf,
        field: String,
        stored: String,
        given: String,
    },

    #[error("{path}: {reason}")]
    InvalidSpec { path: PathBuf, reason: String },

    #[error("{path}: already holds a store or other files; choose an empty or new directory")]
    NotEmpty { path: PathBuf },

    #[error("{path}: nothing to resume: no progress.json (the store is {state})")]
    NothingToResume { path: PathBuf, state: &'static str },

    #[error("{path}: unknown hook `{hook}` (the store has: {known})")]
    UnknownHook {
        path: PathBuf,
        hook: String,
        known: String,
    },

    #[error("{path}: rows {start}..{end} are out of range (the store has {rows} rows)")]
    RowRange {
        path: PathBuf,
        start: u64,
        end: u64,
        rows: u64,
    },

    #[error("merge: part {part} does not match part {first}: {what}: {found} vs {expected}")]
    MergeMismatch {
        first: PathBuf,
        part: PathBuf,
        what: String,
        expected: String,
        found: String,
    },

    #[error("{path}: {reason}")]
    Export { path: PathBuf, reason: String },

    #[error("{path}: {failed} of {shards} shards failed verification:\n  {}", details.join("\n  "))]
    VerifyFailed {
        path: PathBuf,
        failed: usize,
        shards: usize,
        details: Vec<String>,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn mismatch(
        shard: &str,
        what: &str,
        expected: impl ToString,
        found: impl ToString,
    ) -> Self {
        StoreError::ShardMismatch {
            shard: shard.to_string(),
            what: what.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    pub(crate) fn batch(what: &str, expected: impl ToString, found: impl ToString) -> Self {
        StoreError::BatchMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
