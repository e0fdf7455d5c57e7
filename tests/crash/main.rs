//! Crash safety, proven on a simulated disk ([`annals::engine::sim::SimFs`]).
//!
//! A fixed workload (single pushes, event groups across stores, segment rollovers, index
//! checkpoints) runs against the log adapter while the disk fails or "loses power" at every
//! possible mutating I/O operation. After each failure the store is reopened — on a crash image
//! with several kinds of damage to unsynced data, or on the same disk — and checked: every
//! acknowledged event is readable byte-identical at its position, no commit is partly visible,
//! versions and positions are gap-free, and the next append succeeds. A compaction gets the same
//! treatment (`compaction`): power loss and I/O errors at every one of its steps.

mod compaction;
mod creation;
mod full_disk;
mod io_errors;
#[cfg(feature = "personal")]
mod personal;
mod power_loss;
mod segment_roll;
mod workload;
