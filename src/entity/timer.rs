//! Durable timers: a command delivered to an entity at a given time, kept in a
//! [`StateStore`] so it survives restarts, delivered at least once.
//!
//! A timer is named within its entity: scheduling a name again replaces the timer. When a
//! timer is due, [`Timers::fire_due`] first records the attempt durably, then sends the command;
//! once the entity has answered it (events durable, or a rejection) the timer is removed,
//! unless it was rescheduled meanwhile. A crash between the send and the removal delivers the
//! command again after the restart, so commands sent by timers should be idempotent or
//! harmless to repeat. [`Timers::run`] calls `fire_due` on a fixed tick.

use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Entities, Entity, EntityError};
use crate::state::{StateStore, TxnError};
use crate::storage::{StorageError, Timestamp};

/// Timers of every entity kind: (event store id, aggregate id, timer name) → a JSON
/// [`Record`].
const TIMERS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("entity_timers");

#[derive(Serialize, Deserialize, PartialEq)]
struct Record {
    at_ms: i64,
    attempts: u32,
    command: serde_json::Value,
}

/// A scheduled timer, as listed by [`Timers::pending`].
#[derive(Clone, Debug, PartialEq)]
pub struct Timer<C> {
    /// The entity it delivers to.
    pub aggregate_id: String,
    /// Its name within the entity.
    pub name: String,
    /// When it is due.
    pub at: Timestamp,
    /// How many deliveries were attempted (a crash or failure leaves it scheduled).
    pub attempts: u32,
    /// The command it delivers.
    pub command: C,
}

/// Why a timer operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimerError {
    /// The state store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A command does not encode to JSON, or a stored one no longer decodes into the
    /// entity's command type.
    #[error("timer {aggregate_id:?}/{name:?}: the command does not (de)serialize: {reason}")]
    Command {
        /// The timer's entity.
        aggregate_id: String,
        /// The timer's name.
        name: String,
        /// What failed.
        reason: String,
    },
}

/// The durable timers of entities of kind `T`, kept in a [`StateStore`].
pub struct Timers<T: Entity> {
    entities: Entities<T>,
    state: Arc<StateStore>,
}

impl<T: Entity> std::fmt::Debug for Timers<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<T> Timers<T>
where
    T: Entity,
    T::Command: Serialize + DeserializeOwned,
{
    /// Timers delivering to `entities`, stored in `state`.
    pub fn new(entities: Entities<T>, state: Arc<StateStore>) -> Self {
        Timers { entities, state }
    }

    fn store_id(&self) -> String {
        self.entities.store().event_store_id().to_owned()
    }

    /// Schedules `command` for entity `aggregate_id` at `at`, under `name`; replaces a timer
    /// of the same name. Durable when it returns.
    pub fn schedule(
        &self,
        aggregate_id: &str,
        name: &str,
        at: Timestamp,
        command: &T::Command,
    ) -> Result<(), TimerError> {
        let command = serde_json::to_value(command).map_err(|e| TimerError::Command {
            aggregate_id: aggregate_id.to_owned(),
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        let record = Record {
            at_ms: at.unix_millis(),
            attempts: 0,
            command,
        };
        let bytes = serde_json::to_vec(&record).expect("a JSON value always encodes");
        let store = self.store_id();
        self.state.write(|txn| {
            let mut table = txn.open_table(TIMERS)?;
            table.insert((store.as_str(), aggregate_id, name), bytes.as_slice())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Removes the timer `name` of `aggregate_id`; whether there was one.
    pub fn cancel(&self, aggregate_id: &str, name: &str) -> Result<bool, TimerError> {
        let store = self.store_id();
        Ok(self.state.write(|txn| {
            let mut table = txn.open_table(TIMERS)?;
            let removed = table.remove((store.as_str(), aggregate_id, name))?;
            Ok(removed.is_some())
        })?)
    }

    /// Every scheduled timer of this entity kind, by aggregate id and name.
    pub fn pending(&self) -> Result<Vec<Timer<T::Command>>, TimerError> {
        let store = self.store_id();
        let raw: Vec<(String, String, Vec<u8>)> = self.state.read(|txn| {
            let table = match txn.open_table(TIMERS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(TxnError::from(e)),
            };
            let mut out = Vec::new();
            for entry in table.range((store.as_str(), "", "")..)? {
                let (key, value) = entry?;
                let (s, id, name) = key.value();
                if s != store {
                    break;
                }
                out.push((id.to_owned(), name.to_owned(), value.value().to_vec()));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|(aggregate_id, name, bytes)| decode(aggregate_id, name, &bytes))
            .collect()
    }

    /// Delivers every timer due at `now`: records the attempt, sends the command, and removes
    /// the timer once the entity answered (recorded or rejected) unless it was rescheduled
    /// meanwhile. A timer whose delivery failed stays, to be tried at the next call. Returns
    /// how many timers were answered.
    pub async fn fire_due(&self, now: Timestamp) -> Result<usize, TimerError> {
        let due: Vec<_> = self
            .pending()?
            .into_iter()
            .filter(|timer| timer.at <= now)
            .collect();
        let mut answered = 0;
        for timer in due {
            let Some(attempted) = self.record_attempt(&timer.aggregate_id, &timer.name)? else {
                continue;
            };
            let handle = self.entities.get(timer.aggregate_id.clone());
            match handle.send(timer.command).await {
                Ok(_) | Err(EntityError::Rejected(_)) => {
                    self.remove_if_unchanged(&timer.aggregate_id, &timer.name, &attempted)?;
                    answered += 1;
                }
                Err(error) => tracing::warn!(
                    aggregate_id = %timer.aggregate_id,
                    name = %timer.name,
                    %error,
                    "timer delivery failed; it stays scheduled"
                ),
            }
        }
        Ok(answered)
    }

    /// Calls [`fire_due`](Self::fire_due) every `tick`, forever; failures are logged and
    /// retried at the next tick. Spawn it on the runtime.
    pub async fn run(self, tick: Duration) {
        loop {
            if let Err(error) = self.fire_due(Timestamp::now()).await {
                tracing::warn!(%error, "firing due timers failed");
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// Counts one more attempt on the stored timer; its bytes after, or `None` if it is gone.
    fn record_attempt(
        &self,
        aggregate_id: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, TimerError> {
        let store = self.store_id();
        Ok(self.state.write(|txn| {
            let mut table = txn.open_table(TIMERS)?;
            let key = (store.as_str(), aggregate_id, name);
            let Some(bytes) = table.get(key)?.map(|v| v.value().to_vec()) else {
                return Ok(None);
            };
            let Ok(mut record) = serde_json::from_slice::<Record>(&bytes) else {
                return Ok(None);
            };
            record.attempts = record.attempts.saturating_add(1);
            let bytes = serde_json::to_vec(&record).expect("a JSON value always encodes");
            table.insert(key, bytes.as_slice())?;
            Ok(Some(bytes))
        })?)
    }

    fn remove_if_unchanged(
        &self,
        aggregate_id: &str,
        name: &str,
        attempted: &[u8],
    ) -> Result<(), TimerError> {
        let store = self.store_id();
        self.state.write(|txn| {
            let mut table = txn.open_table(TIMERS)?;
            let key = (store.as_str(), aggregate_id, name);
            let unchanged = table.get(key)?.is_some_and(|v| v.value() == attempted);
            if unchanged {
                table.remove(key)?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

fn decode<C: DeserializeOwned>(
    aggregate_id: String,
    name: String,
    bytes: &[u8],
) -> Result<Timer<C>, TimerError> {
    let fail = |reason: String, aggregate_id: &str, name: &str| TimerError::Command {
        aggregate_id: aggregate_id.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let record: Record =
        serde_json::from_slice(bytes).map_err(|e| fail(e.to_string(), &aggregate_id, &name))?;
    let command = serde_json::from_value(record.command)
        .map_err(|e| fail(e.to_string(), &aggregate_id, &name))?;
    Ok(Timer {
        aggregate_id,
        name,
        at: Timestamp::from_unix_millis(record.at_ms),
        attempts: record.attempts,
        command,
    })
}
