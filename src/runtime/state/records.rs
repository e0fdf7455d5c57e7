//! The rows that cross the seam between the runtime and a state backend: what a backend stores
//! for action dead letters and queue messages, whatever its tables look like.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::storage::{LoggedEvent, Position, Timestamp};

/// An event an action gave up on, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The action that failed.
    pub action: String,
    /// The event's global position (the event stays in the log).
    pub position: Position,
    /// The event's store.
    pub event_store_id: String,
    /// The event's aggregate.
    pub aggregate_id: String,
    /// The event's version within its aggregate.
    pub version: u64,
    /// The event's type.
    pub event_type: String,
    /// The last failure's reason.
    pub error: String,
    /// How many times the action ran on the event, retries of the dead letter included.
    pub attempts: u32,
    /// When the last attempt failed.
    pub failed_at: Timestamp,
    /// When a retry was requested with
    /// [`request_retry`](crate::runtime::action::dead_letter::request_retry) and not yet
    /// carried out by the action's runner; `None` when none is pending.
    #[serde(default)]
    pub retry_requested_at: Option<Timestamp>,
}

impl DeadLetter {
    pub(crate) fn new(action: &str, event: &LoggedEvent, error: String, attempts: u32) -> Self {
        DeadLetter {
            action: action.to_owned(),
            position: event.position,
            event_store_id: event.event_store_id.clone(),
            aggregate_id: event.event.aggregate_id.clone(),
            version: event.event.version,
            event_type: event.event.event_type.clone(),
            error,
            attempts,
            failed_at: Timestamp::now(),
            retry_requested_at: None,
        }
    }
}

/// A stored queue message: its body and its delivery state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueueRecord {
    /// How many times it has been received.
    pub(crate) receive_count: u32,
    /// When it is (or was) visible to receivers, in Unix milliseconds of the backend's clock.
    pub(crate) visible_at: i64,
    /// When it was enqueued, in Unix milliseconds.
    pub(crate) enqueued_at: i64,
    /// Why its last delivery failed, when that was reported.
    pub(crate) last_error: Option<String>,
    /// The body, as enqueued.
    pub(crate) body: Vec<u8>,
}

/// How a receive delivers: the options of the receiving handle that the backend applies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delivery {
    /// How long a received message stays hidden.
    pub(crate) visibility_timeout: Duration,
    /// Receives a message may have had; a visible message received that often goes to the
    /// dead letters instead (at least 1).
    pub(crate) max_receives: u32,
}

/// What one receive found.
#[derive(Debug)]
pub(crate) enum Received {
    /// The oldest visible message, now hidden for the visibility timeout.
    Message(u64, QueueRecord),
    /// Nothing visible; the earliest hidden message shows again after this long, by the
    /// backend's clock.
    Empty { next_visible_in: Option<Duration> },
}

/// Milliseconds as a duration, a negative count as zero.
pub(crate) fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A duration in whole milliseconds, saturated.
pub(crate) fn as_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
