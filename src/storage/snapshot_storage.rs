//! Snapshot storage: where an adapter keeps encoded aggregate states, so that reading a long
//! aggregate can start from a recent state instead of its first event.
//!
//! Snapshots are derived data. Every snapshot can be recomputed from the events, so a snapshot
//! store may lose or refuse records at any time without losing anything: the typed layer then
//! replays from an older snapshot or from the first event. What a snapshot store must never
//! do is return a record under a key it was not written with.
//!
//! - [`SnapshotRecord`]: one snapshot, keyed by (event store id, aggregate id, version), with
//!   the reducer version it was computed under, an anchor on the event it was computed up to
//!   and a checksum over all of it.
//! - [`SnapshotStorage`]: put, newest-at-or-below, delete, prune. A [`StorageAdapter`]
//!   offers one through [`StorageAdapter::snapshots`](super::StorageAdapter::snapshots).
//! - [`InMemorySnapshots`]: the in-memory implementation (used by
//!   [`InMemoryAdapter`](super::InMemoryAdapter)). The log adapter keeps its snapshots in
//!   `snapshots.redb` next to its log (format in `docs/format.md`).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{EncodedEvent, EventRef, Position, StorageError};

/// One snapshot of an aggregate: its encoded state after the event at `version`.
///
/// The record is self-checking: [`checksum`](Self::checksum) covers every other field, and
/// [`event_position`](Self::event_position) and [`event_checksum`](Self::event_checksum) pin
/// the exact event the state was computed up to, so a snapshot can be recognised as stale if
/// that event were ever lost and rewritten (possible after a power loss under a weak
/// [`Durability`](crate::engine::Durability)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The aggregate version the state is at (the version of the last event folded in).
    pub version: u64,
    /// The reducer version the state was computed under; a store ignores (and deletes) the
    /// snapshots of any other.
    pub reducer_version: u64,
    /// The global position of the event at `version`.
    pub event_position: Position,
    /// [`event_checksum`] of the event at `version`.
    pub event_checksum: u32,
    /// The encoded state.
    pub state: Vec<u8>,
    /// CRC-32 of the other fields (see [`compute_checksum`](Self::compute_checksum)).
    pub checksum: u32,
}

impl SnapshotRecord {
    /// A record with its checksum computed.
    pub fn new(
        version: u64,
        reducer_version: u64,
        event_position: Position,
        event_checksum: u32,
        state: Vec<u8>,
    ) -> Self {
        let mut record = SnapshotRecord {
            version,
            reducer_version,
            event_position,
            event_checksum,
            state,
            checksum: 0,
        };
        record.checksum = record.compute_checksum();
        record
    }

    /// CRC-32 of `version`, `reducer_version`, `event_position` (each 8 bytes little-endian),
    /// `event_checksum` (4 bytes little-endian) and the state bytes, in this order.
    pub fn compute_checksum(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.version.to_le_bytes());
        hasher.update(&self.reducer_version.to_le_bytes());
        hasher.update(&self.event_position.to_le_bytes());
        hasher.update(&self.event_checksum.to_le_bytes());
        hasher.update(&self.state);
        hasher.finalize()
    }

    /// Whether the stored checksum matches the record's fields.
    pub fn is_intact(&self) -> bool {
        self.checksum == self.compute_checksum()
    }
}

/// CRC-32 of everything an event carries besides its aggregate id: version and timestamp (8
/// bytes little-endian each), schema version (4 bytes little-endian), then the lengths (4 bytes
/// little-endian) and bytes of the event type, payload and metadata.
///
/// A snapshot records this for the event it was computed up to; an event that reads back
/// differently makes the snapshot stale.
pub fn event_checksum(event: &EncodedEvent) -> u32 {
    checksum_parts(
        event.version,
        event.timestamp.unix_millis(),
        event.schema_version,
        [event.event_type.as_bytes(), &event.payload, &event.metadata],
    )
}

/// [`event_checksum`] of a borrowed event: the same value for the same event.
pub fn event_ref_checksum(event: &EventRef<'_>) -> u32 {
    checksum_parts(
        event.version,
        event.timestamp.unix_millis(),
        event.schema_version,
        [event.event_type.as_bytes(), event.payload, event.metadata],
    )
}

fn checksum_parts(version: u64, timestamp_ms: i64, schema_version: u32, parts: [&[u8]; 3]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&version.to_le_bytes());
    hasher.update(&timestamp_ms.to_le_bytes());
    hasher.update(&schema_version.to_le_bytes());
    for part in parts {
        // Lengths first, so that moving bytes between parts changes the checksum.
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        hasher.update(&len.to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize()
}

/// Where an adapter keeps snapshots, keyed by (event store id, aggregate id, version).
///
/// Calls are synchronous and may block on I/O (the typed layer writes snapshots from a
/// blocking task, off the path of any push). Implementations store records byte for byte and
/// never return a record under another key; they need not verify checksums (the typed layer
/// does), and may drop records they cannot read.
pub trait SnapshotStorage: Send + Sync {
    /// Stores `record` under (`event_store_id`, `aggregate_id`, `record.version`), replacing
    /// any record with that key.
    fn put(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        record: &SnapshotRecord,
    ) -> Result<(), StorageError>;

    /// The record of the aggregate with the highest version at or below `max_version`.
    fn latest(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        max_version: u64,
    ) -> Result<Option<SnapshotRecord>, StorageError>;

    /// Removes the record at `version`, if there is one.
    fn delete(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<(), StorageError>;

    /// Removes all but the `keep` records of the aggregate with the highest versions; returns
    /// how many were removed.
    fn prune(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        keep: usize,
    ) -> Result<usize, StorageError>;
}

/// What a log adapter's snapshot file holds (see
/// [`LogAdapter::snapshot_stats`](super::LogAdapter::snapshot_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshot records stored, across every store and aggregate.
    pub records: u64,
    /// Size of the snapshot file, in bytes (0 when none was written yet).
    pub file_bytes: u64,
}

type Key = (String, String, u64);

/// Snapshots in memory, for [`InMemoryAdapter`](super::InMemoryAdapter) and tests.
#[derive(Debug, Default)]
pub struct InMemorySnapshots {
    records: Mutex<BTreeMap<Key, SnapshotRecord>>,
}

impl InMemorySnapshots {
    /// An empty snapshot store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes every record.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, SnapshotRecord>> {
        // Every operation leaves the map consistent, so a poisoned lock guards good data.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(event_store_id: &str, aggregate_id: &str, version: u64) -> Key {
    (event_store_id.to_owned(), aggregate_id.to_owned(), version)
}

impl SnapshotStorage for InMemorySnapshots {
    fn put(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        record: &SnapshotRecord,
    ) -> Result<(), StorageError> {
        self.lock().insert(
            key(event_store_id, aggregate_id, record.version),
            record.clone(),
        );
        Ok(())
    }

    fn latest(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        max_version: u64,
    ) -> Result<Option<SnapshotRecord>, StorageError> {
        let records = self.lock();
        let range =
            key(event_store_id, aggregate_id, 0)..=key(event_store_id, aggregate_id, max_version);
        Ok(records.range(range).next_back().map(|(_, r)| r.clone()))
    }

    fn delete(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<(), StorageError> {
        self.lock()
            .remove(&key(event_store_id, aggregate_id, version));
        Ok(())
    }

    fn prune(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        keep: usize,
    ) -> Result<usize, StorageError> {
        let mut records = self.lock();
        let range =
            key(event_store_id, aggregate_id, 0)..=key(event_store_id, aggregate_id, u64::MAX);
        let versions: Vec<u64> = records.range(range).map(|((_, _, v), _)| *v).collect();
        let excess = versions.len().saturating_sub(keep);
        for version in &versions[..excess] {
            records.remove(&key(event_store_id, aggregate_id, *version));
        }
        Ok(excess)
    }
}
