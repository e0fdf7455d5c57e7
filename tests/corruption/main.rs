//! Corruption matrix: what damaged bytes do to a store (see docs/reliability.md).
//!
//! A small fixture store (a few dozen acknowledged events over two 64 KiB segments, with an
//! index checkpoint) is copied onto a simulated disk and damaged in one way per case: one bit
//! flipped in a segment or in the index, the log's unacknowledged tail torn at every offset,
//! the index truncated or deleted, a segment truncated (see `truncation`). Each case is reopened and read back. The store must then
//! hold exactly the fixture's data, or refuse with a typed `StorageError::Corruption` naming
//! the damaged file (at open or on the read that meets the damage) — never return other data,
//! never lose an acknowledged event silently, never panic — and `verify()` must report damage
//! to live data. Each test prints how many cases it ran.

mod bit_flips;
mod fixture;
mod index_damage;
mod last_frame;
mod torn_tail;
mod truncation;
