//! The reference: what a correct storage adapter returns, kept in plain `BTreeMap`s.

use std::collections::{BTreeMap, HashMap};

use annals::storage::{AggregateIdEntry, AppendEvent, GetEventsOptions, StoredEvent, Timestamp};

/// Why the model refuses a commit: the first offending event, as the adapter must name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `EventAlreadyExists` for this event.
    Exists {
        store: String,
        aggregate: String,
        version: u64,
    },
    /// `UnexpectedVersion` for this event, with the version that would have been accepted.
    Unexpected {
        store: String,
        aggregate: String,
        version: u64,
        expected: Option<u64>,
    },
}

/// Every committed event by (store, aggregate); index `i` holds version `i + 1`.
#[derive(Debug, Default)]
pub struct Model {
    streams: BTreeMap<(String, String), Vec<StoredEvent>>,
    last_position: u64,
}

impl Model {
    pub fn last_position(&self) -> u64 {
        self.last_position
    }

    /// The latest committed version of an aggregate (0 when it has none).
    pub fn last_version(&self, store: &str, aggregate: &str) -> u64 {
        self.streams
            .get(&(store.to_owned(), aggregate.to_owned()))
            .map_or(0, |events| events.len() as u64)
    }

    /// Commits `events` all or nothing and returns their positions, or the refusal.
    pub fn append(&mut self, events: &[AppendEvent]) -> Result<Vec<u64>, Refusal> {
        // Version 0 is refused by input validation, before any version is compared.
        if let Some(e) = events.iter().find(|e| e.event.version == 0) {
            return Err(Refusal::Unexpected {
                store: e.event_store_id.clone(),
                aggregate: e.event.aggregate_id.clone(),
                version: 0,
                expected: None,
            });
        }
        let mut pending: HashMap<(&str, &str), u64> = HashMap::new();
        for e in events {
            let key = (e.event_store_id.as_str(), e.event.aggregate_id.as_str());
            let last = pending
                .get(&key)
                .copied()
                .unwrap_or_else(|| self.last_version(key.0, key.1));
            let version = e.event.version;
            if version <= last {
                return Err(Refusal::Exists {
                    store: key.0.to_owned(),
                    aggregate: key.1.to_owned(),
                    version,
                });
            }
            if version != last + 1 {
                return Err(Refusal::Unexpected {
                    store: key.0.to_owned(),
                    aggregate: key.1.to_owned(),
                    version,
                    expected: Some(last + 1),
                });
            }
            pending.insert(key, version);
        }
        let mut positions = Vec::with_capacity(events.len());
        for e in events {
            self.last_position += 1;
            positions.push(self.last_position);
            self.streams
                .entry((e.event_store_id.clone(), e.event.aggregate_id.clone()))
                .or_default()
                .push(StoredEvent {
                    position: self.last_position,
                    event: e.event.clone(),
                });
        }
        Ok(positions)
    }

    /// `get_events`: versions within the bounds, `limit` of them from the chosen end.
    pub fn read(
        &self,
        store: &str,
        aggregate: &str,
        options: &GetEventsOptions,
    ) -> Vec<StoredEvent> {
        let Some(events) = self.streams.get(&(store.to_owned(), aggregate.to_owned())) else {
            return Vec::new();
        };
        let in_range = events
            .iter()
            .filter(|e| {
                options.min_version.is_none_or(|min| e.event.version >= min)
                    && options.max_version.is_none_or(|max| e.event.version <= max)
            })
            .cloned();
        let limit = options.limit.unwrap_or(usize::MAX);
        if options.reverse {
            in_range.rev().take(limit).collect()
        } else {
            in_range.take(limit).collect()
        }
    }

    /// Every aggregate id of a store within the inclusive bounds, ordered by (first event's
    /// timestamp, id), descending when `reverse`: the concatenation of all pages.
    pub fn list(
        &self,
        store: &str,
        after: Option<Timestamp>,
        before: Option<Timestamp>,
        reverse: bool,
    ) -> Vec<AggregateIdEntry> {
        let mut entries: Vec<AggregateIdEntry> = self
            .streams
            .iter()
            .filter(|((s, _), _)| s == store)
            .map(|((_, aggregate), events)| AggregateIdEntry {
                initial_event_timestamp: events[0].event.timestamp,
                aggregate_id: aggregate.clone(),
            })
            .filter(|e| {
                after.is_none_or(|a| e.initial_event_timestamp >= a)
                    && before.is_none_or(|b| e.initial_event_timestamp <= b)
            })
            .collect();
        entries.sort();
        if reverse {
            entries.reverse();
        }
        entries
    }

    /// Every (store, aggregate) with events.
    pub fn streams(&self) -> impl Iterator<Item = &(String, String)> {
        self.streams.keys()
    }
}
