//! `MockEventStore`: a store seeded with initial events on its own adapter, resettable.

use annals::testing::MockEventStore;
use annals::{Error, EventDetail, EventStore, NewEvent};

use crate::fixtures::*;

fn initial_events() -> Vec<EventDetail<PokemonEvent>> {
    pikachu_history()
        .into_iter()
        .map(|e| e.into_detail(ts("1970-01-01T00:00:00.000Z")))
        .collect()
}

#[tokio::test]
async fn mock_event_store_is_seeded_with_initial_events() {
    let pokemons = EventStore::builder("POKEMONS", reduce_pokemon)
        .build()
        .unwrap();
    let mock = MockEventStore::new(&pokemons, initial_events())
        .await
        .unwrap();
    assert_eq!(mock.event_store_id(), "POKEMONS");
    assert_eq!(mock.initial_events(), initial_events().as_slice());
    let events = mock
        .get_events("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(events, initial_events());
    let pikachu = mock
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!((pikachu.aggregate.level, pikachu.aggregate.version), (7, 4));
}

#[tokio::test]
async fn mock_reset_restores_exactly_the_initial_events() {
    let pokemons = EventStore::builder("POKEMONS", reduce_pokemon)
        .build()
        .unwrap();
    let mock = MockEventStore::new(&pokemons, initial_events())
        .await
        .unwrap();
    mock.push_event(
        NewEvent::new("pikachu", 5, leveled_up()),
        Default::default(),
    )
    .await
    .unwrap();
    mock.push_event(
        NewEvent::new("eevee", 1, appeared("Eevee", 3)),
        Default::default(),
    )
    .await
    .unwrap();
    mock.reset().await.unwrap();
    let events = mock
        .get_events("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(events, initial_events());
    assert!(
        mock.get_events("eevee", Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    let ids = mock.list_aggregate_ids(Default::default()).await.unwrap();
    assert_eq!(ids.aggregate_ids.len(), 1);
    // The versions freed by the reset can be pushed again.
    mock.push_event(
        NewEvent::new("pikachu", 5, leveled_up()),
        Default::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn mock_seeding_and_reset_do_not_call_on_event_pushed() {
    let (pokemons, recorded) = recording_pokemons(adapter());
    let mock = MockEventStore::new(&pokemons, initial_events())
        .await
        .unwrap();
    mock.reset().await.unwrap();
    assert!(recorded.lock().unwrap().is_empty(), "seeding is not a push");
    mock.push_event(
        NewEvent::new("pikachu", 5, leveled_up()),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        recorded.lock().unwrap().len(),
        1,
        "the mock keeps the store's hook"
    );
}

#[tokio::test]
async fn mock_leaves_the_mocked_store_untouched() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let mock = MockEventStore::new(&pokemons, Vec::new()).await.unwrap();
    assert!(
        mock.get_events("pikachu", Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    mock.push_event(
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
    assert_eq!(
        pokemons
            .get_events("pikachu", Default::default())
            .await
            .unwrap()
            .len(),
        4
    );

    let unconfigured = EventStore::builder("POKEMONS", reduce_pokemon)
        .build()
        .unwrap();
    let _mock = MockEventStore::new(&unconfigured, initial_events())
        .await
        .unwrap();
    let error = unconfigured
        .get_events("pikachu", Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::UndefinedStorageAdapter { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn mock_with_invalid_initial_events_is_refused() {
    let pokemons = EventStore::builder("POKEMONS", reduce_pokemon)
        .build()
        .unwrap();
    let mut gap = initial_events();
    gap.remove(1);
    let error = MockEventStore::new(&pokemons, gap)
        .await
        .err()
        .expect("a gap is refused");
    assert!(matches!(error, Error::Storage(_)), "{error:?}");
}
