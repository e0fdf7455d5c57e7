//! Figures about an open engine: its log, its persisted index, its stores.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use super::error::EngineError;
use super::handle::Engine;

/// Summary figures of an open engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStats {
    /// Global position of the last committed event (0 when empty).
    pub last_position: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Bytes of segment files on disk (preallocated size; a segment prepared ahead of need is
    /// not counted).
    pub segment_bytes: u64,
    /// Events not yet checkpointed into the persisted index.
    pub unindexed_events: usize,
}

/// The state of the persisted index (see
/// [`LogAdapter::index_stats`](crate::storage::LogAdapter::index_stats)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexStats {
    /// The persisted index covers every event up to this position (0: none yet); events
    /// after it are indexed in memory and replayed from the log on open.
    pub indexed_through: u64,
    /// Events not yet checkpointed into the persisted index.
    pub unindexed_events: usize,
    /// Size of `index.redb`, in bytes.
    pub file_bytes: u64,
}

/// What the log's writer has done since the store was opened: running totals, cheap to read
/// at any time (see [`LogAdapter::counters`](crate::storage::LogAdapter::counters)). Compare
/// two readings to get rates.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use annals::storage::{AppendEvent, EncodedEvent, StorageAdapter};
///
/// let dir = tempfile::tempdir()?;
/// let log = annals::open(dir.path())?;
/// let event = EncodedEvent {
///     aggregate_id: "pikachu".into(),
///     version: 1,
///     timestamp: annals::Timestamp::from_unix_millis(0),
///     event_type: "APPEARED".into(),
///     schema_version: 1,
///     payload: b"{}".to_vec(),
///     metadata: Vec::new(),
/// };
/// log.push_event(AppendEvent { event_store_id: "POKEMONS".into(), event }).await?;
/// let counters = log.counters();
/// assert_eq!((counters.commits, counters.events), (1, 1));
/// assert!(counters.syncs >= 1 && counters.bytes_written > 0);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogCounters {
    /// Commits written and acknowledged (an event group is one commit).
    pub commits: u64,
    /// Events of those commits.
    pub events: u64,
    /// Data syncs of the log (an fdatasync, or a write that syncs its own range): one serves
    /// every commit of a group-commit batch. Zero under [`Durability::None`] until a sync is
    /// asked for or the store closes.
    ///
    /// [`Durability::None`]: super::Durability::None
    pub syncs: u64,
    /// Time spent in those syncs, in total (a write that syncs its own range counts whole):
    /// divided by [`syncs`](Self::syncs), the mean fsync latency the log sees.
    pub sync_time: std::time::Duration,
    /// The longest of those syncs.
    pub sync_time_max: std::time::Duration,
    /// Bytes of commit frames written to the log (the zero-filling of new segments aside).
    pub bytes_written: u64,
    /// Times the log moved on to a new segment file.
    pub segment_rolls: u64,
    /// Events appended but not yet in the persisted index (`index.redb`): what opening the
    /// store after a crash would replay from the log.
    pub checkpoint_lag: u64,
}

impl LogCounters {
    /// Events per data sync: how well group commit batched (0 before the first sync).
    pub fn events_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.events as f64 / self.syncs as f64
        }
    }
}

/// The size of one store (event store id) of the log (see [`Engine::store_summaries`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSummary {
    /// The store's id.
    pub store: String,
    /// Aggregates with at least one event.
    pub aggregates: u64,
    /// Events of all its aggregates.
    pub events: u64,
}

impl Engine {
    /// Figures about the open store.
    pub fn stats(&self) -> EngineStats {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let tiers = self.shared.tiers.read().unwrap_or_else(|p| p.into_inner());
        EngineStats {
            last_position: self.last_position(),
            segments: segments.len(),
            segment_bytes: segments.values().map(|s| s.header.size).sum(),
            unindexed_events: tiers.active.events + tiers.frozen.as_ref().map_or(0, |f| f.events),
        }
    }

    /// The writer's counters since the store opened.
    pub fn counters(&self) -> LogCounters {
        let c = &self.shared.counters;
        let checkpoint_lag = {
            let tiers = self.shared.tiers.read().unwrap_or_else(|p| p.into_inner());
            tiers.active.events + tiers.frozen.as_ref().map_or(0, |f| f.events)
        };
        LogCounters {
            commits: c.commits.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            sync_time: std::time::Duration::from_nanos(c.sync_nanos.load(Ordering::Relaxed)),
            sync_time_max: std::time::Duration::from_nanos(
                c.sync_nanos_max.load(Ordering::Relaxed),
            ),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            segment_rolls: c.segment_rolls.load(Ordering::Relaxed),
            checkpoint_lag: checkpoint_lag as u64,
        }
    }

    /// The persisted index: how far it reaches and how large it is.
    pub fn index_stats(&self) -> Result<IndexStats, EngineError> {
        let unindexed_events = self.stats().unindexed_events;
        let checkpoint = self.shared.index_reader()?.checkpoint()?;
        let path = &self.shared.index_path;
        let file_bytes = self
            .shared
            .fs
            .open(path, false)
            .and_then(|f| f.size())
            .map_err(|e| EngineError::io("measure", path, e))?;
        Ok(IndexStats {
            indexed_through: checkpoint.map_or(0, |c| c.next_position.saturating_sub(1)),
            unindexed_events,
            file_bytes,
        })
    }

    /// Every store of the log with its number of aggregates and events, ordered by store id.
    /// Reads every aggregate's latest version from the index (one pass, no event is read).
    pub fn store_summaries(&self) -> Result<Vec<StoreSummary>, EngineError> {
        let mut recent: HashMap<(String, String), u64> = HashMap::new();
        let reader = {
            let tiers = self.shared.tiers.read().unwrap_or_else(|p| p.into_inner());
            // The active memtable is newer than the frozen one: it wins.
            for mem in [tiers.frozen.as_deref(), Some(&tiers.active)]
                .into_iter()
                .flatten()
            {
                for (store, aggregate, version) in mem.aggregates() {
                    recent.insert((store.to_owned(), aggregate.to_owned()), version);
                }
            }
            // Taken under the tiers' lock, so index and memtables are seen at one instant.
            self.shared.index_reader()?
        };
        let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut add = |store: &str, version: u64| match totals.get_mut(store) {
            Some((aggregates, events)) => {
                *aggregates += 1;
                *events += version;
            }
            None => {
                totals.insert(store.to_owned(), (1, version));
            }
        };
        reader.visit_aggregates(&mut |store, aggregate, version| {
            let key = (store.to_owned(), aggregate.to_owned());
            // Versions are gap-free from 1, so the latest version counts the events (less
            // those a compaction removed, below).
            add(store, recent.remove(&key).unwrap_or(version));
        })?;
        for ((store, _), version) in recent {
            add(&store, version);
        }
        // The versions a compaction removed are not events any more.
        reader.visit_first_versions(&mut |store, first| {
            if let Some((_, events)) = totals.get_mut(store) {
                *events = events.saturating_sub(first.saturating_sub(1));
            }
        })?;
        Ok(totals
            .into_iter()
            .map(|(store, (aggregates, events))| StoreSummary {
                store,
                aggregates,
                events,
            })
            .collect())
    }
}
