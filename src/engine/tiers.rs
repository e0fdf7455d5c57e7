//! The index tiers in memory: the memtable the writer fills and the one being checkpointed.

use std::sync::Arc;

use super::error::EngineError;
use super::index::{IndexReader, MemTable};

/// Index tiers as readers and the writer see them.
#[derive(Debug, Default)]
pub(crate) struct IndexTiers {
    /// Filled by the writer.
    pub active: MemTable,
    /// Being written to the index by the checkpointer.
    pub frozen: Option<Arc<MemTable>>,
}

impl IndexTiers {
    /// The latest version of an aggregate: newest tier first.
    pub(crate) fn last_version(
        &self,
        store: &str,
        aggregate: &str,
        reader: &IndexReader,
    ) -> Result<u64, EngineError> {
        if let Some(v) = self.active.last_version(store, aggregate) {
            return Ok(v);
        }
        if let Some(v) = self
            .frozen
            .as_ref()
            .and_then(|f| f.last_version(store, aggregate))
        {
            return Ok(v);
        }
        Ok(reader.last_version(store, aggregate)?.unwrap_or(0))
    }
}
