//! Event groups through typed stores: one atomic commit, typed output in the group's shape,
//! one shared timestamp, hooks per event, and the typed refusals.

use annals::storage::{LimitError, StorageError};
use annals::{Error, GroupedEvent, NewEvent, PushEventOptions, push_event_group};

use crate::fixtures::*;

#[tokio::test]
async fn event_group_returns_typed_responses_in_tuple_order_with_one_timestamp() {
    let adapter = adapter();
    let (pokemons, trainers) = (pokemons(adapter.clone()), trainers(adapter.clone()));
    pokemons
        .push_event(
            NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
            Default::default(),
        )
        .await
        .unwrap();
    let prev = pokemons
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap()
        .aggregate;
    let options = PushEventOptions {
        prev_aggregate: Some(prev),
    };
    let (caught, created, added) = push_event_group((
        pokemons
            .group_event(NewEvent::new("pikachu", 2, caught_by("ash")), options)
            .unwrap(),
        trainers
            .group_event(
                NewEvent::new("ash", 1, trainer_created("Ash")),
                Default::default(),
            )
            .unwrap(),
        trainers
            .group_event(
                NewEvent::new("ash", 2, pokemon_caught("pikachu")),
                Default::default(),
            )
            .unwrap(),
    ))
    .await
    .unwrap();
    // The output is typed per store: no downcast needed.
    assert_eq!(caught.event.event, caught_by("ash"));
    assert_eq!(added.event.event, pokemon_caught("pikachu"));
    assert_eq!(
        caught
            .next_aggregate
            .map(|a| (a.version, a.state.trainer_id)),
        Some((2, Some("ash".to_owned()))),
        "prev_aggregate given: the next aggregate is returned"
    );
    assert_eq!(
        created.next_aggregate.map(|a| a.state.name),
        Some("Ash".to_owned())
    );
    assert!(
        added.next_aggregate.is_none(),
        "neither first event nor prev_aggregate"
    );
    assert_eq!(
        caught.event.timestamp, created.event.timestamp,
        "one timestamp per group"
    );
    assert_eq!(
        caught.event.timestamp, added.event.timestamp,
        "one timestamp per group"
    );
    assert_eq!(
        [caught.position, created.position, added.position],
        [2, 3, 4],
        "consecutive positions in group order"
    );

    let stored = pokemons
        .get_events("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(stored[1], caught.event);
    let ash = trainers
        .get_existing_aggregate("ash", Default::default())
        .await
        .unwrap();
    assert_eq!(ash.aggregate.pokedex, ["pikachu"]);
    assert_eq!(ash.events[0].timestamp, caught.event.timestamp);
}

#[tokio::test]
async fn event_group_keeps_given_timestamps() {
    let adapter = adapter();
    let pokemons = pokemons(adapter.clone());
    let given = ts("2020-01-01T00:00:00.000Z");
    let (eevee, pikachu) = push_event_group((
        pokemons
            .group_event(
                NewEvent::new("eevee", 1, appeared("Eevee", 3)).with_timestamp(given),
                Default::default(),
            )
            .unwrap(),
        pokemons
            .group_event(
                NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
                Default::default(),
            )
            .unwrap(),
    ))
    .await
    .unwrap();
    assert_eq!(eevee.event.timestamp, given);
    assert_ne!(
        pikachu.event.timestamp, given,
        "the others get the group's timestamp"
    );
    let stored = pokemons
        .get_events("eevee", Default::default())
        .await
        .unwrap();
    assert_eq!(stored[0].timestamp, given);
}

#[tokio::test]
async fn event_group_calls_on_event_pushed_once_per_grouped_event() {
    let adapter = adapter();
    let (pokemons, pokemon_calls) = recording_pokemons(adapter.clone());
    let (trainers, trainer_calls) = recording_trainers(adapter.clone());
    let (pikachu, eevee, ash) = push_event_group((
        pokemons
            .group_event(
                NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
                Default::default(),
            )
            .unwrap(),
        pokemons
            .group_event(
                NewEvent::new("eevee", 1, appeared("Eevee", 3)),
                Default::default(),
            )
            .unwrap(),
        trainers
            .group_event(
                NewEvent::new("ash", 1, trainer_created("Ash")),
                Default::default(),
            )
            .unwrap(),
    ))
    .await
    .unwrap();
    let pokemon_calls = pokemon_calls.lock().unwrap();
    let trainer_calls = trainer_calls.lock().unwrap();
    assert_eq!((pokemon_calls.len(), trainer_calls.len()), (2, 1));
    for (seen, returned) in pokemon_calls.iter().zip([&pikachu, &eevee]) {
        assert_eq!(
            (&seen.event, seen.position),
            (&returned.event, returned.position)
        );
        assert_eq!(seen.next_aggregate, returned.next_aggregate);
    }
    assert_eq!(
        (&trainer_calls[0].event, trainer_calls[0].position),
        (&ash.event, ash.position)
    );
}

#[tokio::test]
async fn event_group_conflict_names_the_event_and_pushes_nothing() {
    let adapter = adapter();
    let (pokemons, pokemon_calls) = recording_pokemons(adapter.clone());
    let trainers = trainers(adapter.clone());
    trainers
        .push_event(
            NewEvent::new("ash", 1, trainer_created("Ash")),
            Default::default(),
        )
        .await
        .unwrap();
    let error = push_event_group((
        pokemons
            .group_event(
                NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
                Default::default(),
            )
            .unwrap(),
        trainers
            .group_event(
                NewEvent::new("ash", 1, trainer_created("Ash")),
                Default::default(),
            )
            .unwrap(),
    ))
    .await
    .unwrap_err();
    let conflict = error.event_already_exists().expect("a version conflict");
    assert_eq!(
        (
            conflict.event_store_id.as_str(),
            conflict.aggregate_id.as_str(),
            conflict.version
        ),
        ("TRAINERS", "ash", 1)
    );
    assert!(
        pokemons
            .get_events("pikachu", Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        pokemon_calls.lock().unwrap().is_empty(),
        "no hook for a refused group"
    );
}

#[tokio::test]
async fn event_group_across_adapters_is_group_adapter_mismatch() {
    let pokemons = pokemons(adapter());
    let trainers = trainers(adapter());
    let error = push_event_group((
        pokemons
            .group_event(
                NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
                Default::default(),
            )
            .unwrap(),
        trainers
            .group_event(
                NewEvent::new("ash", 1, trainer_created("Ash")),
                Default::default(),
            )
            .unwrap(),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&error, Error::GroupAdapterMismatch { event_store_id } if event_store_id == "TRAINERS"),
        "{error:?}"
    );
    assert!(
        pokemons
            .get_events("pikachu", Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        trainers
            .get_events("ash", Default::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn event_group_of_a_vec_and_nested_tuples_mirrors_its_shape() {
    let adapter = adapter();
    let (pokemons, trainers) = (pokemons(adapter.clone()), trainers(adapter.clone()));
    let starters: Vec<GroupedEvent<PokemonEvent, Pokemon>> = ["bulbasaur", "charmander"]
        .into_iter()
        .map(|id| {
            pokemons
                .group_event(NewEvent::new(id, 1, appeared(id, 5)), Default::default())
                .unwrap()
        })
        .collect();
    let oak = trainers
        .group_event(
            NewEvent::new("oak", 1, trainer_created("Oak")),
            Default::default(),
        )
        .unwrap();
    let ((responses,), oak) = push_event_group(((starters,), oak)).await.unwrap();
    let ids: Vec<_> = responses
        .iter()
        .map(|r| r.event.aggregate_id.as_str())
        .collect();
    assert_eq!(ids, ["bulbasaur", "charmander"]);
    assert_eq!(oak.position, 3);
}

#[tokio::test]
async fn empty_event_group_is_refused() {
    let error = push_event_group(Vec::<GroupedEvent<PokemonEvent, Pokemon>>::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Storage(StorageError::Limit(LimitError::EmptyGroup))
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn group_event_with_a_wrong_prev_aggregate_is_prev_aggregate_mismatch() {
    let (_, pokemons) = pokemons_with_pikachu().await;
    let prev = pokemons
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap()
        .aggregate;
    let options = PushEventOptions {
        prev_aggregate: Some(prev),
    };
    let error = pokemons
        .group_event(NewEvent::new("pikachu", 9, leveled_up()), options)
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::PrevAggregateMismatch {
                version: 9,
                prev_version: 4,
                ..
            }
        ),
        "{error:?}"
    );
}
