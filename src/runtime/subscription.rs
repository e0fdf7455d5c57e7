//! Subscriptions: every event of an adapter's global log, in position order, from any position,
//! caught up from storage and then followed live.
//!
//! A [`Subscription`] reads the log in batches ([`StorageAdapter::read_log`]) and, once caught
//! up, waits on [`StorageAdapter::watch_log`] — woken by the next commit, with no polling delay.
//! Events come in global order, so the events of one aggregate come in version order, and an
//! event group is delivered whole and contiguous. A [`Filter`] keeps only some stores or event
//! types (positions keep counting the others, so a subscriber can checkpoint past them).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use annals::storage::{AppendEvent, EncodedEvent, InMemoryAdapter, StorageAdapter};
//! use annals::subscription::{Filter, Subscription};
//! use annals::Timestamp;
//!
//! let adapter = Arc::new(InMemoryAdapter::new());
//! let event = |id: &str| AppendEvent {
//!     event_store_id: "POKEMONS".into(),
//!     event: EncodedEvent {
//!         aggregate_id: id.into(),
//!         version: 1,
//!         timestamp: Timestamp::now(),
//!         event_type: "POKEMON_APPEARED".into(),
//!         schema_version: 1,
//!         payload: vec![0x80],
//!         metadata: vec![0x80],
//!     },
//! };
//! adapter.push_event(event("pikachu")).await?;
//! let mut subscription = Subscription::new(adapter.clone(), 1, Filter::all());
//! assert_eq!(subscription.next().await?.event.aggregate_id, "pikachu");
//! adapter.push_event(event("bulbasaur")).await?; // delivered live
//! assert_eq!(subscription.next().await?.event.aggregate_id, "bulbasaur");
//! # Ok::<(), annals::StorageError>(()) }).unwrap();
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use crate::runtime::lease::partition_of;
use crate::storage::{LoggedEvent, Position, StorageAdapter, StorageError};

/// Events read from storage per batch while catching up.
const BATCH: usize = 512;

/// Which events of the log a subscription delivers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    stores: Option<BTreeSet<String>>,
    types: Option<BTreeSet<String>>,
    /// `(partition, partitions)`: only the aggregates of that partition.
    partition: Option<(u32, u32)>,
}

impl Filter {
    /// Every event of every store.
    pub fn all() -> Self {
        Filter::default()
    }

    /// Only events of these event stores (replacing any earlier store filter).
    pub fn stores<I, S>(mut self, stores: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.stores = Some(stores.into_iter().map(Into::into).collect());
        self
    }

    /// Only events of these event types (replacing any earlier type filter).
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// Only events of the aggregates in partition `partition` out of `partitions` (see
    /// [`partition_of`]): what one member of a [consumer group](crate::lease) handles.
    /// Replaces any earlier partition filter.
    pub fn partition(mut self, partition: u32, partitions: u32) -> Self {
        self.partition = Some((partition, partitions.max(1)));
        self
    }

    /// Whether `event` passes the filter.
    pub fn admits(&self, event: &LoggedEvent) -> bool {
        self.admits_parts(&event.event_store_id, Some(&event.event.event_type))
            && self
                .partition
                .is_none_or(|(k, n)| partition_of(&event.event.aggregate_id, n) == k)
    }

    /// Whether something of `event_store_id` and `event_type` passes the filter; something
    /// without an event type (say, an aggregate-exists message) passes no type filter. The
    /// partition filter, which needs an aggregate id, is not applied.
    pub fn admits_parts(&self, event_store_id: &str, event_type: Option<&str>) -> bool {
        self.stores
            .as_ref()
            .is_none_or(|s| s.contains(event_store_id))
            && self
                .types
                .as_ref()
                .is_none_or(|t| event_type.is_some_and(|e| t.contains(e)))
    }
}

/// A reader of the global log from a position onwards: see the [module docs](self).
pub struct Subscription {
    adapter: Arc<dyn StorageAdapter>,
    filter: Filter,
    /// The next position to read from storage.
    next: Position,
    /// Read but not yet delivered (already filtered).
    buffer: VecDeque<LoggedEvent>,
    /// The position after the last event delivered, or skipped by the filter.
    delivered: Position,
    watch: tokio::sync::watch::Receiver<Position>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .field("position", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription delivering the events admitted by `filter` from global position `from`
    /// (positions start at 1; 0 is read as 1).
    pub fn new(adapter: Arc<dyn StorageAdapter>, from: Position, filter: Filter) -> Self {
        let from = from.max(1);
        let watch = adapter.watch_log();
        Subscription {
            adapter,
            filter,
            next: from,
            buffer: VecDeque::new(),
            delivered: from,
            watch,
        }
    }

    /// The position this subscription continues from: just after the last event it delivered
    /// or filtered out. Persist it to resume later (see [`crate::runtime::consumer`]).
    pub fn position(&self) -> Position {
        self.delivered
    }

    /// The next admitted event, waiting for a commit when the subscription has caught up.
    pub async fn next(&mut self) -> Result<LoggedEvent, StorageError> {
        loop {
            if let Some(event) = self.try_next().await? {
                return Ok(event);
            }
            // Caught up: wait until the log grows past what was read.
            let next = self.next;
            if self.watch.wait_for(|last| *last >= next).await.is_err() {
                return Err(StorageError::Closed);
            }
        }
    }

    /// The next admitted event if one is committed, without waiting for new commits.
    pub async fn try_next(&mut self) -> Result<Option<LoggedEvent>, StorageError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.delivered = event.position + 1;
                return Ok(Some(event));
            }
            // Committed before the read: what the read does not return up to here is hidden
            // by lifecycle rules (deleted, truncated, expired), and is passed.
            let end = *self.watch.borrow();
            let batch = self.adapter.read_log(self.next, BATCH).await?;
            let Some(last) = batch.last() else {
                self.next = self.next.max(end + 1);
                // Everything read was filtered out: the position moves past it.
                self.delivered = self.next;
                return Ok(None);
            };
            self.next = last.position + 1;
            let filter = &self.filter;
            self.buffer
                .extend(batch.into_iter().filter(|e| filter.admits(e)));
            if self.buffer.is_empty() {
                self.delivered = self.next;
            }
        }
    }
}
