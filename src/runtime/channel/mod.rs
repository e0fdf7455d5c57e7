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

mod adapter;
mod error;
mod memory;
mod message;
mod publisher;

pub use adapter::MessageChannel;
pub use error::ChannelError;
pub use memory::{BusListener, InMemoryBus, InMemoryQueue, ListenerFilter, QueueReceiver};
pub use message::{
    AggregateExistsMessage, Delivery, Message, MessageKind, NotificationMessage,
    StateCarryingMessage,
};
pub use publisher::{MessageSource, Publisher, PublisherHandle};
