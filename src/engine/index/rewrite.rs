//! The index half of compacting one segment: one redb transaction that moves the segment's
//! runs to the rewritten file's offsets, deletes the runs of removed versions, moves each
//! touched aggregate's start to its first surviving version, and records the rewritten
//! segment's header. Its commit is compaction's commit point (see `compaction`).

use std::panic::AssertUnwindSafe;

use redb::ReadableTable;

use super::super::error::EngineError;
use super::super::segment::SegmentHeader;
use super::run::Run;
use super::tables::{AGGREGATES, BY_INITIAL, COMPACTED, FIRST_VERSIONS, Index, RUNS, SEGMENTS};

/// What compacting one segment changes in the index.
#[derive(Debug)]
pub(crate) struct SegmentRewrite {
    /// The rewritten segment's header.
    pub header: SegmentHeader,
    /// Every aggregate with events in the segment before it was rewritten.
    pub aggregates: Vec<AggregateRewrite>,
}

/// One aggregate of a rewritten segment.
#[derive(Debug)]
pub(crate) struct AggregateRewrite {
    pub store: String,
    pub aggregate: String,
    /// The versions it had in the segment before the rewrite (they are consecutive).
    pub old_versions: (u64, u64),
    /// Its runs in the rewritten segment, ascending (empty when all were removed).
    pub runs: Vec<Run>,
    /// Whether some of its versions were removed from the segment.
    pub removed: bool,
    /// Its first run held in memory (appended since the checkpoint), if any.
    pub in_memory: Option<Run>,
}

impl Index {
    /// Applies `rewrite` in one durable transaction. `timestamp` reads the timestamp of a
    /// run's first event (the new first event of an aggregate) from the log.
    pub(crate) fn rewrite_segment(
        &self,
        rewrite: &SegmentRewrite,
        timestamp: &mut dyn FnMut(&str, &str, &Run) -> Result<i64, EngineError>,
    ) -> Result<(), EngineError> {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.rewrite_unguarded(rewrite, timestamp)
        }))
        .unwrap_or_else(|_| {
            Err(EngineError::corruption(
                self.path.to_path_buf(),
                0,
                "the index database is damaged (redb failed while writing it)",
            ))
        })
    }

    fn rewrite_unguarded(
        &self,
        rewrite: &SegmentRewrite,
        timestamp: &mut dyn FnMut(&str, &str, &Run) -> Result<i64, EngineError>,
    ) -> Result<(), EngineError> {
        let err = self.err("compact index");
        let id = rewrite.header.segment_id;
        let damaged = |reason: String| EngineError::corruption(self.path.to_path_buf(), 0, reason);
        let txn = self.db().begin_write().map_err(|e| err(e.into()))?;
        {
            let mut runs = txn.open_table(RUNS).map_err(|e| err(e.into()))?;
            let mut aggregates = txn.open_table(AGGREGATES).map_err(|e| err(e.into()))?;
            let mut by_initial = txn.open_table(BY_INITIAL).map_err(|e| err(e.into()))?;
            let mut firsts = txn.open_table(FIRST_VERSIONS).map_err(|e| err(e.into()))?;
            let mut lens = Vec::new();
            for a in &rewrite.aggregates {
                let (store, aggregate) = (a.store.as_str(), a.aggregate.as_str());
                let (lo, hi) = a.old_versions;
                // Runs lie in one segment each, and the aggregate's versions in this segment
                // are exactly `lo..=hi`: the rows starting there are the segment's.
                let mut old = Vec::new();
                for item in runs
                    .range((store, aggregate, lo)..=(store, aggregate, hi))
                    .map_err(|e| err(e.into()))?
                {
                    let (key, value) = item.map_err(|e| err(e.into()))?;
                    let (_, segment_id, _, _) = value.value();
                    if segment_id != id {
                        return Err(damaged(format!(
                            "the index locates {store:?}/{aggregate:?} v{} in segment \
                             {segment_id}, but the log holds it in segment {id}",
                            key.value().2
                        )));
                    }
                    old.push(key.value().2);
                }
                if old.first() != Some(&lo) {
                    return Err(damaged(format!(
                        "the index has no run of {store:?}/{aggregate:?} starting at v{lo}, \
                         which the log holds in segment {id}"
                    )));
                }
                for version in old {
                    runs.remove((store, aggregate, version))
                        .map_err(|e| err(e.into()))?;
                }
                for run in &a.runs {
                    lens.clear();
                    lens.extend(run.lens.iter().flat_map(|l| l.to_le_bytes()));
                    runs.insert(
                        (store, aggregate, run.first_version),
                        (
                            run.first_position,
                            run.segment_id,
                            run.offset,
                            lens.as_slice(),
                        ),
                    )
                    .map_err(|e| err(e.into()))?;
                }
                if !a.removed {
                    continue;
                }
                let first_indexed = {
                    let mut all = runs
                        .range((store, aggregate, 0)..=(store, aggregate, u64::MAX))
                        .map_err(|e| err(e.into()))?;
                    match all.next() {
                        Some(item) => {
                            let (key, value) = item.map_err(|e| err(e.into()))?;
                            let run = Run::decode(key.value().2, value.value())
                                .ok_or_else(|| damaged("malformed run row".into()))?;
                            Some(run)
                        }
                        None => None,
                    }
                };
                let first = first_indexed.or_else(|| a.in_memory.clone());
                let row = aggregates
                    .get((store, aggregate))
                    .map_err(|e| err(e.into()))?
                    .map(|v| v.value());
                let Some((last, initial)) = row else {
                    return Err(damaged(format!(
                        "aggregate {aggregate:?} of store {store:?} has runs but no row"
                    )));
                };
                by_initial
                    .remove((store, initial, aggregate))
                    .map_err(|e| err(e.into()))?;
                match first {
                    None => {
                        aggregates
                            .remove((store, aggregate))
                            .map_err(|e| err(e.into()))?;
                        firsts
                            .remove((store, aggregate))
                            .map_err(|e| err(e.into()))?;
                    }
                    Some(run) => {
                        let at = timestamp(store, aggregate, &run)?;
                        aggregates
                            .insert((store, aggregate), (last, at))
                            .map_err(|e| err(e.into()))?;
                        by_initial
                            .insert((store, at, aggregate), ())
                            .map_err(|e| err(e.into()))?;
                        if run.first_version > 1 {
                            firsts
                                .insert((store, aggregate), run.first_version)
                                .map_err(|e| err(e.into()))?;
                        } else {
                            firsts
                                .remove((store, aggregate))
                                .map_err(|e| err(e.into()))?;
                        }
                    }
                }
            }
            let h = &rewrite.header;
            let mut segments = txn.open_table(SEGMENTS).map_err(|e| err(e.into()))?;
            segments
                .insert(id, (h.first_position, h.size))
                .map_err(|e| err(e.into()))?;
            let mut compacted = txn.open_table(COMPACTED).map_err(|e| err(e.into()))?;
            match h.compacted {
                Some(c) => compacted
                    .insert(id, (c.end_position, u64::from(c.generation)))
                    .map_err(|e| err(e.into()))?,
                None => compacted.remove(id).map_err(|e| err(e.into()))?,
            };
        }
        txn.commit().map_err(|e| err(e.into()))
    }
}
