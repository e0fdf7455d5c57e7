//! Floor 2 — storage: the [`StorageAdapter`] trait and its adapters.
//!
//! Adapters store [`EncodedEvent`]s (ids, versions, timestamps and opaque payload bytes) and
//! know nothing of user types. Every adapter passes the same conformance suite
//! ([`crate::testing::conformance`]), so the typed layer above behaves identically on each.
//!
//! | adapter | durability | use |
//! |---|---|---|
//! | [`LogAdapter`] (default, [`open`]) | fdatasync before acknowledging | embedded, one process |
//! | [`LogReader`] ([`LogAdapter::open_reader`]) | read-only | readers beside its writer |
//! | [`InMemoryAdapter`] | none | tests, ephemeral stores |
//! | `PostgresAdapter` (feature `postgres`) | the server's commit (WAL flush) | several processes |

mod adapter;
mod engine_bridge;
mod error;
mod event;
#[cfg(feature = "personal")]
pub mod keys;
pub mod lifecycle;
mod limit_error;
mod limits;
mod log;
mod log_compactor;
mod log_lifecycle;
mod log_reader;
mod log_snapshots;
mod memory;
pub mod page;
#[cfg(feature = "postgres")]
pub mod postgres;
mod redb_file;
mod snapshot_storage;
mod timestamp;

pub use crate::engine::{
    CompactEntry, CompactionPhase, CompactionProgress, CompactionReport, Corruption,
    CorruptionKind, IoFailure,
};
pub use adapter::StorageAdapter;
pub use error::{EventAlreadyExists, StorageError};
pub use event::{
    AggregateIdEntry, AppendEvent, AppendEventRef, EncodedEvent, EventRef, EventStoreSummary,
    LoggedEvent, Position, StoredEvent,
};
#[cfg(feature = "personal")]
pub use keys::{InMemoryKeys, KeyStore, Keys, SubjectKey};
pub use lifecycle::{DeleteMode, LIFECYCLE_STORE, Retention};
pub use limit_error::LimitError;
pub use limits::{Limits, RESERVED_EVENT_TYPES};
pub use log::{LogAdapter, LogAdapterBuilder, open};
pub use log_reader::{LogReader, LogReaderBuilder, LogReaderStats};
pub use memory::InMemoryAdapter;
pub use page::{AggregateIdsPage, AggregateIdsQuery, GetEventsOptions, ListAggregateIdsOptions};
#[cfg(all(feature = "postgres", feature = "personal"))]
pub use postgres::PostgresKeys;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresAdapter, PostgresAdapterBuilder, PostgresSnapshots};
pub use snapshot_storage::{
    InMemorySnapshots, SnapshotRecord, SnapshotStats, SnapshotStorage, event_checksum,
    event_ref_checksum,
};
pub use timestamp::{InvalidTimestamp, Timestamp};
