//! # annals — an embedded event store and CQRS framework
//!
//! An application links annals, opens a directory, and gets a crash-safe event store with a
//! typed command layer on top. The model is [Castore](https://github.com/castore-dev/castore)'s:
//! events grouped by aggregate id and versioned, reduced into aggregates, pushed through event
//! stores by commands that retry on version conflicts.
//!
//! ## Where things are
//! annals is built in four floors, one folder each; a floor imports only from the floors
//! below it.
//!
//! 1. [`engine`] (`src/engine/`): the on-disk log — segments, record framing, the
//!    group-commit writer, the index, recovery, the file-I/O seam. Knows bytes, positions and
//!    versions. Users meet [`Durability`] and [`engine::verify_dir`].
//! 2. [`storage`] (`src/storage/`): the [`StorageAdapter`] trait and its adapters —
//!    [`LogAdapter`](storage::LogAdapter) (the engine; [`open`]),
//!    [`InMemoryAdapter`](storage::InMemoryAdapter), `PostgresAdapter` (feature `postgres`) —
//!    with [`Limits`](storage::Limits), [`Timestamp`], paging and
//!    [`SnapshotStorage`](storage::SnapshotStorage).
//! 3. [`model`] (`src/model/`): the typed layer, Castore's model.
//!    - [`mod@event`]: [`Events`], [`events!`], [`EventDetail`], [`NewEvent`]
//!    - [`aggregate`]: [`Aggregate`], [`Reducer`]
//!    - [`event_store`]: [`EventStore`], its builder, options and responses; reads (from
//!      snapshots when there is a policy), pushes, decoding
//!    - [`command`]: [`Command`], retried on [`EventAlreadyExists`]
//!    - [`group`]: [`GroupedEvent`] (from [`EventStore::group_event`]), [`push_event_group`]
//!    - [`upcast`]: schema versions, upcasters, event-type aliases, [`UpcastError`]
//!    - [`snapshot_policy`]: [`SnapshotPolicy`], when snapshots are taken and invalidated
//!    - [`codec`]: the MessagePack payload encoding
//! 4. [`runtime`] (`src/runtime/`): what runs on stored events.
//!    - [`subscription`]: the global log in order, caught up then live
//!    - [`consumer`]: named, durable, at-least-once subscriptions
//!    - [`state`]: [`StateStore`](state::StateStore), the runtime's durable state, in a
//!      local redb file or (feature `postgres`) shared in PostgreSQL
//!    - [`channel`]: Castore's message buses and queues, fed by a
//!      [`Publisher`](channel::Publisher); [`dam`] pours history into them
//!    - [`view`]: [`KvView`](view::KvView) and `SqlView` (feature `sql`), projections
//!      applied exactly once
//!    - [`action`]: [`EventAction`](action::EventAction)s with retries and dead letters,
//!      [`HttpActions`](action::http::HttpActions); they may call commands, never the reverse
//!    - [`queue`]: [`Queue`](queue::Queue), a durable queue with visibility timeouts
//!    - [`entity`]: entities as actors, one live instance per id
//!      ([`Entities`](entity::Entities)), with durable [`Timers`](entity::Timers)
//!
//! Beside the floors, [`testing`] holds the adapter conformance suite, the fuzz helpers and
//! [`MockEventStore`](testing::MockEventStore); `src/bin/annals/` is the command-line tool.
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
// One function is allowed `unsafe`: `model::codec::reader::utf8`, which skips re-validating
// ASCII text as UTF-8 (see there).
#![deny(unsafe_code)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod engine;
pub mod model;
pub mod runtime;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

// The modules of the upper floors are also reachable from the root, where users name them.
#[cfg(feature = "personal")]
pub use model::personal;
#[cfg(feature = "personal")]
pub use model::personal::Personal;
pub use model::{aggregate, codec, command, event, event_store, group, snapshot_policy, upcast};
#[cfg(feature = "console")]
pub use runtime::admin;
pub use runtime::{
    action, channel, consumer, dam, entity, lease, queue, state, subscription, view,
};

/// The former name of [`snapshot_policy`], kept so that existing paths still resolve.
#[doc(hidden)]
pub use model::snapshot_policy as snapshot;

pub use aggregate::{Aggregate, Reducer};
pub use command::{Command, CommandFailure, RetryContext};
pub use engine::Durability;
pub use event::{EventDetail, Events, NewEvent, PayloadError};
pub use event_store::{
    AggregateState, EventStore, EventStoreBuilder, ExistingAggregate, GetAggregateOptions,
    GetAggregateResponse, PushEventOptions, PushEventResponse, PushedEvents,
};
pub use group::{EventGroup, GroupedEvent, push_event_group};
pub use model::Error;
pub use snapshot_policy::SnapshotPolicy;
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
