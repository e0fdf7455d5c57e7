//! The typed layer's error: what went wrong, and to which store, aggregate and event.

use crate::storage::{EventAlreadyExists, StorageError};

/// Everything the typed layer (event stores, groups, commands) can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The version is taken (optimistic-concurrency conflict); commands retry on it.
    #[error(transparent)]
    EventAlreadyExists(EventAlreadyExists),
    /// `get_existing_aggregate` found no event for this aggregate.
    #[error("aggregate {aggregate_id:?} not found in store {event_store_id:?}")]
    AggregateNotFound {
        /// The store searched.
        event_store_id: String,
        /// The missing aggregate.
        aggregate_id: String,
    },
    /// The store has no storage adapter yet; set one with `set_storage_adapter`.
    #[error("event store {event_store_id:?} has no storage adapter")]
    UndefinedStorageAdapter {
        /// The store without adapter.
        event_store_id: String,
    },
    /// A stored event has a type this store's events do not declare.
    #[error(
        "store {event_store_id:?}, aggregate {aggregate_id:?}, version {version}: \
         unknown event type {event_type:?}"
    )]
    UnknownEventType {
        /// The store read.
        event_store_id: String,
        /// The aggregate read.
        aggregate_id: String,
        /// The event's version.
        version: u64,
        /// The unknown type.
        event_type: String,
    },
    /// A stored event's payload or metadata does not decode into the declared types.
    #[error(
        "store {event_store_id:?}, aggregate {aggregate_id:?}, version {version}, \
         type {event_type:?}: {reason}"
    )]
    Decode {
        /// The store read.
        event_store_id: String,
        /// The aggregate read.
        aggregate_id: String,
        /// The event's version.
        version: u64,
        /// The event's type.
        event_type: String,
        /// What did not decode.
        reason: String,
    },
    /// A stored event was written with a schema version newer than this code declares for its
    /// type: it was written by a newer release. Upgrade the reader; old code cannot know what
    /// the new schema means, so it refuses the event rather than misread it.
    #[error(
        "store {event_store_id:?}, aggregate {aggregate_id:?}, version {version}, \
         type {event_type:?}: schema version {schema_version} is newer than the \
         {known_schema_version} this code knows"
    )]
    SchemaVersionTooNew {
        /// The store read.
        event_store_id: String,
        /// The aggregate read.
        aggregate_id: String,
        /// The event's version.
        version: u64,
        /// The event's type, as stored.
        event_type: String,
        /// The schema version the event was written with.
        schema_version: u32,
        /// The newest schema version this code declares for the type.
        known_schema_version: u32,
    },
    /// The store's upcasters or event-type aliases do not fit its event types (an upcaster for
    /// an undeclared type or from a version that is not older than the type's current one, two
    /// upcasters for one step, an alias that shadows a declared type or points to an undeclared
    /// one). Fix the store's builder calls.
    #[error("store {event_store_id:?}: invalid schema evolution: {reason}")]
    InvalidSchemaEvolution {
        /// The store being built.
        event_store_id: String,
        /// What is wrong.
        reason: String,
    },
    /// An event's payload or metadata could not be encoded.
    #[error("store {event_store_id:?}, type {event_type:?}: cannot encode: {reason}")]
    Encode {
        /// The store written.
        event_store_id: String,
        /// The event's type.
        event_type: String,
        /// What failed.
        reason: String,
    },
    /// The events of a group use different storage adapters, so they cannot commit atomically.
    #[error(
        "event group spans storage adapters: store {event_store_id:?} uses another adapter \
         than the group's first event"
    )]
    GroupAdapterMismatch {
        /// The first store whose adapter differs.
        event_store_id: String,
    },
    /// `prev_aggregate` is not the aggregate just before the pushed event (another aggregate,
    /// or not at `version - 1`), so the next aggregate cannot be computed from it.
    #[error(
        "store {event_store_id:?}: prev_aggregate {prev_aggregate_id:?} v{prev_version} does not \
         precede event {aggregate_id:?} v{version}"
    )]
    PrevAggregateMismatch {
        /// The store pushed to.
        event_store_id: String,
        /// The pushed event's aggregate.
        aggregate_id: String,
        /// The pushed event's version.
        version: u64,
        /// The given aggregate's id.
        prev_aggregate_id: String,
        /// The given aggregate's version.
        prev_version: u64,
    },
    /// The aggregate is deleted
    /// ([`EventStore::delete_aggregate`](crate::model::event_store::EventStore::delete_aggregate)):
    /// pushes to it are refused, and commands do not retry. A soft delete (`hard: false`) can be
    /// undone with `restore_aggregate`; a hard one is final. Nothing was written.
    #[error(
        "aggregate {aggregate_id:?} of store {event_store_id:?} is {} deleted",
        if *hard { "hard" } else { "soft" }
    )]
    AggregateDeleted {
        /// The store of the aggregate.
        event_store_id: String,
        /// The deleted aggregate.
        aggregate_id: String,
        /// Whether the delete is hard (irreversible).
        hard: bool,
    },
    /// Personal data was to be written, or a subject forgotten, through a storage adapter that
    /// keeps no keys ([`StorageAdapter::keys`](crate::storage::StorageAdapter::keys) is
    /// `None`): nothing was written (feature `personal`).
    #[cfg(feature = "personal")]
    #[error("store {event_store_id:?}: its storage adapter keeps no keys for personal data")]
    NoKeyStore {
        /// The store written.
        event_store_id: String,
    },
    /// The storage adapter refused or failed the operation.
    #[error(transparent)]
    Storage(StorageError),
}

impl Error {
    /// The version conflict, if this error is one.
    pub fn event_already_exists(&self) -> Option<&EventAlreadyExists> {
        match self {
            Error::EventAlreadyExists(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::EventAlreadyExists(conflict) => Error::EventAlreadyExists(conflict),
            StorageError::AggregateDeleted {
                event_store_id,
                aggregate_id,
                hard,
            } => Error::AggregateDeleted {
                event_store_id,
                aggregate_id,
                hard,
            },
            other => Error::Storage(other),
        }
    }
}

impl From<EventAlreadyExists> for Error {
    fn from(e: EventAlreadyExists) -> Self {
        Error::EventAlreadyExists(e)
    }
}
