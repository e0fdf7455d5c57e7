//! Floor 3, the typed layer: Castore's model in Rust.
//!
//! Users declare their [`Events`](event::Events) and fold them into an
//! [`Aggregate`](aggregate::Aggregate) with a [`Reducer`](aggregate::Reducer); an
//! [`EventStore`](event_store::EventStore) pushes and reads them through any
//! [`StorageAdapter`](crate::storage::StorageAdapter); [`Command`](command::Command)s decide
//! and retry on version conflicts; [`group`]s push across aggregates and stores all or nothing;
//! [`upcast`]ers read old schemas; [`snapshot_policy`] keeps long aggregates fast; with the
//! feature `personal`, `personal` fields can be forgotten (crypto-shredding).
//!
//! Everything here is typed by the user's events; the floors below see bytes.

pub mod aggregate;
pub mod codec;
pub mod command;
mod error;
pub mod event;
pub mod event_store;
pub mod group;
#[cfg(feature = "personal")]
pub mod personal;
pub mod snapshot_policy;
pub mod upcast;

pub use error::Error;
