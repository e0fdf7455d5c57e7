//! What the reads and pushes of an [`EventStore`](crate::model::event_store::EventStore) take
//! and give back: their options and responses.

use crate::model::aggregate::Aggregate;
use crate::model::event::{EventDetail, Events};
use crate::storage::Position;

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
