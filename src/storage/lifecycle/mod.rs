//! Deletes, truncation and retention: the rules that leave each aggregate a visible suffix of
//! its versions, and the `$lifecycle` events that record them.
//!
//! Every rule leaves an aggregate `[first_visible, last]` of its versions, or nothing: nothing
//! ever hides a version in the middle of a stream. The rules are events of the reserved event
//! store [`LIFECYCLE_STORE`] (aggregate id = the target event store id), appended to the global
//! log like any other event; an adapter's rules are the fold of those events, rebuilt when it
//! opens. See `docs/data-lifecycle.md`.

mod record;
mod rules;

use std::time::Duration;

pub(crate) use record::{LifecycleRecord, RecordError};
pub(crate) use rules::{AggregateFacts, Compaction, IndexFacts, Lifecycle, Visible};

/// The reserved event store of lifecycle events. A `$` cannot appear in a user's event store
/// id, so no user can write it; its events are never hidden and never compacted away.
pub const LIFECYCLE_STORE: &str = "$lifecycle";

/// How [`delete_aggregate`](super::StorageAdapter::delete_aggregate) deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeleteMode {
    /// Hidden from reads and listings, pushes refused; reversible with
    /// [`restore_aggregate`](super::StorageAdapter::restore_aggregate); never reclaimed.
    Soft,
    /// As [`Soft`](Self::Soft), but irreversible, and the events are physically removed by the
    /// next [`compact`](super::StorageAdapter::compact).
    Hard,
}

/// The retention rule of an event store. Events beyond it are hidden from reads at once and
/// removed by the next [`compact`](super::StorageAdapter::compact). `Retention::default()`
/// (both `None`) means no rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Retention {
    /// An event expires once it, *and every earlier retained version of its aggregate*, is
    /// older than `now - max_age` (by the events' timestamps), so what remains of an aggregate
    /// is always a suffix of its versions.
    pub max_age: Option<Duration>,
    /// Each aggregate keeps at most its newest `max_count` events (at least 1).
    pub max_count: Option<u64>,
}

impl Retention {
    /// Whether this is no rule at all.
    pub fn is_none(&self) -> bool {
        self.max_age.is_none() && self.max_count.is_none()
    }
}
