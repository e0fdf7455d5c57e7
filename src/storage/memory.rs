//! The in-memory adapter: complete and thread-safe, for tests and ephemeral stores.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::lifecycle::{AggregateFacts, Lifecycle, LifecycleRecord, Visible};
use super::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, CompactionReport, DeleteMode,
    EventAlreadyExists, EventStoreSummary, GetEventsOptions, InMemorySnapshots, LIFECYCLE_STORE,
    Limits, LoggedEvent, Position, Retention, SnapshotStorage, StorageAdapter, StorageError,
    StoredEvent, Timestamp,
};

/// Keeps every event, and every snapshot, in memory. Commits are atomic (one lock covers the
/// version checks and the writes); nothing survives the process. Lifecycle rules (deletes,
/// truncation, retention) apply as on every adapter; [`compact`](StorageAdapter::compact)
/// drops the events they hide from memory.
///
/// ```
/// # tokio_test_block_on(async {
/// use annals::storage::{InMemoryAdapter, StorageAdapter, GetEventsOptions};
/// let adapter = InMemoryAdapter::new();
/// let events = adapter.get_events("POKEMONS", "pikachu", &GetEventsOptions::default()).await?;
/// assert!(events.is_empty());
/// # Ok::<(), annals::storage::StorageError>(()) });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) }
/// ```
#[derive(Debug, Default)]
pub struct InMemoryAdapter {
    limits: Limits,
    state: Mutex<State>,
    snapshots: InMemorySnapshots,
    /// Subjects' data keys (feature `personal`).
    #[cfg(feature = "personal")]
    keys: super::Keys,
    /// The last committed position, for [`StorageAdapter::watch_log`].
    published: tokio::sync::watch::Sender<Position>,
}

#[derive(Debug, Default)]
struct State {
    stores: HashMap<String, StoreState>,
    last_position: Position,
    /// The global log: (position, store, aggregate, version) of every event held, by
    /// position.
    log: Vec<(Position, String, String, u64)>,
    /// The rules folded from the `$lifecycle` events.
    lifecycle: Lifecycle,
}

/// The events of one aggregate still held: a suffix of its versions once compacted.
#[derive(Debug, Default)]
struct Stream {
    /// Versions removed from the front by compaction.
    removed: u64,
    /// Index `i` holds version `removed + i + 1`.
    events: Vec<StoredEvent>,
}

impl Stream {
    fn last_version(&self) -> u64 {
        self.removed + self.events.len() as u64
    }

    fn get(&self, version: u64) -> Option<&StoredEvent> {
        let i = version.checked_sub(self.removed + 1)?;
        self.events.get(usize::try_from(i).ok()?)
    }
}

impl AggregateFacts for &Stream {
    fn last_version(&mut self) -> Result<u64, StorageError> {
        Ok(Stream::last_version(self))
    }

    fn first_since(&mut self, from: u64, cutoff: Timestamp) -> Result<Option<u64>, StorageError> {
        Ok(self
            .events
            .iter()
            .find(|e| e.event.version >= from && e.event.timestamp >= cutoff)
            .map(|e| e.event.version))
    }
}

#[derive(Debug, Default)]
struct StoreState {
    /// Events of each aggregate.
    aggregates: HashMap<String, Stream>,
    /// Aggregates ordered by (initial-event timestamp, id).
    by_initial_event: BTreeSet<AggregateIdEntry>,
}

impl InMemoryAdapter {
    /// An empty adapter with default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty adapter enforcing `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        InMemoryAdapter {
            limits,
            state: Mutex::default(),
            snapshots: InMemorySnapshots::new(),
            #[cfg(feature = "personal")]
            keys: super::Keys::default(),
            published: tokio::sync::watch::Sender::default(),
        }
    }

    /// Removes every event and snapshot of every store. Positions keep increasing.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.stores.clear();
        state.log.clear();
        state.lifecycle = Lifecycle::default();
        // Under the same lock as the events, so no reader pairs a snapshot with new events.
        self.snapshots.clear();
    }

    /// The adapter's snapshots (also reachable as [`StorageAdapter::snapshots`]).
    pub fn snapshot_storage(&self) -> &InMemorySnapshots {
        &self.snapshots
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied commit: `append` checks
        // everything before mutating. So a poisoned lock still guards consistent data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl InMemoryAdapter {
    /// Checks a lifecycle operation against the rules in force and records it: its
    /// `$lifecycle` event is appended and folded under the lock pushes take, so no push that
    /// the operation should refuse lands after it.
    fn record(&self, store: &str, record: LifecycleRecord) -> Result<Position, StorageError> {
        let mut state = self.lock();
        state.lifecycle.check(store, &record)?;
        let record = record.clamped(|aggregate| Ok(state.last_version(store, aggregate)))?;
        let version = state.lifecycle.next_version(store);
        let event = record.to_event(store, version, Timestamp::now());
        let position = state.commit(vec![event])[0];
        state.lifecycle.apply(store, version, &record);
        if let LifecycleRecord::Deleted {
            aggregate_id,
            mode: DeleteMode::Hard,
        } = &record
        {
            // A hard-deleted aggregate's snapshots hold its state: they go with it.
            self.snapshots.prune(store, aggregate_id, 0)?;
        }
        self.published.send_replace(state.last_position);
        Ok(position)
    }
}

impl State {
    fn last_version(&self, event_store_id: &str, aggregate_id: &str) -> u64 {
        self.stream(event_store_id, aggregate_id)
            .map_or(0, Stream::last_version)
    }

    fn stream(&self, event_store_id: &str, aggregate_id: &str) -> Option<&Stream> {
        self.stores
            .get(event_store_id)?
            .aggregates
            .get(aggregate_id)
    }

    /// What the rules leave visible of an aggregate now.
    fn visible(&self, event_store_id: &str, aggregate_id: &str, now: Timestamp) -> Visible {
        let empty = Stream::default();
        let stream = self.stream(event_store_id, aggregate_id).unwrap_or(&empty);
        self.lifecycle
            .visible(event_store_id, aggregate_id, now, &mut &*stream)
            .unwrap_or(Visible::From(1))
    }

    /// Appends checked events: gives them positions, records them, publishes nothing.
    fn commit(&mut self, events: Vec<AppendEvent>) -> Vec<Position> {
        let mut positions = Vec::with_capacity(events.len());
        for AppendEvent {
            event_store_id,
            event,
        } in events
        {
            self.last_position += 1;
            let position = self.last_position;
            positions.push(position);
            self.log.push((
                position,
                event_store_id.clone(),
                event.aggregate_id.clone(),
                event.version,
            ));
            let store = self.stores.entry(event_store_id).or_default();
            if event.version == 1 {
                store.by_initial_event.insert(AggregateIdEntry {
                    initial_event_timestamp: event.timestamp,
                    aggregate_id: event.aggregate_id.clone(),
                });
            }
            let stream = store
                .aggregates
                .entry(event.aggregate_id.clone())
                .or_default();
            stream.events.push(StoredEvent { position, event });
        }
        positions
    }
}

/// Checks that each event's version is the next one for its aggregate, counting earlier events
/// of the same commit. `last_version` reports the latest committed version.
pub(crate) fn check_commit_versions(
    events: &[AppendEvent],
    mut last_version: impl FnMut(&str, &str) -> u64,
) -> Result<(), StorageError> {
    let mut pending: HashMap<(&str, &str), u64> = HashMap::new();
    for AppendEvent {
        event_store_id,
        event,
    } in events
    {
        let key = (event_store_id.as_str(), event.aggregate_id.as_str());
        let last = match pending.get(&key) {
            Some(&v) => v,
            None => last_version(key.0, key.1),
        };
        if event.version <= last {
            return Err(EventAlreadyExists {
                event_store_id: event_store_id.clone(),
                aggregate_id: event.aggregate_id.clone(),
                version: event.version,
            }
            .into());
        }
        if event.version != last + 1 {
            return Err(StorageError::UnexpectedVersion {
                event_store_id: event_store_id.clone(),
                aggregate_id: event.aggregate_id.clone(),
                version: event.version,
                expected: Some(last + 1),
            });
        }
        pending.insert(key, event.version);
    }
    Ok(())
}

#[async_trait]
impl StorageAdapter for InMemoryAdapter {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn snapshots(&self) -> Option<&dyn SnapshotStorage> {
        Some(&self.snapshots)
    }

    #[cfg(feature = "personal")]
    fn keys(&self) -> Option<&super::Keys> {
        Some(&self.keys)
    }

    async fn read_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let state = self.lock();
        let Some(stream) = state.stream(event_store_id, aggregate_id) else {
            return Ok(Vec::new());
        };
        let Visible::From(first) = state.visible(event_store_id, aggregate_id, Timestamp::now())
        else {
            return Ok(Vec::new());
        };
        let in_range = stream
            .events
            .iter()
            .filter(|e| e.event.version >= first && options.contains(e.event.version));
        let limit = options.limit.unwrap_or(usize::MAX);
        Ok(if options.reverse {
            in_range.rev().take(limit).cloned().collect()
        } else {
            in_range.take(limit).cloned().collect()
        })
    }

    async fn append(&self, events: Vec<AppendEvent>) -> Result<Vec<Position>, StorageError> {
        let mut state = self.lock();
        state.lifecycle.check_push(
            events
                .iter()
                .map(|e| (e.event_store_id.as_str(), e.event.aggregate_id.as_str())),
        )?;
        check_commit_versions(&events, |s, a| state.last_version(s, a))?;
        let positions = state.commit(events);
        // Under the lock, so the published position never goes backwards.
        self.published.send_replace(state.last_position);
        Ok(positions)
    }

    async fn read_log(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        let state = self.lock();
        let start = state.log.partition_point(|(p, ..)| *p < from);
        let now = Timestamp::now();
        let mut memo = HashMap::new();
        let mut out = Vec::new();
        for (position, store, aggregate, version) in &state.log[start..] {
            if out.len() >= limit {
                break;
            }
            let Some(stream) = state.stream(store, aggregate) else {
                continue;
            };
            let Some(stored) = stream.get(*version) else {
                continue;
            };
            let admitted =
                state
                    .lifecycle
                    .admits(&mut memo, store, aggregate, *version, now, || stream)?;
            if admitted {
                out.push(LoggedEvent {
                    event_store_id: store.clone(),
                    position: *position,
                    event: stored.event.clone(),
                });
            }
        }
        Ok(out)
    }

    fn watch_log(&self) -> tokio::sync::watch::Receiver<Position> {
        self.published.subscribe()
    }

    async fn scan_aggregate_ids(
        &self,
        event_store_id: &str,
        query: &AggregateIdsQuery,
    ) -> Result<Vec<AggregateIdEntry>, StorageError> {
        let state = self.lock();
        let Some(store) = state.stores.get(event_store_id) else {
            return Ok(Vec::new());
        };
        let limit = query.scan_limit().unwrap_or(usize::MAX);
        let lifecycle = &state.lifecycle;
        let admitted = |e: &&AggregateIdEntry| {
            query.admits(e) && lifecycle.deleted(event_store_id, &e.aggregate_id).is_none()
        };
        Ok(if query.reverse {
            store
                .by_initial_event
                .iter()
                .rev()
                .filter(admitted)
                .take(limit)
                .cloned()
                .collect()
        } else {
            store
                .by_initial_event
                .iter()
                .filter(admitted)
                .take(limit)
                .cloned()
                .collect()
        })
    }

    async fn event_store_summaries(&self) -> Result<Vec<EventStoreSummary>, StorageError> {
        let state = self.lock();
        let now = Timestamp::now();
        let mut summaries: Vec<EventStoreSummary> = state
            .stores
            .iter()
            .map(|(event_store_id, store)| {
                let mut summary = EventStoreSummary {
                    event_store_id: event_store_id.clone(),
                    aggregates: 0,
                    events: 0,
                };
                for (aggregate_id, stream) in &store.aggregates {
                    if let Visible::From(first) = state.visible(event_store_id, aggregate_id, now) {
                        summary.aggregates += 1;
                        summary.events += stream.last_version().saturating_sub(first.max(1) - 1);
                    }
                }
                summary
            })
            .filter(|s| s.aggregates > 0)
            .collect();
        summaries.sort_by(|a, b| a.event_store_id.cmp(&b.event_store_id));
        Ok(summaries)
    }

    async fn delete_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        mode: DeleteMode,
    ) -> Result<Position, StorageError> {
        let record =
            LifecycleRecord::checked_delete(&self.limits, event_store_id, aggregate_id, mode)?;
        self.record(event_store_id, record)
    }

    async fn restore_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
    ) -> Result<Position, StorageError> {
        let record = LifecycleRecord::checked_restore(&self.limits, event_store_id, aggregate_id)?;
        self.record(event_store_id, record)
    }

    async fn truncate_before(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<Position, StorageError> {
        let record =
            LifecycleRecord::checked_truncate(&self.limits, event_store_id, aggregate_id, version)?;
        self.record(event_store_id, record)
    }

    async fn set_retention(
        &self,
        event_store_id: &str,
        retention: Retention,
    ) -> Result<Position, StorageError> {
        let record = LifecycleRecord::checked_retention(&self.limits, event_store_id, retention)?;
        self.record(event_store_id, record)
    }

    async fn retention(&self, event_store_id: &str) -> Result<Retention, StorageError> {
        self.limits.check_event_store_id(event_store_id)?;
        Ok(self.lock().lifecycle.retention(event_store_id))
    }

    /// Drops from memory every event the rules hide (positions of the others unchanged).
    async fn compact(&self) -> Result<CompactionReport, StorageError> {
        let mut state = self.lock();
        let now = Timestamp::now();
        // (store, aggregate, first version kept) of every aggregate that loses events.
        let mut cuts: Vec<(String, String, u64)> = Vec::new();
        for (event_store_id, store) in &state.stores {
            if event_store_id == LIFECYCLE_STORE || !state.lifecycle.has_rules(event_store_id) {
                continue;
            }
            for (aggregate_id, stream) in &store.aggregates {
                let keep_from = match state.visible(event_store_id, aggregate_id, now) {
                    Visible::Deleted(DeleteMode::Soft) => continue,
                    Visible::Deleted(DeleteMode::Hard) => u64::MAX,
                    Visible::From(first) => first,
                };
                if keep_from > stream.removed + 1 && !stream.events.is_empty() {
                    cuts.push((event_store_id.clone(), aggregate_id.clone(), keep_from));
                }
            }
        }
        let mut report = CompactionReport::default();
        let mut removed = std::collections::HashSet::new();
        for (event_store_id, aggregate_id, keep_from) in cuts {
            if keep_from == u64::MAX {
                // Snapshots written by a read that raced the hard delete.
                self.snapshots.prune(&event_store_id, &aggregate_id, 0)?;
            }
            let Some(stream) = state
                .stores
                .get_mut(&event_store_id)
                .and_then(|s| s.aggregates.get_mut(&aggregate_id))
            else {
                continue;
            };
            let count = stream
                .events
                .iter()
                .take_while(|e| e.event.version < keep_from)
                .count();
            for gone in stream.events.drain(..count) {
                report.events_removed += 1;
                report.bytes_before += gone.event.data_len() as u64;
                removed.insert(gone.position);
            }
            stream.removed += count as u64;
        }
        state
            .log
            .retain(|(position, ..)| !removed.contains(position));
        Ok(report)
    }
}
