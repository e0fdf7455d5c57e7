//! The book of an entity's timers: the timer events of the timer store and their fold, what
//! is scheduled now. The model both the entity's instance (which records timer events with
//! its commands) and the [driver](super::Timers) (which delivers due timers) read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Error;
use crate::model::event::EventDetail;
use crate::model::event_store::{EventStore, RESERVED_EVENT_STORE_ID_SUFFIX};
use crate::storage::{LimitError, Limits};

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
