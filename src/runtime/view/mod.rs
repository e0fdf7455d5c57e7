//! Views: read models projected from the global log, updated exactly once per event.
//!
//! A view is a named, versioned projection with its own tables. Handlers, one per event store
//! (on typed events, decoded through the store's upcasters) or per
//! [`Filter`](crate::runtime::subscription::Filter) (on raw
//! [`LoggedEvent`](crate::storage::LoggedEvent)s), write to those tables. A [`ViewRunner`] reads
//! the log from the view's
//! checkpoint, catches up, then follows live commits; it applies events in batches, and each
//! batch commits **in one transaction with the view's checkpoint**. A crash before the commit
//! loses the whole batch and the checkpoint still points at its first event; a crash after it
//! keeps both. Either way, every event is applied exactly once.
//!
//! Two kinds of tables:
//!
//! - **[`KvView`]** — tables: tables of a [`StateStore`](crate::runtime::state::StateStore)
//!   (redb tables, or rows of PostgreSQL's `view_rows`), string keys, serde values;
//!   checkpoint: a consumer checkpoint in the same store, committed in the same transaction;
//!   queries: [`get`](KvView::get), [`scan`](KvView::scan), [`scan_prefix`](KvView::scan_prefix)
//! - **[`SqlView`] (feature `sql`, opt-in)** — tables: SQLite tables the handlers write with
//!   SQL; checkpoint: a row of the same SQLite file; queries: [`query`](SqlView::query): any
//!   `SELECT`, joins included
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
//! ([`PushEventResponse::position`](crate::model::event_store::PushEventResponse::position)). A
//! query that must see
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

mod error;
#[cfg(feature = "postgres")]
mod group;
mod handler;
mod id;
pub mod kv;
mod kv_error;
mod progress;
mod runner;
#[cfg(feature = "sql")]
pub mod sql;
mod status;

pub use error::{BoxError, ViewError};
pub use kv::{KvTables, KvView, KvViewBuilder};
pub use kv_error::KvError;
pub use runner::ViewRunner;
#[cfg(feature = "sql")]
pub use sql::{SqlView, SqlViewBuilder};
pub use status::ViewStatus;
