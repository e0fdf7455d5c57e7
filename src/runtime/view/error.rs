//! Why a view could not be built, run or read.

use std::time::Duration;

use super::kv_error::KvError;
use crate::storage::{Position, StorageError};

/// The error a handler returns: any error, boxed (`?` converts every `std::error::Error`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything a view can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The view name is empty, longer than 64 bytes, or has characters other than ASCII
    /// letters, digits, `_` and `-` (names become table and file names). Choose another name.
    #[error("invalid view name {name:?}: use 1 to 64 ASCII letters, digits, '_' or '-'")]
    InvalidName {
        /// The name refused.
        name: String,
    },
    /// Versions start at 1.
    #[error("view {view:?}: version 0 is not a version (versions start at 1)")]
    InvalidVersion {
        /// The view.
        view: String,
    },
    /// A handler failed on an event. Nothing of that event was committed: the view resumes
    /// at it when run again. Fix the handler (or the data it depends on) and restart.
    #[error(
        "view {view:?} v{version}: handler failed at position {position} (aggregate \
         {aggregate_id:?}, version {event_version}, type {event_type:?}): {source}"
    )]
    Handler {
        /// The view.
        view: String,
        /// The view's version.
        version: u64,
        /// The event's global position.
        position: Position,
        /// The event's aggregate.
        aggregate_id: String,
        /// The event's version within its aggregate.
        event_version: u64,
        /// The event's type.
        event_type: String,
        /// What the handler returned.
        source: BoxError,
    },
    /// A handler panicked on the event at `position`; as for [`ViewError::Handler`], nothing
    /// of that event was committed.
    #[error("view {view:?} v{version}: handler panicked at position {position}: {message}")]
    HandlerPanicked {
        /// The view.
        view: String,
        /// The view's version.
        version: u64,
        /// The event's global position.
        position: Position,
        /// The panic message, when it was a string.
        message: String,
    },
    /// The event at `position` does not decode into its store's types (see
    /// [`EventStore::decode`](crate::model::event_store::EventStore::decode)): the view stops there
    /// rather than skip it.
    #[error("view {view:?} v{version}: event at position {position} does not decode: {source}")]
    Decode {
        /// The view.
        view: String,
        /// The view's version.
        version: u64,
        /// The event's global position.
        position: Position,
        /// Why it does not decode.
        source: Box<crate::model::Error>,
    },
    /// [`wait_for`](super::KvView::wait_for) gave up: the view had not applied `position` within
    /// `timeout`. The view may be slow, not running, or still rebuilding; retry or report
    /// stale data.
    #[error(
        "view {view:?} v{version}: position {position} not applied within {timeout:?} \
         (applied up to {applied})"
    )]
    Timeout {
        /// The view.
        view: String,
        /// The view's version.
        version: u64,
        /// The position waited for.
        position: Position,
        /// The last position the view had applied (0: none).
        applied: Position,
        /// How long the wait lasted.
        timeout: Duration,
    },
    /// [`wait_for`](super::KvView::wait_for) cannot succeed: the view's runner stopped or failed
    /// before applying the position. Start a runner again.
    #[error("view {view:?} v{version}: not running ({reason})")]
    NotRunning {
        /// The view.
        view: String,
        /// The view's version.
        version: u64,
        /// Why the runner ended.
        reason: String,
    },
    /// A newer version of this view is active: this version was replaced by a rebuild and its
    /// tables dropped. Run the newer version.
    #[error("view {view:?} v{version} is superseded by v{active}")]
    Superseded {
        /// The view.
        view: String,
        /// This (older) version.
        version: u64,
        /// The active version.
        active: u64,
    },
    /// The view's own bookkeeping is not what it wrote (a missing or foreign metadata row, a
    /// position out of range).
    #[error("view {view:?} v{version}: damaged: {reason}")]
    Damaged {
        /// The view.
        view: String,
        /// The view's version.
        version: u64,
        /// What is wrong.
        reason: String,
    },
    /// A stored table value does not decode into the type asked for.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The event log or the state store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// SQLite failed.
    #[cfg(feature = "sql")]
    #[error("view {view:?} v{version}: SQLite: {source}")]
    Sql {
        /// The view.
        view: String,
        /// The view's version.
        version: u64,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A file operation on a view's directory failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The runner's task ended abnormally (it panicked outside a handler, or was cancelled).
    #[error("view {view:?} v{version}: the runner task ended abnormally")]
    RunnerAborted {
        /// The view.
        view: String,
        /// The view's version.
        version: u64,
    },
}
