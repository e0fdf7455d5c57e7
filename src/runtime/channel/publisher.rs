//! Publishing from the log: a durable consumer that turns events into messages.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use super::adapter::MessageChannel;
use super::error::ChannelError;
use super::message::{
    AggregateExistsMessage, Message, MessageKind, NotificationMessage, StateCarryingMessage,
};
use crate::model::event::Events;
use crate::model::event_store::{EventStore, GetAggregateOptions};
use crate::runtime::consumer::Consumer;
use crate::runtime::state::StateStore;
use crate::runtime::subscription::Filter;
use crate::storage::{LoggedEvent, StorageAdapter, StoredEvent};

/// Messages published between two checkpoint commits while a publisher is busy (it also
/// commits whenever it has caught up).
const COMMIT_EVERY: u64 = 256;

/// An event store as a source of messages: how its events become messages. Implemented by
/// every [`EventStore`] whose aggregate state serializes.
#[async_trait]
pub trait MessageSource: Send + Sync {
    /// The event store's id.
    fn event_store_id(&self) -> &str;

    /// The message of `kind` about `event`, an event of this store.
    async fn message(&self, kind: MessageKind, event: LoggedEvent)
    -> Result<Message, ChannelError>;
}

fn json(
    what: impl FnOnce() -> String,
    value: &impl Serialize,
) -> Result<serde_json::Value, ChannelError> {
    serde_json::to_value(value).map_err(|source| ChannelError::Encode {
        what: what(),
        source,
    })
}

#[async_trait]
impl<E, S> MessageSource for EventStore<E, S>
where
    E: Events,
    S: Serialize + Clone + Send + Sync + 'static,
{
    fn event_store_id(&self) -> &str {
        EventStore::event_store_id(self)
    }

    async fn message(
        &self,
        kind: MessageKind,
        event: LoggedEvent,
    ) -> Result<Message, ChannelError> {
        let event_store_id = event.event_store_id.clone();
        if kind == MessageKind::AggregateExists {
            return Ok(Message::AggregateExists(AggregateExistsMessage {
                event_store_id,
                aggregate_id: event.event.aggregate_id,
                initial_event_timestamp: event.event.timestamp,
            }));
        }
        let (aggregate_id, version) = (event.event.aggregate_id.clone(), event.event.version);
        let detail = self.decode(StoredEvent {
            position: event.position,
            event: event.event,
        })?;
        let name = || format!("event {event_store_id}/{aggregate_id} v{version}");
        let event_json = json(name, &detail)?;
        if kind == MessageKind::Notification {
            return Ok(Message::Notification(NotificationMessage {
                event_store_id,
                event: event_json,
            }));
        }
        let options = GetAggregateOptions {
            max_version: Some(version),
        };
        let aggregate = self.get_aggregate(&aggregate_id, options).await?.aggregate;
        let aggregate = json(
            || format!("aggregate {event_store_id}/{aggregate_id}"),
            &aggregate,
        )?;
        Ok(Message::StateCarrying(StateCarryingMessage {
            event_store_id,
            event: event_json,
            aggregate,
        }))
    }
}

/// Publishes the events of connected event stores to a channel, from the log (see the
/// [module docs](super)): Castore's `ConnectedEventStore`, made crash-proof.
///
/// Aggregate-exists channels get one message per aggregate, when its first event is committed;
/// notification and state-carrying channels get one message per event, in global order (so in
/// version order per aggregate).
pub struct Publisher {
    name: String,
    adapter: Arc<dyn StorageAdapter>,
    state: Arc<StateStore>,
    kind: MessageKind,
    channel: Arc<dyn MessageChannel>,
    sources: Vec<Arc<dyn MessageSource>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("channel", &self.channel.name())
            .finish_non_exhaustive()
    }
}

/// A running [`Publisher`]: stop it to end it cleanly.
#[derive(Debug)]
pub struct PublisherHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ChannelError>>,
}

impl PublisherHandle {
    /// Whether the publisher has stopped (on its own only after an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the publisher after the message in flight and commits its checkpoint; returns
    /// the error that stopped it earlier, if any.
    pub async fn stop(self) -> Result<(), ChannelError> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    }
}

impl Publisher {
    /// A publisher named `name` (its checkpoint's name in `state`) of `kind` messages to
    /// `channel`, reading `adapter`'s log. Connect event stores with [`source`](Self::source).
    pub fn new(
        name: impl Into<String>,
        adapter: Arc<dyn StorageAdapter>,
        state: Arc<StateStore>,
        kind: MessageKind,
        channel: Arc<dyn MessageChannel>,
    ) -> Self {
        Publisher {
            name: name.into(),
            adapter,
            state,
            kind,
            channel,
            sources: Vec::new(),
        }
    }

    /// Connects an event store: its events are published.
    pub fn source(mut self, source: Arc<dyn MessageSource>) -> Self {
        self.sources.push(source);
        self
    }

    fn consumer(&self) -> Result<Consumer, ChannelError> {
        let stores = self.sources.iter().map(|s| s.event_store_id().to_owned());
        let filter = Filter::all().stores(stores);
        Ok(Consumer::open(
            self.name.clone(),
            Arc::clone(&self.adapter),
            Arc::clone(&self.state),
            filter,
        )?)
    }

    /// Publishes one event's message (if its kind calls for one).
    async fn publish(&self, event: LoggedEvent) -> Result<bool, ChannelError> {
        if self.kind == MessageKind::AggregateExists && event.event.version != 1 {
            return Ok(false);
        }
        let source = self
            .sources
            .iter()
            .find(|s| s.event_store_id() == event.event_store_id)
            .ok_or_else(|| ChannelError::EventStoreNotFound {
                event_store_id: event.event_store_id.clone(),
            })?;
        let message = source.message(self.kind, event).await?;
        self.channel.publish(message, false).await?;
        Ok(true)
    }

    /// Publishes every committed event not published yet, commits the checkpoint, and returns
    /// how many messages were published.
    pub async fn catch_up(&self) -> Result<u64, ChannelError> {
        let mut consumer = self.consumer()?;
        let mut published = 0;
        while let Some(event) = consumer.try_next().await? {
            if self.publish(event).await? {
                published += 1;
                if published % COMMIT_EVERY == 0 {
                    consumer.commit()?;
                }
            }
        }
        consumer.commit()?;
        Ok(published)
    }

    /// Runs the publisher on a tokio task until stopped: it catches up, then publishes each
    /// commit as it lands.
    pub fn spawn(self) -> PublisherHandle {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut consumer = self.consumer()?;
            let mut uncommitted = 0u64;
            loop {
                let event = match consumer.try_next().await? {
                    Some(event) => event,
                    None => {
                        if uncommitted > 0 {
                            consumer.commit()?;
                            uncommitted = 0;
                        }
                        tokio::select! {
                            _ = &mut stopped => return Ok(()),
                            event = consumer.next() => event?,
                        }
                    }
                };
                self.publish(event).await?;
                uncommitted += 1;
                if uncommitted >= COMMIT_EVERY {
                    consumer.commit()?;
                    uncommitted = 0;
                }
                if let Ok(()) | Err(tokio::sync::oneshot::error::TryRecvError::Closed) =
                    stopped.try_recv()
                {
                    consumer.commit()?;
                    return Ok(());
                }
            }
        });
        PublisherHandle { stop, task }
    }
}
