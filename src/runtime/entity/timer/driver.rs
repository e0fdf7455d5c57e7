//! Durable timers: a command delivered to an entity at a given time, recorded in the event log
//! in the same commit as the events of the command that set it, delivered at least once.
//!
//! # Where timers live
//! The timers of the entities of event store `S` are events of a companion store, `S.timers`
//! ([`timer_store_id`]), one aggregate per entity id. The suffix is reserved:
//! [`EventStoreBuilder::build`](crate::model::event_store::EventStoreBuilder::build) refuses every id ending in
//! [`.timers`](crate::model::event_store::RESERVED_EVENT_STORE_ID_SUFFIX), so no store of the
//! application can be taken for a timer store. Store ids have at most 128 bytes, so entities
//! run on stores of at most [`ENTITY_STORE_ID_BYTES_MAX`] (121) bytes:
//! [`Entities::new`](super::Entities::new) refuses a longer one with a typed error.
//! Scheduling, cancelling, counting a delivery attempt and marking a timer delivered are events
//! of that store, so:
//!
//! - a timer set by [`CommandContext::schedule`](super::CommandContext::schedule) while
//!   deciding a command is committed in the same event group as the command's events: both
//!   are durable, or neither;
//! - a timer's delivery records its command's events and the timer's removal in one commit, so
//!   a timer whose command recorded its events is never delivered again;
//! - they work on every storage adapter, and they follow the entity's instance: its fencing
//!   reloads the timers with the state.
//!
//! # Delivery
//! [`Timers`] follows the log (from its start, when it is created) to know every scheduled
//! timer. For each due timer, [`Timers::fire_due`] first has the entity record the attempt
//! (durably), then delivers the command; the entity decides it with the timer and its attempt
//! count in [`CommandContext::timer`](super::CommandContext::timer). A crash, a failed
//! commit or an overloaded entity leaves the timer scheduled with its attempt counted, to be
//! delivered again by the next call: timers fire at least once. A timer that was cancelled or
//! rescheduled in the meantime is not delivered (the entity checks it, on its own up-to-date
//! state). [`Timers::run`] calls `fire_due` on a fixed tick.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::runtime::Request;
use super::{Entities, Entity, EntityError};
use crate::model::Error;
use crate::model::event::EventDetail;
use crate::model::event_store::{EventStore, RESERVED_EVENT_STORE_ID_SUFFIX};
use crate::storage::{LimitError, Limits, Position, StoredEvent, Timestamp};

/// Most bytes of a timer's name.
pub const TIMER_NAME_BYTES_MAX: usize = 256;

/// Longest id of an event store that entities run on: the id of its timer store adds
/// [`.timers`](RESERVED_EVENT_STORE_ID_SUFFIX) (7 bytes) within the 128 bytes of
/// [`Limits::event_store_id_bytes_max`].
pub const ENTITY_STORE_ID_BYTES_MAX: usize = 121;

/// The id of the store holding the timers of the entities of store `event_store_id`:
/// `event_store_id` followed by [`.timers`](RESERVED_EVENT_STORE_ID_SUFFIX).
pub fn timer_store_id(event_store_id: &str) -> String {
    format!("{event_store_id}{RESERVED_EVENT_STORE_ID_SUFFIX}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Scheduled {
    pub(crate) name: String,
    pub(crate) at_ms: i64,
    pub(crate) command: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Cancelled {
    pub(crate) name: String,
}

/// Names one scheduling of a timer: its name and the version of its `Scheduled` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TimerRef {
    pub(crate) name: String,
    pub(crate) id: u64,
}

crate::events! {
    /// The events of a timer store.
    pub(crate) enum TimerEvent {
        Scheduled(Scheduled) = "TIMER_SCHEDULED",
        Cancelled(Cancelled) = "TIMER_CANCELLED",
        Attempted(TimerRef) = "TIMER_ATTEMPTED",
        Delivered(TimerRef) = "TIMER_DELIVERED",
    }
}

/// One scheduled timer of an entity.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Pending {
    /// The version of the event that scheduled it: rescheduling the name gives a new id.
    pub(crate) id: u64,
    pub(crate) at_ms: i64,
    pub(crate) attempts: u32,
    pub(crate) command: serde_json::Value,
}

/// The timers of one entity: the fold of its timer-store events.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TimerBook {
    pub(crate) timers: BTreeMap<String, Pending>,
}

impl TimerBook {
    /// Applies the event at `version`. Events that name a scheduling no longer current
    /// (`Attempted`, `Delivered` after a reschedule) change nothing.
    pub(crate) fn apply(&mut self, event: &TimerEvent, version: u64) {
        match event {
            TimerEvent::Scheduled(s) => {
                let pending = Pending {
                    id: version,
                    at_ms: s.at_ms,
                    attempts: 0,
                    command: s.command.clone(),
                };
                self.timers.insert(s.name.clone(), pending);
            }
            TimerEvent::Cancelled(c) => {
                self.timers.remove(&c.name);
            }
            TimerEvent::Attempted(r) => {
                if let Some(pending) = self.current_mut(r) {
                    pending.attempts = pending.attempts.saturating_add(1);
                }
            }
            TimerEvent::Delivered(r) => {
                if self.current_mut(r).is_some() {
                    self.timers.remove(&r.name);
                }
            }
        }
    }

    /// The timer `r` names, if that scheduling is still the current one.
    pub(crate) fn current(&self, r: &TimerRef) -> Option<&Pending> {
        self.timers.get(&r.name).filter(|p| p.id == r.id)
    }

    fn current_mut(&mut self, r: &TimerRef) -> Option<&mut Pending> {
        self.timers.get_mut(&r.name).filter(|p| p.id == r.id)
    }
}

fn reduce(book: Option<TimerBook>, event: &EventDetail<TimerEvent>) -> TimerBook {
    let mut book = book.unwrap_or_default();
    book.apply(&event.event, event.version);
    book
}

/// The timer store of `event_store_id`, without an adapter (the entity runtime sets its
/// store's). Refuses, as an invalid store id, an `event_store_id` whose timer store id would
/// pass the limit of `limits` (the default limits, and the adapter's when it has one).
pub(crate) fn timer_store(
    event_store_id: &str,
    adapter_limits: Option<Limits>,
) -> Result<EventStore<TimerEvent, TimerBook>, Error> {
    let id = timer_store_id(event_store_id);
    let limit = adapter_limits.map_or(usize::MAX, |l| l.event_store_id_bytes_max);
    let limit = limit.min(Limits::default().event_store_id_bytes_max);
    if id.len() > limit {
        let reason = "entities need a shorter store id: the id of their timer store adds \
                      \".timers\" within the limit of store ids (so at most 121 bytes remain \
                      with the default limit of 128)";
        return Err(Error::Storage(
            LimitError::InvalidEventStoreId {
                event_store_id: event_store_id.to_owned(),
                reason,
            }
            .into(),
        ));
    }
    EventStore::builder(id, reduce).build_reserved()
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
    /// Reading the timers from the log failed.
    #[error(transparent)]
    Store(#[from] Error),
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
    /// The entity could not take the request: it is overloaded, stopped, kept conflicting,
    /// its store failed, or the timer's name is invalid. Nothing was recorded.
    #[error("timer {aggregate_id:?}/{name:?}: {reason}")]
    Entity {
        /// The timer's entity.
        aggregate_id: String,
        /// The timer's name.
        name: String,
        /// Why, as the entity answered.
        reason: String,
    },
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
/// See the [module documentation](self).
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
    /// [`CommandContext::schedule`](super::CommandContext::schedule) instead: that commits
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

    /// Delivers every timer due at `now` (see the [module documentation](self)). Returns how
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_store_ids_leave_room_for_the_timer_suffix() {
        assert_eq!(
            ENTITY_STORE_ID_BYTES_MAX + RESERVED_EVENT_STORE_ID_SUFFIX.len(),
            Limits::default().event_store_id_bytes_max
        );
        let longest = "s".repeat(ENTITY_STORE_ID_BYTES_MAX);
        assert!(timer_store(&longest, None).is_ok());
        assert!(timer_store(&format!("{longest}s"), None).is_err());
    }
}
