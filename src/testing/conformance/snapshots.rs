//! Snapshot storage, for adapters that keep snapshots.

use std::sync::Arc;

use crate::storage::{SnapshotRecord, StorageAdapter};

use super::events::{OTHER_STORE, STORE};

/// A snapshot record whose fields all derive from `seed`, with a state of `len` bytes.
fn snapshot_record(version: u64, seed: u64, len: usize) -> SnapshotRecord {
    let state = (0..len).map(|i| (seed as usize + i) as u8).collect();
    SnapshotRecord::new(version, seed % 7, seed * 10, seed as u32 ^ 0xa5a5, state)
}

/// Snapshot records read back byte for byte; `latest` returns the record with the highest
/// version at or below its bound, of exactly the asked store and aggregate; a put at an
/// existing version replaces the record.
pub async fn snapshots_round_trip_and_latest_is_at_or_below(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "snapshots_round_trip_and_latest_is_at_or_below";
    let Some(snapshots) = adapter.snapshots() else {
        return;
    };
    let records: Vec<SnapshotRecord> = [10, 20, 30]
        .into_iter()
        .map(|v| snapshot_record(v, v + 1, 64 * v as usize))
        .collect();
    for record in &records {
        snapshots
            .put(STORE, "agg", record)
            .expect("a snapshot is stored");
    }
    // Neighbours that must never be returned for `agg` of `STORE`.
    let other = snapshot_record(15, 99, 8);
    snapshots
        .put(OTHER_STORE, "agg", &other)
        .expect("a snapshot is stored");
    snapshots
        .put(STORE, "agg-2", &other)
        .expect("a snapshot is stored");
    snapshots
        .put(STORE, "ag", &other)
        .expect("a snapshot is stored");
    let latest = |bound: u64| {
        snapshots
            .latest(STORE, "agg", bound)
            .expect("snapshots are read")
    };
    for (bound, expected) in [
        (0, None),
        (9, None),
        (10, Some(&records[0])),
        (19, Some(&records[0])),
        (20, Some(&records[1])),
        (29, Some(&records[1])),
        (30, Some(&records[2])),
        (u64::MAX, Some(&records[2])),
    ] {
        assert_eq!(
            latest(bound).as_ref(),
            expected,
            "{CHECK}: latest at or below {bound}"
        );
    }
    assert_eq!(
        snapshots
            .latest(STORE, "nobody", u64::MAX)
            .expect("snapshots are read"),
        None,
        "{CHECK}: an aggregate without snapshots has none"
    );
    let replacement = snapshot_record(20, 1_000, 3);
    snapshots
        .put(STORE, "agg", &replacement)
        .expect("a snapshot is replaced");
    assert_eq!(
        latest(25),
        Some(replacement),
        "{CHECK}: a put replaces the record at its version"
    );
}

/// `prune` keeps exactly the newest records of one aggregate and reports how many it removed;
/// `delete` removes one record and nothing else; both are no-ops where there is nothing.
pub async fn snapshots_prune_keeps_the_newest_and_delete_removes_one(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "snapshots_prune_keeps_the_newest_and_delete_removes_one";
    let Some(snapshots) = adapter.snapshots() else {
        return;
    };
    for version in 1..=6 {
        for aggregate in ["agg", "other"] {
            let record = snapshot_record(version * 10, version, 16);
            snapshots
                .put(STORE, aggregate, &record)
                .expect("a snapshot is stored");
        }
    }
    let versions = |aggregate: &str| {
        let mut found = Vec::new();
        let mut bound = u64::MAX;
        while let Some(record) = snapshots
            .latest(STORE, aggregate, bound)
            .expect("snapshots are read")
        {
            found.push(record.version);
            bound = record.version - 1;
        }
        found.reverse();
        found
    };
    assert_eq!(
        snapshots.prune(STORE, "agg", 2).expect("pruned"),
        4,
        "{CHECK}: removed count"
    );
    assert_eq!(versions("agg"), [50, 60], "{CHECK}: the newest are kept");
    assert_eq!(
        versions("other"),
        [10, 20, 30, 40, 50, 60],
        "{CHECK}: other aggregates untouched"
    );
    assert_eq!(
        snapshots.prune(STORE, "agg", 2).expect("pruned"),
        0,
        "{CHECK}: nothing more to prune"
    );
    assert_eq!(
        snapshots.prune(STORE, "nobody", 1).expect("pruned"),
        0,
        "{CHECK}: no records"
    );
    snapshots
        .delete(STORE, "other", 30)
        .expect("a snapshot is deleted");
    snapshots
        .delete(STORE, "other", 35)
        .expect("deleting a missing snapshot is fine");
    assert_eq!(
        versions("other"),
        [10, 20, 40, 50, 60],
        "{CHECK}: delete removes one record"
    );
}
