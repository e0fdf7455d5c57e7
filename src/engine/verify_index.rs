//! The integrity check's index half: every checkpointed event's entry in the persisted index,
//! the index tables against the log, and the in-memory index of an open store.

use std::path::Path;

use redb::{ReadableTable, ReadableTableMetadata};

use super::handle::Engine;
use super::index::{AGGREGATES, BY_INITIAL, EVENTS, FIRST_VERSIONS, IndexReader, Location};
use super::verify::{Check, Problem, Scan, Unindexed};

impl Check {
    /// Checks the index entry of one checkpointed event.
    // redb's error is large; it is turned into a message at once, never propagated.
    #[allow(clippy::result_large_err)]
    pub(super) fn indexed(
        &mut self,
        reader: &IndexReader,
        file: &Path,
        key: (&str, &str, u64),
        loc: Location,
        scan: &mut Scan,
    ) {
        // redb asserts on some damaged pages: a panic is damage to report, never to propagate.
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reader
                .transaction()
                .open_table(EVENTS)
                .map_err(redb::Error::from)
                .and_then(|t| Ok(t.get(key)?.map(|v| v.value())))
        }))
        .unwrap_or_else(|_| Err(redb_failed()));
        let message = match found {
            Err(e) => format!("cannot read its index entry: {e}"),
            Ok(None) => "checkpointed event has no index entry".to_owned(),
            Ok(Some((position, segment_id, offset, len)))
                if (position, segment_id, offset, len)
                    == (loc.position, loc.segment_id, loc.offset, loc.len) =>
            {
                scan.matched += 1;
                return;
            }
            Ok(Some((position, segment_id, offset, len))) => format!(
                "index entry says position {position}, segment {segment_id}, offset {offset}, \
                 {len} bytes; the log has position {}, segment {}, {} bytes",
                loc.position, loc.segment_id, loc.len
            ),
        };
        self.event_problem(file, Some(loc.offset), key, message);
    }

    /// Checks that the index tables hold nothing but what the log up to the checkpoint
    /// implies. `matched` events were already found with exact entries.
    // redb's error is large; the caller turns it into a problem at once.
    #[allow(clippy::result_large_err)]
    pub(super) fn check_index_tables(
        &mut self,
        reader: &IndexReader,
        path: &Path,
        matched: u64,
    ) -> Result<(), redb::Error> {
        // redb asserts on some damaged pages: a panic is damage to report, never to propagate.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.check_index_tables_unguarded(reader, path, matched)
        }))
        .unwrap_or_else(|_| Err(redb_failed()))
    }

    #[allow(clippy::result_large_err)]
    fn check_index_tables_unguarded(
        &mut self,
        reader: &IndexReader,
        path: &Path,
        matched: u64,
    ) -> Result<(), redb::Error> {
        let txn = reader.transaction();
        let events = txn.open_table(EVENTS)?;
        self.report.index_entries = events.len()?;
        if self.report.index_entries != matched {
            // Some entry matches no checkpointed event: find which.
            for item in events.iter()? {
                let (key, value) = item?;
                let (store, aggregate, version) = key.value();
                let known = self
                    .aggregates
                    .get(&(store.to_owned(), aggregate.to_owned()))
                    .is_some_and(|a| version >= a.first.max(1) && version <= a.last_indexed);
                if !known {
                    let (position, segment_id, offset, _) = value.value();
                    self.event_problem(
                        path,
                        None,
                        (store, aggregate, version),
                        format!(
                            "index entry (position {position}, segment {segment_id}, offset \
                             {offset}) points at no checkpointed event of the log"
                        ),
                    );
                }
            }
        }
        let aggregates = txn.open_table(AGGREGATES)?;
        let by_initial = txn.open_table(BY_INITIAL)?;
        let mut expected_rows = 0u64;
        let mut problems = Vec::new();
        for ((store, aggregate), state) in &self.aggregates {
            if state.last_indexed == 0 {
                continue;
            }
            expected_rows += 1;
            let key = (store.clone(), aggregate.clone(), state.last_indexed);
            match aggregates.get((store.as_str(), aggregate.as_str()))? {
                None => problems.push((key.clone(), "no row in the aggregates table".into())),
                Some(v) if v.value() != (state.last_indexed, state.initial_ms) => {
                    let (last, initial) = v.value();
                    problems.push((
                        key.clone(),
                        format!(
                            "aggregates row says last version {last}, initial timestamp \
                             {initial}; the log says {}, {}",
                            state.last_indexed, state.initial_ms
                        ),
                    ));
                }
                Some(_) => {}
            }
            let row = (store.as_str(), state.initial_ms, aggregate.as_str());
            if by_initial.get(row)?.is_none() {
                problems.push((key, "no row in the by_initial_event table".to_owned()));
            }
        }
        // The first version of every aggregate a compaction shortened, and of no other.
        let firsts = match txn.open_table(FIRST_VERSIONS) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut first_rows = 0u64;
        for ((store, aggregate), state) in &self.aggregates {
            if state.last_indexed == 0 {
                continue;
            }
            let row = match &firsts {
                Some(table) => table
                    .get((store.as_str(), aggregate.as_str()))?
                    .map(|v| v.value()),
                None => None,
            };
            first_rows += u64::from(row.is_some());
            let expected = (state.first > 1).then_some(state.first);
            if row != expected {
                let key = (store.clone(), aggregate.clone(), state.first);
                problems.push((
                    key,
                    format!(
                        "first_versions row says {row:?}; the log's first version is {}",
                        state.first
                    ),
                ));
            }
        }
        if let Some(table) = &firsts
            && table.len()? != first_rows
        {
            for item in table.iter()? {
                let (key, _) = item?;
                let (store, aggregate) = key.value();
                if !self.indexed_aggregate(store, aggregate, None) {
                    problems.push((
                        (store.to_owned(), aggregate.to_owned(), 0),
                        "first_versions row for an aggregate with no checkpointed events".into(),
                    ));
                }
            }
        }
        for ((store, aggregate, version), message) in problems {
            self.event_problem(path, None, (&store, &aggregate, version), message);
        }
        let mut extra = Vec::new();
        if aggregates.len()? != expected_rows {
            for item in aggregates.iter()? {
                let (key, _) = item?;
                let (store, aggregate) = key.value();
                if !self.indexed_aggregate(store, aggregate, None) {
                    extra.push((store.to_owned(), aggregate.to_owned(), "aggregates"));
                }
            }
        }
        if by_initial.len()? != expected_rows {
            for item in by_initial.iter()? {
                let (key, _) = item?;
                let (store, initial, aggregate) = key.value();
                if !self.indexed_aggregate(store, aggregate, Some(initial)) {
                    extra.push((store.to_owned(), aggregate.to_owned(), "by_initial_event"));
                }
            }
        }
        for (store, aggregate, table) in extra {
            self.report.problems.push(Problem {
                file: path.to_owned(),
                offset: None,
                store: Some(store),
                aggregate: Some(aggregate),
                version: None,
                message: format!("{table} row for an aggregate with no checkpointed events"),
            });
        }
        Ok(())
    }

    fn indexed_aggregate(&self, store: &str, aggregate: &str, initial: Option<i64>) -> bool {
        self.aggregates
            .get(&(store.to_owned(), aggregate.to_owned()))
            .is_some_and(|a| a.last_indexed > 0 && initial.is_none_or(|t| t == a.initial_ms))
    }

    /// Looks the events past the checkpoint up through the engine's read path.
    pub(super) fn check_unindexed(&mut self, engine: &Engine, unindexed: Unindexed) {
        for ((store, aggregate), events) in unindexed {
            let (Some(min), Some(max)) = (events.first(), events.last()) else {
                continue;
            };
            let file = engine.shared.index_path.clone();
            let found = match engine.locations(&store, &aggregate, min.0, max.0) {
                Ok(found) => found,
                Err(e) => {
                    let key = (store.as_str(), aggregate.as_str(), min.0);
                    self.event_problem(&file, None, key, format!("lookup failed: {e}"));
                    continue;
                }
            };
            if found != events {
                let key = (store.as_str(), aggregate.as_str(), min.0);
                self.event_problem(
                    &file,
                    None,
                    key,
                    format!(
                        "the in-memory index disagrees with the log for versions {}..={}",
                        min.0, max.0
                    ),
                );
            }
        }
    }
}

/// What a panic inside redb while reading the index is reported as.
fn redb_failed() -> redb::Error {
    redb::Error::Corrupted("the index database is damaged (redb failed while reading it)".into())
}
