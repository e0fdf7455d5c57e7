//! Integration tests of the typed layer: event stores, aggregates, event groups, commands and
//! the mock store, as an application sees them through `annals`'s public API.
//!
//! They guard the behaviour that Castore users rely on (the JSON shape of an event detail, how
//! `push_event` fills the timestamp and the next aggregate, the retry loop of commands, the
//! atomicity and typed output of event groups) and that every failure is a typed error naming
//! what went wrong. All run on the in-memory adapter; the storage floor itself is covered by
//! the conformance suite in `tests/storage`.

mod bulk_and_streams;
mod commands;
mod event_json;
mod fixtures;
mod groups;
mod limits;
mod mock;
mod pushes;
mod reads;
