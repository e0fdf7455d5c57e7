//! The event store: one per business entity, typed by its events and aggregate state.
//!
//! An [`EventStore`] is configured by an [`EventStoreBuilder`]; its reads take
//! [`GetAggregateOptions`] and its pushes [`PushEventOptions`]. Pushing several events at once,
//! across aggregates and stores, is the [`group`](crate::model::group) module's.

// One file per part of the store, none importing this facade: `store` (the type and its fold),
// `builder`, `options` (options and responses), `read` (the read path with snapshots), `push`
// (the push path), `decode` (stored events into typed ones), `snapshot_writes` (the background
// snapshot writes in flight), `forget` (crypto-shredding, feature `personal`).
mod builder;
mod decode;
#[cfg(feature = "personal")]
mod forget;
mod lifecycle;
mod options;
mod push;
mod read;
mod snapshot_writes;
mod store;

pub use builder::{EventStoreBuilder, RESERVED_EVENT_STORE_ID_SUFFIX};
pub use options::{
    AggregateState, ExistingAggregate, GetAggregateOptions, GetAggregateResponse, PushEventOptions,
    PushEventResponse, PushedEvents,
};
pub use store::EventStore;
