//! [`IndexReader`]: a consistent read view of the persisted index — an aggregate's runs and
//! latest version, and its listings by initial timestamp, each checked against what the index
//! keeps apart from it.

use std::ops::Bound;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use super::super::error::EngineError;
use super::event_rows::IndexTables;
use super::run::{Cursor, Run};
use super::tables::{
    AGGREGATES, BY_INITIAL, CHECKPOINT_KEY, COMPACTED, FIRST_VERSIONS, Index, MAX_ID, META, RUNS,
    contained, index_error,
};

impl Index {
    /// A consistent read view.
    pub fn reader(self: &Arc<Self>) -> Result<IndexReader, EngineError> {
        contained(&self.path, || {
            let txn = self
                .db()
                .begin_read()
                .map_err(|e| self.err("read index")(e.into()))?;
            Ok(IndexReader {
                txn,
                index: Arc::clone(self),
            })
        })
    }
}

/// A read transaction on the index.
pub struct IndexReader {
    // Field order matters: the transaction ends before the handle is released.
    txn: redb::ReadTransaction,
    index: Arc<Index>,
}

impl IndexReader {
    /// The index tables as the integrity check (`verify`) reads them (see [`IndexTables`]).
    pub(crate) fn transaction(&self) -> IndexTables<'_> {
        IndexTables { txn: &self.txn }
    }

    /// The checkpoint as of this read view (`None`: nothing indexed yet).
    pub(crate) fn checkpoint(&self) -> Result<Option<Cursor>, EngineError> {
        contained(&self.index.path, || {
            let err = self.err("read index checkpoint");
            let meta = self.txn.open_table(META).map_err(|e| err(e.into()))?;
            let Some(value) = meta.get(CHECKPOINT_KEY).map_err(|e| err(e.into()))? else {
                return Ok(None);
            };
            Cursor::decode(value.value()).map(Some).ok_or_else(|| {
                EngineError::corruption(
                    self.index.path.to_path_buf(),
                    0,
                    "malformed checkpoint record",
                )
            })
        })
    }

    fn err(&self, operation: &'static str) -> impl Fn(redb::Error) -> EngineError + '_ {
        move |e| index_error(operation, &self.index.path, e)
    }

    /// Calls `visit` with every indexed aggregate and its latest version, in (store,
    /// aggregate) order.
    pub fn visit_aggregates(
        &self,
        visit: &mut dyn FnMut(&str, &str, u64),
    ) -> Result<(), EngineError> {
        contained(&self.index.path, || {
            let err = self.err("read index");
            let table = self.txn.open_table(AGGREGATES).map_err(|e| err(e.into()))?;
            for item in table.iter().map_err(|e| err(e.into()))? {
                let (key, value) = item.map_err(|e| err(e.into()))?;
                let (store, aggregate) = key.value();
                visit(store, aggregate, value.value().0);
            }
            Ok(())
        })
    }

    /// The latest indexed version of an aggregate.
    pub fn last_version(&self, store: &str, aggregate: &str) -> Result<Option<u64>, EngineError> {
        contained(&self.index.path, || {
            let err = self.err("read index");
            let table = self.txn.open_table(AGGREGATES).map_err(|e| err(e.into()))?;
            Ok(table
                .get((store, aggregate))
                .map_err(|e| err(e.into()))?
                .map(|v| v.value().0))
        })
    }

    /// The first version of an aggregate the log still holds, when compaction removed the
    /// ones before it (`None`: it starts at version 1, or is unknown).
    pub fn first_version(&self, store: &str, aggregate: &str) -> Result<Option<u64>, EngineError> {
        contained(&self.index.path, || {
            let err = self.err("read index");
            let table = match self.txn.open_table(FIRST_VERSIONS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(err(e.into())),
            };
            Ok(table
                .get((store, aggregate))
                .map_err(|e| err(e.into()))?
                .map(|v| v.value()))
        })
    }

    /// The generation this view of the index records for segment `id` (0: never compacted).
    pub fn segment_generation(&self, id: u64) -> Result<u32, EngineError> {
        contained(&self.index.path, || {
            let err = self.err("read index");
            let table = match self.txn.open_table(COMPACTED) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(err(e.into())),
            };
            let generation = table.get(id).map_err(|e| err(e.into()))?;
            Ok(generation.map_or(0, |g| u32::try_from(g.value().1).unwrap_or(u32::MAX)))
        })
    }

    /// Calls `visit` with the store and first version of every aggregate whose earlier
    /// versions a compaction removed.
    pub fn visit_first_versions(
        &self,
        visit: &mut dyn FnMut(&str, u64),
    ) -> Result<(), EngineError> {
        contained(&self.index.path, || {
            let err = self.err("read index");
            let table = match self.txn.open_table(FIRST_VERSIONS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(err(e.into())),
            };
            for item in table.iter().map_err(|e| err(e.into()))? {
                let (key, value) = item.map_err(|e| err(e.into()))?;
                visit(key.value().0, value.value());
            }
            Ok(())
        })
    }

    /// The runs holding versions `min..=max` of an aggregate, cut to that range, ascending.
    pub fn runs(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
    ) -> Result<Vec<Run>, EngineError> {
        contained(&self.index.path, || {
            self.runs_unguarded(store, aggregate, min, max)
        })
    }

    fn runs_unguarded(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
    ) -> Result<Vec<Run>, EngineError> {
        let err = self.err("read index");
        if min > max {
            return Ok(Vec::new());
        }
        let table = self.txn.open_table(RUNS).map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        // The run holding `min` starts at or before it: the last row at or below it.
        let mut next = min;
        if min > 1 {
            let mut before = table
                .range((store, aggregate, 0)..=(store, aggregate, min))
                .map_err(|e| err(e.into()))?;
            if let Some(item) = before.next_back() {
                let (key, value) = item.map_err(|e| err(e.into()))?;
                let run = self.decode_run(key.value(), value.value())?;
                if let Some(part) = run.slice(min, max) {
                    out.push(part);
                }
                next = min + 1;
            }
        }
        if next > max {
            return Ok(out);
        }
        let range = table
            .range((store, aggregate, next)..=(store, aggregate, max))
            .map_err(|e| err(e.into()))?;
        for item in range {
            let (key, value) = item.map_err(|e| err(e.into()))?;
            let run = self.decode_run(key.value(), value.value())?;
            out.extend(run.slice(min, max));
        }
        Ok(out)
    }

    fn decode_run(
        &self,
        key: (&str, &str, u64),
        value: (u64, u64, u64, &[u8]),
    ) -> Result<Run, EngineError> {
        Run::decode(key.2, value).ok_or_else(|| {
            EngineError::corruption(
                self.index.path.to_path_buf(),
                0,
                format!("malformed index run {key:?}"),
            )
        })
    }

    /// Aggregates of `store` with initial timestamp in `after..=before`, in (timestamp, id)
    /// order (descending when `reverse`), strictly beyond `cursor`, at most `limit`.
    pub fn aggregates_by_initial(
        &self,
        store: &str,
        after: Option<i64>,
        before: Option<i64>,
        reverse: bool,
        cursor: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, EngineError> {
        // A damaged key can make redb panic while it decodes it: that is corruption too.
        contained(&self.index.path, || {
            let err = self.err("read index");
            let table = self.txn.open_table(BY_INITIAL).map_err(|e| err(e.into()))?;
            let lo = after.unwrap_or(i64::MIN);
            let hi = before.unwrap_or(i64::MAX);
            if lo > hi {
                return Ok(Vec::new());
            }
            // Bounds of the scan: the timestamp window, narrowed by the cursor in the scan
            // direction so that paging never rescans earlier pages.
            let mut lower = Bound::Included((store, lo, ""));
            let mut upper = match hi.checked_add(1) {
                Some(next) => Bound::Excluded((store, next, "")),
                None => Bound::Included((store, i64::MAX, MAX_ID)),
            };
            if let Some((t, id)) = cursor {
                if reverse {
                    if (t, id) <= (hi, MAX_ID) {
                        upper = Bound::Excluded((store, t, id));
                    }
                } else if (t, id) >= (lo, "") {
                    lower = Bound::Excluded((store, t, id));
                }
            }
            let range = table.range((lower, upper)).map_err(|e| err(e.into()))?;
            if limit == 0 {
                return Ok(Vec::new());
            }
            let mut out: Vec<(i64, String)> = Vec::new();
            let items: Box<dyn Iterator<Item = _>> = if reverse {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for item in items {
                let (key, _) = item.map_err(|e| err(e.into()))?;
                let (_, t, id) = key.value();
                out.push((t, id.to_owned()));
                if out.len() >= limit {
                    break;
                }
            }
            let whole_store = out.len() < limit && after.is_none() && before.is_none();
            self.check_listing(store, &out, whole_store)?;
            Ok(out)
        })
    }

    /// Checks a listing against the aggregates table, which the index keeps apart from the
    /// listing's own table. redb checksums its pages only when it recovers a file, so a damaged
    /// key of the listing table can still decode: listed under another timestamp or id, or
    /// under another store (then missing from its own). Every listed aggregate must exist with
    /// the listed initial timestamp; and a listing that ran to the end of an unbounded scan
    /// counts the store's rows in both tables, which must agree. A mismatch is `Corruption`,
    /// never a different listing.
    fn check_listing(
        &self,
        store: &str,
        listed: &[(i64, String)],
        whole_store: bool,
    ) -> Result<(), EngineError> {
        let err = self.err("read index");
        let aggregates = self.txn.open_table(AGGREGATES).map_err(|e| err(e.into()))?;
        for (t, id) in listed {
            let initial = aggregates
                .get((store, id.as_str()))
                .map_err(|e| err(e.into()))?
                .map(|v| v.value().1);
            if initial != Some(*t) {
                return Err(self.listing_damaged(format!(
                    "the index lists {store:?}/{id:?} with initial timestamp {t}, but its \
                     aggregates table holds {initial:?}"
                )));
            }
        }
        if whole_store {
            let by_initial = self.txn.open_table(BY_INITIAL).map_err(|e| err(e.into()))?;
            let listed = by_initial
                .range((store, i64::MIN, "")..=(store, i64::MAX, MAX_ID))
                .map_err(|e| err(e.into()))?
                .count();
            let known = aggregates
                .range((store, "")..=(store, MAX_ID))
                .map_err(|e| err(e.into()))?
                .count();
            if listed != known {
                return Err(self.listing_damaged(format!(
                    "the index lists {listed} aggregates of {store:?}, but its aggregates table \
                     holds {known}"
                )));
            }
        }
        Ok(())
    }

    fn listing_damaged(&self, reason: String) -> EngineError {
        EngineError::corruption(self.index.path.to_path_buf(), 0, reason)
    }
}
