//! A small ledger domain with a serializable state, stores with and without snapshots, and
//! helpers to write raw (old-schema) events and open log adapters in temporary directories.

use std::sync::Arc;

use annals::storage::{
    AppendEvent, EncodedEvent, InMemoryAdapter, Limits, LogAdapter, SnapshotRecord, SnapshotStorage,
};
use annals::{EventDetail, EventStore, NewEvent, SnapshotPolicy, StorageAdapter, Timestamp, codec};
use serde::{Deserialize, Serialize};

pub const LEDGERS: &str = "LEDGERS";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credited {
    pub cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tagged {
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cleared {}

annals::events! {
    #[derive(PartialEq)]
    pub enum LedgerEvent {
        Credited(Credited) = "CREDITED",
        Tagged(Tagged) = "TAGGED",
        Cleared(Cleared) = "CLEARED",
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub balance_cents: i64,
    pub credits: u64,
    pub tags: Vec<String>,
}

pub fn reduce(state: Option<Ledger>, event: &EventDetail<LedgerEvent>) -> Ledger {
    let mut ledger = state.unwrap_or_default();
    match &event.event {
        LedgerEvent::Credited(c) => {
            ledger.balance_cents += c.cents;
            ledger.credits += 1;
        }
        LedgerEvent::Tagged(t) => ledger.tags.push(t.tag.clone()),
        LedgerEvent::Cleared(_) => ledger.balance_cents = 0,
    }
    ledger
}

/// A different reducer (a "new release"): credits count double.
pub fn reduce_doubled(state: Option<Ledger>, event: &EventDetail<LedgerEvent>) -> Ledger {
    let mut ledger = state.unwrap_or_default();
    match &event.event {
        LedgerEvent::Credited(c) => {
            ledger.balance_cents += 2 * c.cents;
            ledger.credits += 1;
        }
        LedgerEvent::Tagged(t) => ledger.tags.push(t.tag.clone()),
        LedgerEvent::Cleared(_) => ledger.balance_cents = 0,
    }
    ledger
}

pub type Ledgers = EventStore<LedgerEvent, Ledger>;

/// The ledger store on `adapter`, taking snapshots by `policy`.
pub fn ledgers_with(
    adapter: Arc<dyn StorageAdapter>,
    policy: SnapshotPolicy<LedgerEvent, Ledger>,
) -> Ledgers {
    EventStore::builder(LEDGERS, reduce)
        .storage_adapter(adapter)
        .snapshots(policy)
        .build()
        .expect("the ledger store builds")
}

/// The ledger store on `adapter` without snapshots: the reference a full replay gives.
pub fn ledgers_without(adapter: Arc<dyn StorageAdapter>) -> Ledgers {
    EventStore::builder(LEDGERS, reduce)
        .storage_adapter(adapter)
        .build()
        .expect("the ledger store builds")
}

pub fn memory() -> Arc<InMemoryAdapter> {
    Arc::new(InMemoryAdapter::new())
}

/// A log adapter with small segments (fast to create), in `dir`.
pub fn open_log(dir: &std::path::Path) -> Arc<LogAdapter> {
    let adapter = LogAdapter::builder(dir)
        .segment_bytes(1 << 20)
        .limits(Limits {
            event_bytes_max: 16 << 10,
            group_events_max: 1_000,
            group_bytes_max: 256 << 10,
            ..Limits::default()
        })
        .open()
        .expect("the log adapter opens");
    Arc::new(adapter)
}

/// The `i`-th event of a deterministic sequence: mostly credits, some tags and clears.
pub fn nth_event(i: u64) -> LedgerEvent {
    match i % 11 {
        5 => LedgerEvent::Tagged(Tagged {
            tag: format!("t{i}"),
        }),
        10 => LedgerEvent::Cleared(Cleared {}),
        _ => LedgerEvent::Credited(Credited {
            cents: (i as i64 * 37) % 1000 - 300,
        }),
    }
}

/// Pushes `events` as the next versions of `aggregate_id`, in one atomic group.
pub async fn push_all(
    store: &Ledgers,
    aggregate_id: &str,
    first_version: u64,
    events: Vec<LedgerEvent>,
) {
    let grouped: Vec<_> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            store
                .group_event(
                    NewEvent::new(aggregate_id, first_version + i as u64, e),
                    Default::default(),
                )
                .expect("the event encodes")
        })
        .collect();
    annals::push_event_group(grouped)
        .await
        .expect("the group is pushed");
}

/// Pushes `count` events of [`nth_event`] from version 1.
pub async fn seed(store: &Ledgers, aggregate_id: &str, count: u64) {
    let mut version = 1;
    while version <= count {
        let end = (version + 499).min(count);
        push_all(
            store,
            aggregate_id,
            version,
            (version..=end).map(nth_event).collect(),
        )
        .await;
        version = end + 1;
    }
}

/// The adapter's snapshot storage (every adapter of these tests has one).
pub fn snapshots(adapter: &dyn StorageAdapter) -> &dyn SnapshotStorage {
    adapter.snapshots().expect("the adapter keeps snapshots")
}

/// The versions of the snapshots of one aggregate, oldest first.
pub fn snapshot_versions(adapter: &dyn StorageAdapter, aggregate_id: &str) -> Vec<u64> {
    let storage = snapshots(adapter);
    let mut versions = Vec::new();
    let mut bound = u64::MAX;
    while let Some(record) = storage
        .latest(LEDGERS, aggregate_id, bound)
        .expect("snapshot storage reads")
    {
        versions.push(record.version);
        match record.version.checked_sub(1) {
            Some(next) => bound = next,
            None => break,
        }
    }
    versions.reverse();
    versions
}

/// The snapshot record of an aggregate at `version` (it must exist).
pub fn snapshot_at(
    adapter: &dyn StorageAdapter,
    aggregate_id: &str,
    version: u64,
) -> SnapshotRecord {
    let record = snapshots(adapter)
        .latest(LEDGERS, aggregate_id, version)
        .expect("snapshot storage reads")
        .expect("a snapshot exists");
    assert_eq!(
        record.version, version,
        "a snapshot exists at exactly this version"
    );
    record
}

/// Appends an encoded event as an older release (or a newer one) would have written it.
pub async fn push_raw(
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
    aggregate_id: &str,
    version: u64,
    event_type: &str,
    schema_version: u32,
    payload: serde_json::Value,
) {
    let event = EncodedEvent {
        aggregate_id: aggregate_id.to_owned(),
        version,
        timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + version as i64),
        event_type: event_type.to_owned(),
        schema_version,
        payload: codec::from_json(&payload).expect("a JSON payload encodes"),
        metadata: codec::encode(&()).expect("unit metadata encodes"),
    };
    adapter
        .push_event(AppendEvent {
            event_store_id: event_store_id.to_owned(),
            event,
        })
        .await
        .expect("the raw event is appended");
}
