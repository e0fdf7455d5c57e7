//! Pushing through a typed store: versions, the next aggregate, the timestamp, the storage
//! adapter being set late, and the `on_event_pushed` hook.

use annals::storage::StorageError;
use annals::{Error, EventStore, GetAggregateOptions, NewEvent, PushEventOptions, Timestamp};

use crate::fixtures::*;

#[tokio::test]
async fn first_event_push_returns_the_next_aggregate() {
    let pokemons = pokemons(adapter());
    let response = pokemons
        .push_event(
            NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
            Default::default(),
        )
        .await
        .unwrap();
    let next = response.next_aggregate.unwrap();
    assert_eq!((next.aggregate_id.as_str(), next.version), ("pikachu", 1));
    assert_eq!((next.name.as_str(), next.level), ("Pikachu", 5));
    assert_eq!(response.position, 1);
}

#[tokio::test]
async fn push_with_prev_aggregate_returns_the_next_aggregate() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let prev = pokemons
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap()
        .aggregate;
    let options = PushEventOptions {
        prev_aggregate: Some(prev),
    };
    let response = pokemons
        .push_event(NewEvent::new("pikachu", 5, leveled_up()), options)
        .await
        .unwrap();
    let next = response.next_aggregate.unwrap();
    assert_eq!((next.version, next.level), (5, 8));
    let stored = pokemons
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(
        stored.aggregate, next,
        "the next aggregate is the one built from storage"
    );
}

#[tokio::test]
async fn push_without_prev_aggregate_after_the_first_event_returns_no_next_aggregate() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let response = pokemons
        .push_event(
            NewEvent::new("pikachu", 5, leveled_up()),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(response.next_aggregate.is_none());
    assert_eq!(response.event.version, 5);
}

#[tokio::test]
async fn prev_aggregate_not_just_before_the_event_is_prev_aggregate_mismatch() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let at_v2 = pokemons
        .get_existing_aggregate(
            "pikachu",
            GetAggregateOptions {
                max_version: Some(2),
            },
        )
        .await
        .unwrap()
        .aggregate;
    let mut of_another = at_v2.clone();
    of_another.aggregate_id = "raichu".to_owned();
    of_another.version = 4;
    for (prev, prev_id, prev_version) in [(at_v2, "pikachu", 2), (of_another, "raichu", 4)] {
        let options = PushEventOptions {
            prev_aggregate: Some(prev),
        };
        let error = pokemons
            .push_event(NewEvent::new("pikachu", 5, leveled_up()), options)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::PrevAggregateMismatch {
                event_store_id, aggregate_id, version: 5, prev_aggregate_id, prev_version: pv,
            } if event_store_id == "POKEMONS" && aggregate_id == "pikachu"
                && prev_aggregate_id == prev_id && *pv == prev_version),
            "{error:?}"
        );
    }
    let events = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(events.len(), 4, "nothing was pushed");
}

#[tokio::test]
async fn timestamp_is_filled_with_now_when_absent() {
    let pokemons = pokemons(adapter());
    let before = Timestamp::now();
    let response = pokemons
        .push_event(
            NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
            Default::default(),
        )
        .await
        .unwrap();
    let after = Timestamp::now();
    let stamped = response.event.timestamp;
    assert!(
        before <= stamped && stamped <= after,
        "{before:?} <= {stamped:?} <= {after:?}"
    );
    let stored = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(
        stored[0].timestamp, stamped,
        "the stored timestamp is the returned one"
    );
}

#[tokio::test]
async fn given_timestamp_is_kept() {
    let pokemons = pokemons(adapter());
    let given = ts("2001-02-03T04:05:06.007Z");
    let event = NewEvent::new("pikachu", 1, appeared("Pikachu", 5)).with_timestamp(given);
    let response = pokemons
        .push_event(event, Default::default())
        .await
        .unwrap();
    assert_eq!(response.event.timestamp, given);
    let stored = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(stored[0].timestamp, given);
}

#[tokio::test]
async fn push_of_a_taken_version_is_event_already_exists() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let error = pokemons
        .push_event(
            NewEvent::new("pikachu", 3, leveled_up()),
            Default::default(),
        )
        .await
        .unwrap_err();
    let conflict = error.event_already_exists().expect("a version conflict");
    assert_eq!(
        (
            conflict.event_store_id.as_str(),
            conflict.aggregate_id.as_str(),
            conflict.version
        ),
        ("POKEMONS", "pikachu", 3)
    );
}

#[tokio::test]
async fn push_with_a_version_gap_is_unexpected_version() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let error = pokemons
        .push_event(
            NewEvent::new("pikachu", 7, leveled_up()),
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Storage(StorageError::UnexpectedVersion {
                version: 7,
                expected: Some(5),
                ..
            })
        ),
        "{error:?}"
    );
}

fn assert_undefined<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Err(Error::UndefinedStorageAdapter { event_store_id }) => {
            assert_eq!(event_store_id, "POKEMONS", "{what}")
        }
        other => panic!("{what}: expected UndefinedStorageAdapter, got {other:?}"),
    }
}

#[tokio::test]
async fn undefined_storage_adapter_is_a_typed_error() {
    let pokemons = EventStore::builder("POKEMONS", reduce_pokemon)
        .build()
        .unwrap();
    let event = || NewEvent::new("pikachu", 1, appeared("Pikachu", 5));
    assert_undefined("storage_adapter", pokemons.storage_adapter().map(|_| ()));
    assert_undefined(
        "get_events",
        pokemons.get_events("pikachu", Default::default()).await,
    );
    let response = pokemons.get_aggregate("pikachu", Default::default()).await;
    assert_undefined("get_aggregate", response.map(|_| ()));
    let response = pokemons
        .get_existing_aggregate("pikachu", Default::default())
        .await;
    assert_undefined("get_existing_aggregate", response.map(|_| ()));
    let response = pokemons.push_event(event(), Default::default()).await;
    assert_undefined("push_event", response.map(|_| ()));
    let page = pokemons.list_aggregate_ids(Default::default()).await;
    assert_undefined("list_aggregate_ids", page);
    let grouped = pokemons.group_event(event(), Default::default()).unwrap();
    let response = annals::push_event_group(grouped).await;
    assert_undefined("push_event_group", response.map(|_| ()));
}

#[tokio::test]
async fn storage_adapter_set_later_serves_the_store_and_its_clones() {
    let pokemons = EventStore::builder("POKEMONS", reduce_pokemon)
        .build()
        .unwrap();
    let clone = pokemons.clone();
    let adapter = adapter();
    pokemons.set_storage_adapter(adapter.clone());
    clone
        .push_event(
            NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
            Default::default(),
        )
        .await
        .unwrap();
    let events = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(
        events.len(),
        1,
        "the clone pushed through the adapter set on the original"
    );

    // Switching the adapter switches every clone.
    pokemons.set_storage_adapter(crate::fixtures::adapter());
    let events = clone
        .get_events("pikachu", Default::default())
        .await
        .unwrap();
    assert!(events.is_empty(), "the clone reads the new adapter");
}

#[tokio::test]
async fn with_storage_adapter_makes_an_independent_store() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let elsewhere = pokemons.with_storage_adapter(adapter());
    assert_eq!(elsewhere.event_store_id(), "POKEMONS");
    assert!(
        elsewhere
            .get_events("pikachu", Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    elsewhere
        .push_event(
            NewEvent::new("eevee", 1, appeared("Eevee", 3)),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(
        pokemons
            .get_events("eevee", Default::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn on_event_pushed_hook_receives_the_push_response() {
    let (pokemons, recorded) = recording_pokemons(adapter());
    let first = pokemons
        .push_event(
            NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
            Default::default(),
        )
        .await
        .unwrap();
    let second = pokemons
        .push_event(
            NewEvent::new("pikachu", 2, leveled_up()),
            Default::default(),
        )
        .await
        .unwrap();
    // A refused push does not call the hook.
    let refused = pokemons
        .push_event(
            NewEvent::new("pikachu", 2, leveled_up()),
            Default::default(),
        )
        .await;
    assert!(refused.is_err());
    let recorded = recorded.lock().unwrap();
    assert_eq!(recorded.len(), 2, "one call per successful push");
    for (seen, returned) in recorded.iter().zip([&first, &second]) {
        assert_eq!(seen.event, returned.event);
        assert_eq!(seen.position, returned.position);
        assert_eq!(seen.next_aggregate, returned.next_aggregate);
    }
    assert!(recorded[0].next_aggregate.is_some() && recorded[1].next_aggregate.is_none());
}

#[test]
fn event_store_builder_refuses_invalid_store_ids() {
    for bad in ["", "with space", "slash/"] {
        let result = EventStore::builder(bad, reduce_pokemon).build();
        assert!(
            matches!(result, Err(Error::Storage(StorageError::Limit(_)))),
            "{bad:?} was accepted"
        );
    }
}
