//! What was wrong with an input refused by the [`Limits`](super::Limits) checks.

/// What was wrong with an input refused by [`Limits`](super::Limits).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// An event store id is empty, too long, or uses characters outside `[A-Za-z0-9_.-]`.
    #[error("invalid event store id {event_store_id:?}: {reason}")]
    InvalidEventStoreId {
        /// The rejected id.
        event_store_id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An aggregate id is empty, too long, or contains control characters.
    #[error("invalid aggregate id {aggregate_id:?}: {reason}")]
    InvalidAggregateId {
        /// The rejected id.
        aggregate_id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An event type is empty, too long, contains control characters, or is reserved.
    #[error("invalid event type {event_type:?}: {reason}")]
    InvalidEventType {
        /// The rejected type.
        event_type: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// One event is larger than [`Limits::event_bytes_max`](super::Limits::event_bytes_max).
    #[error("event {aggregate_id:?} v{version} is {bytes} bytes; the limit is {limit}")]
    EventTooLarge {
        /// The event's aggregate.
        aggregate_id: String,
        /// The event's version.
        version: u64,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A commit has more events than [`Limits::group_events_max`](super::Limits::group_events_max).
    #[error("a commit of {events} events exceeds the limit of {limit}")]
    TooManyEvents {
        /// Events in the commit.
        events: usize,
        /// The limit.
        limit: usize,
    },
    /// A commit is larger than [`Limits::group_bytes_max`](super::Limits::group_bytes_max).
    #[error("a commit of {bytes} bytes exceeds the limit of {limit}")]
    GroupTooLarge {
        /// Bytes in the commit.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A commit holds no event.
    #[error("a commit must hold at least one event")]
    EmptyGroup,
}
