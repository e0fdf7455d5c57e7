//! Figures about an open engine: its log, its persisted index, its stores.

use std::collections::{BTreeMap, HashMap};

use super::error::EngineError;
use super::handle::Engine;

/// Summary figures of an open engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStats {
    /// Global position of the last committed event (0 when empty).
    pub last_position: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Bytes of segment files on disk (preallocated size).
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
            // Versions are gap-free from 1, so the latest version counts the events.
            add(store, recent.remove(&key).unwrap_or(version));
        })?;
        for ((store, _), version) in recent {
            add(&store, version);
        }
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
