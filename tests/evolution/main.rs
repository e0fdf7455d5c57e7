//! Integration tests of how stores evolve: aggregate snapshots (taken off the push path,
//! invalidated by a reducer-version bump, ignored when damaged) and schema evolution (schema
//! versions, upcaster chains, aliases of renamed types).
//!
//! They guard the promises of issue 5: a read through snapshots is identical to a full replay
//! (a property test, on the in-memory and the log adapter); a snapshot that cannot be trusted
//! is never an error and never a wrong aggregate; snapshots survive a reopen; readers see only
//! the current shape of every event, and an event from a newer release is a typed error.

mod equivalence;
mod fixtures;
mod log_snapshots;
mod snapshots;
mod upcasting;
