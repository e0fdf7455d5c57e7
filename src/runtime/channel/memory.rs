//! In-memory channel adapters: a bus that fans out to listeners, and a queue with one consumer.

use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::adapter::MessageChannel;
use super::error::ChannelError;
use super::message::{Delivery, Message};
use crate::runtime::subscription::Filter;

/// Messages an in-memory channel holds per consumer before `publish` waits.
const CAPACITY: usize = 1024;

/// Which messages a bus listener receives: a [`Filter`] on stores and event types, and whether
/// replays are wanted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerFilter {
    filter: Filter,
    replay: bool,
}

impl ListenerFilter {
    /// Every message published live (no replays).
    pub fn all() -> Self {
        ListenerFilter::default()
    }

    /// Only messages about these event stores.
    pub fn stores<I, S>(mut self, stores: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.filter = self.filter.stores(stores);
        self
    }

    /// Only messages about events of these types (aggregate-exists messages have no type and
    /// are then left out).
    pub fn event_types<I, S>(mut self, event_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.filter = self.filter.event_types(event_types);
        self
    }

    /// Also receive replayed messages (Castore listeners opt in to replays).
    pub fn with_replays(mut self) -> Self {
        self.replay = true;
        self
    }

    /// Whether a listener with this filter receives `message`.
    pub fn admits(&self, message: &Message, replay: bool) -> bool {
        (!replay || self.replay)
            && self
                .filter
                .admits_parts(message.event_store_id(), message.event_type())
    }
}

/// An in-memory message bus: every message goes to every listener whose filter admits it.
#[derive(Debug)]
pub struct InMemoryBus {
    name: String,
    listeners: Mutex<Vec<(ListenerFilter, mpsc::Sender<Delivery>)>>,
}

/// What a bus listener receives messages from.
#[derive(Debug)]
pub struct BusListener {
    receiver: mpsc::Receiver<Delivery>,
}

impl BusListener {
    /// The next message; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.receiver.try_recv().ok()
    }
}

impl InMemoryBus {
    /// A bus named `name`, without listeners.
    pub fn new(name: impl Into<String>) -> Self {
        InMemoryBus {
            name: name.into(),
            listeners: Mutex::default(),
        }
    }

    /// Adds a listener receiving the messages `filter` admits, from now on.
    pub fn listen(&self, filter: ListenerFilter) -> BusListener {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        self.lock().push((filter, sender));
        BusListener { receiver }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ListenerFilter, mpsc::Sender<Delivery>)>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl MessageChannel for InMemoryBus {
    fn name(&self) -> &str {
        &self.name
    }

    /// Delivers to every admitting listener, waiting while one of them is full; listeners that
    /// were dropped are forgotten.
    async fn publish(&self, message: Message, replay: bool) -> Result<(), ChannelError> {
        let targets: Vec<mpsc::Sender<Delivery>> = {
            let mut listeners = self.lock();
            listeners.retain(|(_, s)| !s.is_closed());
            listeners
                .iter()
                .filter(|(f, _)| f.admits(&message, replay))
                .map(|(_, s)| s.clone())
                .collect()
        };
        for target in targets {
            let delivery = Delivery {
                message: message.clone(),
                replay,
            };
            // A listener dropped meanwhile just misses the message, as it would had it
            // stopped listening a moment earlier.
            let _ = target.send(delivery).await;
        }
        Ok(())
    }
}

/// An in-memory message queue: each message goes to the queue's one consumer, in order.
#[derive(Debug)]
pub struct InMemoryQueue {
    name: String,
    sender: mpsc::Sender<Delivery>,
    receiver: Mutex<Option<mpsc::Receiver<Delivery>>>,
}

/// The consuming end of an [`InMemoryQueue`].
#[derive(Debug)]
pub struct QueueReceiver {
    receiver: mpsc::Receiver<Delivery>,
}

impl QueueReceiver {
    /// The next message; `None` once the queue is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.receiver.try_recv().ok()
    }
}

impl InMemoryQueue {
    /// A queue named `name`. Publishing waits while it holds more than 1,024 messages.
    pub fn new(name: impl Into<String>) -> Self {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        InMemoryQueue {
            name: name.into(),
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// The queue's consumer; `None` if it was already taken (a queue has one consumer).
    pub fn take_receiver(&self) -> Option<QueueReceiver> {
        self.receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|receiver| QueueReceiver { receiver })
    }
}

#[async_trait]
impl MessageChannel for InMemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&self, message: Message, replay: bool) -> Result<(), ChannelError> {
        self.sender
            .send(Delivery { message, replay })
            .await
            .map_err(|_| ChannelError::Closed {
                channel: self.name.clone(),
            })
    }
}
