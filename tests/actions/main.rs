//! Actions: functions triggered by events, HTTP requests and a durable queue.
//!
//! Guards what actions promise: an event action runs at least once for every event it
//! subscribes to, even across a crash in the middle of a run; a poison event is retried with
//! backoff, dead-lettered, and does not hold back later events; dead letters can be retried,
//! retried on request by the running action (marked while it runs or while it is stopped), and
//! dropped; the queue redelivers what was not acked, dead-letters what keeps failing, and keeps
//! its messages across a reopen; HTTP actions answer with the documented statuses, checked by a
//! real HTTP client over loopback, including many requests racing on one aggregate; the admin
//! console (feature `console`) shows all of it, and refuses bad input and unauthorised
//! mutations. Tests run on the in-memory and on the log adapter; waits are bounded by a safety
//! net, never asserted.

#[cfg(feature = "console")]
mod console;
#[cfg(feature = "console")]
mod console_page;
mod event_actions;
mod http;
mod queues;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use annals::storage::{InMemoryAdapter, LogAdapter, StorageAdapter};
use annals::{EventDetail, EventStore, NewEvent, Position};
use serde::{Deserialize, Serialize};

/// Long enough never to fire on a healthy run: every wait ends as soon as its condition holds.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Awaits `future`, failing the test if it has not finished after [`PATIENCE`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("safety net: {what} did not happen within {PATIENCE:?}"),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Appeared {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Caught {
    pub trainer: String,
}

annals::events! {
    pub enum PokemonEvent {
        Appeared(Appeared) = "POKEMON_APPEARED",
        Caught(Caught) = "POKEMON_CAUGHT",
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pokemon {
    pub name: String,
    pub caught_by: Option<String>,
}

fn reduce(pokemon: Option<Pokemon>, event: &EventDetail<PokemonEvent>) -> Pokemon {
    let pokemon = pokemon.unwrap_or_default();
    match &event.event {
        PokemonEvent::Appeared(e) => Pokemon {
            name: e.name.clone(),
            caught_by: None,
        },
        PokemonEvent::Caught(e) => Pokemon {
            caught_by: Some(e.trainer.clone()),
            ..pokemon
        },
    }
}

pub type Pokemons = EventStore<PokemonEvent, Pokemon>;

/// The POKEMONS store on `adapter`.
pub fn pokemons(adapter: &Arc<dyn StorageAdapter>) -> Pokemons {
    EventStore::builder("POKEMONS", reduce)
        .storage_adapter(adapter.clone())
        .build()
        .expect("build the POKEMONS store")
}

/// Makes `id` (named `name`) appear; returns its event's global position.
pub async fn appear(pokemons: &Pokemons, id: &str, name: &str) -> Position {
    let event = PokemonEvent::Appeared(Appeared { name: name.into() });
    let pushed = pokemons
        .push_event(NewEvent::new(id, 1, event), Default::default())
        .await
        .expect("push POKEMON_APPEARED");
    pushed.position
}

pub fn in_memory() -> Arc<dyn StorageAdapter> {
    Arc::new(InMemoryAdapter::new())
}

pub fn log_store(dir: &std::path::Path) -> Arc<dyn StorageAdapter> {
    Arc::new(LogAdapter::builder(dir).open().expect("open the log store"))
}
