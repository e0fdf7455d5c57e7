//! The snapshot policy of aggregates: when an [`EventStore`] takes snapshots, and how they are
//! written without slowing anything down.
//!
//! A store given a [`SnapshotPolicy`] (with [`EventStoreBuilder::snapshots`]) keeps encoded
//! aggregate states in its adapter's [`SnapshotStorage`](crate::storage::SnapshotStorage), and
//! [`get_aggregate`] starts from the newest valid one at or below the requested version,
//! replaying only the later events.
//!
//! **When snapshots are taken.** Never on the push path: a push does exactly the same work
//! with or without a policy. Snapshots are taken by reads. When `get_aggregate` folds events
//! past a point where the policy fires (every `n`-th version, where a predicate holds, or, for
//! the policy by replay cost, the end of a fold that took longer than its budget), it keeps the
//! aggregate at the last such point and hands it to a blocking background task that encodes
//! it, writes it and prunes the aggregate's older snapshots; the read returns without
//! waiting. [`SnapshotPolicy::default`] is the policy by replay cost with a budget of 250 µs:
//! it bounds what any read replays by time, whatever the events cost to decode. Commands
//! read an aggregate before each push, so busy aggregates get snapshots as
//! they grow; an aggregate that is never read needs none. [`EventStore::flush_snapshots`]
//! waits for the background writes (tests, orderly shutdown).
//!
//! **When a snapshot is used.** Only when all of these hold, otherwise the store falls back
//! to an older snapshot or to the first event, so the result is always the one a full replay
//! gives:
//! - it was taken under the store's current
//!   [`reducer_version`] (others are deleted when met: bump the version whenever the reducer or
//!   the state type changes meaning);
//! - its checksum matches and its state decodes (otherwise it is deleted with a warning);
//! - the event it was taken at still reads back with the same position and checksum
//!   (otherwise it is stale, e.g. the event was lost to a power cut under a weak durability and
//!   rewritten; it is deleted with a warning).
//!
//! A snapshot store that fails (a damaged file, an I/O error) is reported with a warning and
//! the aggregate is replayed in full; it is never an error to the caller.
//!
//! **What changes in the response.** With a snapshot, [`GetAggregateResponse::events`] holds
//! only the events folded after it (possibly none); `aggregate` and `last_event` are the same
//! as without.
//!
//! [`EventStore`]: crate::model::event_store::EventStore
//! [`EventStore::flush_snapshots`]: crate::model::event_store::EventStore::flush_snapshots
//! [`EventStoreBuilder::snapshots`]: crate::model::event_store::EventStoreBuilder::snapshots
//! [`get_aggregate`]: crate::model::event_store::EventStore::get_aggregate
//! [`reducer_version`]: crate::model::event_store::EventStoreBuilder::reducer_version
//! [`GetAggregateResponse::events`]: crate::model::event_store::GetAggregateResponse::events

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::model::aggregate::Aggregate;
use crate::model::event::{EventDetail, Events};
type Predicate<E, S> = Arc<dyn Fn(&Aggregate<S>, &EventDetail<E>) -> bool + Send + Sync>;

/// When an [`EventStore`](crate::model::event_store::EventStore) takes snapshots of its
/// aggregates, and how many it keeps per aggregate.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Credited { pub cents: i64 }
/// # annals::events! { pub enum AccountEvent { Credited(Credited) = "CREDITED" } }
/// use std::sync::Arc;
/// use annals::{EventDetail, EventStore, SnapshotPolicy, storage::InMemoryAdapter};
///
/// fn reduce(balance: Option<i64>, e: &EventDetail<AccountEvent>) -> i64 {
///     match &e.event { AccountEvent::Credited(c) => balance.unwrap_or(0) + c.cents }
/// }
/// let accounts = EventStore::builder("ACCOUNTS", reduce)
///     .storage_adapter(Arc::new(InMemoryAdapter::new()))
///     .snapshots(SnapshotPolicy::every(100).keep(3))
///     .reducer_version(1) // bump when `reduce` or the state type changes meaning
///     .build()?;
/// # Ok::<(), annals::Error>(())
/// ```
pub struct SnapshotPolicy<E: Events, S> {
    trigger: Trigger<E, S>,
    keep: usize,
}

enum Trigger<E: Events, S> {
    Every(u64),
    When(Predicate<E, S>),
    Budget(Duration),
}

impl<E: Events, S> Clone for SnapshotPolicy<E, S> {
    fn clone(&self) -> Self {
        SnapshotPolicy {
            trigger: match &self.trigger {
                Trigger::Every(n) => Trigger::Every(*n),
                Trigger::When(p) => Trigger::When(Arc::clone(p)),
                Trigger::Budget(d) => Trigger::Budget(*d),
            },
            keep: self.keep,
        }
    }
}

impl<E: Events, S> fmt::Debug for SnapshotPolicy<E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SnapshotPolicy");
        match &self.trigger {
            Trigger::Every(n) => d.field("every", n),
            Trigger::When(_) => d.field("when", &"<predicate>"),
            Trigger::Budget(budget) => d.field("replay_budget", budget),
        };
        d.field("keep", &self.keep).finish()
    }
}

impl<E: Events, S> SnapshotPolicy<E, S> {
    /// A snapshot at every version that is a multiple of `events` (0 is taken as 1), keeping
    /// the newest 2 per aggregate.
    pub fn every(events: u64) -> Self {
        SnapshotPolicy {
            trigger: Trigger::Every(events.max(1)),
            keep: 2,
        }
    }

    /// A snapshot after each event for which `predicate(aggregate, event)` holds, `aggregate`
    /// being the aggregate with `event` folded in; keeps the newest 2 per aggregate. Only the
    /// last such point of a read is written.
    pub fn when(
        predicate: impl Fn(&Aggregate<S>, &EventDetail<E>) -> bool + Send + Sync + 'static,
    ) -> Self {
        SnapshotPolicy {
            trigger: Trigger::When(Arc::new(predicate)),
            keep: 2,
        }
    }

    /// A snapshot at the end of every read whose fold took `budget` or more, keeping the
    /// newest 2 per aggregate: the policy by replay cost. Whatever the events cost to decode
    /// and fold, a read then replays about `budget` worth of them at most (plus the events
    /// pushed since the previous read), and an aggregate read rarely, or cheap to fold, takes
    /// no snapshot at all.
    ///
    /// The fold's time is checked every 16 events, so a read of fewer than 16 events never
    /// takes a snapshot. Which versions get snapshots depends on timing; what a read returns
    /// never does (a read from a snapshot is the same as a full replay).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Credited { pub cents: i64 }
    /// # annals::events! { pub enum AccountEvent { Credited(Credited) = "CREDITED" } }
    /// use std::time::Duration;
    /// use annals::SnapshotPolicy;
    /// let policy: SnapshotPolicy<AccountEvent, i64> =
    ///     SnapshotPolicy::replay_budget(Duration::from_micros(250));
    /// assert_eq!(policy.kept(), 2);
    /// ```
    pub fn replay_budget(budget: Duration) -> Self {
        SnapshotPolicy {
            trigger: Trigger::Budget(budget),
            keep: 2,
        }
    }

    /// Keeps the newest `snapshots` per aggregate (at least 1): older ones are deleted after
    /// each write. More than one lets reads of older versions (`max_version`) start from a
    /// snapshot too.
    pub fn keep(mut self, snapshots: usize) -> Self {
        self.keep = snapshots.max(1);
        self
    }

    /// How many snapshots are kept per aggregate.
    pub fn kept(&self) -> usize {
        self.keep
    }

    /// The replay budget of a policy by replay cost.
    pub(crate) fn budget(&self) -> Option<Duration> {
        match &self.trigger {
            Trigger::Budget(budget) => Some(*budget),
            _ => None,
        }
    }

    /// Whether the policy may take a snapshot at `version`, before the event is decoded: with
    /// `every`, only at multiples; a predicate must see the event; a budget is judged by the
    /// read (see [`budget`](Self::budget)).
    pub(crate) fn may_fire(&self, version: u64) -> bool {
        match &self.trigger {
            Trigger::Every(n) => version.is_multiple_of(*n),
            Trigger::When(_) => true,
            Trigger::Budget(_) => false,
        }
    }

    /// Whether the policy takes a snapshot after `event`, folded into `aggregate`. A read
    /// writes only the last such point it folds.
    pub(crate) fn fires(&self, aggregate: &Aggregate<S>, event: &EventDetail<E>) -> bool {
        match &self.trigger {
            Trigger::Every(_) | Trigger::Budget(_) => self.may_fire(event.version),
            Trigger::When(predicate) => predicate(aggregate, event),
        }
    }
}

/// The default policy: by replay cost, a snapshot after any read whose fold took 250 µs or
/// more ([`SnapshotPolicy::replay_budget`]), keeping 2 per aggregate.
impl<E: Events, S> Default for SnapshotPolicy<E, S> {
    fn default() -> Self {
        SnapshotPolicy::replay_budget(DEFAULT_REPLAY_BUDGET)
    }
}

/// The replay budget of [`SnapshotPolicy::default`].
pub const DEFAULT_REPLAY_BUDGET: Duration = Duration::from_micros(250);
