//! A queue's messages as their receivers see them.

use crate::storage::Timestamp;

/// A message's id in its queue: assigned in enqueue order, from 1, never reused.
pub type MessageId = u64;

/// A message as received (or as a dead letter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueMessage {
    /// Its id in its queue.
    pub id: MessageId,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    /// When it was enqueued.
    pub enqueued_at: Timestamp,
    /// Why its last delivery failed, when a queue action reported it.
    pub last_error: Option<String>,
    /// The body, as enqueued.
    pub body: Vec<u8>,
}

impl QueueMessage {
    /// The body decoded from JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}
