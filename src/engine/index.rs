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

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::error::EngineError;
use super::io::{RedbBackend, StoreFile};
use super::segment::SegmentHeader;

/// Where one event's entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Global position of the event.
    pub position: u64,
    /// Segment holding it.
    pub segment_id: u64,
    /// Offset of the entry in the segment.
    pub offset: u64,
    /// Length of the entry.
    pub len: u32,
}

/// A point in the log: the next frame goes to `offset` of `segment_id` and gets
/// `next_position`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Segment of the next frame (0: no segment yet).
    pub segment_id: u64,
    /// Offset of the next frame in it.
    pub offset: u64,
    /// Global position of the next event.
    pub next_position: u64,
}

impl Cursor {
    fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.segment_id.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.next_position.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 24 {
            return None;
        }
        let at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Some(Cursor {
            segment_id: at(0),
            offset: at(8),
            next_position: at(16),
        })
    }
}

/// The start of a run; its versions run up to the next run's first version (or the tail's
/// last version), and entry lengths live in the tail's `lens`.
#[derive(Clone, Copy, Debug)]
struct RunHead {
    first_version: u64,
    first_position: u64,
    segment_id: u64,
    offset: u64,
    /// Offset just past the run's last entry.
    end: u64,
}

/// A run: consecutive versions of one aggregate whose entries lie back to back in one segment
/// with consecutive positions (the events of one aggregate in one commit, typically). One
/// read fetches a whole run, and the persisted index holds one row per run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Version of the first event.
    pub first_version: u64,
    /// Global position of the first event; event *i* has `first_position + i`.
    pub first_position: u64,
    /// Segment holding the run.
    pub segment_id: u64,
    /// Offset of the first entry in the segment; entry *i* follows entry *i - 1*.
    pub offset: u64,
    /// Length of each entry, in version order (never empty).
    pub lens: Vec<u32>,
}

impl Run {
    /// The latest version in the run.
    pub fn last_version(&self) -> u64 {
        self.first_version + self.lens.len() as u64 - 1
    }

    /// Offset just past the run's last entry.
    pub fn end(&self) -> u64 {
        self.offset + self.lens.iter().map(|&l| u64::from(l)).sum::<u64>()
    }

    /// Each event of the run with its location, ascending by version.
    pub fn locations(&self) -> impl Iterator<Item = (u64, Location)> + '_ {
        let mut offset = self.offset;
        self.lens.iter().enumerate().map(move |(i, &len)| {
            let loc = Location {
                position: self.first_position + i as u64,
                segment_id: self.segment_id,
                offset,
                len,
            };
            offset += u64::from(len);
            (self.first_version + i as u64, loc)
        })
    }

    /// The part of the run with versions in `lo..=hi`, or `None` when they do not meet.
    pub fn slice(&self, lo: u64, hi: u64) -> Option<Run> {
        let lo = lo.max(self.first_version);
        let hi = hi.min(self.last_version());
        if lo > hi {
            return None;
        }
        let skip = (lo - self.first_version) as usize;
        let take = (hi - lo + 1) as usize;
        let offset = self.offset + self.lens[..skip].iter().map(|&l| u64::from(l)).sum::<u64>();
        Some(Run {
            first_version: lo,
            first_position: self.first_position + skip as u64,
            segment_id: self.segment_id,
            offset,
            lens: self.lens[skip..skip + take].to_vec(),
        })
    }

    /// Drops the first `n` events (`n` less than the run's length).
    pub fn skip_front(&mut self, n: usize) {
        let skipped: u64 = self.lens[..n].iter().map(|&l| u64::from(l)).sum();
        self.lens.drain(..n);
        self.first_version += n as u64;
        self.first_position += n as u64;
        self.offset += skipped;
    }

    /// Decodes a persisted row; `None` when it is malformed.
    fn decode(first_version: u64, value: (u64, u64, u64, &[u8])) -> Option<Run> {
        let (first_position, segment_id, offset, lens) = value;
        if lens.is_empty() || lens.len() % 4 != 0 || first_version == 0 {
            return None;
        }
        let lens = lens
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Run {
            first_version,
            first_position,
            segment_id,
            offset,
            lens,
        })
    }
}

/// The events of one aggregate appended since the last checkpoint, as runs.
#[derive(Clone, Debug, Default)]
pub struct Tail {
    /// Version of the first event held.
    pub first_version: u64,
    /// Initial-event timestamp, when the aggregate was created in this memtable.
    pub initial_timestamp_ms: Option<i64>,
    heads: Vec<RunHead>,
    /// Entry length of every version held, from `first_version`.
    lens: Vec<u32>,
}

impl Tail {
    /// The latest version held.
    pub fn last_version(&self) -> u64 {
        self.first_version + self.lens.len() as u64 - 1
    }

    /// Appends version `last_version() + 1`, extending the last run when it lies right after
    /// it in the log.
    fn push(&mut self, version: u64, loc: Location) {
        let end = loc.offset + u64::from(loc.len);
        match self.heads.last_mut() {
            Some(head)
                if head.segment_id == loc.segment_id
                    && head.end == loc.offset
                    && head.first_position + (version - head.first_version) == loc.position =>
            {
                head.end = end;
            }
            _ => self.heads.push(RunHead {
                first_version: version,
                first_position: loc.position,
                segment_id: loc.segment_id,
                offset: loc.offset,
                end,
            }),
        }
        self.lens.push(loc.len);
    }

    /// The runs held, ascending.
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.runs_in(1, u64::MAX)
    }

    /// The runs held, cut to versions `lo..=hi`, ascending.
    pub fn runs_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = Run> + '_ {
        let last = self.last_version();
        self.heads.iter().enumerate().filter_map(move |(i, head)| {
            let run_last = self
                .heads
                .get(i + 1)
                .map_or(last, |next| next.first_version - 1);
            if run_last < lo || head.first_version > hi {
                return None;
            }
            let start = (head.first_version - self.first_version) as usize;
            let end = (run_last - self.first_version) as usize + 1;
            let run = Run {
                first_version: head.first_version,
                first_position: head.first_position,
                segment_id: head.segment_id,
                offset: head.offset,
                lens: self.lens[start..end].to_vec(),
            };
            if lo <= run.first_version && run_last <= hi {
                Some(run)
            } else {
                run.slice(lo, hi)
            }
        })
    }
}

/// Locations of recently appended events, by store and aggregate.
#[derive(Debug, Default)]
pub struct MemTable {
    stores: HashMap<String, HashMap<String, Tail>>,
    created: HashMap<String, BTreeSet<(i64, String)>>,
    /// Number of events held.
    pub events: usize,
    /// The log position just past the last event held (or the start, when empty).
    pub end: Cursor,
}

impl MemTable {
    /// An empty memtable that starts at `end`.
    pub fn starting_at(end: Cursor) -> Self {
        MemTable {
            end,
            ..Default::default()
        }
    }

    /// The latest version of an aggregate held here.
    pub fn last_version(&self, store: &str, aggregate: &str) -> Option<u64> {
        self.tail(store, aggregate).map(Tail::last_version)
    }

    /// The events of an aggregate held here.
    pub fn tail(&self, store: &str, aggregate: &str) -> Option<&Tail> {
        self.stores.get(store)?.get(aggregate)
    }

    /// Records an event. Versions of an aggregate must arrive in order (`last + 1`; any version
    /// for an aggregate first seen here).
    pub fn insert(
        &mut self,
        store: &str,
        aggregate: &str,
        version: u64,
        timestamp_ms: i64,
        loc: Location,
    ) {
        self.insert_all([(store, aggregate, version, timestamp_ms, loc)]);
    }

    /// Records events (store, aggregate, version, timestamp, location) in order, as
    /// [`MemTable::insert`] does; consecutive events of one aggregate cost one lookup.
    pub fn insert_all<'k>(
        &mut self,
        events: impl IntoIterator<Item = (&'k str, &'k str, u64, i64, Location)>,
    ) {
        let mut current: Option<(&str, &str, &mut Tail)> = None;
        for (store, aggregate, version, timestamp_ms, loc) in events {
            let tail = match current.take() {
                Some((s, a, tail)) if s == store && a == aggregate => tail,
                _ => {
                    let aggregates = match self.stores.get_mut(store) {
                        Some(a) => a,
                        None => self.stores.entry(store.to_owned()).or_default(),
                    };
                    match aggregates.get_mut(aggregate) {
                        Some(t) => t,
                        None => aggregates
                            .entry(aggregate.to_owned())
                            .or_insert_with(|| Tail {
                                first_version: version,
                                ..Tail::default()
                            }),
                    }
                }
            };
            debug_assert_eq!(
                tail.first_version + tail.lens.len() as u64,
                version,
                "versions arrive in order"
            );
            tail.push(version, loc);
            if version == 1 {
                tail.initial_timestamp_ms = Some(timestamp_ms);
                self.created
                    .entry(store.to_owned())
                    .or_default()
                    .insert((timestamp_ms, aggregate.to_owned()));
            }
            self.events += 1;
            current = Some((store, aggregate, tail));
        }
    }

    /// Aggregates created here, ordered by (initial timestamp, id).
    pub fn created(&self, store: &str) -> Option<&BTreeSet<(i64, String)>> {
        self.created.get(store)
    }

    /// Every aggregate held here with its latest version, in no particular order.
    pub fn aggregates(&self) -> impl Iterator<Item = (&str, &str, u64)> + '_ {
        self.stores.iter().flat_map(|(store, aggregates)| {
            aggregates.iter().map(move |(aggregate, tail)| {
                (store.as_str(), aggregate.as_str(), tail.last_version())
            })
        })
    }
}

/// (store, aggregate, first version) → (first position, segment id, offset, entry lengths as
/// u32 little-endian each): one row per [`Run`].
type RunKey = (&'static str, &'static str, u64);
type RunValue = (u64, u64, u64, &'static [u8]);
type RunsTable<'a> = TableDefinition<'a, RunKey, RunValue>;
const RUNS: RunsTable<'static> = TableDefinition::new("runs");
pub(crate) const AGGREGATES: TableDefinition<(&str, &str), (u64, i64)> =
    TableDefinition::new("aggregates");
pub(crate) const BY_INITIAL: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("by_initial_event");
/// Segment id → (first position, size): the headers of segments the index covers, so opening
/// a store need not read them (see [`Segment::lazy`](super::segment::Segment::lazy)).
const SEGMENTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("segments");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Sorts after every valid aggregate id of at most 256 bytes.
const MAX_ID: &str = concat!(
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
const CHECKPOINT_KEY: &str = "checkpoint";
/// Where the log ended when the store was closed cleanly (see [`Index::clean_end`]).
const CLEAN_END_KEY: &str = "clean_end";
const FORMAT_KEY: &str = "format";
/// The index layout this code writes. Version 1 had one `events` row per event; an index of
/// another version is rebuilt from the log.
pub const INDEX_FORMAT_VERSION: u32 = 2;

/// The persisted index (redb).
pub struct Index {
    /// Always `Some` until dropped (see the `Drop` impl).
    db: Option<redb::Database>,
    path: Arc<Path>,
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
fn contained<T>(path: &Path, f: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
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
fn index_error(operation: &'static str, path: &Path, e: redb::Error) -> EngineError {
    match e {
        redb::Error::Io(source) => EngineError::io(operation, path, source),
        e => EngineError::index(operation, path, e),
    }
}

/// [`contained`] for the integrity check's table views, which speak redb's error type.
fn contained_redb<T>(
    f: impl FnOnce() -> Result<T, redb::StorageError>,
) -> Result<T, redb::StorageError> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(redb::StorageError::Corrupted(
            "the index database is damaged (redb failed while reading it)".into(),
        ))
    })
}

impl Index {
    fn db(&self) -> &redb::Database {
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

    fn err(&self, operation: &'static str) -> impl Fn(redb::Error) -> EngineError + '_ {
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
        let err = self.err("read index checkpoint");
        let txn = self.db().begin_read().map_err(|e| err(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let Some(value) = meta.get(CHECKPOINT_KEY).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        Cursor::decode(value.value()).map(Some).ok_or_else(|| {
            EngineError::corruption(self.path.to_path_buf(), 0, "malformed checkpoint record")
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

    /// A consistent read view.
    pub fn reader(self: &Arc<Self>) -> Result<IndexReader, EngineError> {
        let txn = self
            .db()
            .begin_read()
            .map_err(|e| self.err("read index")(e.into()))?;
        Ok(IndexReader {
            txn,
            index: Arc::clone(self),
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
                let initial = match tail.initial_timestamp_ms {
                    Some(t) => t,
                    None => aggregates
                        .get((store, aggregate))
                        .map_err(|e| err(e.into()))?
                        .map(|v| v.value().1)
                        .ok_or_else(|| EngineError::corruption(self.path.to_path_buf(), 0, format!(
                                "aggregate {aggregate:?} of store {store:?} continues but has no \
                                 indexed start"
                            )))?,
                };
                aggregates
                    .insert((store, aggregate), (tail.last_version(), initial))
                    .map_err(|e| err(e.into()))?;
                if tail.initial_timestamp_ms.is_some() {
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
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| err(e.into()))? {
            let (id, value) = item.map_err(|e| err(e.into()))?;
            let (first_position, size) = value.value();
            out.push(SegmentHeader {
                segment_id: id.value(),
                first_position,
                size,
            });
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
        let err = self.err("read index");
        let table = self.txn.open_table(AGGREGATES).map_err(|e| err(e.into()))?;
        Ok(table
            .get((store, aggregate))
            .map_err(|e| err(e.into()))?
            .map(|v| v.value().0))
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

/// The index tables as the integrity check reads them: `open_table` takes [`AGGREGATES`] and
/// [`BY_INITIAL`] (plain redb tables) or [`EVENTS`], a per-event view of the run table that
/// answers with one row per event, so the check compares the index with the log event by
/// event whatever the layout on disk.
pub(crate) struct IndexTables<'a> {
    txn: &'a redb::ReadTransaction,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(position: u64, segment_id: u64, offset: u64, len: u32) -> Location {
        Location {
            position,
            segment_id,
            offset,
            len,
        }
    }

    #[test]
    fn adjacent_events_share_a_run_and_any_gap_starts_a_new_one() {
        let mut mem = MemTable::default();
        mem.insert_all([
            ("S", "a", 1, 10, loc(1, 1, 100, 50)),
            ("S", "a", 2, 11, loc(2, 1, 150, 60)),
            ("S", "b", 1, 12, loc(3, 1, 210, 70)),
            // Another aggregate's entry lies in between: a new run.
            ("S", "a", 3, 13, loc(4, 1, 280, 40)),
            ("S", "a", 4, 14, loc(5, 1, 320, 40)),
            // Another segment: a new run.
            ("S", "a", 5, 15, loc(6, 2, 64, 40)),
        ]);
        let tail = mem.tail("S", "a").unwrap();
        let runs: Vec<Run> = tail.runs().collect();
        assert_eq!(runs.len(), 3);
        assert_eq!(
            (runs[0].first_version, runs[0].lens.clone()),
            (1, vec![50, 60])
        );
        assert_eq!((runs[1].first_version, runs[1].offset), (3, 280));
        assert_eq!(runs[2].segment_id, 2);
        let all: Vec<(u64, Location)> = runs.iter().flat_map(Run::locations).collect();
        assert_eq!(all[1], (2, loc(2, 1, 150, 60)));
        assert_eq!(all[3], (4, loc(5, 1, 320, 40)));
        assert_eq!(tail.last_version(), 5);
        assert_eq!(mem.events, 6);
        assert_eq!(mem.last_version("S", "b"), Some(1));
    }

    #[test]
    fn a_run_cut_to_a_version_range_keeps_exact_locations() {
        let run = Run {
            first_version: 10,
            first_position: 100,
            segment_id: 3,
            offset: 1000,
            lens: vec![5, 6, 7, 8],
        };
        let part = run.slice(11, 12).unwrap();
        assert_eq!(
            part.locations().collect::<Vec<_>>(),
            vec![(11, loc(101, 3, 1005, 6)), (12, loc(102, 3, 1011, 7))]
        );
        assert_eq!(part.end(), 1018);
        assert!(run.slice(14, 20).is_none());
        let mut front = run.clone();
        front.skip_front(3);
        assert_eq!(front.locations().next(), Some((13, loc(103, 3, 1018, 8))));
    }

    #[test]
    fn malformed_run_rows_are_refused() {
        assert!(Run::decode(1, (1, 1, 64, &[])).is_none());
        assert!(Run::decode(1, (1, 1, 64, &[1, 0, 0])).is_none());
        assert!(Run::decode(0, (1, 1, 64, &[1, 0, 0, 0])).is_none());
        let run = Run::decode(2, (7, 1, 64, &[9, 0, 0, 0, 4, 0, 0, 0])).unwrap();
        assert_eq!((run.last_version(), run.lens.clone()), (3, vec![9, 4]));
    }
}
