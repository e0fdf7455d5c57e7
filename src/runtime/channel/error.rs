//! Why a message could not be built or published.

use crate::storage::StorageError;

/// Why a message could not be built or published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The channel is closed: every listener or the queue's receiver is gone.
    #[error("message channel {channel} is closed")]
    Closed {
        /// The channel's name.
        channel: String,
    },
    /// Reading events (or the consumer's checkpoint) failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Decoding an event, or building its aggregate, failed.
    #[error(transparent)]
    Event(#[from] crate::model::Error),
    /// An event or aggregate could not be rendered as JSON.
    #[error("cannot render {what} as JSON: {source}")]
    Encode {
        /// What was being rendered.
        what: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// No message source was given for an event store a publisher reads.
    #[error("no message source for event store {event_store_id}")]
    EventStoreNotFound {
        /// The event store.
        event_store_id: String,
    },
}
