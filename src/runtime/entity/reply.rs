//! What an entity answers a command with.

use crate::model::event::{EventDetail, Events};

/// What [`EntityHandle::send`](super::EntityHandle::send) answers once the command's events are
/// durable.
#[derive(Clone, Debug)]
pub struct Reply<E: Events> {
    /// The aggregate's version after the command: its last event's version, or, when it
    /// recorded nothing, the version it was decided on (0 for an aggregate with no event).
    pub version: u64,
    /// The events the command recorded, as stored (timestamps set), in version order.
    pub events: Vec<EventDetail<E>>,
}
