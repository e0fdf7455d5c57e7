//! What users and the storage floor choose about an engine: durability and tuning.

use std::time::Duration;

/// When an append is acknowledged relative to its data reaching stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after fdatasync: an acknowledged append survives power loss. The default.
    #[default]
    Immediate,
    /// Acknowledge after the write; sync at least this often. A power loss can lose the
    /// appends of the last interval; a process crash loses nothing.
    Periodic(Duration),
    /// Never sync on the append path (tests, bulk loads); closing the store still syncs.
    None,
}

/// Engine tuning. The defaults suit most stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Largest size of a segment file (bytes, at least 64 KiB, at most 4 GiB): segments grow
    /// from 64 KiB, doubling, up to it (see `segment::next_size`). A commit must fit in one
    /// segment of this size.
    pub segment_bytes: u64,
    /// Events held in memory before they are checkpointed into the persisted index. While a
    /// checkpoint is pending, appends continue up to twice this many more events, then wait
    /// for it, or fail with [`EngineError::StorageFull`] (the checkpointer's error) while it
    /// cannot be written.
    pub checkpoint_events: usize,
    /// Cache of the persisted index, in bytes.
    pub index_cache_bytes: usize,
    /// Discard the persisted index on open and rebuild it from the log (default `false`).
    /// The index is derived data: this repairs one that is suspected damaged, at the cost of
    /// reading the whole log once. What a readable index vouches for still counts: a log
    /// shorter than it says is refused with [`EngineError::Corruption`], not rebuilt from.
    pub rebuild_index: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            durability: Durability::Immediate,
            segment_bytes: 64 << 20,
            checkpoint_events: 100_000,
            index_cache_bytes: 64 << 20,
            rebuild_index: false,
        }
    }
}
