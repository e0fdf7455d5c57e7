//! Crypto-shredding (feature `personal`): `Personal` fields encrypted on push, read back on
//! the in-memory and log adapters, forgotten on every read path, snapshots holding forgotten
//! data discarded, keys destroyed in `keys.redb`, altered ciphertext and personal data outside
//! a store. (PostgreSQL: `tests/postgres/personal.rs`; the CLI: `tests/cli/personal.rs`.)

mod adapters;
mod forget;
mod keys_file;
mod refusals;

use std::sync::Arc;

use annals::snapshot_policy::SnapshotPolicy;
use annals::storage::{InMemoryAdapter, StorageAdapter};
use annals::{EventDetail, EventStore, Personal};
use serde::{Deserialize, Serialize};

/// A trainer registered: name and email are personal data of the trainer (the subject), the
/// region is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub name: Personal<String>,
    pub email: Personal<String>,
    pub region: String,
}

/// A trainer caught a Pokémon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Caught {
    pub pokemon: String,
}

annals::events! {
    #[derive(PartialEq)]
    pub enum TrainerEvent {
        Registered(Registered) = "TRAINER_REGISTERED",
        Caught(Caught) = "POKEMON_CAUGHT",
    }
}

/// A trainer's state: the name as personal data, and a figure derived from it when it was
/// known (what only a replay, not a snapshot taken before the forget, gets right).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trainer {
    pub name: Personal<String>,
    pub name_letters: usize,
    pub caught: u32,
}

pub type Trainers = EventStore<TrainerEvent, Trainer>;

pub fn reduce(state: Option<Trainer>, event: &EventDetail<TrainerEvent>) -> Trainer {
    match (&event.event, state) {
        (TrainerEvent::Registered(r), _) => Trainer {
            name: r.name.clone(),
            name_letters: r.name.known().map_or(0, |n| n.chars().count()),
            caught: 0,
        },
        (TrainerEvent::Caught(_), Some(mut trainer)) => {
            trainer.caught += 1;
            trainer
        }
        (TrainerEvent::Caught(_), None) => Trainer {
            name: Personal::Forgotten {
                subject: String::new(),
            },
            name_letters: 0,
            caught: 1,
        },
    }
}

pub fn trainers(adapter: &Arc<dyn StorageAdapter>) -> Trainers {
    EventStore::builder("TRAINERS", reduce)
        .storage_adapter(adapter.clone())
        .snapshots(SnapshotPolicy::every(2))
        .build()
        .expect("store")
}

pub fn registered(subject: &str, name: &str) -> TrainerEvent {
    TrainerEvent::Registered(Registered {
        name: Personal::new(subject, name.to_owned()),
        email: Personal::new(subject, format!("{}@pallet.town", name.to_lowercase())),
        region: "Kanto".to_owned(),
    })
}

pub fn caught(pokemon: &str) -> TrainerEvent {
    TrainerEvent::Caught(Caught {
        pokemon: pokemon.to_owned(),
    })
}

/// The adapters crypto-shredding runs on in one process.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Memory,
    Log,
}

pub fn adapter(kind: Kind, dir: &std::path::Path) -> Arc<dyn StorageAdapter> {
    match kind {
        Kind::Memory => Arc::new(InMemoryAdapter::new()),
        Kind::Log => annals::open(dir).expect("open"),
    }
}

/// Runs an async test on both adapters.
#[macro_export]
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn in_memory() {
                super::$name($crate::Kind::Memory).await;
            }
            #[tokio::test]
            async fn on_the_log() {
                super::$name($crate::Kind::Log).await;
            }
        }
    };
}
