//! Event groups: events for several aggregates of several stores, pushed all or nothing.
//!
//! The event store knows nothing of groups: this module builds grouped events from a store
//! ([`EventStore::group_event`]) and pushes them ([`push_event_group`]).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::model::aggregate::Aggregate;
use crate::model::error::Error;
use crate::model::event::{Events, NewEvent};
use crate::model::event_store::{EventStore, PushEventOptions, PushEventResponse};
use crate::storage::{AppendEvent, LimitError, Position, StorageAdapter, Timestamp};

/// One event of a group, made by [`EventStore::group_event`].
pub struct GroupedEvent<E: Events, S> {
    store: EventStore<E, S>,
    event: NewEvent<E>,
    prev_aggregate: Option<Aggregate<S>>,
    append: Option<AppendEvent>,
}

impl<E: Events, S> std::fmt::Debug for GroupedEvent<E, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedEvent")
            .field("store", &self.store)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl<E: Events, S> GroupedEvent<E, S> {
    /// The event to be pushed.
    pub fn event(&self) -> &NewEvent<E> {
        &self.event
    }
}

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// Builds a [`GroupedEvent`] to push atomically with others through
    /// [`push_event_group`]. The event is encoded now, so encoding errors surface here.
    pub fn group_event(
        &self,
        event: NewEvent<E>,
        options: PushEventOptions<S>,
    ) -> Result<GroupedEvent<E, S>, Error> {
        self.check_prev_aggregate(&event, options.prev_aggregate.as_ref())?;
        let placeholder = event.timestamp.unwrap_or(Timestamp::from_unix_millis(0));
        let append = self.encode(&event, placeholder)?;
        Ok(GroupedEvent {
            store: self.clone(),
            event,
            prev_aggregate: options.prev_aggregate,
            append: Some(append),
        })
    }
}

/// What a group's members contribute to its single commit.
#[doc(hidden)]
#[derive(Default)]
pub struct GroupCommit {
    adapter: Option<Arc<dyn StorageAdapter>>,
    events: Vec<AppendEvent>,
}

impl GroupCommit {
    fn add(&mut self, adapter: Arc<dyn StorageAdapter>, event: AppendEvent) -> Result<(), Error> {
        match &self.adapter {
            None => self.adapter = Some(adapter),
            // Compare data pointers only: vtable pointers of one type may differ.
            Some(first)
                if Arc::as_ptr(first).cast::<()>() != Arc::as_ptr(&adapter).cast::<()>() =>
            {
                return Err(Error::GroupAdapterMismatch {
                    event_store_id: event.event_store_id,
                });
            }
            Some(_) => {}
        }
        self.events.push(event);
        Ok(())
    }
}

/// A set of [`GroupedEvent`]s pushed in one atomic commit by [`push_event_group`]: a single
/// grouped event, a tuple of groups (up to 8, nesting allowed), or a `Vec` of one kind.
///
/// The output mirrors the input's shape: a tuple of grouped events gives a tuple of
/// [`PushEventResponse`]s.
pub trait EventGroup: Send + Sized {
    /// The typed responses, in the group's shape.
    type Output: Send;

    #[doc(hidden)]
    fn prepare(&mut self, timestamp: Timestamp, commit: &mut GroupCommit) -> Result<(), Error>;

    #[doc(hidden)]
    fn finish(
        self,
        timestamp: Timestamp,
        positions: &mut std::vec::IntoIter<Position>,
        hooks: &mut Vec<BoxFuture<'static, ()>>,
    ) -> Self::Output;

    /// Pushes the group: [`push_event_group`] as a method (named so that it never shadows
    /// `Vec::push` where the trait is in scope).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Credited { pub cents: i64 }
    /// # annals::events! { pub enum AccountEvent { Credited(Credited) = "CREDITED" } }
    /// use annals::{EventDetail, EventGroup, EventStore, NewEvent, storage::InMemoryAdapter};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let accounts = EventStore::builder("ACCOUNTS", |_, _: &EventDetail<AccountEvent>| ())
    ///     .storage_adapter(std::sync::Arc::new(InMemoryAdapter::new()))
    ///     .build()?;
    /// let credit = |id: &str| NewEvent::new(id, 1, AccountEvent::Credited(Credited { cents: 5 }));
    /// let (a, b) = (
    ///     accounts.group_event(credit("acct-1"), Default::default())?,
    ///     accounts.group_event(credit("acct-2"), Default::default())?,
    /// )
    ///     .push_event_group()
    ///     .await?;
    /// assert_eq!(b.position, a.position + 1);
    /// # Ok::<(), annals::Error>(()) }).unwrap();
    /// ```
    fn push_event_group(self) -> BoxFuture<'static, Result<Self::Output, Error>>
    where
        Self: 'static,
    {
        Box::pin(push_event_group(self))
    }
}

impl<E: Events, S: Clone + Send + Sync + 'static> EventGroup for GroupedEvent<E, S> {
    type Output = PushEventResponse<E, S>;

    fn prepare(&mut self, timestamp: Timestamp, commit: &mut GroupCommit) -> Result<(), Error> {
        let adapter = self.store.storage_adapter()?;
        let mut append = self
            .append
            .take()
            .expect("a grouped event is prepared once");
        append.event.timestamp = self.event.timestamp.unwrap_or(timestamp);
        commit.add(adapter, append)
    }

    fn finish(
        self,
        timestamp: Timestamp,
        positions: &mut std::vec::IntoIter<Position>,
        hooks: &mut Vec<BoxFuture<'static, ()>>,
    ) -> Self::Output {
        let position = positions
            .next()
            .expect("the commit has one position per event");
        let detail = self.event.into_detail(timestamp);
        let response = self.store.pushed(detail, position, self.prev_aggregate);
        hooks.extend(self.store.hook(&response));
        response
    }
}

impl<G: EventGroup> EventGroup for Vec<G> {
    type Output = Vec<G::Output>;

    fn prepare(&mut self, timestamp: Timestamp, commit: &mut GroupCommit) -> Result<(), Error> {
        self.iter_mut()
            .try_for_each(|g| g.prepare(timestamp, commit))
    }

    fn finish(
        self,
        timestamp: Timestamp,
        positions: &mut std::vec::IntoIter<Position>,
        hooks: &mut Vec<BoxFuture<'static, ()>>,
    ) -> Self::Output {
        self.into_iter()
            .map(|g| g.finish(timestamp, positions, hooks))
            .collect()
    }
}

macro_rules! tuple_group {
    ($($g:ident),+) => {
        impl<$($g: EventGroup),+> EventGroup for ($($g,)+) {
            type Output = ($($g::Output,)+);

            #[allow(non_snake_case)]
            fn prepare(
                &mut self,
                timestamp: Timestamp,
                commit: &mut GroupCommit,
            ) -> Result<(), Error> {
                let ($($g,)+) = self;
                $( $g.prepare(timestamp, commit)?; )+
                Ok(())
            }

            #[allow(non_snake_case)]
            fn finish(
                self,
                timestamp: Timestamp,
                positions: &mut std::vec::IntoIter<Position>,
                hooks: &mut Vec<BoxFuture<'static, ()>>,
            ) -> Self::Output {
                let ($($g,)+) = self;
                ($( $g.finish(timestamp, positions, hooks), )+)
            }
        }
    };
}

tuple_group!(A);
tuple_group!(A, B);
tuple_group!(A, B, C);
tuple_group!(A, B, C, D);
tuple_group!(A, B, C, D, F);
tuple_group!(A, B, C, D, F, G);
tuple_group!(A, B, C, D, F, G, H);
tuple_group!(A, B, C, D, F, G, H, I);

/// Pushes a group of events (Castore's `EventStore.pushEventGroup`): all are committed in one
/// atomic commit, or none is.
///
/// Events without a timestamp all get the same one. Every store of the group must use the same
/// storage adapter. On a version conflict, the error names the conflicting event; then nothing
/// of the group was written.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use std::sync::Arc;
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Caught { pub by: String }
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Added { pub pokemon: String }
/// # annals::events! { pub enum PokemonEvent { Caught(Caught) = "CAUGHT_BY_TRAINER" } }
/// # annals::events! { pub enum TrainerEvent { Added(Added) = "POKEMON_CAUGHT" } }
/// use annals::{EventStore, NewEvent, push_event_group, storage::InMemoryAdapter};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let adapter = Arc::new(InMemoryAdapter::new());
/// let pokemons = EventStore::builder("POKEMONS", |_, _: &annals::EventDetail<PokemonEvent>| ())
///     .storage_adapter(adapter.clone()).build()?;
/// let trainers = EventStore::builder("TRAINERS", |_, _: &annals::EventDetail<TrainerEvent>| ())
///     .storage_adapter(adapter).build()?;
///
/// let (caught, added) = push_event_group((
///     pokemons.group_event(NewEvent::new("pikachu", 1,
///         PokemonEvent::Caught(Caught { by: "ash".into() })), Default::default())?,
///     trainers.group_event(NewEvent::new("ash", 1,
///         TrainerEvent::Added(Added { pokemon: "pikachu".into() })), Default::default())?,
/// )).await?;
/// assert_eq!(caught.event.timestamp, added.event.timestamp);
/// assert_eq!(added.position, caught.position + 1);
/// # Ok::<(), annals::Error>(()) }).unwrap();
/// ```
pub async fn push_event_group<G: EventGroup>(mut group: G) -> Result<G::Output, Error> {
    let timestamp = Timestamp::now();
    let mut commit = GroupCommit::default();
    group.prepare(timestamp, &mut commit)?;
    let Some(adapter) = commit.adapter else {
        return Err(Error::Storage(LimitError::EmptyGroup.into()));
    };
    let positions = adapter.push_event_group(commit.events).await?;
    let mut hooks = Vec::new();
    let output = group.finish(timestamp, &mut positions.into_iter(), &mut hooks);
    for hook in hooks {
        hook.await;
    }
    Ok(output)
}
