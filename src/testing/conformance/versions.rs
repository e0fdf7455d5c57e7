//! Versions of an aggregate are exactly `1..=n`: a conflict or a gap is refused, typed.

use std::sync::Arc;

use crate::storage::{EncodedEvent, StorageAdapter};

use super::events::{OTHER_STORE, STORE, at, event, push, push_versions, snapshot};
use super::expect::{expect_conflict, expect_unexpected_version};

/// Pushing a version that exists fails with `EventAlreadyExists` naming the store, aggregate
/// and version, and writes nothing.
pub async fn existing_version_is_event_already_exists(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "existing_version_is_event_already_exists";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 3).await;
    let slots = [(STORE, "pikachu"), (OTHER_STORE, "pikachu")];
    let before = snapshot(CHECK, adapter, &slots).await;
    for version in 1..=3 {
        let replaced = EncodedEvent {
            payload: b"replacement".to_vec(),
            ..event("pikachu", version)
        };
        let result = adapter.push_event(at(STORE, replaced)).await;
        expect_conflict(CHECK, result, (STORE, "pikachu", version));
    }
    // The same conflict through a group that also touches another store.
    let group = vec![
        at(OTHER_STORE, event("pikachu", 1)),
        at(STORE, event("pikachu", 2)),
    ];
    let result = adapter.push_event_group(group).await;
    expect_conflict(CHECK, result, (STORE, "pikachu", 2));
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(
        after, before,
        "{CHECK}: nothing is written after a conflict"
    );
    // The aggregate still accepts its next version.
    push(CHECK, adapter, vec![at(STORE, event("pikachu", 4))]).await;
}

/// Skipping a version fails with `UnexpectedVersion` carrying the version that would have been
/// accepted, and writes nothing.
pub async fn version_gap_is_unexpected_version(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "version_gap_is_unexpected_version";
    let adapter = &*adapter;
    let slots = [(STORE, "pikachu"), (STORE, "new")];
    // A gap on a new aggregate: versions start at 1.
    let result = adapter.push_event(at(STORE, event("new", 2))).await;
    expect_unexpected_version(CHECK, result, (STORE, "new", 2), Some(1));
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    let before = snapshot(CHECK, adapter, &slots).await;
    for version in [4, 5, 1_000, u64::MAX] {
        let result = adapter
            .push_event(at(STORE, event("pikachu", version)))
            .await;
        expect_unexpected_version(CHECK, result, (STORE, "pikachu", version), Some(3));
    }
    let group = vec![at(STORE, event("new", 1)), at(STORE, event("pikachu", 4))];
    let result = adapter.push_event_group(group).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 4), Some(3));
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: nothing is written after a gap");
    push(CHECK, adapter, vec![at(STORE, event("pikachu", 3))]).await;
}

/// Version 0 fails with `UnexpectedVersion` whose `expected` is `None` ("versions start at
/// 1"), on new and existing aggregates alike, and writes nothing.
pub async fn version_zero_is_unexpected_version(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "version_zero_is_unexpected_version";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    let slots = [(STORE, "pikachu"), (STORE, "new")];
    let before = snapshot(CHECK, adapter, &slots).await;
    for aggregate_id in ["new", "pikachu"] {
        let result = adapter.push_event(at(STORE, event(aggregate_id, 0))).await;
        expect_unexpected_version(CHECK, result, (STORE, aggregate_id, 0), None);
    }
    let group = vec![at(STORE, event("new", 1)), at(STORE, event("pikachu", 0))];
    let result = adapter.push_event_group(group).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 0), None);
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: nothing is written after version 0");
}
