//! The per-event view of the index that the integrity check reads: [`IndexTables`] opens the
//! plain tables, or [`EVENTS`], the run table seen as one row per event.

use redb::{ReadableTable, TableDefinition};

use super::run::{Location, Run};
use super::tables::{RUNS, RunKey, RunValue, contained_redb};

/// The index tables as the integrity check reads them: `open_table` takes
/// [`AGGREGATES`](super::AGGREGATES) and [`BY_INITIAL`](super::BY_INITIAL) (plain redb tables)
/// or [`EVENTS`], a per-event view of the run table that
/// answers with one row per event, so the check compares the index with the log event by
/// event whatever the layout on disk.
pub(crate) struct IndexTables<'a> {
    pub(super) txn: &'a redb::ReadTransaction,
}

impl IndexTables<'_> {
    /// Opens one table (see [`TableSpec`]).
    // redb's error is large; callers turn it into a message at once.
    #[allow(clippy::result_large_err)]
    pub(crate) fn open_table<T: TableSpec>(&self, spec: T) -> Result<T::Table, redb::TableError> {
        spec.open(self.txn)
    }
}

/// A table [`IndexTables::open_table`] can open.
pub(crate) trait TableSpec {
    /// The open table.
    type Table;
    /// Opens it in `txn`.
    #[allow(clippy::result_large_err)]
    fn open(self, txn: &redb::ReadTransaction) -> Result<Self::Table, redb::TableError>;
}

impl<K: redb::Key + 'static, V: redb::Value + 'static> TableSpec for TableDefinition<'_, K, V> {
    type Table = redb::ReadOnlyTable<K, V>;
    fn open(self, txn: &redb::ReadTransaction) -> Result<Self::Table, redb::TableError> {
        txn.open_table(self)
    }
}

/// The per-event view of the run table: (store, aggregate, version) → (position, segment id,
/// offset, length).
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventsView;

/// Every indexed event, one row each (see [`IndexTables`]).
pub(crate) const EVENTS: EventsView = EventsView;

impl TableSpec for EventsView {
    type Table = EventRows;
    fn open(self, txn: &redb::ReadTransaction) -> Result<EventRows, redb::TableError> {
        Ok(EventRows {
            runs: txn.open_table(RUNS)?,
        })
    }
}

/// The open per-event view (see [`EVENTS`]).
pub(crate) struct EventRows {
    runs: redb::ReadOnlyTable<RunKey, RunValue>,
}

/// One event's row in [`EventRows`]: where it lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventRow(Location);

impl EventRow {
    /// (position, segment id, offset, length).
    pub(crate) fn value(&self) -> (u64, u64, u64, u32) {
        (
            self.0.position,
            self.0.segment_id,
            self.0.offset,
            self.0.len,
        )
    }
}

/// One event's key in [`EventRows`].
#[derive(Clone, Debug)]
pub(crate) struct EventKey {
    store: String,
    aggregate: String,
    version: u64,
}

impl EventKey {
    /// (store, aggregate, version).
    pub(crate) fn value(&self) -> (&str, &str, u64) {
        (&self.store, &self.aggregate, self.version)
    }
}

/// A malformed run row, as redb reports unreadable values.
fn malformed_run(key: (&str, &str, u64)) -> redb::StorageError {
    redb::StorageError::Corrupted(format!("malformed index run {key:?}"))
}

impl EventRows {
    /// The row of one event.
    pub(crate) fn get(
        &self,
        key: (&str, &str, u64),
    ) -> Result<Option<EventRow>, redb::StorageError> {
        contained_redb(|| {
            let (store, aggregate, version) = key;
            let Some(item) = self
                .runs
                .range((store, aggregate, 0)..=(store, aggregate, version))?
                .next_back()
            else {
                return Ok(None);
            };
            let (k, v) = item?;
            let run =
                Run::decode(k.value().2, v.value()).ok_or_else(|| malformed_run(k.value()))?;
            Ok(run
                .slice(version, version)
                .and_then(|r| r.locations().next())
                .map(|(_, loc)| EventRow(loc)))
        })
    }

    /// Number of events indexed.
    pub(crate) fn len(&self) -> Result<u64, redb::StorageError> {
        contained_redb(|| {
            let mut events = 0;
            for item in self.runs.iter()? {
                let (_, v) = item?;
                events += (v.value().3.len() / 4) as u64;
            }
            Ok(events)
        })
    }

    /// Every event's row, in key order.
    pub(crate) fn iter(
        &self,
    ) -> Result<
        impl Iterator<Item = Result<(EventKey, EventRow), redb::StorageError>>,
        redb::StorageError,
    > {
        let rows = contained_redb(|| {
            let mut rows = Vec::new();
            for item in self.runs.iter()? {
                let (k, v) = item?;
                let (store, aggregate, first) = k.value();
                let run = Run::decode(first, v.value()).ok_or_else(|| malformed_run(k.value()))?;
                for (version, loc) in run.locations() {
                    let key = EventKey {
                        store: store.to_owned(),
                        aggregate: aggregate.to_owned(),
                        version,
                    };
                    rows.push((key, EventRow(loc)));
                }
            }
            Ok(rows)
        })?;
        Ok(rows.into_iter().map(Ok))
    }
}
