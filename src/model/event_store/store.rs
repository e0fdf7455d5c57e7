//! The event store: one per business entity, typed by its events and aggregate state.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::Error;
use crate::model::aggregate::{Aggregate, Reducer, apply};
use crate::model::codec;
use crate::model::event::{EventDetail, Events, NewEvent, PayloadError};
use crate::model::snapshot_policy::{SnapshotPolicy, Snapshots, Writes};
use crate::model::upcast::{Evolution, UpcastError};
use crate::storage::{
    AggregateIdsPage, AppendEvent, EncodedEvent, GetEventsOptions, LimitError, Limits,
    ListAggregateIdsOptions, Position, SnapshotRecord, SnapshotStorage, StorageAdapter,
    StoredEvent, Timestamp, event_checksum,
};

type PushHook<E, S> = Arc<dyn Fn(PushEventResponse<E, S>) -> BoxFuture<'static, ()> + Send + Sync>;

/// A typed, boilerplate-free interface to the events of one business entity (Castore's
/// `EventStore`): list aggregates, read events, build aggregates, push events.
///
/// Cloning is cheap and clones share the storage adapter.
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
/// let pushed = pokemons.push_event(NewEvent::new("pikachu", 1, appeared), Default::default()).await?;
/// assert_eq!(pushed.next_aggregate.unwrap().state, "Pikachu");
/// # Ok::<(), annals::Error>(()) }).unwrap();
/// ```
pub struct EventStore<E: Events, S> {
    inner: Arc<Inner<E, S>>,
}

struct Inner<E: Events, S> {
    event_store_id: String,
    reducer: Reducer<E, S>,
    reducer_version: u64,
    adapter: RwLock<Option<Arc<dyn StorageAdapter>>>,
    on_event_pushed: Option<PushHook<E, S>>,
    snapshots: Option<Snapshots<E, S>>,
    evolution: Arc<Evolution>,
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

/// The end of the event store ids the framework keeps for itself: `S.timers` holds the timers
/// of the [entities](crate::runtime::entity) of store `S`. [`EventStoreBuilder::build`] refuses an id
/// that ends with it, so no store of an application can take the place of a timer store.
/// Storage adapters accept such ids (the framework writes them, and `annals import` restores
/// them).
pub const RESERVED_EVENT_STORE_ID_SUFFIX: &str = ".timers";

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
    /// [`snapshot_policy`](crate::model::snapshot_policy) for when snapshots are written and when they are trusted.
    /// On an adapter without snapshot storage the policy does nothing.
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

/// Options of [`EventStore::get_aggregate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetAggregateOptions {
    /// Build the aggregate as it was at this version.
    pub max_version: Option<u64>,
}

/// Result of [`EventStore::get_aggregate`].
#[derive(Clone, Debug)]
pub struct GetAggregateResponse<E: Events, S> {
    /// The aggregate, `None` if it has no event.
    pub aggregate: Option<Aggregate<S>>,
    /// The events folded to build it: all of them, or, when the read started from a
    /// snapshot, those after the snapshot (possibly none).
    pub events: Vec<EventDetail<E>>,
    /// The aggregate's last event (at or below `max_version`).
    pub last_event: Option<EventDetail<E>>,
}

/// Result of [`EventStore::get_existing_aggregate`]: like [`GetAggregateResponse`], but the
/// aggregate and its last event always exist.
#[derive(Clone, Debug)]
pub struct ExistingAggregate<E: Events, S> {
    /// The aggregate.
    pub aggregate: Aggregate<S>,
    /// The events folded to build it: all of them (at least one), or, when the read started
    /// from a snapshot, those after the snapshot (possibly none).
    pub events: Vec<EventDetail<E>>,
    /// The aggregate's last event.
    pub last_event: EventDetail<E>,
}

/// Options of [`EventStore::push_event`] and [`EventStore::group_event`].
#[derive(Clone, Debug)]
pub struct PushEventOptions<S> {
    /// The aggregate before the event (at version `event.version - 1`). When given, the
    /// response carries the next aggregate.
    pub prev_aggregate: Option<Aggregate<S>>,
}

impl<S> Default for PushEventOptions<S> {
    fn default() -> Self {
        PushEventOptions {
            prev_aggregate: None,
        }
    }
}

/// Result of a push: the complete event, its position, and the next aggregate when known.
#[derive(Clone, Debug)]
pub struct PushEventResponse<E: Events, S> {
    /// The event as stored (timestamp filled in).
    pub event: EventDetail<E>,
    /// The event's global position in the storage adapter.
    pub position: Position,
    /// The aggregate after the event: present when the event is the first of its aggregate or
    /// `prev_aggregate` was given.
    pub next_aggregate: Option<Aggregate<S>>,
}

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

    /// The events of `aggregate_id` matching `options`, ordered by version (newest first when
    /// `options.reverse`). Empty when the aggregate does not exist.
    pub async fn get_events(
        &self,
        aggregate_id: &str,
        options: GetEventsOptions,
    ) -> Result<Vec<EventDetail<E>>, Error> {
        let adapter = self.storage_adapter()?;
        let stored = adapter
            .get_events(self.event_store_id(), aggregate_id, &options)
            .await?;
        stored.into_iter().map(|s| self.decode(s)).collect()
    }

    /// The aggregate built from its events (up to `options.max_version`), with those events.
    ///
    /// With a [snapshot policy](EventStoreBuilder::snapshots), the read starts from the newest
    /// valid snapshot at or below `max_version` and folds only the later events; the aggregate
    /// is the one a full replay gives. If the fold passes a point where the policy fires, a
    /// snapshot of the aggregate there is written in the background (the read does not wait).
    /// See [`snapshot_policy`](crate::model::snapshot_policy).
    pub async fn get_aggregate(
        &self,
        aggregate_id: &str,
        options: GetAggregateOptions,
    ) -> Result<GetAggregateResponse<E, S>, Error> {
        let adapter = self.storage_adapter()?;
        let snapshots = self
            .inner
            .snapshots
            .as_ref()
            .filter(|_| adapter.snapshots().is_some());
        let (start, anchor, stored) = match snapshots {
            Some(snapshots) => {
                self.start_from_snapshot(&adapter, snapshots, aggregate_id, options.max_version)
                    .await?
            }
            None => {
                let range = GetEventsOptions {
                    max_version: options.max_version,
                    ..Default::default()
                };
                let stored = adapter
                    .get_events(self.event_store_id(), aggregate_id, &range)
                    .await?;
                (None, None, stored)
            }
        };
        let last_version = stored.last().map_or(0, |s| s.event.version);
        let mut aggregate = start;
        let mut events = Vec::with_capacity(stored.len());
        let mut to_snapshot = None;
        for stored in stored {
            // The anchor of a possible snapshot here, taken before decoding consumes the event.
            let anchor = snapshots
                .filter(|s| s.policy.may_fire(stored.event.version, last_version))
                .map(|_| (stored.position, event_checksum(&stored.event)));
            let event = self.decode(stored)?;
            let next = self.reduce(aggregate.take(), &event);
            if let (Some(snapshots), Some(anchor)) = (snapshots, anchor)
                && snapshots.policy.fires(&next, &event, last_version)
            {
                to_snapshot = Some((next.clone(), anchor));
            }
            aggregate = Some(next);
            events.push(event);
        }
        if let (Some(snapshots), Some((snapshot, anchor))) = (snapshots, to_snapshot) {
            self.write_snapshot(&adapter, snapshots, snapshot, anchor);
        }
        let last_event = match (events.last(), anchor) {
            (Some(last), _) => Some(last.clone()),
            (None, Some(anchor)) => Some(self.decode(anchor)?),
            (None, None) => None,
        };
        Ok(GetAggregateResponse {
            aggregate,
            events,
            last_event,
        })
    }

    /// Where a read with snapshots starts: the aggregate of the newest usable snapshot at or
    /// below `max_version` (or none), the event it was taken at, and the events to fold.
    async fn start_from_snapshot(
        &self,
        adapter: &Arc<dyn StorageAdapter>,
        snapshots: &Snapshots<E, S>,
        aggregate_id: &str,
        max_version: Option<u64>,
    ) -> Result<(Option<Aggregate<S>>, Option<StoredEvent>, Vec<StoredEvent>), Error> {
        let store = self.event_store_id();
        let mut bound = max_version.unwrap_or(u64::MAX);
        loop {
            let candidate = adapter
                .snapshots()
                .and_then(|storage| self.usable_snapshot(storage, snapshots, aggregate_id, bound));
            let Some((aggregate, record)) = candidate else {
                let range = GetEventsOptions {
                    max_version,
                    ..Default::default()
                };
                let stored = adapter.get_events(store, aggregate_id, &range).await?;
                return Ok((None, None, stored));
            };
            let range = GetEventsOptions {
                min_version: Some(record.version),
                max_version,
                ..Default::default()
            };
            let mut stored = adapter.get_events(store, aggregate_id, &range).await?;
            let anchored = stored.first().is_some_and(|first| {
                first.event.version == record.version
                    && first.position == record.event_position
                    && event_checksum(&first.event) == record.event_checksum
            });
            if anchored {
                let rest = stored.split_off(1);
                return Ok((Some(aggregate), stored.pop(), rest));
            }
            tracing::warn!(
                event_store_id = store,
                aggregate_id,
                version = record.version,
                "ignoring a stale snapshot: its event no longer reads back as it was"
            );
            self.delete_snapshot(adapter, aggregate_id, record.version);
            // `usable_snapshot` returns versions of at least 1.
            bound = record.version - 1;
        }
    }

    /// The newest snapshot at or below `bound` that was taken under this reducer version,
    /// is intact and decodes; those in the way are deleted.
    fn usable_snapshot(
        &self,
        storage: &dyn SnapshotStorage,
        snapshots: &Snapshots<E, S>,
        aggregate_id: &str,
        mut bound: u64,
    ) -> Option<(Aggregate<S>, SnapshotRecord)> {
        let store = self.event_store_id();
        loop {
            let record = match storage.latest(store, aggregate_id, bound) {
                Ok(Some(record)) => record,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(
                        event_store_id = store,
                        aggregate_id,
                        error = %e,
                        "snapshot storage failed; replaying the aggregate from its first event"
                    );
                    return None;
                }
            };
            let problem = if record.version == 0 || record.version > bound {
                Some("it is outside the requested versions".to_owned())
            } else if record.reducer_version != self.inner.reducer_version {
                tracing::debug!(
                    event_store_id = store,
                    aggregate_id,
                    version = record.version,
                    snapshot_reducer_version = record.reducer_version,
                    reducer_version = self.inner.reducer_version,
                    "deleting a snapshot of another reducer version"
                );
                None
            } else if !record.is_intact() {
                Some("its checksum does not match".to_owned())
            } else {
                match (snapshots.decode)(&record.state) {
                    Ok(state) => {
                        let aggregate = Aggregate {
                            aggregate_id: aggregate_id.to_owned(),
                            version: record.version,
                            state,
                        };
                        return Some((aggregate, record));
                    }
                    Err(e) => Some(format!("its state does not decode: {e}")),
                }
            };
            if let Some(problem) = problem {
                tracing::warn!(
                    event_store_id = store,
                    aggregate_id,
                    version = record.version,
                    problem,
                    "ignoring a damaged snapshot"
                );
            }
            if let Err(e) = storage.delete(store, aggregate_id, record.version) {
                tracing::warn!(event_store_id = store, aggregate_id, error = %e, "could not delete a snapshot");
            }
            bound = record.version.checked_sub(1)?.min(bound.saturating_sub(1));
        }
    }

    fn delete_snapshot(&self, adapter: &Arc<dyn StorageAdapter>, aggregate_id: &str, version: u64) {
        if let Some(storage) = adapter.snapshots()
            && let Err(e) = storage.delete(self.event_store_id(), aggregate_id, version)
        {
            tracing::warn!(
                event_store_id = self.event_store_id(),
                aggregate_id,
                error = %e,
                "could not delete a snapshot"
            );
        }
    }

    /// Encodes and writes a snapshot of `aggregate`, then prunes the aggregate's older ones,
    /// on a blocking task of the current Tokio runtime (inline without one). Failures are
    /// warnings: the snapshot is only an optimisation.
    fn write_snapshot(
        &self,
        adapter: &Arc<dyn StorageAdapter>,
        snapshots: &Snapshots<E, S>,
        aggregate: Aggregate<S>,
        (event_position, event_checksum): (Position, u32),
    ) {
        let Some(slot) = snapshots
            .writes
            .claim(&aggregate.aggregate_id, aggregate.version)
        else {
            return;
        };
        let adapter = Arc::clone(adapter);
        let store = self.event_store_id().to_owned();
        let reducer_version = self.inner.reducer_version;
        let keep = snapshots.policy.kept();
        let encode = snapshots.encode;
        let job = move || {
            let _slot = slot;
            let Some(storage) = adapter.snapshots() else {
                return;
            };
            let id = aggregate.aggregate_id.as_str();
            let state = match encode(&aggregate.state) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(event_store_id = store, aggregate_id = id, error = %e, "cannot encode a snapshot");
                    return;
                }
            };
            let record = SnapshotRecord::new(
                aggregate.version,
                reducer_version,
                event_position,
                event_checksum,
                state,
            );
            let written = storage
                .put(&store, id, &record)
                .and_then(|()| storage.prune(&store, id, keep));
            if let Err(e) = written {
                tracing::warn!(event_store_id = store, aggregate_id = id, error = %e, "cannot write a snapshot");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(job)),
            Err(_) => job(),
        }
    }

    /// Like [`get_aggregate`](Self::get_aggregate), but fails with
    /// [`Error::AggregateNotFound`] when the aggregate has no event.
    pub async fn get_existing_aggregate(
        &self,
        aggregate_id: &str,
        options: GetAggregateOptions,
    ) -> Result<ExistingAggregate<E, S>, Error> {
        let GetAggregateResponse {
            aggregate,
            events,
            last_event,
        } = self.get_aggregate(aggregate_id, options).await?;
        match (aggregate, last_event) {
            (Some(aggregate), Some(last_event)) => Ok(ExistingAggregate {
                aggregate,
                events,
                last_event,
            }),
            _ => Err(Error::AggregateNotFound {
                event_store_id: self.event_store_id().to_owned(),
                aggregate_id: aggregate_id.to_owned(),
            }),
        }
    }

    /// Pushes one event. The timestamp is set to now unless given. Fails with
    /// [`Error::EventAlreadyExists`] when the version is taken and with
    /// [`StorageError::UnexpectedVersion`](crate::storage::StorageError::UnexpectedVersion)
    /// when it is not the next one.
    pub async fn push_event(
        &self,
        event: NewEvent<E>,
        options: PushEventOptions<S>,
    ) -> Result<PushEventResponse<E, S>, Error> {
        let adapter = self.storage_adapter()?;
        self.check_prev_aggregate(&event, options.prev_aggregate.as_ref())?;
        let timestamp = event.timestamp.unwrap_or_else(Timestamp::now);
        let append = self.encode(&event, timestamp)?;
        let position = adapter.push_event(append).await?;
        let response = self.pushed(
            event.into_detail(timestamp),
            position,
            options.prev_aggregate,
        );
        if let Some(hook) = self.hook(&response) {
            hook.await;
        }
        Ok(response)
    }

    /// One page of aggregate ids, ordered by the timestamp of their first event. See
    /// [`storage::page`](crate::storage::page) for the paging rules.
    pub async fn list_aggregate_ids(
        &self,
        options: ListAggregateIdsOptions,
    ) -> Result<AggregateIdsPage, Error> {
        let adapter = self.storage_adapter()?;
        Ok(adapter
            .list_aggregate_ids(self.event_store_id(), &options)
            .await?)
    }

    /// Turns a stored event into a typed one, or a typed error naming it. An event stored
    /// under an alias of a type is read as that type; one stored with an older schema version
    /// is upcast to the current one (see [`upcast`](crate::model::upcast)); one stored with a newer
    /// schema version than the type declares is [`Error::SchemaVersionTooNew`].
    pub fn decode(&self, stored: StoredEvent) -> Result<EventDetail<E>, Error> {
        let EncodedEvent {
            aggregate_id,
            version,
            timestamp,
            event_type,
            schema_version,
            payload,
            metadata,
        } = stored.event;
        let decode_error = |reason: String| Error::Decode {
            event_store_id: self.event_store_id().to_owned(),
            aggregate_id: aggregate_id.clone(),
            version,
            event_type: event_type.clone(),
            reason,
        };
        let current_type = self.inner.evolution.resolve(&event_type);
        let current_schema = E::schema_version(current_type);
        let decoded = if schema_version == current_schema {
            E::decode_payload(current_type, &payload)
        } else if !E::EVENT_TYPES.contains(&current_type) {
            Err(PayloadError::UnknownEventType)
        } else if schema_version > current_schema {
            return Err(Error::SchemaVersionTooNew {
                event_store_id: self.event_store_id().to_owned(),
                aggregate_id,
                version,
                event_type,
                schema_version,
                known_schema_version: current_schema,
            });
        } else {
            let value = codec::to_json(&payload).map_err(|e| decode_error(e.0))?;
            let value = self
                .inner
                .evolution
                .upcast(current_type, schema_version, current_schema, value)
                .map_err(&decode_error)?;
            E::payload_from_json(current_type, value)
        };
        let event = match decoded {
            Ok(event) => event,
            Err(PayloadError::Invalid(reason)) => return Err(decode_error(reason)),
            Err(PayloadError::UnknownEventType) => {
                return Err(Error::UnknownEventType {
                    event_store_id: self.event_store_id().to_owned(),
                    aggregate_id,
                    version,
                    event_type,
                });
            }
        };
        let metadata =
            codec::decode(&metadata).map_err(|e| decode_error(format!("metadata: {e}")))?;
        Ok(EventDetail {
            aggregate_id,
            version,
            timestamp,
            event,
            metadata,
        })
    }

    /// Encodes an event for the storage adapter.
    pub(crate) fn encode(
        &self,
        event: &NewEvent<E>,
        timestamp: Timestamp,
    ) -> Result<AppendEvent, Error> {
        let encode_error = |e: codec::CodecError| Error::Encode {
            event_store_id: self.event_store_id().to_owned(),
            event_type: event.event.event_type().to_owned(),
            reason: e.0,
        };
        Ok(AppendEvent {
            event_store_id: self.event_store_id().to_owned(),
            event: EncodedEvent {
                aggregate_id: event.aggregate_id.clone(),
                version: event.version,
                timestamp: event.timestamp.unwrap_or(timestamp),
                event_type: event.event.event_type().to_owned(),
                schema_version: E::schema_version(event.event.event_type()),
                payload: event.event.encode_payload().map_err(encode_error)?,
                metadata: codec::encode(&event.metadata).map_err(encode_error)?,
            },
        })
    }

    /// The response to a successful push of `event`.
    pub(crate) fn pushed(
        &self,
        event: EventDetail<E>,
        position: Position,
        prev_aggregate: Option<Aggregate<S>>,
    ) -> PushEventResponse<E, S> {
        let next_aggregate = match prev_aggregate {
            Some(prev) => Some(self.reduce(Some(prev), &event)),
            None if event.version == 1 => Some(self.reduce(None, &event)),
            None => None,
        };
        PushEventResponse {
            event,
            position,
            next_aggregate,
        }
    }

    /// The `on_event_pushed` call for `response`, if the store has a hook.
    pub(crate) fn hook(
        &self,
        response: &PushEventResponse<E, S>,
    ) -> Option<BoxFuture<'static, ()>> {
        self.inner
            .on_event_pushed
            .as_ref()
            .map(|hook| hook(response.clone()))
    }

    /// Checks that `prev`, if given, is the aggregate just before `event`.
    pub(crate) fn check_prev_aggregate(
        &self,
        event: &NewEvent<E>,
        prev: Option<&Aggregate<S>>,
    ) -> Result<(), Error> {
        match prev {
            Some(prev)
                if prev.aggregate_id != event.aggregate_id
                    || prev.version.checked_add(1) != Some(event.version) =>
            {
                Err(Error::PrevAggregateMismatch {
                    event_store_id: self.event_store_id().to_owned(),
                    aggregate_id: event.aggregate_id.clone(),
                    version: event.version,
                    prev_aggregate_id: prev.aggregate_id.clone(),
                    prev_version: prev.version,
                })
            }
            _ => Ok(()),
        }
    }
}
