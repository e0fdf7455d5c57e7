//! The in-memory adapter: complete and thread-safe, for tests and ephemeral stores.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, EventAlreadyExists, GetEventsOptions,
    InMemorySnapshots, Limits, LoggedEvent, Position, SnapshotStorage, StorageAdapter,
    StorageError, StoredEvent,
};

/// Keeps every event, and every snapshot, in memory. Commits are atomic (one lock covers the
/// version checks and the writes); nothing survives the process.
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
    /// The global log: (position, store, aggregate, version) of every event, by position.
    log: Vec<(Position, String, String, u64)>,
}

#[derive(Debug, Default)]
struct StoreState {
    /// Events of each aggregate; index `i` holds version `i + 1`.
    aggregates: HashMap<String, Vec<StoredEvent>>,
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

impl State {
    fn last_version(&self, event_store_id: &str, aggregate_id: &str) -> u64 {
        self.stores
            .get(event_store_id)
            .and_then(|s| s.aggregates.get(aggregate_id))
            .map_or(0, |events| events.len() as u64)
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
        let Some(events) = state
            .stores
            .get(event_store_id)
            .and_then(|s| s.aggregates.get(aggregate_id))
        else {
            return Ok(Vec::new());
        };
        let in_range = events.iter().filter(|e| options.contains(e.event.version));
        let limit = options.limit.unwrap_or(usize::MAX);
        Ok(if options.reverse {
            in_range.rev().take(limit).cloned().collect()
        } else {
            in_range.take(limit).cloned().collect()
        })
    }

    async fn append(&self, events: Vec<AppendEvent>) -> Result<Vec<Position>, StorageError> {
        let mut state = self.lock();
        check_commit_versions(&events, |s, a| state.last_version(s, a))?;
        let mut positions = Vec::with_capacity(events.len());
        for AppendEvent {
            event_store_id,
            event,
        } in events
        {
            state.last_position += 1;
            let position = state.last_position;
            positions.push(position);
            state.log.push((
                position,
                event_store_id.clone(),
                event.aggregate_id.clone(),
                event.version,
            ));
            let store = state.stores.entry(event_store_id).or_default();
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
            stream.push(StoredEvent { position, event });
        }
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
        Ok(state.log[start..]
            .iter()
            .take(limit)
            .filter_map(|(position, store, aggregate, version)| {
                let stored = state
                    .stores
                    .get(store)?
                    .aggregates
                    .get(aggregate)?
                    .get(usize::try_from(*version).ok()?.checked_sub(1)?)?;
                Some(LoggedEvent {
                    event_store_id: store.clone(),
                    position: *position,
                    event: stored.event.clone(),
                })
            })
            .collect())
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
        let admitted = |e: &&AggregateIdEntry| query.admits(e);
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
}
