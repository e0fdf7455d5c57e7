//! Event groups commit whole, across stores and aggregates, or not at all.

use std::sync::Arc;

use crate::storage::{
    AppendEvent, AppendEventRef, GetEventsOptions, LimitError, Position, StorageAdapter,
    StoredEvent,
};

use super::events::{
    OTHER_STORE, STORE, at, event, ids, list_all, push, push_versions, read, read_all, snapshot,
    versions,
};
use super::expect::{expect_conflict, expect_limit, expect_unexpected_version};

/// A group of events of several aggregates in several stores is committed whole: every event
/// reads back, at consecutive positions in input order, and new aggregates are listed.
pub async fn event_group_commits_across_stores_and_aggregates(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "event_group_commits_across_stores_and_aggregates";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    let group = vec![
        at(STORE, event("pikachu", 3)),
        at(OTHER_STORE, event("ash", 1)),
        at(STORE, event("eevee", 1)),
        at(OTHER_STORE, event("misty", 1)),
    ];
    let positions = push(CHECK, adapter, group.clone()).await;
    assert!(
        positions.windows(2).all(|w| w[1] == w[0] + 1),
        "{CHECK}: a group's positions are consecutive in input order: {positions:?}"
    );
    for (append, position) in group.into_iter().zip(positions) {
        let AppendEvent {
            event_store_id,
            event,
        } = append;
        let options = GetEventsOptions {
            min_version: Some(event.version),
            max_version: Some(event.version),
            ..Default::default()
        };
        let got = read(
            CHECK,
            adapter,
            &event_store_id,
            &event.aggregate_id,
            options,
        )
        .await;
        assert_eq!(
            got,
            vec![StoredEvent { position, event }],
            "{CHECK}: a grouped event reads back in store {event_store_id}"
        );
    }
    let listed = list_all(CHECK, adapter, OTHER_STORE).await;
    let mut listed_ids = ids(&listed);
    listed_ids.sort_unstable();
    assert_eq!(
        listed_ids,
        ["ash", "misty"],
        "{CHECK}: new aggregates of a group are listed"
    );
}

/// A conflict anywhere in a group (first, middle or last event) fails the whole group with
/// `EventAlreadyExists` naming the conflicting event, and writes nothing.
pub async fn event_group_conflict_names_the_event_and_writes_nothing(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "event_group_conflict_names_the_event_and_writes_nothing";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    push_versions(CHECK, adapter, OTHER_STORE, "ash", 1).await;
    let slots = [
        (STORE, "pikachu"),
        (STORE, "eevee"),
        (OTHER_STORE, "ash"),
        (OTHER_STORE, "misty"),
    ];
    let before = snapshot(CHECK, adapter, &slots).await;
    let fresh = [
        at(STORE, event("pikachu", 3)),
        at(STORE, event("eevee", 1)),
        at(OTHER_STORE, event("misty", 1)),
        at(OTHER_STORE, event("ash", 2)),
    ];
    let conflicting = at(OTHER_STORE, event("ash", 1));
    for index in 0..=fresh.len() {
        let mut group = fresh.to_vec();
        group.insert(index, conflicting.clone());
        let result = adapter.push_event_group(group).await;
        expect_conflict(CHECK, result, (OTHER_STORE, "ash", 1));
        let after = snapshot(CHECK, adapter, &slots).await;
        assert_eq!(
            after, before,
            "{CHECK}: nothing written (conflict at index {index})"
        );
    }
    // The same group without the conflicting event commits.
    push(CHECK, adapter, fresh.to_vec()).await;
}

/// Two events of one aggregate in one group commit when in version order; out of order or
/// duplicated, the group fails and writes nothing.
pub async fn event_group_orders_events_of_one_aggregate(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "event_group_orders_events_of_one_aggregate";
    let adapter = &*adapter;
    let slots = [(STORE, "pikachu"), (STORE, "eevee")];
    let before = snapshot(CHECK, adapter, &slots).await;

    let out_of_order = vec![
        at(STORE, event("pikachu", 2)),
        at(STORE, event("pikachu", 1)),
    ];
    let result = adapter.push_event_group(out_of_order).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 2), Some(1));

    let duplicated = vec![
        at(STORE, event("eevee", 1)),
        at(STORE, event("pikachu", 1)),
        at(STORE, event("pikachu", 1)),
    ];
    let result = adapter.push_event_group(duplicated).await;
    expect_conflict(CHECK, result, (STORE, "pikachu", 1));

    let skipping = vec![
        at(STORE, event("pikachu", 1)),
        at(STORE, event("pikachu", 3)),
    ];
    let result = adapter.push_event_group(skipping).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 3), Some(2));
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: refused groups wrote nothing");

    let in_order = vec![
        at(STORE, event("pikachu", 1)),
        at(STORE, event("eevee", 1)),
        at(STORE, event("pikachu", 2)),
        at(STORE, event("pikachu", 3)),
    ];
    let positions = push(CHECK, adapter, in_order).await;
    let got = read_all(CHECK, adapter, STORE, "pikachu").await;
    assert_eq!(
        versions(&got),
        [1, 2, 3],
        "{CHECK}: versions of an in-order group"
    );
    let got_positions: Vec<Position> = got.iter().map(|e| e.position).collect();
    assert_eq!(
        got_positions,
        [positions[0], positions[2], positions[3]],
        "{CHECK}: positions of an in-order group"
    );

    // Out of order on an existing aggregate: v5 before v4.
    let out_of_order = vec![
        at(STORE, event("pikachu", 5)),
        at(STORE, event("pikachu", 4)),
    ];
    let result = adapter.push_event_group(out_of_order).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 5), Some(4));
    let got = read_all(CHECK, adapter, STORE, "pikachu").await;
    assert_eq!(
        versions(&got),
        [1, 2, 3],
        "{CHECK}: nothing written by a refused group"
    );
}

/// A group of borrowed events (`push_event_group_ref`, what the typed layer pushes) commits
/// like the same group owned: whole, at consecutive positions from the one returned, byte for
/// byte. Refused, for a conflict or a limit, it writes nothing.
pub async fn borrowed_event_group_commits_like_an_owned_one(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "borrowed_event_group_commits_like_an_owned_one";
    let adapter = &*adapter;
    let before_position = *adapter.watch_log().borrow();
    push_versions(CHECK, adapter, STORE, "pikachu", 1).await;
    let slots = [(STORE, "pikachu"), (STORE, "eevee"), (OTHER_STORE, "ash")];
    let before = snapshot(CHECK, adapter, &slots).await;
    let group = [
        at(STORE, event("pikachu", 2)),
        at(OTHER_STORE, event("ash", 1)),
        at(STORE, event("pikachu", 3)),
        at(STORE, event("eevee", 1)),
    ];
    let borrowed: Vec<AppendEventRef<'_>> = group.iter().map(AppendEvent::as_event_ref).collect();

    let conflicting = at(STORE, event("pikachu", 1));
    let mut with_conflict = borrowed.clone();
    with_conflict.insert(2, conflicting.as_event_ref());
    let result = adapter.push_event_group_ref(&with_conflict).await;
    expect_conflict(CHECK, result, (STORE, "pikachu", 1));
    let invalid = at(STORE, event("bad\nid", 1));
    let mut with_invalid = borrowed.clone();
    with_invalid.push(invalid.as_event_ref());
    let result = adapter.push_event_group_ref(&with_invalid).await;
    expect_limit(CHECK, "a group with an invalid id", result, |l| {
        matches!(l, LimitError::InvalidAggregateId { aggregate_id, .. }
                if aggregate_id == "bad\nid")
    });
    let result = adapter.push_event_group_ref(&[]).await;
    expect_limit(CHECK, "an empty group", result, |l| {
        matches!(l, LimitError::EmptyGroup)
    });
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(
        after, before,
        "{CHECK}: refused borrowed groups wrote nothing"
    );

    let first = adapter
        .push_event_group_ref(&borrowed)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: a valid borrowed group is refused: {e:?}"));
    assert_eq!(
        first,
        before_position + 2,
        "{CHECK}: the first position follows the last committed one"
    );
    for (append, position) in group.into_iter().zip(first..) {
        let AppendEvent {
            event_store_id,
            event,
        } = append;
        let options = GetEventsOptions {
            min_version: Some(event.version),
            max_version: Some(event.version),
            ..Default::default()
        };
        let got = read(
            CHECK,
            adapter,
            &event_store_id,
            &event.aggregate_id,
            options,
        )
        .await;
        assert_eq!(
            got,
            vec![StoredEvent { position, event }],
            "{CHECK}: a borrowed event reads back at its position"
        );
    }
}
