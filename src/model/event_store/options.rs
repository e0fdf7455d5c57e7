//! What the reads and pushes of an [`EventStore`](crate::model::event_store::EventStore) take
//! and give back: their options and responses.

use crate::model::aggregate::Aggregate;
use crate::model::event::{EventDetail, Events};
use crate::storage::{Position, Timestamp};

/// Options of [`EventStore::get_aggregate`].
///
/// [`EventStore::get_aggregate`]: crate::model::event_store::EventStore::get_aggregate
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetAggregateOptions {
    /// Build the aggregate as it was at this version.
    pub max_version: Option<u64>,
}

/// Result of [`EventStore::get_aggregate`].
///
/// [`EventStore::get_aggregate`]: crate::model::event_store::EventStore::get_aggregate
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

/// Result of [`EventStore::get_aggregate_state`]: the aggregate and its last event, without
/// the events folded to build it.
///
/// [`EventStore::get_aggregate_state`]:
/// crate::model::event_store::EventStore::get_aggregate_state
#[derive(Clone, Debug)]
pub struct AggregateState<E: Events, S> {
    /// The aggregate (state and version), `None` if it has no event.
    pub aggregate: Option<Aggregate<S>>,
    /// The aggregate's last event (at or below `max_version`).
    pub last_event: Option<EventDetail<E>>,
}

/// Result of [`EventStore::get_existing_aggregate`]: like [`GetAggregateResponse`], but the
/// aggregate and its last event always exist.
///
/// [`EventStore::get_existing_aggregate`]:
/// crate::model::event_store::EventStore::get_existing_aggregate
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
///
/// [`EventStore::push_event`]: crate::model::event_store::EventStore::push_event
/// [`EventStore::group_event`]: crate::model::event_store::EventStore::group_event
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

/// Result of a bulk push ([`EventStore::push_events`], [`EventStore::push_batch`]): where the
/// events landed. The events are the caller's; they are not handed back.
///
/// [`EventStore::push_events`]: crate::model::event_store::EventStore::push_events
/// [`EventStore::push_batch`]: crate::model::event_store::EventStore::push_batch
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushedEvents {
    /// The global position of the first event; the others follow it, gap-free, in the order
    /// given.
    pub first_position: Position,
    /// How many events were pushed.
    pub count: u64,
    /// The timestamp given to the events pushed without one.
    pub timestamp: Timestamp,
}

impl PushedEvents {
    /// The position of every event, in the order given.
    pub fn positions(&self) -> std::ops::Range<Position> {
        self.first_position..self.first_position + self.count
    }

    /// The position of the last event.
    pub fn last_position(&self) -> Position {
        self.first_position + self.count.saturating_sub(1)
    }
}
