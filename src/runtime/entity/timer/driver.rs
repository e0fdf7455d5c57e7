//! The driver of the entities' timers: follows the timer store, lists, schedules and cancels
//! timers through the entities, and delivers the due ones.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::book::{Pending, TimerBook, TimerEvent, TimerRef};
use super::error::TimerError;
use crate::model::Error;
use crate::model::event_store::EventStore;
use crate::runtime::entity::error::EntityError;
use crate::runtime::entity::kind::Entity;
use crate::runtime::entity::request::Request;
use crate::runtime::entity::runtime::Entities;
use crate::storage::{Position, StoredEvent, Timestamp};

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

/// What [`Timers`] knows of every entity's timers, from the log.
#[derive(Default)]
struct Follower {
    /// The next log position to read.
    next: Position,
    /// Entities with at least one scheduled timer.
    books: HashMap<String, TimerBook>,
}

/// The durable timers of entities of kind `T`: schedules, cancels, lists and delivers them.
/// See the [module documentation](super).
pub struct Timers<T: Entity> {
    entities: Entities<T>,
    store: EventStore<TimerEvent, TimerBook>,
    follower: tokio::sync::Mutex<Follower>,
}

impl<T: Entity> std::fmt::Debug for Timers<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("store", &self.store.event_store_id())
            .finish_non_exhaustive()
    }
}

/// How many due timers are delivered at once.
const DELIVERIES_IN_FLIGHT: usize = 64;
/// Events read from the log per call while following it.
const FOLLOW_BATCH: usize = 4_096;

impl<T> Timers<T>
where
    T: Entity,
    T::Command: Serialize + DeserializeOwned + Clone,
{
    /// The timers of `entities`, read from their store's log on first use.
    pub fn new(entities: Entities<T>) -> Self {
        let store = entities.timer_store().clone();
        Timers {
            entities,
            store,
            follower: tokio::sync::Mutex::new(Follower {
                next: 1,
                books: HashMap::new(),
            }),
        }
    }

    /// Schedules `command` for entity `aggregate_id` at `at`, under `name`; replaces a timer
    /// of the same name. Durable when it returns. Inside an entity, schedule with
    /// [`CommandContext::schedule`](crate::runtime::entity::CommandContext::schedule) instead: that
    /// commits
    /// with the command's events.
    pub async fn schedule(
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
        let request = Request::Schedule {
            name: name.to_owned(),
            at,
            command,
        };
        self.request(aggregate_id, name, request).await.map(drop)
    }

    /// Removes the timer `name` of `aggregate_id`; whether there was one. Durable when it
    /// returns.
    pub async fn cancel(&self, aggregate_id: &str, name: &str) -> Result<bool, TimerError> {
        let request = Request::Cancel {
            name: name.to_owned(),
        };
        self.request(aggregate_id, name, request).await
    }

    /// Every scheduled timer of this entity kind, by aggregate id and name, as committed to
    /// the log now.
    pub async fn pending(&self) -> Result<Vec<Timer<T::Command>>, TimerError> {
        let follower = self.follow().await?;
        let mut ids: Vec<&String> = follower.books.keys().collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            for (name, pending) in &follower.books[id].timers {
                out.push(decode(id, name, pending)?);
            }
        }
        Ok(out)
    }

    /// Delivers every timer due at `now` (see the [module documentation](super)). Returns how
    /// many were answered: their commands recorded their events or were rejected. A timer
    /// whose delivery failed stays scheduled, to be tried again at the next call.
    pub async fn fire_due(&self, now: Timestamp) -> Result<usize, TimerError> {
        let due: Vec<(String, String, Pending)> = {
            let follower = self.follow().await?;
            follower
                .books
                .iter()
                .flat_map(|(id, book)| {
                    book.timers
                        .iter()
                        .filter(|(_, p)| p.at_ms <= now.unix_millis())
                        .map(|(name, p)| (id.clone(), name.clone(), p.clone()))
                })
                .collect()
        };
        let answered = futures::stream::iter(due)
            .map(|(id, name, pending)| self.deliver(id, name, pending))
            .buffer_unordered(DELIVERIES_IN_FLIGHT)
            .filter(|answered| std::future::ready(*answered))
            .count()
            .await;
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

    /// Records an attempt, then delivers the command; whether the entity answered it.
    async fn deliver(&self, aggregate_id: String, name: String, pending: Pending) -> bool {
        let timer = TimerRef {
            name: name.clone(),
            id: pending.id,
        };
        let warn = |error: &dyn std::fmt::Display| {
            tracing::warn!(
                aggregate_id = %aggregate_id,
                name = %name,
                %error,
                "timer delivery failed; it stays scheduled"
            );
        };
        let command = match decode::<T::Command>(&aggregate_id, &name, &pending) {
            Ok(timer) => timer.command,
            Err(error) => {
                warn(&error);
                return false;
            }
        };
        let handle = self.entities.get(aggregate_id.clone());
        match handle.request(Request::TimerAttempt(timer.clone())).await {
            Ok(_) => {}
            Err(EntityError::TimerNotScheduled { .. }) => return false,
            Err(error) => {
                warn(&error);
                return false;
            }
        }
        match handle.request(Request::TimerFire { timer, command }).await {
            Ok(_) | Err(EntityError::Rejected(_)) => true,
            Err(EntityError::TimerNotScheduled { .. }) => false,
            Err(error) => {
                warn(&error);
                false
            }
        }
    }

    /// Sends a timer request; `false` when it found no timer to act on.
    async fn request(
        &self,
        aggregate_id: &str,
        name: &str,
        request: Request<T>,
    ) -> Result<bool, TimerError> {
        match self.entities.get(aggregate_id).request(request).await {
            Ok(_) => Ok(true),
            Err(EntityError::TimerNotScheduled { .. }) => Ok(false),
            Err(error) => Err(TimerError::Entity {
                aggregate_id: aggregate_id.to_owned(),
                name: name.to_owned(),
                reason: error.to_string(),
            }),
        }
    }

    /// Reads the log up to its end and folds every timer event into the books.
    async fn follow(&self) -> Result<tokio::sync::MutexGuard<'_, Follower>, TimerError> {
        let adapter = self.entities.store().storage_adapter()?;
        let mut follower = self.follower.lock().await;
        loop {
            let batch = adapter
                .read_log(follower.next, FOLLOW_BATCH)
                .await
                .map_err(Error::from)?;
            let Some(last) = batch.last() else { break };
            let full = batch.len() == FOLLOW_BATCH;
            follower.next = last.position + 1;
            for logged in batch {
                if logged.event_store_id != self.store.event_store_id() {
                    continue;
                }
                let detail = self.store.decode(StoredEvent {
                    position: logged.position,
                    event: logged.event,
                })?;
                let book = follower
                    .books
                    .entry(detail.aggregate_id.clone())
                    .or_default();
                book.apply(&detail.event, detail.version);
                if book.timers.is_empty() {
                    follower.books.remove(&detail.aggregate_id);
                }
            }
            if !full {
                break;
            }
        }
        Ok(follower)
    }
}

fn decode<C: DeserializeOwned>(
    aggregate_id: &str,
    name: &str,
    pending: &Pending,
) -> Result<Timer<C>, TimerError> {
    let command =
        serde_json::from_value(pending.command.clone()).map_err(|e| TimerError::Command {
            aggregate_id: aggregate_id.to_owned(),
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Timer {
        aggregate_id: aggregate_id.to_owned(),
        name: name.to_owned(),
        at: Timestamp::from_unix_millis(pending.at_ms),
        attempts: pending.attempts,
        command,
    })
}
