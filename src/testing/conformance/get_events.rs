//! `get_events` honours every option, per aggregate and per store.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::storage::{
    AggregateIdEntry, AggregateIdsPage, EncodedEvent, GetEventsOptions, StorageAdapter,
    StoredEvent, Timestamp,
};

use super::events::{
    BASE_MILLIS, OTHER_STORE, STORE, at, event, list, list_all, push, push_versions, read,
    read_all, versions,
};
use super::expect::{expect_conflict, expect_unexpected_version};

/// `min_version` and `max_version` are inclusive, alone or together.
pub async fn get_events_bounds_are_inclusive(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "get_events_bounds_are_inclusive";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 6).await;
    let cases: [(Option<u64>, Option<u64>, &[u64]); 6] = [
        (Some(2), Some(5), &[2, 3, 4, 5]),
        (Some(3), None, &[3, 4, 5, 6]),
        (None, Some(3), &[1, 2, 3]),
        (Some(4), Some(4), &[4]),
        (Some(6), Some(6), &[6]),
        (Some(5), Some(4), &[]),
    ];
    for (min_version, max_version, expected) in cases {
        let options = GetEventsOptions {
            min_version,
            max_version,
            ..Default::default()
        };
        let got = read(CHECK, adapter, STORE, "pikachu", options).await;
        assert_eq!(
            versions(&got),
            expected,
            "{CHECK}: versions for {options:?}"
        );
    }
}

/// `reverse` with `limit` returns the newest events, newest first, also within bounds; `limit`
/// alone returns the oldest; `limit: 0` returns nothing.
pub async fn get_events_reverse_with_limit_returns_the_newest(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "get_events_reverse_with_limit_returns_the_newest";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 8).await;
    let cases: [(GetEventsOptions, &[u64]); 6] = [
        (
            GetEventsOptions {
                limit: Some(1),
                reverse: true,
                ..Default::default()
            },
            &[8],
        ),
        (
            GetEventsOptions {
                limit: Some(3),
                reverse: true,
                ..Default::default()
            },
            &[8, 7, 6],
        ),
        (
            GetEventsOptions {
                limit: Some(3),
                ..Default::default()
            },
            &[1, 2, 3],
        ),
        (
            GetEventsOptions {
                reverse: true,
                ..Default::default()
            },
            &[8, 7, 6, 5, 4, 3, 2, 1],
        ),
        (
            GetEventsOptions {
                min_version: Some(2),
                max_version: Some(6),
                limit: Some(2),
                reverse: true,
            },
            &[6, 5],
        ),
        (
            GetEventsOptions {
                limit: Some(0),
                reverse: true,
                ..Default::default()
            },
            &[],
        ),
    ];
    for (options, expected) in cases {
        let got = read(CHECK, adapter, STORE, "pikachu", options).await;
        assert_eq!(
            versions(&got),
            expected,
            "{CHECK}: versions for {options:?}"
        );
    }
}

/// Every combination of `min_version`, `max_version`, `limit` and `reverse` (including empty
/// ranges, bounds outside the aggregate and `limit: 0`) returns exactly the model's events,
/// and [`StorageAdapter::visit_events`] visits exactly those, in the same order, stopping
/// where its visitor breaks.
pub async fn get_events_matches_the_model_for_every_option_combination(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "get_events_matches_the_model_for_every_option_combination";
    let adapter = &*adapter;
    const COUNT: u64 = 10;
    push_versions(CHECK, adapter, STORE, "pikachu", COUNT).await;
    // Another aggregate, so an adapter that ignores the aggregate id fails.
    push_versions(CHECK, adapter, STORE, "raichu", 3).await;
    let all = read_all(CHECK, adapter, STORE, "pikachu").await;
    assert_eq!(
        versions(&all),
        (1..=COUNT).collect::<Vec<_>>(),
        "{CHECK}: all versions"
    );
    let bounds = [
        None,
        Some(0),
        Some(1),
        Some(4),
        Some(COUNT),
        Some(COUNT + 1),
    ];
    let limits = [None, Some(0), Some(1), Some(3), Some(10), Some(50)];
    for min_version in bounds {
        for max_version in bounds {
            for limit in limits {
                for reverse in [false, true] {
                    let options = GetEventsOptions {
                        min_version,
                        max_version,
                        limit,
                        reverse,
                    };
                    let mut expected: Vec<&StoredEvent> = all
                        .iter()
                        .filter(|e| options.contains(e.event.version))
                        .collect();
                    if reverse {
                        expected.reverse();
                    }
                    expected.truncate(limit.unwrap_or(usize::MAX));
                    let got = read(CHECK, adapter, STORE, "pikachu", options).await;
                    assert_eq!(
                        got.iter().collect::<Vec<_>>(),
                        expected,
                        "{CHECK}: events for {options:?}"
                    );
                    let visited = visit(CHECK, adapter, "pikachu", options, usize::MAX).await;
                    assert_eq!(visited, got, "{CHECK}: visited events for {options:?}");
                    let first_two = visit(CHECK, adapter, "pikachu", options, 2).await;
                    assert_eq!(
                        first_two,
                        got[..got.len().min(2)],
                        "{CHECK}: a visit stopped after two events, for {options:?}"
                    );
                }
            }
        }
    }
}

/// The events [`StorageAdapter::visit_events`] visits, copied, up to `stop_after` of them.
async fn visit(
    check: &str,
    adapter: &dyn StorageAdapter,
    aggregate_id: &str,
    options: GetEventsOptions,
    stop_after: usize,
) -> Vec<StoredEvent> {
    let mut visited = Vec::new();
    adapter
        .visit_events(STORE, aggregate_id, &options, &mut |event| {
            visited.push(event.to_stored());
            if visited.len() >= stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{check}: visit_events failed: {e}"));
    visited
}

/// Reading an aggregate that has no event, in a store that has none or in one that has
/// others, returns no event and no error.
pub async fn get_events_of_unknown_aggregate_is_empty(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "get_events_of_unknown_aggregate_is_empty";
    let adapter = &*adapter;
    let got = read_all(CHECK, adapter, STORE, "missingno").await;
    assert!(
        got.is_empty(),
        "{CHECK}: unknown store and aggregate: {got:?}"
    );
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    for aggregate_id in ["missingno", "pikachu ", "PIKACHU", "pikach"] {
        let options = GetEventsOptions {
            reverse: true,
            limit: Some(5),
            ..Default::default()
        };
        let got = read(CHECK, adapter, STORE, aggregate_id, options).await;
        assert!(
            got.is_empty(),
            "{CHECK}: unknown aggregate {aggregate_id:?}: {got:?}"
        );
    }
    let page = list(CHECK, adapter, OTHER_STORE, &Default::default()).await;
    assert_eq!(
        page,
        AggregateIdsPage::default(),
        "{CHECK}: a store without events lists none"
    );
}

/// The same aggregate id in two stores names two aggregates: their versions, events and
/// listings are independent.
pub async fn same_aggregate_id_in_two_stores_is_independent(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "same_aggregate_id_in_two_stores_is_independent";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 3).await;
    // Version 1 is free in the other store, and version 4 is not its next version.
    let result = adapter
        .push_event(at(OTHER_STORE, event("pikachu", 4)))
        .await;
    expect_unexpected_version(CHECK, result, (OTHER_STORE, "pikachu", 4), Some(1));
    let other = EncodedEvent {
        payload: b"other store".to_vec(),
        timestamp: Timestamp::from_unix_millis(BASE_MILLIS - 1_000),
        ..event("pikachu", 1)
    };
    let position = push(CHECK, adapter, vec![at(OTHER_STORE, other.clone())]).await[0];
    let result = adapter
        .push_event(at(OTHER_STORE, event("pikachu", 1)))
        .await;
    expect_conflict(CHECK, result, (OTHER_STORE, "pikachu", 1));

    let mine = read_all(CHECK, adapter, STORE, "pikachu").await;
    assert_eq!(
        versions(&mine),
        [1, 2, 3],
        "{CHECK}: the first store keeps its events"
    );
    assert!(
        mine.iter()
            .all(|e| e.event == event("pikachu", e.event.version)),
        "{CHECK}: the first store's events are untouched: {mine:?}"
    );
    let theirs = read_all(CHECK, adapter, OTHER_STORE, "pikachu").await;
    assert_eq!(
        theirs,
        vec![StoredEvent {
            position,
            event: other.clone()
        }],
        "{CHECK}: the other store has only its own event"
    );
    let listed_mine = list_all(CHECK, adapter, STORE).await;
    let listed_theirs = list_all(CHECK, adapter, OTHER_STORE).await;
    assert_eq!(
        listed_mine,
        [AggregateIdEntry {
            initial_event_timestamp: event("pikachu", 1).timestamp,
            aggregate_id: "pikachu".to_owned(),
        }],
        "{CHECK}: the first store lists its aggregate with its own initial timestamp"
    );
    assert_eq!(
        listed_theirs,
        [AggregateIdEntry {
            initial_event_timestamp: other.timestamp,
            aggregate_id: "pikachu".to_owned(),
        }],
        "{CHECK}: the other store lists its aggregate with its own initial timestamp"
    );
}
