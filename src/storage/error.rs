//! Errors of the storage floor.

use std::io;
use std::path::PathBuf;

use super::limit_error::LimitError;
use crate::engine::{Corruption, CorruptionKind, IoFailure};

/// An event already exists at this aggregate id and version: someone else pushed first.
///
/// This is the optimistic-concurrency signal: [`Command`](crate::model::command::Command)s
/// rerun their handler when they see it. Inside an event group it names the event of the group
/// that conflicted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "event already exists: store {event_store_id:?}, aggregate {aggregate_id:?}, version {version}"
)]
pub struct EventAlreadyExists {
    /// The store of the conflicting event.
    pub event_store_id: String,
    /// The aggregate of the conflicting event.
    pub aggregate_id: String,
    /// The version that is already taken.
    pub version: u64,
}

/// Why a storage adapter refused or failed an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The version is taken; re-read the aggregate and decide again.
    #[error(transparent)]
    EventAlreadyExists(#[from] EventAlreadyExists),
    /// The version is neither taken nor the next one (a gap, or version 0). Unlike Castore,
    /// annals refuses gaps so an aggregate's versions are always `1..=n`.
    #[error(
        "unexpected version {version} for store {event_store_id:?}, aggregate {aggregate_id:?}: \
         {}",
        match expected {
            Some(v) => format!("the next version is {v}"),
            None => "versions start at 1".to_owned(),
        }
    )]
    UnexpectedVersion {
        /// The store of the refused event.
        event_store_id: String,
        /// The aggregate of the refused event.
        aggregate_id: String,
        /// The refused version.
        version: u64,
        /// The version that would have been accepted, when known.
        expected: Option<u64>,
    },
    /// The aggregate is deleted ([`StorageAdapter::delete_aggregate`]): its events are hidden
    /// and pushes to it are refused. A soft delete (`hard: false`) can be undone with
    /// [`StorageAdapter::restore_aggregate`]; a hard one is final. Nothing was written.
    ///
    /// [`StorageAdapter::delete_aggregate`]: super::StorageAdapter::delete_aggregate
    /// [`StorageAdapter::restore_aggregate`]: super::StorageAdapter::restore_aggregate
    #[error(
        "aggregate {aggregate_id:?} of store {event_store_id:?} is {} deleted",
        if *hard { "hard" } else { "soft" }
    )]
    AggregateDeleted {
        /// The store of the aggregate.
        event_store_id: String,
        /// The deleted aggregate.
        aggregate_id: String,
        /// Whether the delete is hard (irreversible).
        hard: bool,
    },
    /// A retention rule that cannot be applied (say `max_count: Some(0)`). Nothing was written.
    #[error("invalid retention rule: {reason}")]
    InvalidRetention {
        /// What is wrong.
        reason: String,
    },
    /// A `$lifecycle` event of the store could not be read (written by a newer annals, or
    /// damaged), so the rules in force are unknown: the store is not opened. Nothing was
    /// changed.
    #[error("unreadable lifecycle event at position {position}: {reason}")]
    UnreadableLifecycleEvent {
        /// Its global position.
        position: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The adapter does not keep lifecycle rules (deletes, truncation, retention). Nothing was
    /// written.
    #[error("this storage adapter cannot {operation}")]
    Unsupported {
        /// What was asked.
        operation: &'static str,
    },
    /// An id, type, size or count broke a [`Limits`](super::Limits) bound. Nothing was written.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A page token was not produced by `list_aggregate_ids` for this store.
    #[error("invalid page token: {reason}")]
    InvalidPageToken {
        /// What was wrong with it.
        reason: String,
    },
    /// An I/O operation failed. Nothing unacknowledged is visible; retry or reopen.
    #[error(transparent)]
    Io(IoFailure),
    /// The disk is full. Acknowledged data is intact; appends work again once space is freed.
    #[error("no space left on device while writing {}", path.display())]
    StorageFull {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// Stored bytes failed a checksum or structural check somewhere other than the unacknowledged
    /// tail of the log. Nothing was repaired automatically; run `annals verify`.
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
    /// Another process, or another handle in this process, holds the store open.
    #[error("store {} is locked by another process or handle; close it first", path.display())]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// The store was opened read-only (a [`LogReader`](super::LogReader)): appends go through
    /// the handle that holds it. Nothing was written.
    #[error("store {} is open read-only; append through the process that holds it", path.display())]
    ReadOnly {
        /// The store directory.
        path: PathBuf,
    },
    /// An earlier write or fsync failed, so the on-disk state is uncertain; the store refuses
    /// writes until it is reopened (which re-runs recovery).
    #[error("store is poisoned after a failed write or sync ({reason}); reopen it")]
    Poisoned {
        /// The failure that poisoned the store.
        reason: String,
    },
    /// Options or limits that cannot work together (say, a commit larger than a segment).
    #[error("invalid configuration: {reason}")]
    InvalidConfiguration {
        /// What is wrong.
        reason: String,
    },
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// A compaction was refused and nothing was changed: removing `version` of the aggregate
    /// while an earlier version (`kept`) stays would leave a hole in its versions.
    #[error(
        "compaction refused: removing version {version} of {event_store_id:?}/{aggregate_id:?} \
         would leave a hole in its versions (version {kept} before it is kept)"
    )]
    CompactionRefused {
        /// The aggregate's store.
        event_store_id: String,
        /// The aggregate.
        aggregate_id: String,
        /// The version that would be removed.
        version: u64,
        /// An earlier version that would be kept.
        kept: u64,
    },
    /// A database server (the PostgreSQL adapter's, feature `postgres`) could not be reached,
    /// or the connection to it was lost while trying to `operation`.
    ///
    /// Reads can simply be retried. For an append the outcome is unknown in general: a
    /// connection lost while the commit was in flight may have lost it or committed it. Pushing
    /// the same events again is safe: if the first attempt committed, the retry fails with
    /// [`EventAlreadyExists`] and nothing is written twice.
    #[error("database unavailable while trying to {operation}: {reason}")]
    Unavailable {
        /// What was being done.
        operation: &'static str,
        /// What failed (the client's or server's message).
        reason: String,
    },
    /// The database server cancelled an operation that ran past its statement timeout (for an
    /// append, typically while waiting for other commits). The transaction was rolled back:
    /// nothing of it was written. Retry, or raise the timeout.
    #[error("database statement timed out while trying to {operation}: {reason}")]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The server's message.
        reason: String,
    },
    /// A member of a consumer group acted on a partition whose lease it no longer holds (it
    /// expired while the process was paused or cut off, and another member may have taken
    /// it over). Nothing of the refused commit was written; the member stops handling the
    /// partition, whose new holder continues from the last checkpoint.
    #[error("the lease on partition {partition} of consumer group {group:?} is lost")]
    LeaseLost {
        /// The consumer group.
        group: String,
        /// The partition.
        partition: u32,
    },
    /// The database server refused an operation for another reason (permissions, a schema it
    /// does not expect, …), or answered with a row this adapter cannot read. Nothing of a
    /// refused append was written.
    #[error(
        "database error while trying to {operation}{}: {message}",
        match code { Some(code) => format!(" (SQLSTATE {code})"), None => String::new() }
    )]
    Database {
        /// What was being done.
        operation: &'static str,
        /// The SQLSTATE code, when the server sent one.
        code: Option<String>,
        /// The server's message, or what was wrong with its answer.
        message: String,
    },
}

impl StorageError {
    /// An I/O operation that failed: [`StorageError::Io`].
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io(IoFailure {
            operation,
            path: path.into(),
            source,
        })
    }

    /// Damage in `file` at `offset`: [`StorageError::Corruption`]. `kind` is a
    /// [`CorruptionKind`] or the text of a check that failed.
    pub fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        kind: impl Into<CorruptionKind>,
    ) -> Self {
        StorageError::Corruption(Corruption::new(file, offset, kind))
    }

    /// The conflict, if this error is one.
    pub fn event_already_exists(&self) -> Option<&EventAlreadyExists> {
        match self {
            StorageError::EventAlreadyExists(e) => Some(e),
            _ => None,
        }
    }
}
