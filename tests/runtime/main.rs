//! The runtime floor: subscriptions on the global log, durable consumers and their state.

mod channels;
mod consumers;
mod state;
#[cfg(feature = "testing")]
mod state_suite;
mod subscriptions;
mod traces;

use std::sync::Arc;

use annals::Timestamp;
use annals::storage::{AppendEvent, EncodedEvent, Limits, LogAdapter, StorageAdapter};

/// An event of `store`/`aggregate` at `version`, of type `event_type`.
pub fn event(store: &str, aggregate: &str, version: u64, event_type: &str) -> AppendEvent {
    AppendEvent {
        event_store_id: store.to_owned(),
        event: EncodedEvent {
            aggregate_id: aggregate.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + version as i64),
            event_type: event_type.to_owned(),
            schema_version: 1,
            payload: format!("{store}/{aggregate}@{version}").into_bytes(),
            metadata: vec![0x80],
        },
    }
}

/// A log adapter in `dir` with the smallest segments, so a few hundred events roll over.
pub fn log_store(dir: &std::path::Path) -> Arc<dyn StorageAdapter> {
    Arc::new(
        LogAdapter::builder(dir)
            .segment_bytes(64 << 10)
            .limits(Limits {
                event_bytes_max: 4 << 10,
                group_events_max: 4,
                group_bytes_max: 8 << 10,
                ..Limits::default()
            })
            .open()
            .expect("open the log store"),
    )
}
