//! The persisted tier of the index: [`Index`], a redb database (`index.redb`) with one row per
//! run, the latest version and initial timestamp of every aggregate, aggregates ordered by
//! initial timestamp, the segment headers it covers, and the checkpoint.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::super::error::EngineError;
use super::super::io::{RedbBackend, StoreFile};
use super::super::segment::{Compacted, SegmentHeader};
use super::memtable::{MemTable, Tail};
use super::run::Cursor;

/// (store, aggregate, first version) → (first position, segment id, offset, entry lengths as
/// u32 little-endian each): one row per [`Run`](super::Run).
pub(super) type RunKey = (&'static str, &'static str, u64);
pub(super) type RunValue = (u64, u64, u64, &'static [u8]);
pub(super) type RunsTable<'a> = TableDefinition<'a, RunKey, RunValue>;
pub(super) const RUNS: RunsTable<'static> = TableDefinition::new("runs");
pub(crate) const AGGREGATES: TableDefinition<(&str, &str), (u64, i64)> =
    TableDefinition::new("aggregates");
pub(crate) const BY_INITIAL: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("by_initial_event");
/// Segment id → (first position, size): the headers of segments the index covers, so opening
/// a store need not read them (see [`Segment::lazy`](super::super::segment::Segment::lazy)).
pub(super) const SEGMENTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("segments");
/// Segment id → (end position, generation): what the header of a compacted segment adds to
/// its `segments` row (see [`Compacted`]). Created by the first compaction; a missing table
/// reads as empty, so indexes written before compaction existed open unchanged.
pub(crate) const COMPACTED: TableDefinition<u64, (u64, u64)> =
    TableDefinition::new("compacted_segments");
/// (store, aggregate) → the first version the log still holds, for aggregates whose earlier
/// versions compaction removed (no row: the aggregate starts at version 1). Created on first
/// use, like [`COMPACTED`].
pub(crate) const FIRST_VERSIONS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("first_versions");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Sorts after every valid aggregate id of at most 256 bytes.
pub(super) const MAX_ID: &str = concat!(
    "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}",
    "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}",
    "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}",
    "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}",
    "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}",
    "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}",
    "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}",
    "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}",
    "\u{10FFFF}",
);
pub(super) const CHECKPOINT_KEY: &str = "checkpoint";
/// Where the log ended when the store was closed cleanly (see [`Index::clean_end`]).
pub(super) const CLEAN_END_KEY: &str = "clean_end";
pub(super) const FORMAT_KEY: &str = "format";
/// The index layout this code writes. Version 1 had one `events` row per event; an index of
/// another version is rebuilt from the log.
pub const INDEX_FORMAT_VERSION: u32 = 2;

/// The persisted index (redb).
pub struct Index {
    /// Always `Some` until dropped (see the `Drop` impl).
    db: Option<redb::Database>,
    pub(super) path: Arc<Path>,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        // redb's own drop can assert on a damaged file it opened; the index is derived data,
        // so that must not take the process (or a closing engine) down.
        if let Some(db) = self.db.take() {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(db)));
        }
    }
}

/// Runs `f`, turning a panic inside redb (it asserts on some damaged pages, e.g. a bad length
/// in a variable-width value) into corruption of the index file, which is derived data.
pub(super) fn contained<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(EngineError::corruption(
            path.to_owned(),
            0,
            "the index database is damaged (redb failed while reading it)",
        ))
    })
}

/// Wraps an error of redb. redb passes the storage backend's I/O errors through, so a full
/// disk stays recognisable as [`EngineError::StorageFull`] (see `checkpoint_loop`).
pub(super) fn index_error(operation: &'static str, path: &Path, e: redb::Error) -> EngineError {
    match e {
        redb::Error::Io(source) => EngineError::io(operation, path, source),
        e => EngineError::index(operation, path, e),
    }
}

/// [`contained`] for the integrity check's table views, which speak redb's error type.
pub(super) fn contained_redb<T>(
    f: impl FnOnce() -> Result<T, redb::StorageError>,
) -> Result<T, redb::StorageError> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(redb::StorageError::Corrupted(
            "the index database is damaged (redb failed while reading it)".into(),
        ))
    })
}

impl Index {
    pub(super) fn db(&self) -> &redb::Database {
        self.db
            .as_ref()
            .expect("the database is present until the index is dropped")
    }

    /// Opens (or creates) the index in `file`. Fails if it is unreadable or of another
    /// format; the caller then rebuilds it.
    pub fn open(
        file: Arc<dyn StoreFile>,
        path: &Path,
        cache_bytes: usize,
    ) -> Result<Self, EngineError> {
        // redb asserts on some damaged files (say, a file shorter than its header's layout
        // after a crash lost a size change), while opening them or in the first commit (`init`
        // below). The index is derived data, so a damaged one is reported as corrupt and
        // rebuilt from the log rather than allowed to panic the caller.
        let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let db = redb::Database::builder()
                .set_cache_size(cache_bytes)
                .create_with_backend(RedbBackend(file))
                .map_err(|e| match e {
                    redb::DatabaseError::UpgradeRequired(found) => {
                        EngineError::FormatUpgradeRequired {
                            path: path.to_owned(),
                            found,
                        }
                    }
                    e => index_error("open index", path, e.into()),
                })?;
            let index = Index {
                db: Some(db),
                path: Arc::from(path),
            };
            index.init()?;
            Ok(index)
        }));
        opened.unwrap_or_else(|_| {
            Err(EngineError::corruption(
                path.to_owned(),
                0,
                "the index database is damaged (redb refused to open it)",
            ))
        })
    }

    pub(super) fn err(&self, operation: &'static str) -> impl Fn(redb::Error) -> EngineError + '_ {
        move |e| index_error(operation, &self.path, e)
    }

    fn init(&self) -> Result<(), EngineError> {
        // An index already in this format needs no write (a commit costs a sync at every open).
        if self.initialised()? {
            return Ok(());
        }
        let err = self.err("initialise index");
        let txn = self.db().begin_write().map_err(|e| err(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let format = meta
                .get(FORMAT_KEY)
                .map_err(|e| err(e.into()))?
                .map(|v| v.value().to_vec());
            match format {
                None => {
                    meta.insert(FORMAT_KEY, INDEX_FORMAT_VERSION.to_le_bytes().as_slice())
                        .map_err(|e| err(e.into()))?;
                }
                Some(v) if v == INDEX_FORMAT_VERSION.to_le_bytes() => {}
                Some(_) => {
                    return Err(EngineError::corruption(
                        self.path.to_path_buf(),
                        0,
                        "unknown index format version",
                    ));
                }
            }
            txn.open_table(RUNS).map_err(|e| err(e.into()))?;
            txn.open_table(SEGMENTS).map_err(|e| err(e.into()))?;
            txn.open_table(AGGREGATES).map_err(|e| err(e.into()))?;
            txn.open_table(BY_INITIAL).map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))
    }

    /// Whether every table exists and the format is this code's; `false` when something is
    /// missing (`init` then creates it, or refuses another format).
    fn initialised(&self) -> Result<bool, EngineError> {
        let err = self.err("initialise index");
        let txn = self.db().begin_read().map_err(|e| err(e.into()))?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(err(e.into())),
        };
        let format = meta.get(FORMAT_KEY).map_err(|e| err(e.into()))?;
        if format.is_none_or(|v| v.value() != INDEX_FORMAT_VERSION.to_le_bytes()) {
            return Ok(false);
        }
        let tables = [
            txn.open_table(RUNS).map(drop),
            txn.open_table(SEGMENTS).map(drop),
            txn.open_table(AGGREGATES).map(drop),
            txn.open_table(BY_INITIAL).map(drop),
        ];
        for table in tables {
            match table {
                Ok(()) => {}
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
                Err(e) => return Err(err(e.into())),
            }
        }
        Ok(true)
    }

    /// The log position up to which the index is complete (`None`: nothing indexed yet).
    pub fn checkpoint(&self) -> Result<Option<Cursor>, EngineError> {
        contained(&self.path, || {
            let err = self.err("read index checkpoint");
            let txn = self.db().begin_read().map_err(|e| err(e.into()))?;
            let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let Some(value) = meta.get(CHECKPOINT_KEY).map_err(|e| err(e.into()))? else {
                return Ok(None);
            };
            Cursor::decode(value.value()).map(Some).ok_or_else(|| {
                EngineError::corruption(self.path.to_path_buf(), 0, "malformed checkpoint record")
            })
        })
    }

    /// Where the log ended when the store was last closed cleanly — every frame synced and
    /// indexed — if no open for writing has happened since. Recovery then knows that nothing
    /// lies after the end of data and skips checking the rest of the last segment for zeros.
    pub fn clean_end(&self) -> Result<Option<Cursor>, EngineError> {
        contained(&self.path, || {
            let err = self.err("read clean-close mark");
            let txn = self.db().begin_read().map_err(|e| err(e.into()))?;
            let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            let value = meta.get(CLEAN_END_KEY).map_err(|e| err(e.into()))?;
            Ok(value.and_then(|v| Cursor::decode(v.value())))
        })
    }

    /// Records (`Some`) or removes (`None`) the clean-close mark, durably.
    pub fn set_clean_end(&self, end: Option<Cursor>) -> Result<(), EngineError> {
        contained(&self.path, || {
            let err = self.err("write clean-close mark");
            let txn = self.db().begin_write().map_err(|e| err(e.into()))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
                match end {
                    Some(end) => meta.insert(CLEAN_END_KEY, end.encode().as_slice()),
                    None => meta.remove(CLEAN_END_KEY),
                }
                .map_err(|e| err(e.into()))?;
            }
            txn.commit().map_err(|e| err(e.into()))
        })
    }

    /// Writes a frozen memtable and its end as the new checkpoint, durably, in one transaction,
    /// with the headers of the segments up to the checkpoint's (those not yet recorded).
    pub fn apply(&self, mem: &MemTable, segments: &[SegmentHeader]) -> Result<(), EngineError> {
        // redb asserts on some damaged files it nevertheless opened; contain that as
        // corruption of this derived file rather than a dead checkpointer thread.
        std::panic::catch_unwind(AssertUnwindSafe(|| self.apply_unguarded(mem, segments)))
            .unwrap_or_else(|_| {
                Err(EngineError::corruption(
                    self.path.to_path_buf(),
                    0,
                    "the index database is damaged (redb failed while writing it)",
                ))
            })
    }

    fn apply_unguarded(
        &self,
        mem: &MemTable,
        segments: &[SegmentHeader],
    ) -> Result<(), EngineError> {
        let err = self.err("write index checkpoint");
        let mut txn = self.db().begin_write().map_err(|e| err(e.into()))?;
        txn.set_quick_repair(true);
        {
            let mut runs = txn.open_table(RUNS).map_err(|e| err(e.into()))?;
            let mut aggregates = txn.open_table(AGGREGATES).map_err(|e| err(e.into()))?;
            let mut by_initial = txn.open_table(BY_INITIAL).map_err(|e| err(e.into()))?;
            // In key order: neighbouring inserts then touch the same B-tree pages.
            let mut tails: Vec<(&str, &str, &Tail)> = mem
                .stores
                .iter()
                .flat_map(|(s, tails)| tails.iter().map(move |(a, t)| (s.as_str(), a.as_str(), t)))
                .collect();
            tails.sort_unstable_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
            let mut lens = Vec::new();
            for (store, aggregate, tail) in tails {
                for run in tail.runs() {
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
                let known = aggregates
                    .get((store, aggregate))
                    .map_err(|e| err(e.into()))?
                    .map(|v| v.value().1);
                // An aggregate first met past version 1 while the log is replayed from its
                // start, after a compacted segment: its earlier versions were removed, and
                // it starts (for listings too) at its first surviving event.
                let starts_compacted =
                    known.is_none() && tail.initial_timestamp_ms.is_none() && mem.allow_floors;
                let initial = match (tail.initial_timestamp_ms, known) {
                    (Some(t), _) => t,
                    (None, Some(t)) => t,
                    (None, None) if starts_compacted => tail.first_timestamp_ms,
                    (None, None) => {
                        return Err(EngineError::corruption(
                            self.path.to_path_buf(),
                            0,
                            format!(
                                "aggregate {aggregate:?} of store {store:?} continues but has \
                                 no indexed start"
                            ),
                        ));
                    }
                };
                aggregates
                    .insert((store, aggregate), (tail.last_version(), initial))
                    .map_err(|e| err(e.into()))?;
                if starts_compacted {
                    let mut firsts = txn.open_table(FIRST_VERSIONS).map_err(|e| err(e.into()))?;
                    firsts
                        .insert((store, aggregate), tail.first_version)
                        .map_err(|e| err(e.into()))?;
                }
                if tail.initial_timestamp_ms.is_some() || starts_compacted {
                    by_initial
                        .insert((store, initial, aggregate), ())
                        .map_err(|e| err(e.into()))?;
                }
            }
            let mut recorded = txn.open_table(SEGMENTS).map_err(|e| err(e.into()))?;
            let known = recorded
                .last()
                .map_err(|e| err(e.into()))?
                .map_or(0, |(id, _)| id.value());
            for h in segments
                .iter()
                .filter(|h| h.segment_id > known && h.segment_id <= mem.end.segment_id)
            {
                recorded
                    .insert(h.segment_id, (h.first_position, h.size))
                    .map_err(|e| err(e.into()))?;
                if let Some(c) = h.compacted {
                    // An index rebuilt over a compacted segment records what its header adds.
                    let mut compacted = txn.open_table(COMPACTED).map_err(|e| err(e.into()))?;
                    compacted
                        .insert(h.segment_id, (c.end_position, u64::from(c.generation)))
                        .map_err(|e| err(e.into()))?;
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert(CHECKPOINT_KEY, mem.end.encode().as_slice())
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))
    }

    /// The segment headers recorded by checkpoints, ascending by id.
    pub fn segment_headers(&self) -> Result<Vec<SegmentHeader>, EngineError> {
        contained(&self.path, || self.segment_headers_unguarded())
    }

    fn segment_headers_unguarded(&self) -> Result<Vec<SegmentHeader>, EngineError> {
        let err = self.err("read index segments");
        let txn = self.db().begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(SEGMENTS).map_err(|e| err(e.into()))?;
        let mut compacted = std::collections::HashMap::new();
        match txn.open_table(COMPACTED) {
            Ok(rows) => {
                for item in rows.iter().map_err(|e| err(e.into()))? {
                    let (id, value) = item.map_err(|e| err(e.into()))?;
                    compacted.insert(id.value(), value.value());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(err(e.into())),
        }
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| err(e.into()))? {
            let (id, value) = item.map_err(|e| err(e.into()))?;
            let (first_position, size) = value.value();
            let compacted = match compacted.remove(&id.value()) {
                None => None,
                Some((end_position, generation)) => Some(Compacted {
                    end_position,
                    generation: u32::try_from(generation).map_err(|_| {
                        EngineError::corruption(
                            self.path.to_path_buf(),
                            0,
                            "a compacted segment's generation is out of range",
                        )
                    })?,
                }),
            };
            out.push(SegmentHeader {
                segment_id: id.value(),
                first_position,
                size,
                compacted,
            });
        }
        if let Some(id) = compacted.keys().next() {
            return Err(EngineError::corruption(
                self.path.to_path_buf(),
                0,
                format!("compacted segment {id} has no recorded header"),
            ));
        }
        Ok(out)
    }

    /// Whether any event is indexed.
    pub fn holds_events(&self) -> Result<bool, EngineError> {
        contained(&self.path, || self.holds_events_unguarded())
    }

    fn holds_events_unguarded(&self) -> Result<bool, EngineError> {
        let err = self.err("count index entries");
        let txn = self.db().begin_read().map_err(|e| err(e.into()))?;
        let runs = txn.open_table(RUNS).map_err(|e| err(e.into()))?;
        Ok(!runs.is_empty().map_err(|e| err(e.into()))?)
    }
}
