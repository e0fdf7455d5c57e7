//! The lifecycle operations of an [`EventStore`]: deletes, restores, truncation and retention
//! of its aggregates, forwarded to its storage adapter (see `docs/data-lifecycle.md`).

use crate::model::error::Error;
use crate::model::event::Events;
use crate::model::event_store::store::EventStore;
use crate::storage::{DeleteMode, Position, Retention};

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// Deletes an aggregate of this store: its events are hidden from every read at once
    /// (it reads as an aggregate without events) and pushes to it fail with
    /// [`Error::AggregateDeleted`], also from a [`Command`](crate::model::command::Command),
    /// which does not retry on it. A [`DeleteMode::Soft`] delete is undone by
    /// [`restore_aggregate`](Self::restore_aggregate); a [`DeleteMode::Hard`] one is final and
    /// the events are physically removed by the adapter's next
    /// [`compact`](crate::storage::StorageAdapter::compact). Returns the position of the
    /// `$lifecycle` event recording it, which subscribers and views receive.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Appeared { pub name: String }
    /// # annals::events! { pub enum PokemonEvent { Appeared(Appeared) = "APPEARED" } }
    /// use annals::storage::{DeleteMode, InMemoryAdapter};
    /// use annals::{EventDetail, EventStore};
    ///
    /// fn reduce(_: Option<String>, e: &EventDetail<PokemonEvent>) -> String {
    ///     let PokemonEvent::Appeared(a) = &e.event;
    ///     a.name.clone()
    /// }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let pokemons = EventStore::builder("POKEMONS", reduce)
    ///     .storage_adapter(std::sync::Arc::new(InMemoryAdapter::new()))
    ///     .build()?;
    /// let appeared = PokemonEvent::Appeared(Appeared { name: "Pikachu".into() });
    /// pokemons.push_events("pikachu", 0, [appeared.clone()], &()).await?;
    /// pokemons.delete_aggregate("pikachu", DeleteMode::Soft).await?;
    /// let read = pokemons.get_aggregate("pikachu", Default::default()).await?;
    /// assert!(read.aggregate.is_none());
    /// let refused = pokemons.push_events("pikachu", 1, [appeared], &()).await;
    /// assert!(matches!(refused, Err(annals::Error::AggregateDeleted { hard: false, .. })));
    /// pokemons.restore_aggregate("pikachu").await?;
    /// # Ok::<(), annals::Error>(()) }).unwrap();
    /// ```
    pub async fn delete_aggregate(
        &self,
        aggregate_id: &str,
        mode: DeleteMode,
    ) -> Result<Position, Error> {
        let adapter = self.storage_adapter()?;
        Ok(adapter
            .delete_aggregate(self.event_store_id(), aggregate_id, mode)
            .await?)
    }

    /// Undoes a soft delete; fails with [`Error::AggregateDeleted`] (`hard: true`) after a
    /// hard one. Returns the position of the `$lifecycle` event recording it.
    pub async fn restore_aggregate(&self, aggregate_id: &str) -> Result<Position, Error> {
        let adapter = self.storage_adapter()?;
        Ok(adapter
            .restore_aggregate(self.event_store_id(), aggregate_id)
            .await?)
    }

    /// Hides the aggregate's versions below `version` (removed at the next compaction). Reads
    /// and folds then start at `version`: keep what a fold needs in a snapshot at or after it,
    /// or fold state that does not need the early events. Returns the position of the
    /// `$lifecycle` event recording it.
    pub async fn truncate_before(
        &self,
        aggregate_id: &str,
        version: u64,
    ) -> Result<Position, Error> {
        let adapter = self.storage_adapter()?;
        Ok(adapter
            .truncate_before(self.event_store_id(), aggregate_id, version)
            .await?)
    }

    /// Sets this store's retention rule ([`Retention::default`] removes it). Returns the
    /// position of the `$lifecycle` event recording it.
    pub async fn set_retention(&self, retention: Retention) -> Result<Position, Error> {
        let adapter = self.storage_adapter()?;
        Ok(adapter
            .set_retention(self.event_store_id(), retention)
            .await?)
    }

    /// This store's retention rule.
    pub async fn retention(&self) -> Result<Retention, Error> {
        let adapter = self.storage_adapter()?;
        Ok(adapter.retention(self.event_store_id()).await?)
    }
}
