//! How far behind the log each consumer is: its lag in events and the age of the oldest
//! event it has not handled.
//!
//! A checkpoint is the next position a consumer delivers, so it has handled everything before
//! it and its lag is `head - (checkpoint - 1)`: the events of the log after what it handled,
//! whether or not its filter admits them (a filtered consumer skips those quickly). The oldest
//! unhandled event is the one at its checkpoint, read from the log (one event per consumer).

use crate::runtime::view::ViewStatus;
use crate::storage::{Position, StorageAdapter, StorageError, Timestamp};

/// One consumer's progress.
#[derive(Clone, Debug)]
pub(crate) struct Lag {
    /// The consumer's name, as in the state store.
    pub(crate) name: String,
    /// The next position it delivers.
    pub(crate) checkpoint: Position,
    /// Events committed after the last one it handled.
    pub(crate) events: u64,
    /// When the oldest event it has not handled was committed (its timestamp), if any.
    pub(crate) oldest_unhandled: Option<Timestamp>,
}

impl Lag {
    /// Milliseconds since the oldest unhandled event's timestamp, at `now` (0 when none).
    pub(crate) fn age_ms(&self, now: Timestamp) -> u64 {
        self.oldest_unhandled.map_or(0, |t| {
            now.unix_millis().saturating_sub(t.unix_millis()).max(0) as u64
        })
    }
}

/// The lag of each `(name, checkpoint)` against `head`.
pub(crate) async fn lags(
    adapter: &dyn StorageAdapter,
    head: Position,
    checkpoints: Vec<(String, Position)>,
) -> Result<Vec<Lag>, StorageError> {
    let mut out = Vec::with_capacity(checkpoints.len());
    for (name, checkpoint) in checkpoints {
        let events = head.saturating_sub(checkpoint.saturating_sub(1));
        let oldest_unhandled = if events == 0 {
            None
        } else {
            let first = adapter.read_log(checkpoint.max(1), 1).await?;
            first.first().map(|e| e.event.timestamp)
        };
        out.push(Lag {
            name,
            checkpoint,
            events,
            oldest_unhandled,
        });
    }
    Ok(out)
}

/// The state-store consumer name of a key-value view version.
pub(crate) fn view_consumer(view: &ViewStatus) -> String {
    format!("view:{}:v{}", view.name, view.version)
}
