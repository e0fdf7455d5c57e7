//! The event store: one per business entity, typed by its events and aggregate state.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

use crate::aggregate::{Aggregate, Reducer, apply};
use crate::codec;
use crate::error::Error;
use crate::event::{EventDetail, Events, NewEvent, PayloadError};
use crate::group::GroupedEvent;
use crate::storage::{
    AggregateIdsPage, AppendEvent, EncodedEvent, GetEventsOptions, Limits, ListAggregateIdsOptions,
    Position, StorageAdapter, StoredEvent, Timestamp,
};

/// The schema version every event is written with until event types declare their own.
pub(crate) const CURRENT_SCHEMA_VERSION: u32 = 1;

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
    adapter: RwLock<Option<Arc<dyn StorageAdapter>>>,
    on_event_pushed: Option<PushHook<E, S>>,
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
            .finish_non_exhaustive()
    }
}

/// Configures an [`EventStore`]; made by [`EventStore::builder`].
pub struct EventStoreBuilder<E: Events, S> {
    event_store_id: String,
    reducer: Reducer<E, S>,
    adapter: Option<Arc<dyn StorageAdapter>>,
    on_event_pushed: Option<PushHook<E, S>>,
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

    /// Builds the store, checking its id (`[A-Za-z0-9_.-]`, at most 128 bytes).
    pub fn build(self) -> Result<EventStore<E, S>, Error> {
        Limits::default()
            .check_event_store_id(&self.event_store_id)
            .map_err(|e| Error::Storage(e.into()))?;
        Ok(EventStore {
            inner: Arc::new(Inner {
                event_store_id: self.event_store_id,
                reducer: self.reducer,
                adapter: RwLock::new(self.adapter),
                on_event_pushed: self.on_event_pushed,
            }),
        })
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
    /// The events it was built from.
    pub events: Vec<EventDetail<E>>,
    /// The last of those events.
    pub last_event: Option<EventDetail<E>>,
}

/// Result of [`EventStore::get_existing_aggregate`]: like [`GetAggregateResponse`], but the
/// aggregate and its last event always exist.
#[derive(Clone, Debug)]
pub struct ExistingAggregate<E: Events, S> {
    /// The aggregate.
    pub aggregate: Aggregate<S>,
    /// The events it was built from (at least one).
    pub events: Vec<EventDetail<E>>,
    /// The last of those events.
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
            adapter: None,
            on_event_pushed: None,
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

    /// A store with the same id, reducer and hook on another adapter (not shared with `self`).
    pub fn with_storage_adapter(&self, adapter: Arc<dyn StorageAdapter>) -> Self {
        EventStore {
            inner: Arc::new(Inner {
                event_store_id: self.inner.event_store_id.clone(),
                reducer: Arc::clone(&self.inner.reducer),
                adapter: RwLock::new(Some(adapter)),
                on_event_pushed: self.inner.on_event_pushed.clone(),
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
    pub async fn get_aggregate(
        &self,
        aggregate_id: &str,
        options: GetAggregateOptions,
    ) -> Result<GetAggregateResponse<E, S>, Error> {
        let range = GetEventsOptions {
            max_version: options.max_version,
            ..Default::default()
        };
        let events = self.get_events(aggregate_id, range).await?;
        let aggregate = self.build_aggregate(&events, None);
        let last_event = events.last().cloned();
        Ok(GetAggregateResponse {
            aggregate,
            events,
            last_event,
        })
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

    /// Builds a [`GroupedEvent`] to push atomically with others through
    /// [`push_event_group`](crate::push_event_group). The event is encoded now, so encoding
    /// errors surface here.
    pub fn group_event(
        &self,
        event: NewEvent<E>,
        options: PushEventOptions<S>,
    ) -> Result<GroupedEvent<E, S>, Error> {
        self.check_prev_aggregate(&event, options.prev_aggregate.as_ref())?;
        let placeholder = event.timestamp.unwrap_or(Timestamp::from_unix_millis(0));
        let append = self.encode(&event, placeholder)?;
        Ok(GroupedEvent::new(
            self.clone(),
            event,
            options.prev_aggregate,
            append,
        ))
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

    /// Turns a stored event into a typed one, or a typed error naming it.
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
        if schema_version != CURRENT_SCHEMA_VERSION {
            return Err(decode_error(format!(
                "schema version {schema_version} is not known to this store \
                 (it reads version {CURRENT_SCHEMA_VERSION})"
            )));
        }
        let event = match E::decode_payload(&event_type, &payload) {
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
                schema_version: CURRENT_SCHEMA_VERSION,
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

    fn check_prev_aggregate(
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
