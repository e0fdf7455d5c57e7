//! Forgetting a subject (feature `personal`): destroying the key its personal data is
//! encrypted with. See [`personal`](crate::model::personal).

use crate::model::error::Error;
use crate::model::event::Events;
use crate::model::event_store::store::EventStore;

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// Forgets `subject`: destroys its key in the adapter's key store, so that every
    /// [`Personal`](crate::model::personal::Personal) value about it, in every event and
    /// snapshot of every store on the adapter, reads as
    /// [`Personal::Forgotten`](crate::model::personal::Personal::Forgotten) from now on
    /// (in other processes sharing a PostgreSQL schema, within the adapter's key cache time,
    /// `PostgresAdapterBuilder::key_cache_ttl`). Snapshots
    /// holding the subject's data are discarded as they are met, and the aggregates replayed.
    /// Returns whether the subject had a key. Irreversible; new personal data about the
    /// subject gets a new key.
    ///
    /// Fails with [`Error::NoKeyStore`] if the adapter keeps no keys. What "destroyed" means
    /// on each adapter's medium, and what to do about backups, is in
    /// `docs/data-lifecycle.md`.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// use annals::{EventDetail, EventStore, Personal, storage::InMemoryAdapter};
    /// #[derive(Debug, Clone, Serialize, Deserialize)]
    /// pub struct Registered { pub email: Personal<String> }
    /// annals::events! { pub enum TrainerEvent { Registered(Registered) = "REGISTERED" } }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let trainers = EventStore::builder("TRAINERS", |_, _: &EventDetail<TrainerEvent>| ())
    ///     .storage_adapter(std::sync::Arc::new(InMemoryAdapter::new()))
    ///     .build()?;
    /// let email = Personal::new("ash", "ash@pallet.town".to_owned());
    /// trainers.push_events("ash", 0, [TrainerEvent::Registered(Registered { email })], &())
    ///     .await?;
    /// assert!(trainers.forget("ash").await?);
    /// let events = trainers.get_events("ash", Default::default()).await?;
    /// let TrainerEvent::Registered(registered) = &events[0].event;
    /// assert!(registered.email.is_forgotten());
    /// # Ok::<(), annals::Error>(()) }).unwrap();
    /// ```
    pub async fn forget(&self, subject: &str) -> Result<bool, Error> {
        let adapter = self.storage_adapter()?;
        let keys = adapter.keys().ok_or_else(|| Error::NoKeyStore {
            event_store_id: self.event_store_id().to_owned(),
        })?;
        keys.forget(subject).map_err(Error::Storage)
    }
}
