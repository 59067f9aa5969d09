//! The error type of the data layer: every failure names the file it concerns, so a user
//! looking at `path: problem` knows which of 12,000 files to inspect.

use std::path::{Path, PathBuf};

/// A data-layer failure. Display is always `"{path}: {problem}"`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused a read, write or listing.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but its content is malformed or hostile.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// The file is well-formed but uses something this crate does not read.
    #[error("{}: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
}

/// Result of the data layer.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn format(path: &Path, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn unsupported(path: &Path, message: impl Into<String>) -> Self {
        Self::Unsupported {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::Format { path, .. } | Self::Unsupported { path, .. } => {
                path
            }
        }
    }
}
