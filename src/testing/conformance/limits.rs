//! Every [`Limits`](crate::storage::Limits) bound and id rule is enforced before anything is
//! written.

use std::sync::Arc;

use crate::storage::{
    AppendEvent, EncodedEvent, GetEventsOptions, LimitError, Limits, RESERVED_EVENT_TYPES,
    StorageAdapter, StoredEvent,
};

use super::events::{STORE, at, event, list_all, push, push_versions, read_all, snapshot};
use super::expect::expect_limit;

/// An event of exactly `event_bytes_max` bytes is accepted; one byte more is refused with
/// `EventTooLarge` naming it, alone or inside a group, and nothing is written.
pub async fn oversized_event_is_refused(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "oversized_event_is_refused";
    let adapter = &*adapter;
    let limits = *adapter.limits();
    let sized = |aggregate_id: &str, bytes: usize| {
        let mut e = event(aggregate_id, 1);
        e.metadata = vec![0x90];
        let overhead = e.data_len() - e.payload.len();
        e.payload = vec![0xab; bytes - overhead];
        assert_eq!(
            e.data_len(),
            bytes,
            "{CHECK}: the fixture has the intended size"
        );
        e
    };
    let slots = [(STORE, "big"), (STORE, "small")];
    let before = snapshot(CHECK, adapter, &slots).await;
    let too_big = sized("big", limits.event_bytes_max + 1);
    let is_too_big = |l: &LimitError| {
        matches!(l, LimitError::EventTooLarge { aggregate_id, version: 1, bytes, limit }
            if aggregate_id == "big"
                && *bytes == limits.event_bytes_max + 1
                && *limit == limits.event_bytes_max)
    };
    let result = adapter.push_event(at(STORE, too_big.clone())).await;
    expect_limit(CHECK, "an oversized event", result, is_too_big);
    let group = vec![at(STORE, event("small", 1)), at(STORE, too_big)];
    let result = adapter.push_event_group(group).await;
    expect_limit(CHECK, "a group with an oversized event", result, is_too_big);
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: nothing written");

    let largest = sized("big", limits.event_bytes_max);
    let position = push(CHECK, adapter, vec![at(STORE, largest.clone())]).await[0];
    let got = read_all(CHECK, adapter, STORE, "big").await;
    assert_eq!(
        got,
        vec![StoredEvent {
            position,
            event: largest
        }],
        "{CHECK}: an event of exactly event_bytes_max reads back"
    );
}

/// A commit of more than `group_events_max` events, or of more than `group_bytes_max` bytes,
/// is refused with `TooManyEvents` / `GroupTooLarge` and writes nothing; a commit of exactly
/// `group_events_max` events is accepted.
pub async fn oversized_group_is_refused(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "oversized_group_is_refused";
    let adapter = &*adapter;
    let Limits {
        group_events_max,
        group_bytes_max,
        event_bytes_max,
        ..
    } = *adapter.limits();
    let many = |count: usize| -> Vec<AppendEvent> {
        (0..count)
            .map(|i| at(STORE, event(&format!("many-{i}"), 1)))
            .collect()
    };
    let result = adapter.push_event_group(many(group_events_max + 1)).await;
    expect_limit(CHECK, "too many events", result, |l| {
        *l == LimitError::TooManyEvents {
            events: group_events_max + 1,
            limit: group_events_max,
        }
    });
    let listed = list_all(CHECK, adapter, STORE).await;
    assert!(
        listed.is_empty(),
        "{CHECK}: nothing written by a refused group: {listed:?}"
    );

    // Events as large as allowed, enough of them to exceed the group's byte limit.
    let count = group_bytes_max / event_bytes_max + 1;
    if count <= group_events_max {
        let big = |i: usize| {
            let mut e = event(&format!("heavy-{i}"), 1);
            let overhead = e.data_len() - e.payload.len();
            e.payload = vec![0x5a; event_bytes_max - overhead];
            at(STORE, e)
        };
        let group: Vec<AppendEvent> = (0..count).map(big).collect();
        let bytes: usize = group.iter().map(|a| a.event.data_len()).sum();
        let result = adapter.push_event_group(group).await;
        expect_limit(CHECK, "a group over group_bytes_max", result, |l| {
            *l == LimitError::GroupTooLarge {
                bytes,
                limit: group_bytes_max,
            }
        });
        let listed = list_all(CHECK, adapter, STORE).await;
        assert!(
            listed.is_empty(),
            "{CHECK}: nothing written by a refused group: {listed:?}"
        );
    }

    let positions = push(CHECK, adapter, many(group_events_max)).await;
    assert_eq!(
        positions.len(),
        group_events_max,
        "{CHECK}: a full group commits"
    );
    let listed = list_all(CHECK, adapter, STORE).await;
    assert_eq!(
        listed.len(),
        group_events_max,
        "{CHECK}: every event of a full group is listed"
    );
}

/// Invalid store ids, aggregate ids and event types (empty, too long, control characters,
/// reserved types) are refused with the matching limit error naming the value, and a group
/// holding one writes nothing.
pub async fn invalid_ids_and_types_are_refused(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "invalid_ids_and_types_are_refused";
    let adapter = &*adapter;
    let limits = *adapter.limits();
    let slots = [(STORE, "valid")];
    let before = snapshot(CHECK, adapter, &slots).await;

    let long_aggregate = "a".repeat(limits.aggregate_id_bytes_max + 1);
    for bad in [
        "",
        "a\nb",
        "\0",
        "tab\there",
        "\u{7f}",
        "\u{85}",
        long_aggregate.as_str(),
    ] {
        for position in [0, 1] {
            let mut group = vec![at(STORE, event("valid", 1))];
            group.insert(position, at(STORE, event(bad, 1)));
            let result = adapter.push_event_group(group).await;
            expect_limit(CHECK, &format!("aggregate id {bad:?}"), result, |l| {
                matches!(l, LimitError::InvalidAggregateId { aggregate_id, .. }
                    if aggregate_id == bad)
            });
        }
    }

    let long_type = "T".repeat(limits.event_type_bytes_max + 1);
    let mut bad_types = vec!["", "A\nB", "\0", long_type.as_str()];
    bad_types.extend(RESERVED_EVENT_TYPES);
    assert!(
        bad_types.contains(&"__REPLAYED__"),
        "{CHECK}: __REPLAYED__ is reserved"
    );
    for bad in bad_types {
        let invalid = EncodedEvent {
            event_type: bad.to_owned(),
            ..event("valid", 1)
        };
        let group = vec![at(STORE, invalid)];
        let result = adapter.push_event_group(group).await;
        expect_limit(
            CHECK,
            &format!("event type {bad:?}"),
            result,
            |l| matches!(l, LimitError::InvalidEventType { event_type, .. } if event_type == bad),
        );
    }

    let long_store = "S".repeat(limits.event_store_id_bytes_max + 1);
    for bad in ["", "with space", "slash/", "é", "a\nb", long_store.as_str()] {
        let group = vec![at(STORE, event("valid", 1)), at(bad, event("valid", 1))];
        let result = adapter.push_event_group(group).await;
        expect_limit(CHECK, &format!("store id {bad:?}"), result, |l| {
            matches!(l, LimitError::InvalidEventStoreId { event_store_id, .. }
                if event_store_id == bad)
        });
    }
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: nothing written by refused commits");
}

/// Reads with an invalid store or aggregate id are refused with the matching limit error.
pub async fn invalid_ids_are_refused_on_reads(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "invalid_ids_are_refused_on_reads";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "valid", 1).await;
    let options = GetEventsOptions::default();
    for bad in ["", "a\nb"] {
        let result = adapter.get_events(STORE, bad, &options).await;
        expect_limit(CHECK, &format!("reading aggregate {bad:?}"), result, |l| {
            matches!(l, LimitError::InvalidAggregateId { .. })
        });
    }
    for bad in ["", "with space", "../etc"] {
        let result = adapter.get_events(bad, "valid", &options).await;
        expect_limit(CHECK, &format!("reading store {bad:?}"), result, |l| {
            matches!(l, LimitError::InvalidEventStoreId { .. })
        });
        let result = adapter.list_aggregate_ids(bad, &Default::default()).await;
        expect_limit(CHECK, &format!("listing store {bad:?}"), result, |l| {
            matches!(l, LimitError::InvalidEventStoreId { .. })
        });
    }
}

/// A commit without events is refused with `EmptyGroup` and consumes no position.
pub async fn empty_group_is_refused(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "empty_group_is_refused";
    let adapter = &*adapter;
    let result = adapter.push_event_group(Vec::new()).await;
    expect_limit(CHECK, "an empty group", result, |l| {
        *l == LimitError::EmptyGroup
    });
    let positions = push(CHECK, adapter, vec![at(STORE, event("first", 1))]).await;
    assert_eq!(
        positions,
        [1],
        "{CHECK}: the first event after an empty group is at 1"
    );
}
