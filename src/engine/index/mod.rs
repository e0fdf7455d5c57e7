//! The per-aggregate index: where each event of each aggregate lives in the log.
//!
//! Two tiers, like a small LSM tree:
//! - [`MemTable`]: locations of events appended since the last checkpoint, in memory. The
//!   writer fills the *active* memtable; when it grows past a threshold it is *frozen* and a
//!   background thread writes it into the persisted index.
//! - [`Index`]: a redb database (`index.redb`) holding every checkpointed location, the latest
//!   version and initial timestamp of every aggregate, aggregates ordered by initial timestamp,
//!   and the **checkpoint**: the log position up to which it is complete.
//!
//! Opening a store reads the checkpoint and replays only the log past it, so opening costs the
//! same at any store size. The index is derived data: if it is missing, unreadable or behind
//! the log's start, it is rebuilt from the log.
//!
//! | file | concept |
//! |---|---|
//! | `run` | [`Location`], [`Cursor`] and [`Run`]: where events live in the log |
//! | `memtable` | [`MemTable`] and its per-aggregate `Tail`s: the in-memory tier |
//! | `tables` | [`Index`]: the redb tables, the checkpoint and the clean-close mark |
//! | `reader` | [`IndexReader`]: a consistent read view (runs, versions, listings) |
//! | `rewrite` | the index half of compacting a segment: one transaction, the commit point |
//! | `event_rows` | the per-event view of the tables that the integrity check reads |

mod event_rows;
mod memtable;
mod reader;
mod rewrite;
mod run;
mod tables;

pub(crate) use event_rows::EVENTS;
pub use memtable::MemTable;
pub use reader::IndexReader;
pub(crate) use rewrite::{AggregateRewrite, SegmentRewrite};
pub use run::{Cursor, Location, Run};
pub use tables::Index;
pub(crate) use tables::{AGGREGATES, BY_INITIAL, FIRST_VERSIONS};
