//! Storage limits surface through the typed API as typed errors, and nothing is written.

use std::sync::Arc;

use annals::storage::{InMemoryAdapter, LimitError, Limits, StorageError};
use annals::{Error, EventDetail, EventStore, NewEvent, push_event_group};
use serde::{Deserialize, Serialize};

use crate::fixtures::*;

fn limit_error(error: &Error) -> &LimitError {
    match error {
        Error::Storage(StorageError::Limit(limit)) => limit,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_event_is_a_limit_error_and_writes_nothing() {
    let pokemons = pokemons(adapter());
    let huge = appeared(&"P".repeat(1 << 20), 5);
    let error = pokemons
        .push_event(NewEvent::new("pikachu", 1, huge), Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(limit_error(&error), LimitError::EventTooLarge { aggregate_id, version: 1, limit, .. }
            if aggregate_id == "pikachu" && *limit == Limits::default().event_bytes_max),
        "{error:?}"
    );
    assert!(
        pokemons
            .get_events("pikachu", Default::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn invalid_aggregate_ids_are_limit_errors_on_push_and_read() {
    let pokemons = pokemons(adapter());
    for bad in ["", "line\nbreak", "nul\0"] {
        let error = pokemons
            .push_event(
                NewEvent::new(bad, 1, appeared("Pikachu", 5)),
                Default::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(limit_error(&error), LimitError::InvalidAggregateId { aggregate_id, .. }
                if aggregate_id == bad),
            "{error:?}"
        );
        let error = pokemons
            .get_events(bad, Default::default())
            .await
            .unwrap_err();
        assert!(
            matches!(limit_error(&error), LimitError::InvalidAggregateId { .. }),
            "{error:?}"
        );
    }
    let ids = pokemons
        .list_aggregate_ids(Default::default())
        .await
        .unwrap();
    assert!(ids.aggregate_ids.is_empty());
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replayed {}

annals::events! {
    pub enum ChannelEvent {
        Replayed(Replayed) = "__REPLAYED__",
    }
}

#[tokio::test]
async fn reserved_event_type_is_a_limit_error() {
    let store = EventStore::builder("CHANNEL", |_, _: &EventDetail<ChannelEvent>| ())
        .storage_adapter(adapter())
        .build()
        .unwrap();
    let event = NewEvent::new("a", 1, ChannelEvent::Replayed(Replayed {}));
    let error = store
        .push_event(event, Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(limit_error(&error), LimitError::InvalidEventType { event_type, .. }
            if event_type == "__REPLAYED__"),
        "{error:?}"
    );
}

#[tokio::test]
async fn group_over_the_adapters_event_count_is_a_limit_error() {
    let limits = Limits {
        group_events_max: 2,
        ..Limits::default()
    };
    let adapter = Arc::new(InMemoryAdapter::with_limits(limits));
    let pokemons = pokemons(adapter);
    let group: Vec<_> = ["bulbasaur", "charmander", "squirtle"]
        .into_iter()
        .map(|id| {
            pokemons
                .group_event(NewEvent::new(id, 1, appeared(id, 5)), Default::default())
                .unwrap()
        })
        .collect();
    let error = push_event_group(group).await.unwrap_err();
    assert_eq!(
        *limit_error(&error),
        LimitError::TooManyEvents {
            events: 3,
            limit: 2
        }
    );
    let ids = pokemons
        .list_aggregate_ids(Default::default())
        .await
        .unwrap();
    assert!(
        ids.aggregate_ids.is_empty(),
        "nothing of the group was written"
    );
}
