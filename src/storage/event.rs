//! Events as storage adapters see them: ids, versions, a timestamp and opaque bytes.

use super::Timestamp;

/// A global log position: 1 for the first event ever committed to a storage adapter, then
/// gap-free and strictly increasing in commit order. 0 means "before the first event".
pub type Position = u64;

/// An event with its payload and metadata already encoded (MessagePack by default).
///
/// This is the unit every [`StorageAdapter`](super::StorageAdapter) stores: adapters never see
/// user types, only these bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The aggregate the event belongs to.
    pub aggregate_id: String,
    /// The event's version within its aggregate: 1 for the first event, then +1 each.
    pub version: u64,
    /// When the event happened.
    pub timestamp: Timestamp,
    /// The business meaning of the event, e.g. `POKEMON_APPEARED`.
    pub event_type: String,
    /// The schema version the payload was written with (1 unless the event type evolved).
    pub schema_version: u32,
    /// The encoded payload.
    pub payload: Vec<u8>,
    /// The encoded metadata.
    pub metadata: Vec<u8>,
}

impl EncodedEvent {
    /// Bytes of user data the event carries (id, type, payload, metadata): what
    /// [`Limits::event_bytes_max`](super::Limits::event_bytes_max) bounds.
    pub fn data_len(&self) -> usize {
        self.aggregate_id.len() + self.event_type.len() + self.payload.len() + self.metadata.len()
    }
}

/// An event as read back from storage: the encoded event and its global position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event's global position in its storage adapter.
    pub position: Position,
    /// The event itself.
    pub event: EncodedEvent,
}

impl StoredEvent {
    /// The event as a borrowed [`EventRef`].
    pub fn as_event_ref(&self) -> EventRef<'_> {
        EventRef {
            position: self.position,
            aggregate_id: &self.event.aggregate_id,
            version: self.event.version,
            timestamp: self.event.timestamp,
            event_type: &self.event.event_type,
            schema_version: self.event.schema_version,
            payload: &self.event.payload,
            metadata: &self.event.metadata,
        }
    }
}

/// A stored event borrowed from where the adapter holds it (its read buffer, its memory), as
/// [`StorageAdapter::visit_events`](super::StorageAdapter::visit_events) hands it to a
/// visitor: reading it copies nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The event's global position in its storage adapter.
    pub position: Position,
    /// The aggregate the event belongs to.
    pub aggregate_id: &'a str,
    /// The event's version within its aggregate.
    pub version: u64,
    /// When the event happened.
    pub timestamp: Timestamp,
    /// The event's type name.
    pub event_type: &'a str,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// The encoded payload.
    pub payload: &'a [u8],
    /// The encoded metadata.
    pub metadata: &'a [u8],
}

impl EventRef<'_> {
    /// An owned copy.
    pub fn to_stored(&self) -> StoredEvent {
        StoredEvent {
            position: self.position,
            event: EncodedEvent {
                aggregate_id: self.aggregate_id.to_owned(),
                version: self.version,
                timestamp: self.timestamp,
                event_type: self.event_type.to_owned(),
                schema_version: self.schema_version,
                payload: self.payload.to_vec(),
                metadata: self.metadata.to_vec(),
            },
        }
    }
}

/// An event read from an adapter's global log (see [`StorageAdapter::read_log`]): the event,
/// the store it belongs to, and its global position.
///
/// [`StorageAdapter::read_log`]: super::StorageAdapter::read_log
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// The event store the event belongs to.
    pub event_store_id: String,
    /// The event's global position.
    pub position: Position,
    /// The event itself.
    pub event: EncodedEvent,
}

/// One event of a commit: the event and the store it is appended to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEvent {
    /// The event store the event belongs to.
    pub event_store_id: String,
    /// The event.
    pub event: EncodedEvent,
}

impl AppendEvent {
    /// The event as a borrowed [`AppendEventRef`].
    pub fn as_event_ref(&self) -> AppendEventRef<'_> {
        AppendEventRef {
            event_store_id: &self.event_store_id,
            aggregate_id: &self.event.aggregate_id,
            version: self.event.version,
            timestamp: self.event.timestamp,
            event_type: &self.event.event_type,
            schema_version: self.event.schema_version,
            payload: &self.event.payload,
            metadata: &self.event.metadata,
        }
    }
}

/// One event of a commit, borrowed from where the caller holds it (its ids, its encoding
/// buffer), as [`StorageAdapter::push_event_group_ref`] takes it: an adapter that encodes
/// the event straight into its commit copies each byte once and allocates nothing for it.
///
/// [`StorageAdapter::push_event_group_ref`]: super::StorageAdapter::push_event_group_ref
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendEventRef<'a> {
    /// The event store the event belongs to.
    pub event_store_id: &'a str,
    /// The aggregate the event belongs to.
    pub aggregate_id: &'a str,
    /// The event's version within its aggregate.
    pub version: u64,
    /// When the event happened.
    pub timestamp: Timestamp,
    /// The event's type name.
    pub event_type: &'a str,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// The encoded payload.
    pub payload: &'a [u8],
    /// The encoded metadata.
    pub metadata: &'a [u8],
}

impl AppendEventRef<'_> {
    /// An owned copy.
    pub fn to_append_event(&self) -> AppendEvent {
        AppendEvent {
            event_store_id: self.event_store_id.to_owned(),
            event: EncodedEvent {
                aggregate_id: self.aggregate_id.to_owned(),
                version: self.version,
                timestamp: self.timestamp,
                event_type: self.event_type.to_owned(),
                schema_version: self.schema_version,
                payload: self.payload.to_vec(),
                metadata: self.metadata.to_vec(),
            },
        }
    }

    /// Bytes of user data the event carries, as [`EncodedEvent::data_len`] counts them.
    pub fn data_len(&self) -> usize {
        self.aggregate_id.len() + self.event_type.len() + self.payload.len() + self.metadata.len()
    }
}

/// An aggregate id with the timestamp of its first event, as listed by
/// [`StorageAdapter::list_aggregate_ids`](super::StorageAdapter::list_aggregate_ids).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AggregateIdEntry {
    /// Timestamp of the aggregate's first event (version 1).
    pub initial_event_timestamp: Timestamp,
    /// The aggregate id.
    pub aggregate_id: String,
}

/// The size of one event store in an adapter, as reported by
/// [`StorageAdapter::event_store_summaries`](super::StorageAdapter::event_store_summaries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventStoreSummary {
    /// The event store's id.
    pub event_store_id: String,
    /// Aggregates with at least one event.
    pub aggregates: u64,
    /// Events of all its aggregates.
    pub events: u64,
}
