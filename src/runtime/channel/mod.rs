//! Castore's message channels, fed from the durable log.
//!
//! A **message** tells the outside world about an event: that an aggregate exists
//! ([`AggregateExistsMessage`]), that an event happened ([`NotificationMessage`]), or that it
//! happened and what the aggregate became ([`StateCarryingMessage`]). Messages use Castore's
//! JSON shapes, so they can cross process boundaries unchanged.
//!
//! A **channel** carries messages: a *bus* fans each message out to every listener whose filter
//! admits it; a *queue* hands each message to one consumer. [`MessageChannel`] is what channel
//! adapters implement; [`InMemoryBus`] and [`InMemoryQueue`] are the in-memory adapters.
//! Messages re-sent from history (by [`dam`](crate::runtime::dam)) carry `replay: true`, and bus
//! listeners only receive them if they opt in.
//!
//! Castore publishes right after a push, outside the write: a crash between the two loses the
//! message. annals publishes from the log instead: a [`Publisher`] is a durable consumer of the
//! connected event stores' events, and it moves its checkpoint only after a message is
//! published. An acknowledged push is therefore always published, even if the process crashes
//! right after it — at least once (a crash after publishing but before the checkpoint moves
//! publishes that message again).

mod memory;
mod message;
mod publisher;

pub use memory::{BusListener, InMemoryBus, InMemoryQueue, ListenerFilter, QueueReceiver};
pub use message::{
    AggregateExistsMessage, Delivery, Message, MessageKind, NotificationMessage,
    StateCarryingMessage,
};
pub use publisher::{MessageSource, Publisher, PublisherHandle};

use async_trait::async_trait;

use crate::storage::StorageError;

/// Why a message could not be built or published.
#[derive(Debug, thiserror::Error)]
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

/// A channel adapter: where messages are published (Castore's message bus and queue
/// adapters).
#[async_trait]
pub trait MessageChannel: Send + Sync {
    /// The channel's name, for errors and logs.
    fn name(&self) -> &str;

    /// Publishes `message`; `replay` marks messages re-sent from history. Returns once the
    /// channel has taken the message (an in-memory channel waits while it is full).
    async fn publish(&self, message: Message, replay: bool) -> Result<(), ChannelError>;
}
