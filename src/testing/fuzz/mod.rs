//! Fuzz target bodies, shared by `cargo fuzz` (the `fuzz/` crate) and `cargo test`
//! (`tests/fuzz_corpus/`, which replays the seed corpus and every regression input).
//!
//! Each target is a `pub fn <target>(data: &[u8])` that must return normally on *any* input: a
//! panic means an invariant was violated, which is a bug in annals (or in the target). The
//! targets never touch the real disk: stores live on a [`SimFs`](crate::engine::sim::SimFs),
//! and async calls run on a current-thread tokio runtime built per call.
//!
//! Targets, what their bytes are, and what must hold:
//! - [`frame_decoder()`]: a frame, an entry, and events to encode. Decoders never panic;
//!   encode → decode gives the events back; a flipped bit is caught.
//! - [`segment_recovery()`]: the only segment file of a store. Open gives `Ok` or a typed error;
//!   after `Ok` every event reads back as the file holds it, and the next append succeeds and
//!   survives a reopen.
//! - [`index_decoder()`]: `index.redb` next to a valid log. Open succeeds (rebuilding the index
//!   if needed) and returns exactly the log's events and aggregates.
//! - [`metadata_decoders()`]: a page token, timestamp, MessagePack value, segment header or
//!   `EventDetail` JSON. Decoders never panic; what decodes re-encodes to the same value.
//! - [`operations()`]: a sequence of operations and I/O faults. Acknowledged commits read back
//!   identically across reopens and crashes; commits are all or nothing; errors are typed.
//!
//! Inputs are read with a forgiving cursor: bytes past the end read as zero, so every input,
//! even the empty one, means something.

mod frame_decoder;
mod index_decoder;
mod input;
mod metadata_decoders;
mod operations;
mod panics;
mod segment_recovery;
mod store;
mod targets;
mod template;

pub use frame_decoder::frame_decoder;
pub use index_decoder::{INDEX_PATCH, INDEX_RAW, INDEX_TRUNCATE, index_decoder};
pub use metadata_decoders::{Appeared, FuzzEvent, FuzzMetadata, LeveledUp, metadata_decoders};
pub use operations::operations;
pub use panics::contain_redb_panics;
pub use segment_recovery::{SEGMENT_PAD, SEGMENT_VALID_HEADER, segment_recovery};
pub use targets::{TARGETS, Target, seeds};
