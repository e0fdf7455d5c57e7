//! Tools for testing applications and adapters built on annals.
//!
//! - [`MockEventStore`]: an event store seeded with initial events on a private in-memory
//!   adapter, with [`reset`](MockEventStore::reset) (Castore's `mockEventStore`).
//! - [`conformance`]: the storage-adapter conformance suite every adapter must pass.
//! - [`state_conformance`]: the behaviour every state-store backend must show.

pub mod conformance;
#[doc(hidden)]
pub mod fuzz;
mod mock;
pub mod state_conformance;

pub use mock::MockEventStore;
