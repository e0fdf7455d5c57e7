//! What channel adapters implement.

use async_trait::async_trait;

use super::error::ChannelError;
use super::message::Message;

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
