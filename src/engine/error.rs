//! Errors of the engine floor.

use std::io;
use std::path::PathBuf;

/// What went wrong in the log engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An I/O operation failed.
    #[error("I/O error while trying to {operation} {}: {source}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No space left on the device; nothing acknowledged was harmed.
    #[error("no space left on device while writing {}", path.display())]
    StorageFull {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// Stored bytes failed verification.
    #[error("corruption in {} at offset {offset}: {reason}", file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Where.
        offset: u64,
        /// What failed.
        reason: String,
    },
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
}

/// Damage found by a file that checks its own bytes when it is first used (a lazily opened
/// segment, see `segment::Segment::lazy`), carried through the `io::Error` its read returns so
/// that [`EngineError::io`] reports it as [`EngineError::Corruption`], whichever read met it.
#[derive(Debug, thiserror::Error)]
#[error("corruption in {} at offset {offset}: {reason}", file.display())]
pub(crate) struct Damaged {
    /// The damaged file.
    pub file: PathBuf,
    /// Where.
    pub offset: u64,
    /// What failed.
    pub reason: String,
}

impl Damaged {
    /// The `io::Error` carrying this damage.
    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

impl From<Damaged> for EngineError {
    fn from(d: Damaged) -> Self {
        EngineError::Corruption {
            file: d.file,
            offset: d.offset,
            reason: d.reason,
        }
    }
}

impl EngineError {
    /// Wraps an I/O error, recognising a full disk and damage reported by the file itself.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        let source = if source.get_ref().is_some_and(|e| e.is::<Damaged>()) {
            match source.into_inner().map(|e| e.downcast::<Damaged>()) {
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
            EngineError::Io {
                operation,
                path,
                source,
            }
        }
    }

    /// Wraps an error of the index database.
    pub fn index(
        operation: &'static str,
        path: impl Into<PathBuf>,
        e: impl std::fmt::Display,
    ) -> Self {
        EngineError::Io {
            operation,
            path: path.into(),
            source: io::Error::other(e.to_string()),
        }
    }
}
