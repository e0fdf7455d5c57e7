//! How an [`EventStore`] is configured and built ([`EventStoreBuilder`]), and the store ids the
//! framework keeps for itself.

use std::future::Future;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::aggregate::Reducer;
use crate::model::codec;
use crate::model::error::Error;
use crate::model::event::{EventDetail, Events};
use crate::model::event_store::options::PushEventResponse;
use crate::model::event_store::store::Snapshots;
use crate::model::event_store::store::{EventStore, Inner, PushHook};
use crate::model::snapshot_policy::SnapshotPolicy;
use crate::model::upcast::{Evolution, UpcastError};
use crate::storage::{LimitError, Limits, StorageAdapter};

/// The end of the event store ids the framework keeps for itself: `S.timers` holds the timers
/// of the [entities](crate::runtime::entity) of store `S`. [`EventStoreBuilder::build`] refuses
/// an id that ends with it, so no store of an application can take the place of a timer store.
/// Storage adapters accept such ids (the framework writes them, and `annals import` restores
/// them).
pub const RESERVED_EVENT_STORE_ID_SUFFIX: &str = ".timers";

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// Starts configuring a store named `event_store_id` that folds its events with `reducer`.
    pub fn builder(
        event_store_id: impl Into<String>,
        reducer: impl Fn(Option<S>, &EventDetail<E>) -> S + Send + Sync + 'static,
    ) -> EventStoreBuilder<E, S> {
        EventStoreBuilder {
            event_store_id: event_store_id.into(),
            reducer: Arc::new(reducer),
            reducer_version: 1,
            adapter: None,
            on_event_pushed: None,
            snapshots: None,
            evolution: Evolution::default(),
        }
    }
}

/// Configures an [`EventStore`]; made by [`EventStore::builder`].
pub struct EventStoreBuilder<E: Events, S> {
    event_store_id: String,
    reducer: Reducer<E, S>,
    reducer_version: u64,
    adapter: Option<Arc<dyn StorageAdapter>>,
    on_event_pushed: Option<PushHook<E, S>>,
    snapshots: Option<Snapshots<E, S>>,
    evolution: Evolution,
}

impl<E: Events, S: Clone + Send + Sync + 'static> EventStoreBuilder<E, S> {
    /// Sets the storage adapter (it can also be set later with
    /// [`EventStore::set_storage_adapter`]).
    pub fn storage_adapter(mut self, adapter: Arc<dyn StorageAdapter>) -> Self {
        self.adapter = Some(adapter);
        self
    }

    /// Runs `hook` after each successful push (also for each event of a pushed group), with
    /// exactly the push's response. The push is already durable when the hook runs.
    pub fn on_event_pushed<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(PushEventResponse<E, S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_event_pushed = Some(Arc::new(move |response| Box::pin(hook(response))));
        self
    }

    /// Sets the version of the reducer and state type (default 1). Snapshots record it, and a
    /// store ignores and deletes snapshots taken under any other: bump it whenever the reducer
    /// or the state type changes what a state means. It can be any number, such as a hash.
    pub fn reducer_version(mut self, version: u64) -> Self {
        self.reducer_version = version;
        self
    }

    /// Registers the upcaster of `event_type` from schema version `from_schema_version` to the
    /// next one, on the payload as a dynamic JSON value. See [`upcast`](crate::model::upcast).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)]
    /// # pub struct Appeared { pub name: String, pub level: u32 }
    /// annals::events! {
    ///     pub enum PokemonEvent {
    ///         // Schema 1 had `lvl`; schema 2 renamed it to `level`.
    ///         Appeared(Appeared) = "POKEMON_APPEARED" schema 2,
    ///     }
    /// }
    /// # fn reduce(_: Option<()>, _: &annals::EventDetail<PokemonEvent>) {}
    /// let pokemons = annals::EventStore::builder("POKEMONS", reduce)
    ///     .upcaster("POKEMON_APPEARED", 1, |mut payload| {
    ///         let lvl = payload["lvl"].take();
    ///         payload["level"] = lvl;
    ///         Ok(payload)
    ///     })
    ///     .build()?;
    /// # Ok::<(), annals::Error>(())
    /// ```
    pub fn upcaster<F>(
        mut self,
        event_type: impl Into<String>,
        from_schema_version: u32,
        upcaster: F,
    ) -> Self
    where
        F: Fn(serde_json::Value) -> Result<serde_json::Value, UpcastError> + Send + Sync + 'static,
    {
        self.evolution
            .add_step(event_type.into(), from_schema_version, Arc::new(upcaster));
        self
    }

    /// Registers the upcaster of `event_type` from schema version `from_schema_version` to the
    /// next one, on typed payloads: the stored payload is decoded as `Old`, converted, and the
    /// `New` value goes on to the next step (or becomes the event). A payload that does not
    /// decode as `Old` fails the read with [`Error::Decode`].
    pub fn typed_upcaster<Old, New, F>(
        self,
        event_type: impl Into<String>,
        from_schema_version: u32,
        upcaster: F,
    ) -> Self
    where
        Old: DeserializeOwned,
        New: Serialize,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        self.upcaster(event_type, from_schema_version, move |payload| {
            let old: Old = serde_json::from_value(payload)?;
            Ok(serde_json::to_value(upcaster(old))?)
        })
    }

    /// Reads events stored under the type name `old` as events of the declared type `new`
    /// (for a renamed event type). Their schema versions continue `new`'s numbering.
    pub fn event_type_alias(mut self, old: impl Into<String>, new: impl Into<String>) -> Self {
        self.evolution.add_alias(old.into(), new.into());
        self
    }

    /// Builds the store, checking its id (`[A-Za-z0-9_.-]`, at most 128 bytes, not ending in
    /// the reserved [`RESERVED_EVENT_STORE_ID_SUFFIX`]) and that its upcasters and aliases fit
    /// its event types ([`Error::InvalidSchemaEvolution`]).
    pub fn build(self) -> Result<EventStore<E, S>, Error> {
        if self
            .event_store_id
            .ends_with(RESERVED_EVENT_STORE_ID_SUFFIX)
        {
            return Err(Error::Storage(
                LimitError::InvalidEventStoreId {
                    event_store_id: self.event_store_id,
                    reason: "the suffix \".timers\" is reserved for the timer stores of entities",
                }
                .into(),
            ));
        }
        self.build_reserved()
    }

    /// [`build`](Self::build) without refusing the reserved suffix: for the stores the
    /// framework itself names with it.
    pub(crate) fn build_reserved(self) -> Result<EventStore<E, S>, Error> {
        Limits::default()
            .check_event_store_id(&self.event_store_id)
            .map_err(|e| Error::Storage(e.into()))?;
        self.evolution.check::<E>(&self.event_store_id)?;
        Ok(EventStore {
            inner: Arc::new(Inner {
                event_store_id: self.event_store_id,
                reducer: self.reducer,
                reducer_version: self.reducer_version,
                adapter: RwLock::new(self.adapter),
                on_event_pushed: self.on_event_pushed,
                snapshots: self.snapshots,
                evolution: Arc::new(self.evolution),
                #[cfg(feature = "personal")]
                personal_seen: Default::default(),
            }),
        })
    }
}

impl<E, S> EventStoreBuilder<E, S>
where
    E: Events,
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Takes snapshots of aggregates by `policy`, in the adapter's snapshot storage, so that
    /// [`get_aggregate`](EventStore::get_aggregate) replays only the events after the newest
    /// one. States are encoded with the [`codec`]. Pushes are unaffected; see
    /// [`snapshot_policy`](crate::model::snapshot_policy) for when snapshots are written and
    /// when they are trusted. On an adapter without snapshot storage the policy does nothing.
    pub fn snapshots(mut self, policy: SnapshotPolicy<E, S>) -> Self {
        self.snapshots = Some(Snapshots {
            policy,
            encode: codec::encode::<S>,
            decode: codec::decode::<S>,
            writes: Arc::default(),
        });
        self
    }
}
