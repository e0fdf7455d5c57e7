//! The three kinds of messages, in Castore's JSON shapes.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::aggregate::Aggregate;
use crate::model::event::{EventDetail, Events};
use crate::storage::Timestamp;

/// Which kind of message a channel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// [`AggregateExistsMessage`]s.
    AggregateExists,
    /// [`NotificationMessage`]s.
    Notification,
    /// [`StateCarryingMessage`]s.
    StateCarrying,
}

/// An aggregate exists: `{eventStoreId, aggregateId, initialEventTimestamp}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregateExistsMessage {
    /// The event store of the aggregate.
    pub event_store_id: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// When its first event happened.
    pub initial_event_timestamp: Timestamp,
}

/// An event happened: `{eventStoreId, event}`, the event in Castore's event-detail JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationMessage {
    /// The event store of the event.
    pub event_store_id: String,
    /// The event detail (`aggregateId`, `version`, `timestamp`, `type`, `payload`, `metadata`).
    pub event: serde_json::Value,
}

impl NotificationMessage {
    /// The event, typed.
    pub fn event<E: Events>(&self) -> Result<EventDetail<E>, serde_json::Error> {
        serde_json::from_value(self.event.clone())
    }
}

/// An event happened, and the aggregate it produced: `{eventStoreId, event, aggregate}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateCarryingMessage {
    /// The event store of the event.
    pub event_store_id: String,
    /// The event detail.
    pub event: serde_json::Value,
    /// The aggregate at the event's version (`aggregateId`, `version` and the state's fields).
    pub aggregate: serde_json::Value,
}

impl StateCarryingMessage {
    /// The event, typed.
    pub fn event<E: Events>(&self) -> Result<EventDetail<E>, serde_json::Error> {
        serde_json::from_value(self.event.clone())
    }

    /// The aggregate, typed.
    pub fn aggregate<S: DeserializeOwned>(&self) -> Result<Aggregate<S>, serde_json::Error> {
        serde_json::from_value(self.aggregate.clone())
    }
}

/// A message of any kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Message {
    /// An aggregate exists.
    AggregateExists(AggregateExistsMessage),
    /// An event happened (the state-carrying shape is tried first when deserializing, as it
    /// has the most fields).
    StateCarrying(StateCarryingMessage),
    /// An event happened.
    Notification(NotificationMessage),
}

impl Message {
    /// The message's kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::AggregateExists(_) => MessageKind::AggregateExists,
            Message::Notification(_) => MessageKind::Notification,
            Message::StateCarrying(_) => MessageKind::StateCarrying,
        }
    }

    /// The event store the message is about.
    pub fn event_store_id(&self) -> &str {
        match self {
            Message::AggregateExists(m) => &m.event_store_id,
            Message::Notification(m) => &m.event_store_id,
            Message::StateCarrying(m) => &m.event_store_id,
        }
    }

    /// The event type, for messages about an event.
    pub fn event_type(&self) -> Option<&str> {
        let event = match self {
            Message::AggregateExists(_) => return None,
            Message::Notification(m) => &m.event,
            Message::StateCarrying(m) => &m.event,
        };
        event.get("type").and_then(serde_json::Value::as_str)
    }
}

/// A message as a consumer receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Whether it was re-sent from history rather than published as its event happened.
    pub replay: bool,
}
