//! Views: read models projected from the global log, updated exactly once per event.
//!
//! A view is a named, versioned projection with its own tables. Handlers, one per event store
//! (on typed events, decoded through the store's upcasters) or per [`Filter`] (on raw
//! [`LoggedEvent`]s), write to those tables. A [`ViewRunner`] reads the log from the view's
//! checkpoint, catches up, then follows live commits; it applies events in batches, and each
//! batch commits **in one transaction with the view's checkpoint**. A crash before the commit
//! loses the whole batch and the checkpoint still points at its first event; a crash after it
//! keeps both. Either way, every event is applied exactly once.
//!
//! Two kinds of tables:
//!
//! | view | tables | checkpoint | queries |
//! |---|---|---|---|
//! | [`KvView`] | redb tables in a [`StateStore`](crate::runtime::state::StateStore), string keys, serde values | a consumer checkpoint in the same redb database | [`get`](KvView::get), [`scan`](KvView::scan), [`scan_prefix`](KvView::scan_prefix) |
//! | [`SqlView`] (feature `sql`, opt-in) | SQLite tables the handlers write with SQL | a row of the same SQLite file | [`query`](SqlView::query): any `SELECT`, joins included |
//!
//! ## Versions and rebuilds
//! A view has a version (from 1). Changing what a view stores means giving it a new version:
//! the new version is built side by side, from position 1, in tables of its own, while reads
//! keep going to the version that was serving. When the new version has caught up with the
//! log, it becomes the serving ("active") version in the same transaction as its checkpoint,
//! and the older versions' tables are dropped. A runner of an older version that finds a newer
//! one active stops with [`ViewError::Superseded`].
//!
//! ## Read-your-writes
//! A push returns the global position of its event
//! ([`PushEventResponse::position`](crate::model::event_store::PushEventResponse::position)). A query that must see
//! that event first calls [`KvView::wait_for`] (or [`SqlView::wait_for`]) with the position and
//! a timeout: it returns once the active version has applied it, or
//! [`ViewError::Timeout`].
//!
//! ## Failures
//! A handler that returns an error (or panics) stops the runner with [`ViewError::Handler`]
//! (or [`ViewError::HandlerPanicked`]); an event its store cannot decode stops it with
//! [`ViewError::Decode`]. Events of the batch before the failing one are committed; the
//! failing event is not, and is the first one applied when the view runs again. A view never
//! skips an event.

pub mod kv;
mod progress;
mod runner;
#[cfg(feature = "sql")]
pub mod sql;

use std::collections::BTreeSet;
use std::time::Duration;

use crate::model::event::{EventDetail, Events};
use crate::model::event_store::EventStore;
use crate::runtime::subscription::Filter;
use crate::storage::{LoggedEvent, Position, StorageError, StoredEvent};

pub use kv::{KvError, KvTables, KvView, KvViewBuilder};
pub use runner::ViewRunner;
#[cfg(feature = "sql")]
pub use sql::{SqlView, SqlViewBuilder};

/// What an operator sees of one view version without its handlers (see [`kv::statuses`] and
/// `sql::statuses`): how far it got and whether queries read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewStatus {
    /// The view's name.
    pub name: String,
    /// The version.
    pub version: u64,
    /// The first log position this version has not applied (1: none applied).
    pub next_position: Position,
    /// Whether this is the version queries read.
    pub active: bool,
}

/// The error a handler returns: any error, boxed (`?` converts every `std::error::Error`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest view name accepted.
const NAME_BYTES_MAX: usize = 64;

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
    /// [`EventStore::decode`]): the view stops there rather than skip it.
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
    /// [`wait_for`](KvView::wait_for) gave up: the view had not applied `position` within
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
    /// [`wait_for`](KvView::wait_for) cannot succeed: the view's runner stopped or failed
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

/// A view's name and version, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ViewId {
    pub(crate) name: String,
    pub(crate) version: u64,
}

impl ViewId {
    pub(crate) fn new(name: String, version: u64) -> Result<Self, ViewError> {
        let valid = !name.is_empty()
            && name.len() <= NAME_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ViewError::InvalidName { name });
        }
        if version == 0 {
            return Err(ViewError::InvalidVersion { view: name });
        }
        Ok(ViewId { name, version })
    }

    pub(crate) fn superseded(&self, active: u64) -> ViewError {
        ViewError::Superseded {
            view: self.name.clone(),
            version: self.version,
            active,
        }
    }

    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn damaged(&self, reason: impl Into<String>) -> ViewError {
        ViewError::Damaged {
            view: self.name.clone(),
            version: self.version,
            reason: reason.into(),
        }
    }
}

/// Why a handler did not apply an event.
pub(crate) enum Failure {
    Decode(crate::model::Error),
    Handler(BoxError),
    Panicked(String),
}

impl Failure {
    /// The error reported for this failure on `event`.
    pub(crate) fn into_error(self, id: &ViewId, event: &LoggedEvent) -> ViewError {
        let (view, version, position) = (id.name.clone(), id.version, event.position);
        match self {
            Failure::Decode(source) => ViewError::Decode {
                view,
                version,
                position,
                source: Box::new(source),
            },
            Failure::Handler(source) => ViewError::Handler {
                view,
                version,
                position,
                aggregate_id: event.event.aggregate_id.clone(),
                event_version: event.event.version,
                event_type: event.event.event_type.clone(),
                source,
            },
            Failure::Panicked(message) => ViewError::HandlerPanicked {
                view,
                version,
                position,
                message,
            },
        }
    }
}

/// Runs `handler`, turning a panic into [`Failure::Panicked`]: a panicking handler must not
/// be mistaken for a damaged database by the layers below.
pub(crate) fn guarded(handler: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)) {
        Ok(out) => out,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_owned());
            Err(Failure::Panicked(message))
        }
    }
}

/// Decodes a logged event of `store` into its typed form (running its upcasters).
pub(crate) fn decoder<E, S>(
    store: &EventStore<E, S>,
) -> impl Fn(&LoggedEvent) -> Result<EventDetail<E>, Failure> + Send + Sync + 'static
where
    E: Events,
    S: Clone + Send + Sync + 'static,
{
    let store = store.clone();
    move |logged| {
        store
            .decode(StoredEvent {
                position: logged.position,
                event: logged.event.clone(),
            })
            .map_err(Failure::Decode)
    }
}

/// The stores a view's handlers read, so its subscription reads only those (when every
/// handler names its store).
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// `None` once a handler takes events of any store.
    stores: Option<BTreeSet<String>>,
    any: bool,
}

impl Routes {
    pub(crate) fn add_store(&mut self, store: &str) {
        if !self.any {
            self.stores
                .get_or_insert_with(BTreeSet::new)
                .insert(store.to_owned());
        }
    }

    pub(crate) fn add_any(&mut self) {
        self.any = true;
        self.stores = None;
    }

    /// The subscription filter: the union of the handlers' stores, or everything.
    pub(crate) fn filter(&self) -> Filter {
        match &self.stores {
            Some(stores) if !self.any => Filter::all().stores(stores.iter().cloned()),
            _ => Filter::all(),
        }
    }
}
