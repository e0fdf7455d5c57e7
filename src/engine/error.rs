//! Errors of the engine floor, and the details of a failed I/O operation and of damaged bytes
//! that the storage floor's errors share.

use std::io;
use std::path::PathBuf;

use super::frame::FrameError;

/// An I/O operation that failed: what was being done, to which file, and the OS's error.
#[derive(Debug, thiserror::Error)]
#[error("I/O error while trying to {operation} {}: {source}", path.display())]
pub struct IoFailure {
    /// What was being done.
    pub operation: &'static str,
    /// The file or directory involved.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

/// Stored bytes that failed verification: which file, where, and what check failed.
///
/// It also travels inside the `io::Error` of a file that checks its own bytes when it is
/// first used (a lazily opened segment, see `segment::Segment::lazy`), so that
/// `EngineError::io` reports it as [`EngineError::Corruption`], whichever read met it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corruption in {} at offset {offset}: {kind}", file.display())]
pub struct Corruption {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset of the damage.
    pub offset: u64,
    /// What check failed.
    pub kind: CorruptionKind,
}

/// What check damaged bytes failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// A stored checksum does not match the bytes it covers.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum found in the file.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// Any other check: a length, a magic number, a sequence, a record that is missing.
    #[error("{0}")]
    Other(String),
}

impl From<String> for CorruptionKind {
    fn from(reason: String) -> Self {
        CorruptionKind::Other(reason)
    }
}

impl From<&str> for CorruptionKind {
    fn from(reason: &str) -> Self {
        CorruptionKind::Other(reason.to_owned())
    }
}

impl From<FrameError> for CorruptionKind {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::ChecksumMismatch { stored, computed } => {
                CorruptionKind::ChecksumMismatch { stored, computed }
            }
            other => CorruptionKind::Other(other.to_string()),
        }
    }
}

impl Corruption {
    /// Damage in `file` at `offset`.
    pub fn new(file: impl Into<PathBuf>, offset: u64, kind: impl Into<CorruptionKind>) -> Self {
        Corruption {
            file: file.into(),
            offset,
            kind: kind.into(),
        }
    }

    /// The `io::Error` carrying this damage (see `EngineError::io`).
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

impl IoFailure {
    /// A copy for another receiver (an `io::Error` is not `Clone`: kind and message are kept).
    pub(crate) fn duplicate(&self) -> Self {
        IoFailure {
            operation: self.operation,
            path: self.path.clone(),
            source: io::Error::new(self.source.kind(), self.source.to_string()),
        }
    }
}

/// What went wrong in the log engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An I/O operation failed.
    #[error(transparent)]
    Io(IoFailure),
    /// No space left on the device; nothing acknowledged was harmed.
    #[error("no space left on device while writing {}", path.display())]
    StorageFull {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// Stored bytes failed verification.
    #[error(transparent)]
    Corruption(Corruption),
    /// A database file of the store is in an older file format (written by annals 0.1, on
    /// redb 2), which this version reads only once `annals upgrade` has converted it. Nothing
    /// was changed.
    #[error(
        "{} is in an older file format (redb file format v{found}); convert the store with \
         `annals upgrade` first (nothing was changed)",
        path.display()
    )]
    FormatUpgradeRequired {
        /// The database file.
        path: PathBuf,
        /// The file format version it holds.
        found: u8,
    },
    /// Another handle holds the store.
    #[error("store {} is locked", path.display())]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// A write or sync failed earlier; the engine refuses writes until reopened.
    #[error("poisoned: {reason}")]
    Poisoned {
        /// The original failure.
        reason: String,
    },
    /// The engine is shut down.
    #[error("engine closed")]
    Closed,
    /// An event of the commit has a version that is not the next one of its aggregate.
    #[error("version {version} of {store:?}/{aggregate:?} refused: the latest version is {last}")]
    Conflict {
        /// The event's store.
        store: String,
        /// The event's aggregate.
        aggregate: String,
        /// The refused version.
        version: u64,
        /// The aggregate's latest version (counting earlier events of the same commit).
        last: u64,
    },
    /// Invalid options.
    #[error("invalid option: {0}")]
    InvalidOptions(String),
    /// A compaction was refused, and nothing was changed: the entries it was asked to remove
    /// would leave an aggregate a hole in the middle of its versions (an earlier version kept
    /// while a later one goes). An aggregate only ever loses a prefix of its versions.
    #[error(
        "compaction refused: removing version {version} of {store:?}/{aggregate:?} would leave \
         a hole in its versions (version {kept} before it is kept)"
    )]
    CompactionRefused {
        /// The aggregate's store.
        store: String,
        /// The aggregate.
        aggregate: String,
        /// The version the predicate would remove.
        version: u64,
        /// An earlier version the predicate keeps.
        kept: u64,
    },
}

impl From<Corruption> for EngineError {
    fn from(c: Corruption) -> Self {
        EngineError::Corruption(c)
    }
}

impl EngineError {
    /// Wraps an I/O error, recognising a full disk and damage reported by the file itself.
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        let source = if source.get_ref().is_some_and(|e| e.is::<Corruption>()) {
            match source.into_inner().map(|e| e.downcast::<Corruption>()) {
                Some(Ok(damaged)) => return (*damaged).into(),
                Some(Err(e)) => io::Error::new(io::ErrorKind::InvalidData, e),
                None => io::Error::from(io::ErrorKind::InvalidData),
            }
        } else {
            source
        };
        if source.kind() == io::ErrorKind::StorageFull {
            EngineError::StorageFull { path }
        } else {
            EngineError::Io(IoFailure {
                operation,
                path,
                source,
            })
        }
    }

    /// Wraps an error of the index database.
    pub(crate) fn index(
        operation: &'static str,
        path: impl Into<PathBuf>,
        e: impl std::fmt::Display,
    ) -> Self {
        EngineError::Io(IoFailure {
            operation,
            path: path.into(),
            source: io::Error::other(e.to_string()),
        })
    }

    /// Damage in `file` at `offset`: [`EngineError::Corruption`].
    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        kind: impl Into<CorruptionKind>,
    ) -> Self {
        EngineError::Corruption(Corruption::new(file, offset, kind))
    }

    /// A copy of the error for each waiting appender (I/O errors are not `Clone`).
    pub(crate) fn duplicate(&self) -> EngineError {
        match self {
            EngineError::StorageFull { path } => EngineError::StorageFull { path: path.clone() },
            EngineError::Io(failure) => EngineError::Io(failure.duplicate()),
            EngineError::Corruption(c) => EngineError::Corruption(c.clone()),
            EngineError::Locked { path } => EngineError::Locked { path: path.clone() },
            EngineError::FormatUpgradeRequired { path, found } => {
                EngineError::FormatUpgradeRequired {
                    path: path.clone(),
                    found: *found,
                }
            }
            EngineError::Poisoned { reason } => EngineError::Poisoned {
                reason: reason.clone(),
            },
            EngineError::Closed => EngineError::Closed,
            EngineError::Conflict {
                store,
                aggregate,
                version,
                last,
            } => EngineError::Conflict {
                store: store.clone(),
                aggregate: aggregate.clone(),
                version: *version,
                last: *last,
            },
            EngineError::InvalidOptions(s) => EngineError::InvalidOptions(s.clone()),
            EngineError::CompactionRefused {
                store,
                aggregate,
                version,
                kept,
            } => EngineError::CompactionRefused {
                store: store.clone(),
                aggregate: aggregate.clone(),
                version: *version,
                kept: *kept,
            },
        }
    }
}
