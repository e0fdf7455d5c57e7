//! The index tiers in memory: the memtable the writer fills and the one being checkpointed.

use std::sync::Arc;

use super::index::MemTable;

/// Index tiers as readers and the writer see them.
#[derive(Debug, Default)]
pub(crate) struct IndexTiers {
    /// Filled by the writer.
    pub active: MemTable,
    /// Being written to the index by the checkpointer.
    pub frozen: Option<Arc<MemTable>>,
}

impl IndexTiers {
    /// The latest version of an aggregate held in memory (the active memtable, then the frozen
    /// one), if either holds it.
    pub(crate) fn in_memory_version(&self, store: &str, aggregate: &str) -> Option<u64> {
        self.active.last_version(store, aggregate).or_else(|| {
            self.frozen
                .as_ref()
                .and_then(|f| f.last_version(store, aggregate))
        })
    }
}
