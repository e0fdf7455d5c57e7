//! The [`EventStore`] type: what a store is made of (its id, reducer, storage adapter, push
//! hook, snapshot settings and upcasters), its accessors, and the fold of events into
//! aggregates.

use std::fmt;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

use crate::model::aggregate::{Aggregate, Reducer, apply};
use crate::model::codec::CodecError;
use crate::model::error::Error;
use crate::model::event::{EventDetail, Events};
use crate::model::event_store::options::PushEventResponse;
use crate::model::event_store::snapshot_writes::Writes;
use crate::model::snapshot_policy::SnapshotPolicy;
use crate::model::upcast::Evolution;
use crate::storage::StorageAdapter;

/// The hook a store runs after each successful push.
pub(super) type PushHook<E, S> =
    Arc<dyn Fn(PushEventResponse<E, S>) -> BoxFuture<'static, ()> + Send + Sync>;

/// A typed, boilerplate-free interface to the events of one business entity (Castore's
/// `EventStore`): list aggregates, read events, build aggregates, push events.
///
/// Cloning is cheap and clones share the storage adapter.
///
/// **Executors.** A store needs no particular async runtime, and neither do the in-memory and
/// log adapters: an append is handed to the log's writer thread and answered through a
/// channel any executor can await, and reads run on the calling task (they may block it on
/// disk reads, as a file read does). Snapshot writes go to Tokio's blocking pool when a read
/// runs inside a Tokio runtime, and run inline at the end of the read otherwise. A
/// command-line tool or a test can drive a store with `futures::executor::block_on`:
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Appeared { pub name: String }
/// # annals::events! { pub enum PokemonEvent { Appeared(Appeared) = "POKEMON_APPEARED" } }
/// let dir = tempfile::tempdir()?;
/// let reduce = |_, _: &annals::EventDetail<PokemonEvent>| ();
/// let pokemons = annals::EventStore::builder("POKEMONS", reduce)
///     .storage_adapter(annals::open(dir.path())?)
///     .build()?;
/// let appeared = PokemonEvent::Appeared(Appeared { name: "Pikachu".into() });
/// futures::executor::block_on(pokemons.push_events("pikachu", 0, [appeared], &()))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Appeared { pub name: String }
/// # annals::events! { pub enum PokemonEvent { Appeared(Appeared) = "POKEMON_APPEARED" } }
/// use std::sync::Arc;
/// use annals::{EventStore, NewEvent, storage::InMemoryAdapter};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let pokemons = EventStore::builder("POKEMONS", |_, e: &annals::EventDetail<PokemonEvent>| {
///     match &e.event { PokemonEvent::Appeared(a) => a.name.clone() }
/// })
/// .storage_adapter(Arc::new(InMemoryAdapter::new()))
/// .build()?;
///
/// let appeared = PokemonEvent::Appeared(Appeared { name: "Pikachu".into() });
/// let new = NewEvent::new("pikachu", 1, appeared);
/// let pushed = pokemons.push_event(new, Default::default()).await?;
/// assert_eq!(pushed.next_aggregate.unwrap().state, "Pikachu");
/// # Ok::<(), annals::Error>(()) }).unwrap();
/// ```
pub struct EventStore<E: Events, S> {
    pub(super) inner: Arc<Inner<E, S>>,
}

/// A store's snapshot settings, with the state codec captured where `S` is known to be
/// serializable.
pub(super) struct Snapshots<E: Events, S> {
    pub(super) policy: SnapshotPolicy<E, S>,
    pub(super) encode: fn(&S) -> Result<Vec<u8>, CodecError>,
    pub(super) decode: fn(&[u8]) -> Result<S, CodecError>,
    pub(super) writes: Arc<Writes>,
}

/// What the clones of one store share.
pub(super) struct Inner<E: Events, S> {
    pub(super) event_store_id: String,
    pub(super) reducer: Reducer<E, S>,
    pub(super) reducer_version: u64,
    pub(super) adapter: RwLock<Option<Arc<dyn StorageAdapter>>>,
    pub(super) on_event_pushed: Option<PushHook<E, S>>,
    pub(super) snapshots: Option<Snapshots<E, S>>,
    pub(super) evolution: Arc<Evolution>,
    /// Whether the store has met a personal value (feature `personal`): until then its
    /// encodes and decodes run without a key scope (see `personal::scoped`).
    #[cfg(feature = "personal")]
    pub(super) personal_seen: std::sync::atomic::AtomicBool,
}

impl<E: Events, S> Clone for EventStore<E, S> {
    fn clone(&self) -> Self {
        EventStore {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E: Events, S> fmt::Debug for EventStore<E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStore")
            .field("event_store_id", &self.inner.event_store_id)
            .field("event_types", &E::EVENT_TYPES)
            .field("reducer_version", &self.inner.reducer_version)
            .field(
                "snapshots",
                &self.inner.snapshots.as_ref().map(|s| &s.policy),
            )
            .field("evolution", &self.inner.evolution)
            .finish_non_exhaustive()
    }
}

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// The store's id, e.g. `POKEMONS`.
    pub fn event_store_id(&self) -> &str {
        &self.inner.event_store_id
    }

    /// The event types the store declares.
    pub fn event_types(&self) -> &'static [&'static str] {
        E::EVENT_TYPES
    }

    /// The store's reducer.
    pub fn reducer(&self) -> &Reducer<E, S> {
        &self.inner.reducer
    }

    /// The version of the reducer and state type, recorded in every snapshot (see
    /// [`EventStoreBuilder::reducer_version`]).
    ///
    /// [`EventStoreBuilder::reducer_version`]:
    /// crate::model::event_store::EventStoreBuilder::reducer_version
    pub fn reducer_version(&self) -> u64 {
        self.inner.reducer_version
    }

    /// The snapshot policy, if the store takes snapshots.
    pub fn snapshot_policy(&self) -> Option<&SnapshotPolicy<E, S>> {
        self.inner.snapshots.as_ref().map(|s| &s.policy)
    }

    /// Waits until every snapshot write started by this store's reads so far is over (written
    /// or given up). Reads never wait for them; this is for tests and orderly shutdowns.
    pub async fn flush_snapshots(&self) {
        if let Some(snapshots) = &self.inner.snapshots {
            snapshots.writes.flushed().await;
        }
    }

    /// The storage adapter, or [`Error::UndefinedStorageAdapter`].
    pub fn storage_adapter(&self) -> Result<Arc<dyn StorageAdapter>, Error> {
        let adapter = self.inner.adapter.read().unwrap_or_else(|p| p.into_inner());
        adapter
            .clone()
            .ok_or_else(|| Error::UndefinedStorageAdapter {
                event_store_id: self.inner.event_store_id.clone(),
            })
    }

    /// Sets or switches the storage adapter, for this store and all its clones.
    pub fn set_storage_adapter(&self, adapter: Arc<dyn StorageAdapter>) {
        *self
            .inner
            .adapter
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(adapter);
    }

    /// A store with the same id, reducer, hook, snapshot policy and upcasters on another
    /// adapter (not shared with `self`).
    pub fn with_storage_adapter(&self, adapter: Arc<dyn StorageAdapter>) -> Self {
        EventStore {
            inner: Arc::new(Inner {
                event_store_id: self.inner.event_store_id.clone(),
                reducer: Arc::clone(&self.inner.reducer),
                reducer_version: self.inner.reducer_version,
                adapter: RwLock::new(Some(adapter)),
                on_event_pushed: self.inner.on_event_pushed.clone(),
                snapshots: self.inner.snapshots.as_ref().map(|s| Snapshots {
                    policy: s.policy.clone(),
                    encode: s.encode,
                    decode: s.decode,
                    writes: Arc::new(Writes::default()),
                }),
                evolution: Arc::clone(&self.inner.evolution),
                #[cfg(feature = "personal")]
                personal_seen: Default::default(),
            }),
        }
    }

    /// Folds one event into an aggregate.
    pub fn reduce(&self, aggregate: Option<Aggregate<S>>, event: &EventDetail<E>) -> Aggregate<S> {
        apply(&self.inner.reducer, aggregate, event)
    }

    /// Folds `events` into `initial` (or from nothing). `None` if both are empty.
    pub fn build_aggregate(
        &self,
        events: &[EventDetail<E>],
        initial: Option<Aggregate<S>>,
    ) -> Option<Aggregate<S>> {
        events.iter().fold(initial, |aggregate, event| {
            Some(self.reduce(aggregate, event))
        })
    }
}
