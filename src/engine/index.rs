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
use std::io;
use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use super::error::EngineError;
use super::io::StoreFile;

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

/// The events of one aggregate appended since the last checkpoint.
#[derive(Clone, Debug, Default)]
pub struct Tail {
    /// Version of `locations[0]`.
    pub first_version: u64,
    /// Initial-event timestamp, when the aggregate was created in this memtable.
    pub initial_timestamp_ms: Option<i64>,
    /// Locations of versions `first_version ..`.
    pub locations: Vec<Location>,
}

impl Tail {
    /// The latest version held.
    pub fn last_version(&self) -> u64 {
        self.first_version + self.locations.len() as u64 - 1
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
        let aggregates = match self.stores.get_mut(store) {
            Some(a) => a,
            None => self.stores.entry(store.to_owned()).or_default(),
        };
        let tail = match aggregates.get_mut(aggregate) {
            Some(t) => t,
            None => aggregates
                .entry(aggregate.to_owned())
                .or_insert_with(|| Tail {
                    first_version: version,
                    initial_timestamp_ms: None,
                    locations: Vec::new(),
                }),
        };
        debug_assert_eq!(
            tail.first_version + tail.locations.len() as u64,
            version,
            "versions arrive in order"
        );
        tail.locations.push(loc);
        if version == 1 {
            tail.initial_timestamp_ms = Some(timestamp_ms);
            self.created
                .entry(store.to_owned())
                .or_default()
                .insert((timestamp_ms, aggregate.to_owned()));
        }
        self.events += 1;
    }

    /// Aggregates created here, ordered by (initial timestamp, id).
    pub fn created(&self, store: &str) -> Option<&BTreeSet<(i64, String)>> {
        self.created.get(store)
    }
}

/// (store, aggregate, version) → (position, segment id, offset, length).
type EventsTable<'a> = TableDefinition<'a, (&'static str, &'static str, u64), (u64, u64, u64, u32)>;
pub(crate) const EVENTS: EventsTable<'static> = TableDefinition::new("events");
pub(crate) const AGGREGATES: TableDefinition<(&str, &str), (u64, i64)> =
    TableDefinition::new("aggregates");
pub(crate) const BY_INITIAL: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("by_initial_event");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Sorts after every valid aggregate id of at most 256 bytes.
const MAX_ID: &str = "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}";
const CHECKPOINT_KEY: &str = "checkpoint";
const FORMAT_KEY: &str = "format";
/// The index layout this code writes.
pub const INDEX_FORMAT_VERSION: u32 = 1;

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

/// Adapts a [`StoreFile`] to redb's storage backend, so the index goes through the I/O seam.
#[derive(Debug)]
struct Backend(Arc<dyn StoreFile>);

impl redb::StorageBackend for Backend {
    fn len(&self) -> io::Result<u64> {
        self.0.size()
    }
    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        // A damaged file can make redb ask for absurd ranges: check before allocating.
        let size = self.0.size()?;
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {len} bytes at {offset} past the end of the index ({size} bytes)"),
            ));
        }
        let mut buf = vec![0; len];
        self.0.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
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
                .create_with_backend(Backend(file))
                .map_err(|e| EngineError::index("open index", path, e))?;
            let index = Index {
                db: Some(db),
                path: Arc::from(path),
            };
            index.init()?;
            Ok(index)
        }));
        opened.unwrap_or_else(|_| {
            Err(EngineError::Corruption {
                file: path.to_owned(),
                offset: 0,
                reason: "the index database is damaged (redb refused to open it)".into(),
            })
        })
    }

    fn err(&self, operation: &'static str) -> impl Fn(redb::Error) -> EngineError + '_ {
        move |e| EngineError::index(operation, &*self.path, e)
    }

    fn init(&self) -> Result<(), EngineError> {
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
                    return Err(EngineError::Corruption {
                        file: self.path.to_path_buf(),
                        offset: 0,
                        reason: "unknown index format version".into(),
                    });
                }
            }
            txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
            txn.open_table(AGGREGATES).map_err(|e| err(e.into()))?;
            txn.open_table(BY_INITIAL).map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))
    }

    /// The log position up to which the index is complete (`None`: nothing indexed yet).
    pub fn checkpoint(&self) -> Result<Option<Cursor>, EngineError> {
        let err = self.err("read index checkpoint");
        let txn = self.db().begin_read().map_err(|e| err(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
        let Some(value) = meta.get(CHECKPOINT_KEY).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        Cursor::decode(value.value())
            .map(Some)
            .ok_or_else(|| EngineError::Corruption {
                file: self.path.to_path_buf(),
                offset: 0,
                reason: "malformed checkpoint record".into(),
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

    /// Writes a frozen memtable and its end as the new checkpoint, durably, in one transaction.
    pub fn apply(&self, mem: &MemTable) -> Result<(), EngineError> {
        // redb asserts on some damaged files it nevertheless opened; contain that as
        // corruption of this derived file rather than a dead checkpointer thread.
        std::panic::catch_unwind(AssertUnwindSafe(|| self.apply_unguarded(mem))).unwrap_or_else(
            |_| {
                Err(EngineError::Corruption {
                    file: self.path.to_path_buf(),
                    offset: 0,
                    reason: "the index database is damaged (redb failed while writing it)".into(),
                })
            },
        )
    }

    fn apply_unguarded(&self, mem: &MemTable) -> Result<(), EngineError> {
        let err = self.err("write index checkpoint");
        let mut txn = self.db().begin_write().map_err(|e| err(e.into()))?;
        txn.set_quick_repair(true);
        {
            let mut events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
            let mut aggregates = txn.open_table(AGGREGATES).map_err(|e| err(e.into()))?;
            let mut by_initial = txn.open_table(BY_INITIAL).map_err(|e| err(e.into()))?;
            for (store, tails) in &mem.stores {
                for (aggregate, tail) in tails {
                    for (i, loc) in tail.locations.iter().enumerate() {
                        let version = tail.first_version + i as u64;
                        events
                            .insert(
                                (store.as_str(), aggregate.as_str(), version),
                                (loc.position, loc.segment_id, loc.offset, loc.len),
                            )
                            .map_err(|e| err(e.into()))?;
                    }
                    let initial = match tail.initial_timestamp_ms {
                        Some(t) => t,
                        None => aggregates
                            .get((store.as_str(), aggregate.as_str()))
                            .map_err(|e| err(e.into()))?
                            .map(|v| v.value().1)
                            .ok_or_else(|| EngineError::Corruption {
                                file: self.path.to_path_buf(),
                                offset: 0,
                                reason: format!("aggregate {aggregate:?} of store {store:?} continues but has no indexed start"),
                            })?,
                    };
                    aggregates
                        .insert(
                            (store.as_str(), aggregate.as_str()),
                            (tail.last_version(), initial),
                        )
                        .map_err(|e| err(e.into()))?;
                    if tail.initial_timestamp_ms.is_some() {
                        by_initial
                            .insert((store.as_str(), initial, aggregate.as_str()), ())
                            .map_err(|e| err(e.into()))?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert(CHECKPOINT_KEY, mem.end.encode().as_slice())
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))
    }

    /// Number of indexed events (for statistics).
    pub fn event_count(&self) -> Result<u64, EngineError> {
        let err = self.err("count index entries");
        let txn = self.db().begin_read().map_err(|e| err(e.into()))?;
        let events = txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
        events.len().map_err(|e| err(e.into()))
    }
}

/// A read transaction on the index.
pub struct IndexReader {
    // Field order matters: the transaction ends before the handle is released.
    txn: redb::ReadTransaction,
    index: Arc<Index>,
}

impl IndexReader {
    /// The read transaction, for the integrity check (`verify`), which scans every table.
    pub(crate) fn transaction(&self) -> &redb::ReadTransaction {
        &self.txn
    }

    /// The checkpoint as of this read view (`None`: nothing indexed yet).
    pub(crate) fn checkpoint(&self) -> Result<Option<Cursor>, EngineError> {
        let err = self.err("read index checkpoint");
        let meta = self.txn.open_table(META).map_err(|e| err(e.into()))?;
        let Some(value) = meta.get(CHECKPOINT_KEY).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        Cursor::decode(value.value())
            .map(Some)
            .ok_or_else(|| EngineError::Corruption {
                file: self.index.path.to_path_buf(),
                offset: 0,
                reason: "malformed checkpoint record".into(),
            })
    }

    fn err(&self, operation: &'static str) -> impl Fn(redb::Error) -> EngineError + '_ {
        move |e| EngineError::index(operation, &*self.index.path, e)
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

    /// Locations of versions `min..=max` of an aggregate, ascending.
    pub fn locations(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
    ) -> Result<Vec<(u64, Location)>, EngineError> {
        let err = self.err("read index");
        if min > max {
            return Ok(Vec::new());
        }
        let table = self.txn.open_table(EVENTS).map_err(|e| err(e.into()))?;
        let range = table
            .range((store, aggregate, min)..=(store, aggregate, max))
            .map_err(|e| err(e.into()))?;
        let mut out = Vec::new();
        for item in range {
            let (key, value) = item.map_err(|e| err(e.into()))?;
            let (position, segment_id, offset, len) = value.value();
            out.push((
                key.value().2,
                Location {
                    position,
                    segment_id,
                    offset,
                    len,
                },
            ));
        }
        Ok(out)
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
        let range = table
            .range::<(&str, i64, &str)>((lower, upper))
            .map_err(|e| err(e.into()))?;
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
        Ok(out)
    }
}
