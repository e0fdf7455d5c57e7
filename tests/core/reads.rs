//! Reading through a typed store: events, aggregates, listings, and the typed errors for
//! stored events the store cannot read.

use annals::storage::{AppendEvent, EncodedEvent};
use annals::{
    Error, GetAggregateOptions, GetEventsOptions, ListAggregateIdsOptions, NewEvent,
    StorageAdapter, codec,
};
use serde_json::json;

use crate::fixtures::*;

fn versions<E: annals::Events>(events: &[annals::EventDetail<E>]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

/// Pushes an encoded event to `POKEMONS` directly through the adapter, bypassing the typed
/// layer, as another application (or an older version of this one) could have.
async fn push_raw(adapter: &dyn StorageAdapter, event: EncodedEvent) {
    let append = AppendEvent {
        event_store_id: "POKEMONS".to_owned(),
        event,
    };
    adapter.push_event(append).await.unwrap();
}

fn raw_event(version: u64, event_type: &str, payload: serde_json::Value) -> EncodedEvent {
    EncodedEvent {
        aggregate_id: "pikachu".to_owned(),
        version,
        timestamp: ts("2024-05-02T00:00:00.000Z"),
        event_type: event_type.to_owned(),
        schema_version: 1,
        payload: codec::encode(&payload).unwrap(),
        metadata: codec::encode(&json!({})).unwrap(),
    }
}

#[tokio::test]
async fn get_events_returns_the_typed_events_as_pushed() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let events = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap();
    let expected: Vec<_> = pikachu_history()
        .into_iter()
        .map(|e| e.into_detail(ts("1970-01-01T00:00:00.000Z")))
        .collect();
    assert_eq!(events, expected);
}

#[tokio::test]
async fn get_events_honours_range_limit_and_reverse() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let newest_two = GetEventsOptions {
        limit: Some(2),
        reverse: true,
        ..Default::default()
    };
    let events = pokemons.get_events("pikachu", newest_two).await.unwrap();
    assert_eq!(versions(&events), [4, 3]);
    let middle = GetEventsOptions {
        min_version: Some(2),
        max_version: Some(3),
        ..Default::default()
    };
    let events = pokemons.get_events("pikachu", middle).await.unwrap();
    assert_eq!(versions(&events), [2, 3]);
}

#[tokio::test]
async fn get_events_of_an_unknown_aggregate_is_empty() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let events = pokemons
        .get_events("missingno", Default::default())
        .await
        .unwrap();
    assert!(events.is_empty());
}

#[tokio::test]
async fn get_aggregate_folds_every_event() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let response = pokemons
        .get_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    let aggregate = response.aggregate.unwrap();
    assert_eq!(
        (aggregate.aggregate_id.as_str(), aggregate.version),
        ("pikachu", 4)
    );
    assert_eq!(
        aggregate.state,
        Pokemon {
            name: "Pikachu".to_owned(),
            level: 7,
            trainer_id: Some("ash".to_owned()),
        }
    );
    assert_eq!(versions(&response.events), [1, 2, 3, 4]);
    assert_eq!(response.last_event.map(|e| e.version), Some(4));
}

#[tokio::test]
async fn get_aggregate_at_max_version_is_the_aggregate_as_it_was() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let options = GetAggregateOptions {
        max_version: Some(2),
    };
    let response = pokemons.get_aggregate("pikachu", options).await.unwrap();
    let aggregate = response.aggregate.unwrap();
    assert_eq!(
        (
            aggregate.version,
            aggregate.level,
            aggregate.trainer_id.clone()
        ),
        (2, 6, None)
    );
    assert_eq!(versions(&response.events), [1, 2]);
    assert_eq!(response.last_event.map(|e| e.event), Some(leveled_up()));
}

#[tokio::test]
async fn get_aggregate_of_an_unknown_aggregate_is_none() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let response = pokemons
        .get_aggregate("missingno", Default::default())
        .await
        .unwrap();
    assert!(response.aggregate.is_none());
    assert!(response.events.is_empty());
    assert!(response.last_event.is_none());
}

#[tokio::test]
async fn get_existing_aggregate_of_an_unknown_aggregate_is_aggregate_not_found() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let existing = pokemons
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(
        (existing.aggregate.version, existing.last_event.version),
        (4, 4)
    );
    assert_eq!(existing.events.len(), 4);
    let error = pokemons
        .get_existing_aggregate("missingno", Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::AggregateNotFound { event_store_id, aggregate_id }
            if event_store_id == "POKEMONS" && aggregate_id == "missingno"),
        "{error:?}"
    );
}

#[tokio::test]
async fn unknown_stored_event_type_is_a_typed_error_naming_the_event() {
    let (adapter, pokemons) = pokemons_with_pikachu().await;
    push_raw(
        &*adapter,
        raw_event(5, "POKEMON_EVOLVED", json!({ "into": "Raichu" })),
    )
    .await;
    let is_unknown = |error: &Error| {
        matches!(error, Error::UnknownEventType { event_store_id, aggregate_id, version: 5, event_type }
            if event_store_id == "POKEMONS" && aggregate_id == "pikachu"
                && event_type == "POKEMON_EVOLVED")
    };
    let error = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap_err();
    assert!(is_unknown(&error), "{error:?}");
    let error = pokemons
        .get_aggregate("pikachu", Default::default())
        .await
        .unwrap_err();
    assert!(is_unknown(&error), "{error:?}");
    // The events before it still read.
    let options = GetAggregateOptions {
        max_version: Some(4),
    };
    let response = pokemons.get_aggregate("pikachu", options).await.unwrap();
    assert_eq!(response.aggregate.map(|a| a.version), Some(4));
}

#[tokio::test]
async fn undecodable_payload_is_a_typed_error() {
    let (adapter, pokemons) = pokemons_with_pikachu().await;
    push_raw(
        &*adapter,
        raw_event(5, "POKEMON_APPEARED", json!({ "name": 42 })),
    )
    .await;
    let error = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Decode { event_store_id, aggregate_id, version: 5, event_type, .. }
            if event_store_id == "POKEMONS" && aggregate_id == "pikachu"
                && event_type == "POKEMON_APPEARED"),
        "{error:?}"
    );
}

#[tokio::test]
async fn undecodable_metadata_is_a_typed_error() {
    let (adapter, pokemons) = pokemons_with_pikachu().await;
    let event = EncodedEvent {
        // 0xc1 is never valid MessagePack.
        metadata: vec![0xc1],
        ..raw_event(5, "POKEMON_LEVELED_UP", json!({}))
    };
    push_raw(&*adapter, event).await;
    let error = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Decode { version: 5, reason, .. } if reason.starts_with("metadata")),
        "{error:?}"
    );
}

#[tokio::test]
async fn newer_schema_version_is_a_typed_error() {
    let (adapter, pokemons) = pokemons_with_pikachu().await;
    let event = EncodedEvent {
        schema_version: 2,
        ..raw_event(5, "POKEMON_LEVELED_UP", json!({}))
    };
    push_raw(&*adapter, event).await;
    let error = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::SchemaVersionTooNew {
                version: 5,
                schema_version: 2,
                known_schema_version: 1,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn list_aggregate_ids_pages_through_the_typed_store() {
    let pokemons = pokemons(adapter());
    for (i, id) in ["bulbasaur", "charmander", "squirtle"]
        .into_iter()
        .enumerate()
    {
        let event = NewEvent::new(id, 1, appeared(id, 5))
            .with_timestamp(ts(&format!("2024-05-0{}T00:00:00.000Z", i + 1)));
        pokemons
            .push_event(event, Default::default())
            .await
            .unwrap();
    }
    let first = ListAggregateIdsOptions {
        limit: Some(2),
        ..Default::default()
    };
    let page = pokemons.list_aggregate_ids(first).await.unwrap();
    let ids: Vec<_> = page
        .aggregate_ids
        .iter()
        .map(|e| e.aggregate_id.as_str())
        .collect();
    assert_eq!(ids, ["bulbasaur", "charmander"]);
    let next = ListAggregateIdsOptions {
        page_token: page.next_page_token.clone(),
        ..Default::default()
    };
    let page = pokemons.list_aggregate_ids(next).await.unwrap();
    let ids: Vec<_> = page
        .aggregate_ids
        .iter()
        .map(|e| e.aggregate_id.as_str())
        .collect();
    assert_eq!(ids, ["squirtle"]);
    assert_eq!(page.next_page_token, None);
}
