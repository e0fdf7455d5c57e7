//! What the log adapter and the live reader share: the engine's events and errors, as the
//! storage floor hands them out.

use super::{EncodedEvent, EventAlreadyExists};
use super::{EventRef, LoggedEvent, Position, StorageError, Timestamp};
use crate::engine::{EngineError, EntryView, LogEvent};

/// An event read from the log in global order, as the storage floor hands it out.
pub(super) fn logged_event(position: Position, e: LogEvent) -> LoggedEvent {
    LoggedEvent {
        event_store_id: e.store,
        position,
        event: EncodedEvent {
            aggregate_id: e.aggregate,
            version: e.version,
            timestamp: Timestamp::from_unix_millis(e.timestamp_ms),
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            metadata: e.metadata,
        },
    }
}

/// An event of one aggregate, borrowed from the engine's read buffer.
pub(super) fn event_ref<'a>(
    position: Position,
    aggregate_id: &'a str,
    e: EntryView<'a>,
) -> EventRef<'a> {
    EventRef {
        position,
        aggregate_id,
        version: e.version,
        timestamp: Timestamp::from_unix_millis(e.timestamp_ms),
        event_type: e.event_type,
        schema_version: e.schema_version,
        payload: e.payload,
        metadata: e.metadata,
    }
}

/// Maps the engine's errors onto the storage floor's.
pub(super) fn storage_error(e: EngineError) -> StorageError {
    match e {
        EngineError::Conflict {
            store,
            aggregate,
            version,
            last,
        } if version <= last => EventAlreadyExists {
            event_store_id: store,
            aggregate_id: aggregate,
            version,
        }
        .into(),
        EngineError::Conflict {
            store,
            aggregate,
            version,
            last,
        } => StorageError::UnexpectedVersion {
            event_store_id: store,
            aggregate_id: aggregate,
            version,
            expected: Some(last + 1),
        },
        EngineError::Io(failure) => StorageError::Io(failure),
        EngineError::StorageFull { path } => StorageError::StorageFull { path },
        EngineError::Corruption(corruption) => StorageError::Corruption(corruption),
        EngineError::Locked { path } => StorageError::Locked { path },
        EngineError::FormatUpgradeRequired { path, found } => {
            StorageError::FormatUpgradeRequired { path, found }
        }
        EngineError::Poisoned { reason } => StorageError::Poisoned { reason },
        EngineError::Closed => StorageError::Closed,
        EngineError::InvalidOptions(reason) => StorageError::InvalidConfiguration { reason },
        EngineError::CompactionRefused {
            store,
            aggregate,
            version,
            kept,
        } => StorageError::CompactionRefused {
            event_store_id: store,
            aggregate_id: aggregate,
            version,
            kept,
        },
    }
}
