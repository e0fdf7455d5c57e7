//! The Pokémon domain of Castore's documentation: two stores, their events and reducers.

use std::sync::{Arc, Mutex};

use annals::storage::InMemoryAdapter;
use annals::{EventDetail, EventStore, NewEvent, PushEventResponse, StorageAdapter, Timestamp};
use serde::{Deserialize, Serialize};

/// Payload of `POKEMON_APPEARED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appeared {
    pub name: String,
    pub level: u32,
}

/// Payload of `CAUGHT_BY_TRAINER`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaughtByTrainer {
    pub trainer_id: String,
}

/// Payload of `POKEMON_LEVELED_UP`: the event is the whole fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeveledUp {}

/// Castore's `{ trigger?: 'random' | 'scripted' }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PokemonMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
}

annals::events! {
    #[derive(PartialEq)]
    pub enum PokemonEvent {
        type Metadata = PokemonMetadata;
        Appeared(Appeared) = "POKEMON_APPEARED",
        CaughtByTrainer(CaughtByTrainer) = "CAUGHT_BY_TRAINER",
        LeveledUp(LeveledUp) = "POKEMON_LEVELED_UP",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pokemon {
    pub name: String,
    pub level: u32,
    pub trainer_id: Option<String>,
}

pub fn reduce_pokemon(pokemon: Option<Pokemon>, event: &EventDetail<PokemonEvent>) -> Pokemon {
    match (pokemon, &event.event) {
        (_, PokemonEvent::Appeared(e)) => Pokemon {
            name: e.name.clone(),
            level: e.level,
            trainer_id: None,
        },
        (Some(p), PokemonEvent::CaughtByTrainer(e)) => Pokemon {
            trainer_id: Some(e.trainer_id.clone()),
            ..p
        },
        (Some(p), PokemonEvent::LeveledUp(_)) => Pokemon {
            level: p.level + 1,
            ..p
        },
        (None, other) => panic!("{other:?} cannot be the first event of a Pokémon"),
    }
}

/// Payload of `TRAINER_CREATED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerCreated {
    pub name: String,
}

/// Payload of `POKEMON_CAUGHT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PokemonCaught {
    pub pokemon_id: String,
}

annals::events! {
    #[derive(PartialEq)]
    pub enum TrainerEvent {
        Created(TrainerCreated) = "TRAINER_CREATED",
        PokemonCaught(PokemonCaught) = "POKEMON_CAUGHT",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Trainer {
    pub name: String,
    pub pokedex: Vec<String>,
}

pub fn reduce_trainer(trainer: Option<Trainer>, event: &EventDetail<TrainerEvent>) -> Trainer {
    match (trainer, &event.event) {
        (_, TrainerEvent::Created(e)) => Trainer {
            name: e.name.clone(),
            pokedex: Vec::new(),
        },
        (Some(mut t), TrainerEvent::PokemonCaught(e)) => {
            t.pokedex.push(e.pokemon_id.clone());
            t
        }
        (None, other) => panic!("{other:?} cannot be the first event of a trainer"),
    }
}

pub type Pokemons = EventStore<PokemonEvent, Pokemon>;
pub type Trainers = EventStore<TrainerEvent, Trainer>;

pub fn adapter() -> Arc<InMemoryAdapter> {
    Arc::new(InMemoryAdapter::new())
}

pub fn pokemons(adapter: Arc<dyn StorageAdapter>) -> Pokemons {
    EventStore::builder("POKEMONS", reduce_pokemon)
        .storage_adapter(adapter)
        .build()
        .unwrap()
}

pub fn trainers(adapter: Arc<dyn StorageAdapter>) -> Trainers {
    EventStore::builder("TRAINERS", reduce_trainer)
        .storage_adapter(adapter)
        .build()
        .unwrap()
}

pub fn ts(iso: &str) -> Timestamp {
    iso.parse().unwrap()
}

pub fn appeared(name: &str, level: u32) -> PokemonEvent {
    PokemonEvent::Appeared(Appeared {
        name: name.to_owned(),
        level,
    })
}

pub fn caught_by(trainer_id: &str) -> PokemonEvent {
    PokemonEvent::CaughtByTrainer(CaughtByTrainer {
        trainer_id: trainer_id.to_owned(),
    })
}

pub fn leveled_up() -> PokemonEvent {
    PokemonEvent::LeveledUp(LeveledUp {})
}

pub fn trainer_created(name: &str) -> TrainerEvent {
    TrainerEvent::Created(TrainerCreated {
        name: name.to_owned(),
    })
}

pub fn pokemon_caught(pokemon_id: &str) -> TrainerEvent {
    TrainerEvent::PokemonCaught(PokemonCaught {
        pokemon_id: pokemon_id.to_owned(),
    })
}

/// Pikachu's four events: appeared at level 5, two level-ups, caught by Ash.
pub fn pikachu_history() -> Vec<NewEvent<PokemonEvent>> {
    let metadata = PokemonMetadata {
        trigger: Some("random".to_owned()),
    };
    vec![
        NewEvent::new("pikachu", 1, appeared("Pikachu", 5))
            .with_metadata(metadata)
            .with_timestamp(ts("2024-05-01T10:00:00.000Z")),
        NewEvent::new("pikachu", 2, leveled_up()).with_timestamp(ts("2024-05-01T11:00:00.000Z")),
        NewEvent::new("pikachu", 3, leveled_up()).with_timestamp(ts("2024-05-01T12:00:00.000Z")),
        NewEvent::new("pikachu", 4, caught_by("ash"))
            .with_timestamp(ts("2024-05-01T13:00:00.000Z")),
    ]
}

/// A store on a fresh adapter holding Pikachu's history.
pub async fn pokemons_with_pikachu() -> (Arc<InMemoryAdapter>, Pokemons) {
    let adapter = adapter();
    let store = pokemons(adapter.clone());
    for event in pikachu_history() {
        store.push_event(event, Default::default()).await.unwrap();
    }
    (adapter, store)
}

/// The responses an `on_event_pushed` hook was called with, in call order.
pub type Recorded<E, S> = Arc<Mutex<Vec<PushEventResponse<E, S>>>>;

/// A `POKEMONS` store whose `on_event_pushed` hook records every response.
pub fn recording_pokemons(
    adapter: Arc<dyn StorageAdapter>,
) -> (Pokemons, Recorded<PokemonEvent, Pokemon>) {
    let recorded: Recorded<PokemonEvent, Pokemon> = Arc::default();
    let sink = Arc::clone(&recorded);
    let store = EventStore::builder("POKEMONS", reduce_pokemon)
        .storage_adapter(adapter)
        .on_event_pushed(move |response| {
            let sink = Arc::clone(&sink);
            async move { sink.lock().unwrap().push(response) }
        })
        .build()
        .unwrap();
    (store, recorded)
}

/// A `TRAINERS` store whose `on_event_pushed` hook records every response.
pub fn recording_trainers(
    adapter: Arc<dyn StorageAdapter>,
) -> (Trainers, Recorded<TrainerEvent, Trainer>) {
    let recorded: Recorded<TrainerEvent, Trainer> = Arc::default();
    let sink = Arc::clone(&recorded);
    let store = EventStore::builder("TRAINERS", reduce_trainer)
        .storage_adapter(adapter)
        .on_event_pushed(move |response| {
            let sink = Arc::clone(&sink);
            async move { sink.lock().unwrap().push(response) }
        })
        .build()
        .unwrap();
    (store, recorded)
}
