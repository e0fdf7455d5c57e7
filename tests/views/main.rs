//! Views: projections of the global log into key-value (redb) and SQL (SQLite) tables.
//!
//! Guards the view guarantees: each event applied exactly once across crashes (a batch and
//! its checkpoint commit together), catch-up then live following, SQL joins, side-by-side
//! rebuilds, read-your-writes, and handler failures that stop the view without skipping the
//! event. Tests that depend on the log run on the in-memory and the log adapter. They need the
//! `sql` feature (on by default).
#![cfg(feature = "sql")]

mod failures;
mod kv;
mod read_your_writes;
mod rebuild;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use annals::storage::{InMemoryAdapter, StorageAdapter};
use annals::{EventDetail, EventStore, NewEvent, Position};
use serde::{Deserialize, Serialize};

/// Long enough never to fire on a healthy run: waits end as soon as the view catches up.
pub const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Appeared {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Caught {
    pub trainer_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeveledUp {}

annals::events! {
    pub enum PokemonEvent {
        Appeared(Appeared) = "POKEMON_APPEARED",
        Caught(Caught) = "POKEMON_CAUGHT",
        LeveledUp(LeveledUp) = "POKEMON_LEVELED_UP",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub name: String,
}

annals::events! {
    pub enum TrainerEvent {
        Registered(Registered) = "TRAINER_REGISTERED",
    }
}

pub type Pokemons = EventStore<PokemonEvent, ()>;
pub type Trainers = EventStore<TrainerEvent, ()>;

pub fn pokemons(adapter: &Arc<dyn StorageAdapter>) -> Pokemons {
    EventStore::builder("POKEMONS", |_, _: &EventDetail<PokemonEvent>| ())
        .storage_adapter(adapter.clone())
        .build()
        .expect("build the pokemons store")
}

pub fn trainers(adapter: &Arc<dyn StorageAdapter>) -> Trainers {
    EventStore::builder("TRAINERS", |_, _: &EventDetail<TrainerEvent>| ())
        .storage_adapter(adapter.clone())
        .build()
        .expect("build the trainers store")
}

/// Where the log lives in a test.
pub enum Log {
    Memory,
    Disk,
}

/// An adapter of `kind`; a disk log goes in `dir/log`.
pub fn adapter(kind: &Log, dir: &std::path::Path) -> Arc<dyn StorageAdapter> {
    match kind {
        Log::Memory => Arc::new(InMemoryAdapter::new()),
        Log::Disk => annals::open(dir.join("log")).expect("open the log"),
    }
}

/// Pushes `Appeared` then `levels` level-ups for `id`; returns the last position.
pub async fn grow(pokemons: &Pokemons, id: &str, levels: u64) -> Position {
    let appeared = PokemonEvent::Appeared(Appeared {
        name: format!("{id}-name"),
    });
    let mut last = pokemons
        .push_event(NewEvent::new(id, 1, appeared), Default::default())
        .await
        .expect("push Appeared")
        .position;
    for version in 2..=levels + 1 {
        let up = PokemonEvent::LeveledUp(LeveledUp {});
        last = pokemons
            .push_event(NewEvent::new(id, version, up), Default::default())
            .await
            .expect("push LeveledUp")
            .position;
    }
    last
}

/// Runs a test body on the in-memory adapter and on the log adapter.
#[macro_export]
macro_rules! on_both_logs {
    ($body:ident) => {
        mod $body {
            #[tokio::test]
            async fn in_memory() {
                super::$body($crate::Log::Memory).await;
            }

            #[tokio::test]
            async fn on_the_log() {
                super::$body($crate::Log::Disk).await;
            }
        }
    };
}
