//! What the checks share: the fixture's stores and events, and reads of what an adapter
//! holds.

use std::collections::BTreeSet;

use crate::storage::{
    AggregateIdEntry, AggregateIdsPage, AppendEvent, EncodedEvent, GetEventsOptions,
    ListAggregateIdsOptions, Position, StorageAdapter, StoredEvent, Timestamp,
};

/// The store most checks write to.
pub(super) const STORE: &str = "CONFORMANCE";
/// A second store, to check isolation and cross-store groups.
pub(super) const OTHER_STORE: &str = "CONFORMANCE_OTHER";
/// The event type of fixture events.
pub(super) const EVENT_TYPE: &str = "CONFORMANCE_EVENT";
/// Fixture timestamps start here (2023-11-14T22:13:20.000Z).
pub(super) const BASE_MILLIS: i64 = 1_700_000_000_000;

/// The fixture event `version` of `aggregate_id`: its payload names it, its timestamp grows
/// with the version.
pub(super) fn event(aggregate_id: &str, version: u64) -> EncodedEvent {
    let offset = i64::try_from(version % 1_000_000).expect("a remainder below 10^6 fits i64");
    EncodedEvent {
        aggregate_id: aggregate_id.to_owned(),
        version,
        timestamp: Timestamp::from_unix_millis(BASE_MILLIS + offset),
        event_type: EVENT_TYPE.to_owned(),
        schema_version: 1,
        payload: format!("{aggregate_id}@{version}").into_bytes(),
        metadata: Vec::new(),
    }
}

/// `event` as part of a commit to `event_store_id`.
pub(super) fn at(event_store_id: &str, event: EncodedEvent) -> AppendEvent {
    AppendEvent {
        event_store_id: event_store_id.to_owned(),
        event,
    }
}

/// An event whose first event happened at `millis`.
pub(super) fn event_at(aggregate_id: &str, version: u64, millis: i64) -> EncodedEvent {
    EncodedEvent {
        timestamp: Timestamp::from_unix_millis(millis),
        ..event(aggregate_id, version)
    }
}

pub(super) async fn push(
    check: &str,
    adapter: &dyn StorageAdapter,
    events: Vec<AppendEvent>,
) -> Vec<Position> {
    let count = events.len();
    match adapter.push_event_group(events).await {
        Ok(positions) => {
            assert_eq!(
                positions.len(),
                count,
                "{check}: one position per pushed event"
            );
            positions
        }
        Err(e) => panic!("{check}: a valid commit of {count} events was refused: {e}"),
    }
}

/// Pushes versions `1..=count` of `aggregate_id` one at a time.
pub(super) async fn push_versions(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
    aggregate_id: &str,
    count: u64,
) -> Vec<Position> {
    let mut positions = Vec::new();
    for version in 1..=count {
        let commit = vec![at(event_store_id, event(aggregate_id, version))];
        positions.extend(push(check, adapter, commit).await);
    }
    positions
}

pub(super) async fn read(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
    aggregate_id: &str,
    options: GetEventsOptions,
) -> Vec<StoredEvent> {
    match adapter
        .get_events(event_store_id, aggregate_id, &options)
        .await
    {
        Ok(events) => events,
        Err(e) => panic!("{check}: get_events({event_store_id}, {aggregate_id}, {options:?}): {e}"),
    }
}

pub(super) async fn read_all(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
    aggregate_id: &str,
) -> Vec<StoredEvent> {
    read(
        check,
        adapter,
        event_store_id,
        aggregate_id,
        GetEventsOptions::default(),
    )
    .await
}

pub(super) async fn list(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
    options: &ListAggregateIdsOptions,
) -> AggregateIdsPage {
    match adapter.list_aggregate_ids(event_store_id, options).await {
        Ok(page) => page,
        Err(e) => panic!("{check}: list_aggregate_ids({event_store_id}, {options:?}): {e}"),
    }
}

/// Every aggregate id of a store, without paging.
pub(super) async fn list_all(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
) -> Vec<AggregateIdEntry> {
    let page = list(check, adapter, event_store_id, &Default::default()).await;
    assert_eq!(
        page.next_page_token, None,
        "{check}: no page token without a limit"
    );
    page.aggregate_ids
}

pub(super) fn versions(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.event.version).collect()
}

pub(super) fn ids(entries: &[AggregateIdEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.aggregate_id.as_str()).collect()
}

/// What the checks can observe of an adapter: the events of some aggregates and the aggregate
/// ids of their stores. Equal snapshots before and after a refused commit mean nothing was
/// written.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Snapshot {
    events: Vec<Vec<StoredEvent>>,
    aggregate_ids: Vec<Vec<AggregateIdEntry>>,
}

pub(super) async fn snapshot(
    check: &str,
    adapter: &dyn StorageAdapter,
    slots: &[(&str, &str)],
) -> Snapshot {
    let mut events = Vec::new();
    for (store, aggregate_id) in slots {
        events.push(read_all(check, adapter, store, aggregate_id).await);
    }
    let stores: BTreeSet<&str> = slots.iter().map(|(store, _)| *store).collect();
    let mut aggregate_ids = Vec::new();
    for store in stores {
        aggregate_ids.push(list_all(check, adapter, store).await);
    }
    Snapshot {
        events,
        aggregate_ids,
    }
}
