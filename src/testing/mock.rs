//! Castore's `mockEventStore`: a store seeded with events, resettable between tests.

use std::ops::Deref;
use std::sync::Arc;

use crate::model::Error;
use crate::model::event::{EventDetail, Events, NewEvent};
use crate::model::event_store::EventStore;
use crate::storage::{InMemoryAdapter, StorageAdapter};

/// An [`EventStore`] with the same id, reducer and hook as another, on its own in-memory
/// adapter seeded with initial events. It dereferences to the store.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Appeared { pub name: String }
/// # annals::events! { pub enum PokemonEvent { Appeared(Appeared) = "POKEMON_APPEARED" } }
/// use annals::{EventDetail, EventStore, Timestamp, testing::MockEventStore};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let pokemons = EventStore::builder("POKEMONS", |_, _: &EventDetail<PokemonEvent>| ()).build()?;
/// let mock = MockEventStore::new(&pokemons, vec![EventDetail {
///     aggregate_id: "pikachu".into(), version: 1, timestamp: Timestamp::now(),
///     event: PokemonEvent::Appeared(Appeared { name: "Pikachu".into() }), metadata: (),
/// }]).await?;
/// assert!(mock.get_existing_aggregate("pikachu", Default::default()).await.is_ok());
/// mock.reset().await?;
/// # Ok::<(), annals::Error>(()) }).unwrap();
/// ```
pub struct MockEventStore<E: Events, S> {
    store: EventStore<E, S>,
    adapter: Arc<InMemoryAdapter>,
    initial_events: Vec<EventDetail<E>>,
}

impl<E: Events, S: Clone + Send + Sync + 'static> MockEventStore<E, S> {
    /// Mocks `store`, seeded with `initial_events` (which must form valid version sequences).
    pub async fn new(
        store: &EventStore<E, S>,
        initial_events: Vec<EventDetail<E>>,
    ) -> Result<Self, Error> {
        let adapter = Arc::new(InMemoryAdapter::new());
        let mock = MockEventStore {
            store: store.with_storage_adapter(adapter.clone()),
            adapter,
            initial_events,
        };
        mock.seed().await?;
        Ok(mock)
    }

    /// Drops every event pushed since creation and restores the initial events.
    pub async fn reset(&self) -> Result<(), Error> {
        self.adapter.clear();
        self.seed().await
    }

    /// The initial events.
    pub fn initial_events(&self) -> &[EventDetail<E>] {
        &self.initial_events
    }

    async fn seed(&self) -> Result<(), Error> {
        if self.initial_events.is_empty() {
            return Ok(());
        }
        // Seed through the adapter, not `push_event`: seeding is not a push, so the store's
        // `on_event_pushed` hook must not see it.
        let events = self
            .initial_events
            .iter()
            .map(|e| self.store.encode(&NewEvent::from(e.clone()), e.timestamp))
            .collect::<Result<Vec<_>, _>>()?;
        self.adapter.push_event_group(events).await?;
        Ok(())
    }
}

impl<E: Events, S> Deref for MockEventStore<E, S> {
    type Target = EventStore<E, S>;
    fn deref(&self) -> &EventStore<E, S> {
        &self.store
    }
}
