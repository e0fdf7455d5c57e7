//! Floor 1 — the engine: an append-only segmented log with group commit, a per-aggregate index
//! and crash recovery. It knows bytes, positions and versions; nothing about user types.
//!
//! What users meet of it: [`Durability`], the integrity check ([`verify`], [`verify_dir`]),
//! compaction ([`CompactEntry`], [`CompactionReport`], [`CompactionProgress`]),
//! the figures of an open store ([`EngineStats`], [`IndexStats`], [`LogCounters`]), its errors
//! ([`EngineError`]), the names of a store directory's files ([`layout`]), and the file-I/O
//! seam ([`FileSystem`], [`StoreFile`]) that fault-injection tests replace with a simulated
//! disk. Everything else is internal to the crate.
//!
//! | file | concept |
//! |---|---|
//! | `options` | [`Durability`] and the engine's tuning |
//! | [`layout`] | the names of a store directory's files |
//! | `io` | the file-I/O seam ([`FileSystem`], [`StoreFile`]), locks, atomic file creation |
//! | `frame` | record framing: commit frames and entries, with checksums |
//! | `entry_view` | decoding one entry in place on the read path |
//! | `segment` | preallocated segment files, their header, their preparation and sizes |
//! | `compaction` | rewriting sealed segments without the events a predicate rejects |
//! | `index/` | the per-aggregate index: runs, memtables, the redb tables, read views |
//! | `tiers` | the memtables readers and the writer see: active and frozen |
//! | `engine_state` | the state the handle, the writer and the checkpointer share |
//! | `handle` | the handle of an open log: append, sync, close |
//! | `open` | opening a store: judge, repair, replay, start the threads |
//! | `health` | judging, before anything is modified, whether the log holds what is vouched for |
//! | `recovery` | replaying the log tail on open, truncating a torn tail |
//! | `writer` | the group-commit writer thread |
//! | `commit_pool` | commit buffers reused from one commit to the next |
//! | `preparer` | the thread preparing the next segment file before the writer needs it |
//! | `checkpointer` | the thread writing frozen memtables into the persisted index |
//! | `read` | reading one aggregate's events |
//! | `continuity` | checking that the runs a read assembled hold every version asked for |
//! | `scan` | reading the log in global order |
//! | `live` | reading a store while another process writes it: scanning, following |
//! | `stats` | figures about an open store ([`EngineStats`], [`IndexStats`]) |
//! | [`verify`] | the integrity check: [`verify_dir`] and the open store's check |
//! | `verify_index` | the integrity check of the persisted and the in-memory index |
//! | `upgrade` | converting database files of an older redb format (feature `upgrade`) |
//! | `cow` | a copy-on-write view of a file, to judge a store without writing to it |
//! | `sim` | a simulated disk that loses unsynced data, tears writes and fails on demand |
//!
//! The directory layout of a store is described in [`layout`]; byte formats are in
//! `docs/format.md`.

mod checkpointer;
mod commit_pool;
mod compaction;
mod continuity;
mod cow;
mod engine_state;
mod entry_view;
mod error;
pub(crate) mod frame;
mod handle;
mod health;
mod index;
pub(crate) mod io;
pub mod layout;
mod live;
mod open;
mod options;
mod preparer;
#[doc(hidden)]
pub mod raw;
mod read;
mod recovery;
mod scan;
pub(crate) mod segment;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod sim;
mod stats;
mod tiers;
#[cfg(feature = "upgrade")]
mod upgrade;
pub mod verify;
mod verify_index;
mod writer;

pub(crate) use compaction::compact;
pub use compaction::{CompactEntry, CompactionPhase, CompactionProgress, CompactionReport};
pub(crate) use entry_view::EntryView;
pub use error::{Corruption, CorruptionKind, EngineError, IoFailure};
pub(crate) use frame::{LogEvent, NewEntry};
pub(crate) use handle::Engine;
pub(crate) use io::OsFileSystem;
pub use io::{FileSystem, StoreFile};
pub(crate) use live::LiveLog;
pub use options::Durability;
pub(crate) use options::EngineOptions;
pub(crate) use scan::LogCursor;
pub use stats::{EngineStats, IndexStats, LogCounters};
#[cfg(feature = "upgrade")]
pub use upgrade::{FileUpgrade, UpgradeReport, upgrade_dir};
pub use verify::{VerifyReport, verify_dir, verify_dir_with};
