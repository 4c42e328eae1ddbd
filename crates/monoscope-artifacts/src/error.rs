use std::path::{Path, PathBuf};

/// What can go wrong reading or writing a stage's files. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not the JSON (or the JSON line) it should be.
    #[error("{}: line {line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Well-formed, but not usable: a record out of order or out of range, a missing stage.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    /// Written in a layout this version cannot read.
    #[error(
        "{}: made by {} version of monoscope (format version {found}; this version reads {oldest} to {newest}){hint}",
        path.display(),
        if *found > *newest { "a newer" } else { "an older" },
        hint = if *found > *newest { "; update monoscope to read it" } else { "; run the pipeline again to rebuild it" }
    )]
    Version {
        path: PathBuf,
        found: u32,
        oldest: u32,
        newest: u32,
    },
}

impl ArtifactError {
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
        move |source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn invalid(path: &Path, message: impl Into<String>) -> ArtifactError {
        ArtifactError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ArtifactError::Io { path, .. }
            | ArtifactError::Parse { path, .. }
            | ArtifactError::Invalid { path, .. }
            | ArtifactError::Version { path, .. } => path,
        }
    }
}

pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;
