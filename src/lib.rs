//! # annals — an embedded event store and CQRS framework
//!
//! An application links annals, opens a directory, and gets a crash-safe event store with a
//! typed command layer on top. The model is [Castore](https://github.com/castore-dev/castore)'s:
//! events grouped by aggregate id and versioned, reduced into aggregates, pushed through event
//! stores by commands that retry on version conflicts.
//!
//! ## Where things are
//! annals is built in floors; each imports only from the floors below it.
//!
//! | floor | module | concepts |
//! |---|---|---|
//! | 1. engine | [`engine`] | segmented log, group-commit writer, index, recovery, I/O seam, [`Durability`] |
//! | 2. storage | [`storage`] | [`StorageAdapter`], [`LogAdapter`](storage::LogAdapter) ([`open`]), [`InMemoryAdapter`](storage::InMemoryAdapter), `PostgresAdapter` (feature `postgres`), [`Limits`](storage::Limits), [`Timestamp`], paging, [`SnapshotStorage`](storage::SnapshotStorage) |
//! | 3. typed layer | [`mod@event`] | [`Events`], [`events!`], [`EventDetail`], [`NewEvent`] |
//! | | [`aggregate`] | [`Aggregate`], [`Reducer`] |
//! | | [`event_store`] | [`EventStore`] and its options and responses |
//! | | [`group`] | [`GroupedEvent`], [`push_event_group`] |
//! | | [`snapshot`] | [`SnapshotPolicy`]: snapshots, their invalidation and fallbacks |
//! | | [`upcast`] | schema versions, upcasters, event-type aliases, [`UpcastError`] |
//! | | [`command`] | [`Command`], retries on [`EventAlreadyExists`] |
//! | | [`codec`] | MessagePack payload encoding |
//! | | [`testing`] | [`MockEventStore`](testing::MockEventStore), the adapter conformance suite |
//! | 4. runtime | [`subscription`] | [`Subscription`](subscription::Subscription): the global log in order, caught up then live; [`Filter`](subscription::Filter) |
//! | | [`consumer`] | [`Consumer`](consumer::Consumer): named, durable, at-least-once subscriptions |
//! | | [`channel`] | Castore's message channels: [`Message`](channel::Message)s, buses and queues ([`InMemoryBus`](channel::InMemoryBus), [`InMemoryQueue`](channel::InMemoryQueue)), published from the log by a [`Publisher`](channel::Publisher) |
//! | | [`dam`] | pour history into a channel as replayed messages ([`pour_events`](dam::pour_events) and friends) |
//! | | [`state`] | [`StateStore`](state::StateStore): the runtime's durable state (checkpoints, and what commits with them) |
//! | | [`action`] | actions: [`EventAction`](action::EventAction) with retries and [dead letters](action::dead_letter), [`HttpActions`](action::http::HttpActions), the [`ActionContext`](action::ActionContext) that keeps commands from calling actions |
//! | | [`queue`] | [`Queue`](queue::Queue): a durable queue with visibility timeout, acks and dead letters; [`QueueAction`](queue::QueueAction) |
//! | | [`view`] | [`KvView`](view::KvView) (redb) and `SqlView` (SQLite, feature `sql`): projections applied exactly once, rebuilt side by side, read-your-writes |
//! | | [`entity`] | entities as actors: an [`Entity`](entity::Entity) decides, [`Entities`](entity::Entities) runs one instance per id with batched commits, fencing and passivation; durable [`Timers`](entity::Timers) |
//!
//! ## Example
//! ```
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use annals::{EventDetail, EventStore, NewEvent, storage::InMemoryAdapter};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct Appeared { pub name: String, pub level: u32 }
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct LeveledUp {}
//!
//! annals::events! {
//!     pub enum PokemonEvent {
//!         Appeared(Appeared) = "POKEMON_APPEARED",
//!         LeveledUp(LeveledUp) = "POKEMON_LEVELED_UP",
//!     }
//! }
//!
//! #[derive(Debug, Clone)]
//! pub struct Pokemon { pub name: String, pub level: u32 }
//!
//! fn reduce(pokemon: Option<Pokemon>, event: &EventDetail<PokemonEvent>) -> Pokemon {
//!     match (pokemon, &event.event) {
//!         (_, PokemonEvent::Appeared(e)) => Pokemon { name: e.name.clone(), level: e.level },
//!         (Some(p), PokemonEvent::LeveledUp(_)) => Pokemon { level: p.level + 1, ..p },
//!         (None, PokemonEvent::LeveledUp(_)) => unreachable!("the first event is Appeared"),
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let pokemons = EventStore::builder("POKEMONS", reduce)
//!     .storage_adapter(Arc::new(InMemoryAdapter::new()))
//!     .build()?;
//! let appeared = PokemonEvent::Appeared(Appeared { name: "Pikachu".into(), level: 5 });
//! pokemons.push_event(NewEvent::new("pikachu", 1, appeared), Default::default()).await?;
//! let up = PokemonEvent::LeveledUp(LeveledUp {});
//! pokemons.push_event(NewEvent::new("pikachu", 2, up), Default::default()).await?;
//!
//! let pikachu = pokemons.get_existing_aggregate("pikachu", Default::default()).await?;
//! assert_eq!((pikachu.aggregate.level, pikachu.aggregate.version), (6, 2));
//! # Ok::<(), annals::Error>(()) }).unwrap();
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod action;
pub mod aggregate;
pub mod channel;
pub mod codec;
pub mod command;
pub mod consumer;
pub mod dam;
pub mod engine;
pub mod entity;
mod error;
pub mod event;
pub mod event_store;
pub mod group;
pub mod queue;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod subscription;
pub mod testing;
pub mod upcast;
pub mod view;

pub use aggregate::{Aggregate, Reducer};
pub use command::{Command, CommandFailure, RetryContext};
pub use engine::Durability;
pub use error::Error;
pub use event::{EventDetail, Events, NewEvent, PayloadError};
pub use event_store::{
    EventStore, EventStoreBuilder, ExistingAggregate, GetAggregateOptions, GetAggregateResponse,
    PushEventOptions, PushEventResponse,
};
pub use group::{EventGroup, GroupedEvent, push_event_group};
pub use snapshot::SnapshotPolicy;
pub use storage::{
    AggregateIdsPage, EventAlreadyExists, GetEventsOptions, ListAggregateIdsOptions, Position,
    StorageAdapter, StorageError, Timestamp, open,
};
pub use upcast::UpcastError;

/// The names most applications need: `use annals::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Aggregate, Command, Error, EventDetail, EventStore, Events, GetAggregateOptions,
        GetEventsOptions, ListAggregateIdsOptions, NewEvent, PushEventOptions, Timestamp,
        push_event_group,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use serde_json;
}
