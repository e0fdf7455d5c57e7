//! Floor 1 — the engine: an append-only segmented log with group commit, a per-aggregate index
//! and crash recovery. It knows bytes, positions and versions; nothing about user types.
//!
//! | module | concept |
//! |---|---|
//! | [`io`] | the file-I/O seam ([`FileSystem`], [`StoreFile`]) used by fault-injection tests |
//! | [`frame`] | record framing: commit frames and entries, with checksums |
//! | [`segment`] | preallocated segment files and their header |
//! | [`sim`] | a simulated disk that loses unsynced data, tears writes and fails on demand |
//! | [`index`] | memtables and the persisted (redb) index with its checkpoint |
//! | `writer` | the group-commit writer thread |
//! | `health` | judging, before anything is modified, whether the log holds what is vouched for |
//! | `recovery` | replaying the log tail on open, truncating a torn tail |
//! | [`verify`] | the integrity check: [`Engine::verify`], [`verify_dir`] |
//!
//! Directory layout of a store:
//!
//! ```text
//! <dir>/LOCK                 advisory lock held while the store is open
//! <dir>/index.redb           the persisted index (derived; rebuilt from the log if lost)
//! <dir>/log/0000000001.seg   segments, in order
//! ```
//! Byte formats are in `docs/format.md`.

mod cow;
pub mod error;
pub mod frame;
mod health;
pub mod index;
pub mod io;
mod recovery;
pub mod scan;
pub mod segment;
#[cfg(feature = "testing")]
pub mod sim;
pub mod verify;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use error::EngineError;
pub use frame::{EncodedCommit, LogEvent};
use health::IndexState;
use index::{Cursor, Index, IndexReader, Location, MemTable, Run};
pub use io::{FileSystem, OsFileSystem, StoreFile};
use segment::{SEGMENT_HEADER_BYTES, Segment, SegmentHeader};
pub use verify::{VerifyReport, verify_dir};
use writer::{Request, Writer};

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
    /// Size of each segment file (bytes, at least 64 KiB, at most 4 GiB). A commit must fit
    /// in one segment.
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

/// Index tiers as readers and the writer see them.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// Filled by the writer.
    pub active: MemTable,
    /// Being written to the index by the checkpointer.
    pub frozen: Option<Arc<MemTable>>,
}

impl Overlay {
    /// The latest version of an aggregate: newest tier first.
    fn last_version(
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

/// State shared by the engine handle, the writer and the checkpointer.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub log_dir: PathBuf,
    pub index_path: PathBuf,
    pub fs: Arc<dyn FileSystem>,
    pub options: EngineOptions,
    pub segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub overlay: RwLock<Overlay>,
    /// The persisted index; replaced by a fresh handle after a failed checkpoint.
    index: RwLock<Arc<Index>>,
    /// Set when the writer shuts down; a failing checkpointer then gives up.
    closing: std::sync::atomic::AtomicBool,
    /// Set when the checkpointer has exited.
    checkpointer_stopped: std::sync::atomic::AtomicBool,
    /// Why the checkpointer's last attempt failed (a full disk, say); `None` once one succeeds.
    /// While it is set, the writer refuses commits that would grow the unindexed tail past
    /// its bound (see `Writer::admit`) instead of waiting for a checkpoint that cannot come.
    checkpoint_failure: Mutex<Option<EngineError>>,
    poison: Mutex<Option<String>>,
    checkpoint_done: Condvar,
    checkpoint_lock: Mutex<()>,
    last_position: AtomicU64,
    /// Tells readers following the log (see `scan`) that `last_position` moved.
    /// `None` once the engine is closed: dropping the sender wakes every follower, which then
    /// finds the store closed.
    published: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
    _lock: Box<dyn fmt::Debug + Send + Sync>,
}

impl Shared {
    pub fn poison(&self, reason: String) {
        let mut p = self.poison.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none() {
            tracing::error!(dir = %self.dir.display(), %reason, "store poisoned; reopen it");
            *p = Some(reason);
        }
    }

    pub fn poison_reason(&self) -> Option<String> {
        self.poison
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_last_position(&self, position: u64) {
        self.last_position.store(position, Ordering::Release);
        if let Some(published) = &*self.published.lock().unwrap_or_else(|p| p.into_inner()) {
            published.send_replace(position);
        }
    }

    /// Blocks until no memtable is waiting for the checkpointer. Returns an error instead, at
    /// once, while the checkpointer's attempts fail (its last error: `StorageFull` for a full
    /// disk), once it has stopped, or when the store is poisoned: the memtable then cannot be
    /// indexed for now, and waiting would only stall the caller.
    pub fn wait_for_checkpoint_to_succeed(&self) -> Result<(), EngineError> {
        let mut guard = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            let busy = self
                .overlay
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .frozen
                .is_some();
            if !busy {
                return Ok(());
            }
            if let Some(reason) = self.poison_reason() {
                return Err(EngineError::Poisoned { reason });
            }
            if let Some(e) = self.checkpoint_failure() {
                return Err(e);
            }
            if self.checkpointer_stopped.load(Ordering::Acquire) {
                return Err(EngineError::index(
                    "checkpoint",
                    &self.index_path,
                    "the index checkpointer has stopped; reopen the store",
                ));
            }
            guard = self
                .checkpoint_done
                .wait_timeout(guard, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Why the checkpointer's last attempt failed, if it did.
    fn checkpoint_failure(&self) -> Option<EngineError> {
        self.checkpoint_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(writer::clone_error)
    }

    /// Records a failed checkpoint attempt and wakes whoever waits for one.
    fn checkpoint_failed(&self, failure: EngineError) {
        *self
            .checkpoint_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(failure);
        let _guard = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.checkpoint_done.notify_all();
    }

    /// Sleeps for `pause` between checkpoint attempts, or until the store starts closing.
    fn pause_checkpoints(&self, pause: Duration) {
        let deadline = Instant::now() + pause;
        let mut guard = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            if now >= deadline || self.closing.load(Ordering::Acquire) {
                return;
            }
            guard = self
                .checkpoint_done
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Blocks until no memtable is waiting for the checkpointer.
    pub fn wait_for_checkpoint(&self) {
        let mut guard = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            let busy = self
                .overlay
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .frozen
                .is_some();
            let stopped = self.checkpointer_stopped.load(Ordering::Acquire);
            if !busy || stopped || self.poison_reason().is_some() {
                return;
            }
            guard = self
                .checkpoint_done
                .wait_timeout(guard, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The current index handle.
    pub fn index(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the index handle with a freshly opened one (redb refuses all work after a
    /// failed write or sync; reopening runs its repair). Waits until no reader still uses the
    /// old handle, so the two never touch the file at once.
    fn reopen_index(&self) -> Result<(), EngineError> {
        let file = self
            .fs
            .open(&self.index_path, true)
            .map_err(|e| EngineError::io("open", &self.index_path, e))?;
        let mut slot = self.index.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(
            &mut *slot,
            Arc::new(Index::open(
                file,
                &self.index_path,
                self.options.index_cache_bytes,
            )?),
        );
        drop(slot);
        while Arc::strong_count(&old) > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Tells a failing checkpointer to give up: the writer is shutting down.
    pub fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
        // Wake a checkpointer pausing between failed attempts (see `pause_checkpoints`).
        let _guard = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.checkpoint_done.notify_all();
    }

    /// The headers of every segment, ascending.
    fn segment_headers(&self) -> Vec<SegmentHeader> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.header)
            .collect()
    }

    fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }
}

/// Summary figures of an open engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStats {
    /// Global position of the last committed event (0 when empty).
    pub last_position: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Bytes of segment files on disk (preallocated size).
    pub segment_bytes: u64,
    /// Events not yet checkpointed into the persisted index.
    pub unindexed_events: usize,
}

/// The state of the persisted index (see [`Engine::index_stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexStats {
    /// The persisted index covers every event up to this position (0: none yet); events
    /// after it are indexed in memory and replayed from the log on open.
    pub indexed_through: u64,
    /// Events not yet checkpointed into the persisted index.
    pub unindexed_events: usize,
    /// Size of `index.redb`, in bytes.
    pub file_bytes: u64,
}

/// The size of one store (event store id) of the log (see [`Engine::store_summaries`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSummary {
    /// The store's id.
    pub store: String,
    /// Aggregates with at least one event.
    pub aggregates: u64,
    /// Events of all its aggregates.
    pub events: u64,
}

/// An open log: appends go through the writer thread, reads run concurrently on any thread.
pub struct Engine {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (or creates) the store in `dir` on the real file system.
    pub fn open(dir: &Path, options: EngineOptions) -> Result<Self, EngineError> {
        Self::open_with(Arc::new(OsFileSystem), dir, options)
    }

    /// Opens (or creates) the store in `dir` through `fs`.
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        if !(64 << 10..=u64::from(u32::MAX)).contains(&options.segment_bytes) {
            return Err(EngineError::InvalidOptions(format!(
                "segment_bytes must be between 64 KiB and 4 GiB, not {}",
                options.segment_bytes
            )));
        }
        if options.checkpoint_events == 0 {
            return Err(EngineError::InvalidOptions(
                "checkpoint_events must be at least 1".into(),
            ));
        }
        fs.create_dir_all(dir)
            .map_err(|e| EngineError::io("create directory", dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = fs
            .try_lock(&lock_path)
            .map_err(|e| EngineError::io("lock", &lock_path, e))?
            .ok_or_else(|| EngineError::Locked {
                path: dir.to_owned(),
            })?;
        let log_dir = dir.join("log");
        fs.create_dir_all(&log_dir)
            .map_err(|e| EngineError::io("create directory", &log_dir, e))?;
        fs.sync_dir(dir)
            .map_err(|e| EngineError::io("sync directory", dir, e))?;
        let index_path = dir.join("index.redb");
        // Held under the lock: nobody else reads or repairs the store meanwhile.
        let opened = open_log(&fs, &log_dir, &index_path, &options)?;
        // The index file may have just been created: make its name durable.
        fs.sync_dir(dir)
            .map_err(|e| EngineError::io("sync directory", dir, e))?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            log_dir,
            index_path,
            fs,
            options,
            segments: RwLock::new(opened.segments),
            overlay: RwLock::new(Overlay::default()),
            index: RwLock::new(Arc::new(opened.index)),
            closing: std::sync::atomic::AtomicBool::new(false),
            checkpointer_stopped: std::sync::atomic::AtomicBool::new(false),
            checkpoint_failure: Mutex::new(None),
            poison: Mutex::new(None),
            checkpoint_done: Condvar::new(),
            checkpoint_lock: Mutex::new(()),
            last_position: AtomicU64::new(0),
            published: Mutex::new(Some(tokio::sync::watch::Sender::new(0))),
            _lock: lock,
        });
        let (segment, cursor) = recover(&shared, opened.replay)?;
        shared.set_last_position(cursor.next_position - 1);
        let (tx, rx) = mpsc::channel();
        let (ctx, crx) = mpsc::channel::<Arc<MemTable>>();
        let checkpointer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("annals-checkpoint".into())
                .spawn(move || checkpoint_loop(&shared, &crx))
                .map_err(|e| EngineError::io("spawn checkpoint thread for", dir, e))?
        };
        let (acks, acks_rx) = mpsc::channel();
        let notifier = std::thread::Builder::new()
            .name("annals-notify".into())
            .spawn(move || writer::notify_loop(&acks_rx))
            .map_err(|e| EngineError::io("spawn notifier thread for", dir, e))?;
        let writer = Writer {
            shared: Arc::clone(&shared),
            rx,
            acks,
            checkpoints: ctx,
            durable_offset: cursor.offset,
            cursor,
            segment,
            last_sync: Instant::now(),
        };
        let writer = std::thread::Builder::new()
            .name("annals-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| EngineError::io("spawn writer thread for", dir, e))?;
        Ok(Engine {
            shared,
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![writer, checkpointer, notifier]),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends a commit atomically; resolves with the global position of its first event once
    /// it is durable under the configured [`Durability`]. A version conflict is
    /// [`EngineError::Conflict`], naming the event.
    pub async fn append(&self, commit: EncodedCommit) -> Result<u64, EngineError> {
        let (reply, response) = oneshot::channel();
        self.send(Request::Append { commit, reply })?;
        response.await.map_err(|_| EngineError::Closed)?
    }

    /// Makes every acknowledged append durable (useful under `Periodic` or `None`).
    pub async fn sync(&self) -> Result<(), EngineError> {
        let (reply, response) = oneshot::channel();
        self.send(Request::Sync { reply })?;
        response.await.map_err(|_| EngineError::Closed)?
    }

    fn send(&self, request: Request) -> Result<(), EngineError> {
        if let Some(reason) = self.shared.poison_reason() {
            return Err(EngineError::Poisoned { reason });
        }
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.as_ref()
            .ok_or(EngineError::Closed)?
            .send(request)
            .map_err(|_| EngineError::Closed)
    }

    /// The global position of the last committed event (0 when empty).
    pub fn last_position(&self) -> u64 {
        self.shared.last_position.load(Ordering::Acquire)
    }

    /// Events of one aggregate with versions in `min..=max`, ascending, with their positions.
    /// When `reverse`, the `limit` newest are returned, descending.
    pub fn read_events(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Vec<(u64, LogEvent)>, EngineError> {
        let mut events = Vec::new();
        self.visit_events(
            store,
            aggregate,
            min,
            max,
            limit,
            reverse,
            &mut |position, e| {
                events.push((
                    position,
                    LogEvent {
                        store: store.to_owned(),
                        aggregate: aggregate.to_owned(),
                        version: e.version,
                        timestamp_ms: e.timestamp_ms,
                        event_type: e.event_type.to_owned(),
                        schema_version: e.schema_version,
                        payload: e.payload.to_vec(),
                        metadata: e.metadata.to_vec(),
                    },
                ));
            },
        )?;
        if reverse {
            events.reverse();
        }
        Ok(events)
    }

    /// Visits the events of one aggregate with versions in `min..=max` — at most `limit`, the
    /// oldest ones, or the newest ones when `reverse` — in **ascending** version order, each
    /// with its position, borrowed from the read buffer: nothing is allocated per event.
    /// Every entry is verified (checksum, lengths, store, aggregate and version) before it is
    /// visited.
    #[allow(clippy::too_many_arguments)]
    pub fn visit_events(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
        limit: Option<usize>,
        reverse: bool,
        visit: &mut dyn FnMut(u64, EntryView<'_>),
    ) -> Result<(), EngineError> {
        let mut runs = self.runs(store, aggregate, min.max(1), max)?;
        if let Some(limit) = limit {
            limit_runs(&mut runs, limit, reverse);
        }
        self.read_runs(store, aggregate, &runs, visit)
    }

    /// Locations of versions `min..=max` of an aggregate, ascending by version.
    pub(crate) fn locations(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
    ) -> Result<Vec<(u64, Location)>, EngineError> {
        let runs = self.runs(store, aggregate, min, max)?;
        Ok(runs.iter().flat_map(Run::locations).collect())
    }

    /// The runs holding versions `min..=max` of an aggregate, cut to that range, ascending.
    fn runs(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
    ) -> Result<Vec<Run>, EngineError> {
        if min > max {
            return Ok(Vec::new());
        }
        let (tails, reader) = {
            let overlay = self
                .shared
                .overlay
                .read()
                .unwrap_or_else(|p| p.into_inner());
            // Frozen (older) first, then active.
            let mut tails: Vec<(u64, Vec<Run>)> = Vec::with_capacity(2);
            for mem in [overlay.frozen.as_deref(), Some(&overlay.active)]
                .into_iter()
                .flatten()
            {
                if let Some(tail) = mem.tail(store, aggregate) {
                    tails.push((tail.first_version, tail.runs_in(min, max).collect()));
                }
            }
            // Opened under the overlay lock: see `Writer::check_versions`.
            (tails, self.shared.index_reader()?)
        };
        let oldest_in_memory = tails
            .iter()
            .map(|(first, _)| *first)
            .min()
            .unwrap_or(u64::MAX);
        let mut out = if min < oldest_in_memory {
            reader.runs(
                store,
                aggregate,
                min,
                max.min(oldest_in_memory.saturating_sub(1)),
            )?
        } else {
            Vec::new()
        };
        // A version present twice (in the index and a frozen memtable) keeps one copy.
        for (_, runs) in tails {
            for mut run in runs {
                let next = out.last().map_or(0, |r| r.last_version() + 1);
                if run.last_version() < next {
                    continue;
                }
                if run.first_version < next {
                    run.skip_front((next - run.first_version) as usize);
                }
                out.push(run);
            }
        }
        Ok(out)
    }

    /// Reads and verifies the entries of `runs`, coalescing neighbouring runs of a segment
    /// into single reads, and visits them in order.
    fn read_runs(
        &self,
        store: &str,
        aggregate: &str,
        runs: &[Run],
        visit: &mut dyn FnMut(u64, EntryView<'_>),
    ) -> Result<(), EngineError> {
        const GAP_MAX: u64 = 64 << 10;
        const READ_MAX: u64 = 4 << 20;
        let mut buf = Vec::new();
        let mut i = 0;
        while i < runs.len() {
            let first = &runs[i];
            let mut end = first.end();
            let mut j = i + 1;
            while j < runs.len() {
                let next = &runs[j];
                if next.segment_id != first.segment_id
                    || next.offset < end
                    || next.offset - end > GAP_MAX
                    || next.end() - first.offset > READ_MAX
                {
                    break;
                }
                end = next.end();
                j += 1;
            }
            let segment =
                self.shared
                    .segment(first.segment_id)
                    .ok_or_else(|| EngineError::Corruption {
                        file: self.shared.index_path.clone(),
                        offset: 0,
                        reason: format!("index points into missing segment {}", first.segment_id),
                    })?;
            buf.resize((end - first.offset) as usize, 0);
            segment
                .file
                .read_exact_at(&mut buf, first.offset)
                // A lazily opened segment that fails its check on first use reports corruption.
                .map_err(|e| EngineError::io("read", &segment.path, e))?;
            for run in &runs[i..j] {
                for (version, loc) in run.locations() {
                    let start = (loc.offset - first.offset) as usize;
                    let bytes = &buf[start..start + loc.len as usize];
                    let entry =
                        EntryView::decode(bytes, store, aggregate, version).map_err(|reason| {
                            EngineError::Corruption {
                                file: segment.path.clone(),
                                offset: loc.offset,
                                reason,
                            }
                        })?;
                    visit(loc.position, entry);
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Aggregates of `store` by initial-event timestamp (inclusive bounds), strictly beyond
    /// `cursor` in scan order, at most `limit`.
    pub fn list_aggregates(
        &self,
        store: &str,
        after: Option<i64>,
        before: Option<i64>,
        reverse: bool,
        cursor: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, EngineError> {
        let admits = |t: i64, id: &str| {
            after.is_none_or(|a| t >= a)
                && before.is_none_or(|b| t <= b)
                && cursor.is_none_or(|c| if reverse { (t, id) < c } else { (t, id) > c })
        };
        let (mut found, reader) = {
            let overlay = self
                .shared
                .overlay
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let mut found = Vec::new();
            for mem in [Some(&overlay.active), overlay.frozen.as_deref()]
                .into_iter()
                .flatten()
            {
                if let Some(created) = mem.created(store) {
                    found.extend(created.iter().filter(|(t, id)| admits(*t, id)).cloned());
                }
            }
            (found, self.shared.index_reader()?)
        };
        found.extend(reader.aggregates_by_initial(store, after, before, reverse, cursor, limit)?);
        found.sort_unstable();
        found.dedup();
        if reverse {
            found.reverse();
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Figures about the open store.
    pub fn stats(&self) -> EngineStats {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let overlay = self
            .shared
            .overlay
            .read()
            .unwrap_or_else(|p| p.into_inner());
        EngineStats {
            last_position: self.last_position(),
            segments: segments.len(),
            segment_bytes: segments.values().map(|s| s.header.size).sum(),
            unindexed_events: overlay.active.events
                + overlay.frozen.as_ref().map_or(0, |f| f.events),
        }
    }

    /// The persisted index: how far it reaches and how large it is.
    pub fn index_stats(&self) -> Result<IndexStats, EngineError> {
        let unindexed_events = self.stats().unindexed_events;
        let checkpoint = self.shared.index_reader()?.checkpoint()?;
        let path = &self.shared.index_path;
        let file_bytes = self
            .shared
            .fs
            .open(path, false)
            .and_then(|f| f.size())
            .map_err(|e| EngineError::io("measure", path, e))?;
        Ok(IndexStats {
            indexed_through: checkpoint.map_or(0, |c| c.next_position.saturating_sub(1)),
            unindexed_events,
            file_bytes,
        })
    }

    /// Every store of the log with its number of aggregates and events, ordered by store id.
    /// Reads every aggregate's latest version from the index (one pass, no event is read).
    pub fn store_summaries(&self) -> Result<Vec<StoreSummary>, EngineError> {
        let mut recent: HashMap<(String, String), u64> = HashMap::new();
        let reader = {
            let overlay = self
                .shared
                .overlay
                .read()
                .unwrap_or_else(|p| p.into_inner());
            // The active memtable is newer than the frozen one: it wins.
            for mem in [overlay.frozen.as_deref(), Some(&overlay.active)]
                .into_iter()
                .flatten()
            {
                for (store, aggregate, version) in mem.aggregates() {
                    recent.insert((store.to_owned(), aggregate.to_owned()), version);
                }
            }
            // Taken under the overlay lock, so index and memtables are seen at one instant.
            self.shared.index_reader()?
        };
        let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut add = |store: &str, version: u64| match totals.get_mut(store) {
            Some((aggregates, events)) => {
                *aggregates += 1;
                *events += version;
            }
            None => {
                totals.insert(store.to_owned(), (1, version));
            }
        };
        reader.visit_aggregates(&mut |store, aggregate, version| {
            let key = (store.to_owned(), aggregate.to_owned());
            // Versions are gap-free from 1, so the latest version counts the events.
            add(store, recent.remove(&key).unwrap_or(version));
        })?;
        for ((store, _), version) in recent {
            add(&store, version);
        }
        Ok(totals
            .into_iter()
            .map(|(store, (aggregates, events))| StoreSummary {
                store,
                aggregates,
                events,
            })
            .collect())
    }

    /// Stops the writer after it has drained and synced, and checkpoints the index; later
    /// appends fail with `Closed`. The directory's lock is released when the engine is dropped
    /// (dropping it also closes it).
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        // Followers of the log wake up and find it closed.
        drop(
            self.shared
                .published
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

/// Writes frozen memtables to the index. A failed checkpoint (a full disk, say) is retried
/// with backoff on a reopened index; the memtable stays readable meanwhile, and the failure is
/// recorded so the writer refuses what would grow the unindexed tail past its bound (with
/// `StorageFull` for a full disk) rather than wait. The first attempt that succeeds clears it:
/// appends are accepted again without a reopen. The loop gives up when the store is poisoned
/// or closing (the log is durable, so the next open replays it), or when the index is
/// damaged.
fn checkpoint_loop(shared: &Shared, rx: &mpsc::Receiver<Arc<MemTable>>) {
    /// Tells waiters the checkpointer is gone, however it ends (a panic included), so a
    /// closing writer never waits for it forever.
    struct Stopped<'a>(&'a Shared);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.checkpointer_stopped.store(true, Ordering::Release);
            let _guard = self
                .0
                .checkpoint_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.0.checkpoint_done.notify_all();
        }
    }
    /// The longest pause between attempts: once space is freed, appends resume within it.
    const BACKOFF_MAX: Duration = Duration::from_secs(1);
    let _stopped = Stopped(shared);
    let giving_up = || shared.poison_reason().is_some() || shared.closing.load(Ordering::Acquire);
    'memtables: while let Ok(mem) = rx.recv() {
        let mut backoff = Duration::from_millis(10);
        loop {
            // Bind the handle in its own statement: it must not live across the reopen below.
            let headers = shared.segment_headers();
            let result = shared.index().apply(&mem, &headers);
            let Err(e) = result else { break };
            if let EngineError::Corruption { .. } = e {
                // The derived index is damaged: stop checkpointing (the log stays the source
                // of truth, and the tail stays readable in memory) and delete the file so the
                // next open rebuilds it from the log.
                tracing::error!(error = %e, "index damaged; it will be rebuilt on the next open");
                let _ = shared.fs.remove(&shared.index_path);
                let _ = shared.fs.sync_dir(&shared.dir);
                shared.checkpoint_failed(e);
                break 'memtables;
            }
            if let EngineError::StorageFull { .. } = e {
                tracing::warn!(
                    error = %e,
                    "index checkpoint failed: the disk is full; appends past the unindexed \
                     bound fail with StorageFull until space is freed; retrying"
                );
            } else {
                tracing::warn!(error = %e, "index checkpoint failed; reopening the index to retry");
            }
            shared.checkpoint_failed(e);
            // redb refuses all work, reads included, after a failed write: reopen at once.
            while let Err(e) = shared.reopen_index() {
                if giving_up() {
                    break 'memtables;
                }
                tracing::warn!(error = %e, "reopening the index failed; retrying");
                shared.checkpoint_failed(e);
                shared.pause_checkpoints(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            if giving_up() {
                break 'memtables;
            }
            shared.pause_checkpoints(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if giving_up() {
                break 'memtables;
            }
        }
        // Cleared before the memtable is released, so no later memtable is refused for this
        // one's failure.
        *shared
            .checkpoint_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        let mut overlay = shared.overlay.write().unwrap_or_else(|p| p.into_inner());
        if overlay
            .frozen
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(f, &mem))
        {
            overlay.frozen = None;
        }
        drop(overlay);
        let _guard = shared
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shared.checkpoint_done.notify_all();
    }
}

/// The open segments, by id.
type Segments = BTreeMap<u64, Arc<Segment>>;

/// What opening found, judged healthy and repaired: handed to [`recover`].
struct Opened {
    index: Index,
    segments: Segments,
    replay: Replay,
}

/// The log past the checkpoint, as opening left it for [`recover`].
enum Replay {
    /// No segment yet.
    Empty,
    /// Replayed while the log was judged: the events past the checkpoint, up to `cursor`.
    Done { mem: MemTable, cursor: Cursor },
    /// Too many events to hold in memory: replay again from `start`, writing them to the
    /// index as the replay goes (`clean_end`: see [`recovery::scan_segment`]).
    Again {
        start: Cursor,
        clean_end: Option<Cursor>,
    },
}

/// Opens the index and the segments, in two phases.
///
/// First the store is judged, and nothing is modified: the index is read through a
/// copy-on-write view, the segment files are checked against what it and the clean-close mark
/// vouch for (see [`health`]), and the log past the checkpoint is replayed. Any damage fails the
/// open with [`EngineError::Corruption`], leaving every byte as it was.
///
/// Only then is the store repaired: an unfinished last segment removed, a torn tail
/// zero-filled, the index opened (giving up its clean-close mark, durably) or — when it is
/// missing, unreadable or a rebuild was asked for — built anew from the log.
///
/// Segments before the checkpoint's whose headers the index recorded are checked by length
/// and opened lazily, on first read (see [`Segment::lazy`]); the others — all of them when the
/// index is rebuilt — are opened and checked now. So a clean open reads a bounded number of
/// files whatever the store's size.
fn open_log(
    fs: &Arc<dyn FileSystem>,
    log_dir: &Path,
    index_path: &Path,
    options: &EngineOptions,
) -> Result<Opened, EngineError> {
    // Phase 1: judge, changing nothing.
    let view = health::read_index(fs.as_ref(), index_path, options.index_cache_bytes)?;
    let witnesses = view.witnesses.clone();
    let mut rebuild = match &view.state {
        IndexState::Usable if options.rebuild_index => Some("a rebuild was asked for".to_owned()),
        IndexState::Usable => None,
        IndexState::Missing => Some("the index is missing".to_owned()),
        IndexState::Damaged(problem) => Some(problem.clone()),
    };
    // Giving up the clean-close mark is the index's first write: try it on the view, so an
    // index that cannot take it is rebuilt instead.
    if rebuild.is_none()
        && witnesses.clean_end.is_some()
        && let Some(index) = &view.index
        && let Err(e) = index.set_clean_end(None)
    {
        rebuild = Some(format!("its clean-close mark cannot be removed: {e}"));
    }
    drop(view);
    let checkpoint = witnesses.checkpoint.filter(|_| rebuild.is_none());
    let lazy_below = checkpoint.map_or(0, |c| c.segment_id);
    let files = health::assess(fs, log_dir, &witnesses, lazy_below)?;
    if let Some(damage) = files.damage.into_iter().next() {
        return Err(damage.into());
    }
    let segments: Segments = files
        .segments
        .into_iter()
        .map(|s| (s.header.segment_id, s))
        .collect();
    let start = checkpoint.or_else(|| log_start(&segments));
    // After a clean close nothing lies past the end of data, so the rest of the last segment
    // (up to its whole size) need not be read.
    let skip_at = checkpoint.and(witnesses.clean_end);
    let flush_every = options.checkpoint_events.saturating_mul(4);
    let (replay, torn) = match (start, segments.values().next_back()) {
        (Some(start), Some(last)) => {
            // What is in the page cache may not be durable: sync the last segment before
            // anything is indexed from it.
            last.file
                .sync_data()
                .map_err(|e| EngineError::io("sync", &last.path, e))?;
            let mut too_long = false;
            let mut drop_events = |mem: &mut MemTable, at: Cursor| {
                too_long = true;
                *mem = MemTable::starting_at(at);
                Ok(())
            };
            let (mem, cursor, torn) =
                replay_log(&segments, start, skip_at, flush_every, &mut drop_events)?;
            if let Some(damage) = health::short_of_clean_end(log_dir, witnesses.clean_end, cursor) {
                return Err(damage.into());
            }
            let replay = if too_long {
                Replay::Again {
                    start,
                    clean_end: skip_at,
                }
            } else {
                Replay::Done { mem, cursor }
            };
            (replay, torn.map(|t| (Arc::clone(last), t)))
        }
        _ => (Replay::Empty, None),
    };
    // Phase 2: the log holds everything its witnesses vouch for; repair what a crash left.
    if let Some((path, len)) = &files.unfinished {
        remove_unfinished(fs.as_ref(), log_dir, path, *len)?;
    }
    if let Some((segment, torn)) = &torn {
        recovery::clear_torn(segment, torn)?;
    }
    let (index, replay) = match rebuild {
        Some(problem) => {
            let warn = !segments.is_empty();
            let index = fresh_index(fs.as_ref(), index_path, options, warn.then_some(&problem))?;
            (index, replay)
        }
        None => match open_index(fs.as_ref(), index_path, options, &witnesses) {
            Ok(index) => (index, replay),
            // It could be read, but not opened for writing: rebuild it from the whole log.
            Err(e @ EngineError::Corruption { .. }) => {
                let index = fresh_index(fs.as_ref(), index_path, options, Some(&e.to_string()))?;
                let replay = match log_start(&segments) {
                    Some(start) => Replay::Again {
                        start,
                        clean_end: None,
                    },
                    None => Replay::Empty,
                };
                (index, replay)
            }
            Err(e) => return Err(e),
        },
    };
    Ok(Opened {
        index,
        segments,
        replay,
    })
}

/// Where the log starts: the first frame of its first segment.
fn log_start(segments: &Segments) -> Option<Cursor> {
    segments.values().next().map(|first| Cursor {
        segment_id: first.header.segment_id,
        offset: SEGMENT_HEADER_BYTES,
        next_position: first.header.first_position,
    })
}

fn remove_unfinished(
    fs: &dyn FileSystem,
    log_dir: &Path,
    path: &Path,
    len: u64,
) -> Result<(), EngineError> {
    tracing::warn!(
        file = %path.display(),
        len,
        "removing a last segment whose creation did not finish (all zeros, named by nothing)"
    );
    fs.remove(path)
        .map_err(|e| EngineError::io("remove", path, e))?;
    fs.sync_dir(log_dir)
        .map_err(|e| EngineError::io("sync directory", log_dir, e))
}

/// Opens the index for writing and durably removes its clean-close mark, if it has one (the
/// mark only holds until the next open for writing: see [`Index::clean_end`]).
fn open_index(
    fs: &dyn FileSystem,
    path: &Path,
    options: &EngineOptions,
    witnesses: &health::Witnesses,
) -> Result<Index, EngineError> {
    let file = fs
        .open(path, false)
        .map_err(|e| EngineError::io("open", path, e))?;
    let index = Index::open(file, path, options.index_cache_bytes)?;
    if witnesses.clean_end.is_some() {
        index.set_clean_end(None)?;
    }
    Ok(index)
}

/// Replaces the index with an empty one, to be filled from the log; `problem` says why, when
/// the log is not empty.
fn fresh_index(
    fs: &dyn FileSystem,
    path: &Path,
    options: &EngineOptions,
    problem: Option<&String>,
) -> Result<Index, EngineError> {
    if let Some(problem) = problem {
        tracing::warn!(file = %path.display(), %problem, "rebuilding the index from the log");
    }
    if fs
        .exists(path)
        .map_err(|e| EngineError::io("inspect", path, e))?
    {
        fs.remove(path)
            .map_err(|e| EngineError::io("remove", path, e))?;
    }
    let file = fs
        .open(path, true)
        .map_err(|e| EngineError::io("create", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir)
        .map_err(|e| EngineError::io("sync directory", dir, e))?;
    Index::open(file, path, options.index_cache_bytes)
}

/// Replays the log from `start` to its end into a memtable (`on_full` is called whenever it
/// holds `flush_every` events); returns it, the cursor where the next frame goes and the torn
/// tail of the last segment, if any, not yet repaired.
fn replay_log(
    segments: &Segments,
    start: Cursor,
    clean_end: Option<Cursor>,
    flush_every: usize,
    on_full: &mut dyn FnMut(&mut MemTable, Cursor) -> Result<(), EngineError>,
) -> Result<(MemTable, Cursor, Option<recovery::Torn>), EngineError> {
    let last_id = segments.keys().next_back().copied();
    let mut cursor = start;
    let mut mem = MemTable::starting_at(cursor);
    let mut torn = None;
    for segment in segments.range(start.segment_id..).map(|(_, s)| s) {
        if segment.header.segment_id != cursor.segment_id {
            if segment.header.first_position != cursor.next_position {
                return Err(EngineError::Corruption {
                    file: segment.path.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at position {}, expected {}",
                        segment.header.first_position, cursor.next_position
                    ),
                });
            }
            cursor = Cursor {
                segment_id: segment.header.segment_id,
                offset: SEGMENT_HEADER_BYTES,
                next_position: cursor.next_position,
            };
        }
        let is_last = Some(segment.header.segment_id) == last_id;
        torn = recovery::scan_segment(
            segment,
            is_last,
            clean_end,
            &mut cursor,
            &mut mem,
            flush_every,
            on_full,
        )?;
    }
    mem.end = cursor;
    Ok((mem, cursor, torn))
}

/// Puts the replayed log tail in the active memtable (replaying it again first, writing to the
/// index as it goes, when it was too long to keep); returns the segment to write to and the
/// cursor where the next frame goes. A store without segments gets its first one.
fn recover(shared: &Arc<Shared>, replay: Replay) -> Result<(Arc<Segment>, Cursor), EngineError> {
    let last = shared
        .segments
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .next_back()
        .cloned();
    let (last, (mem, cursor)) = match (last, replay) {
        (Some(last), Replay::Done { mem, cursor }) => (last, (mem, cursor)),
        (Some(last), Replay::Again { start, clean_end }) => {
            // Writers keep the unindexed tail below about twice the threshold (see
            // `Writer::maybe_freeze`); a longer one (an index rebuild) is indexed in chunks.
            let flush_every = shared.options.checkpoint_events.saturating_mul(4);
            let mut flush = |mem: &mut MemTable, at: Cursor| -> Result<(), EngineError> {
                shared.index().apply(mem, &shared.segment_headers())?;
                *mem = MemTable::starting_at(at);
                Ok(())
            };
            let segments = shared
                .segments
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let (mem, cursor, torn) =
                replay_log(&segments, start, clean_end, flush_every, &mut flush)?;
            if let Some(torn) = torn {
                // Cleared once already, so only a write from outside can have put it back.
                recovery::clear_torn(&last, &torn)?;
            }
            (last, (mem, cursor))
        }
        (_, _) => {
            let header = SegmentHeader {
                segment_id: 1,
                first_position: 1,
                size: shared.options.segment_bytes,
            };
            let segment = segment::create(shared.fs.as_ref(), &shared.log_dir, header)
                .map_err(|e| EngineError::io("create segment in", &shared.log_dir, e))?;
            let segment = Arc::new(segment);
            shared
                .segments
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(1, Arc::clone(&segment));
            let cursor = Cursor {
                segment_id: 1,
                offset: SEGMENT_HEADER_BYTES,
                next_position: 1,
            };
            (segment, (MemTable::starting_at(cursor), cursor))
        }
    };
    // The replayed tail stays in memory: the writer hands it to the checkpointer as soon as
    // it starts, so opening does not wait for it to be indexed.
    shared
        .overlay
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .active = mem;
    Ok((last, cursor))
}

/// Keeps the first `limit` events of `runs` (the last `limit` when `reverse`).
fn limit_runs(runs: &mut Vec<Run>, limit: usize, reverse: bool) {
    let total: usize = runs.iter().map(|r| r.lens.len()).sum();
    if total <= limit {
        return;
    }
    if reverse {
        let mut skip = total - limit;
        while let Some(first) = runs.first_mut() {
            if first.lens.len() > skip {
                if skip > 0 {
                    first.skip_front(skip);
                }
                break;
            }
            skip -= first.lens.len();
            runs.remove(0);
        }
    } else {
        let mut kept = 0;
        let mut cut = runs.len();
        for (i, run) in runs.iter_mut().enumerate() {
            if kept + run.lens.len() >= limit {
                run.lens.truncate(limit - kept);
                cut = i + 1;
                break;
            }
            kept += run.lens.len();
        }
        runs.truncate(cut);
        runs.retain(|r| !r.lens.is_empty());
    }
}

/// One event as read from the log, borrowed from the read buffer (see
/// [`Engine::visit_events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    /// Version within the aggregate.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Event type name.
    pub event_type: &'a str,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// Encoded payload.
    pub payload: &'a [u8],
    /// Encoded metadata.
    pub metadata: &'a [u8],
}

impl<'a> EntryView<'a> {
    /// Verifies the entry occupying exactly `bytes` (checksum and lengths, as
    /// [`frame::decode_entry`] does) and that it is version `version` of `store`/`aggregate`;
    /// the reason when it is not.
    fn decode(bytes: &'a [u8], store: &str, aggregate: &str, version: u64) -> Result<Self, String> {
        use frame::ENTRY_HEADER_BYTES as HEADER;
        let u16_at = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(a)
        };
        if bytes.len() < HEADER {
            return Err(format!("truncated entry: {} bytes", bytes.len()));
        }
        if u32_at(0) as usize != bytes.len() {
            return Err("entry length differs from its slot".into());
        }
        let (stored, computed) = (u32_at(4), crc32fast::hash(&bytes[8..]));
        if stored != computed {
            return Err(format!(
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let lens = [
            u16_at(28),
            u16_at(30),
            u16_at(32),
            u32_at(36) as usize,
            u32_at(40) as usize,
        ];
        if lens.iter().sum::<usize>() + HEADER != bytes.len() {
            return Err("entry part lengths do not add up".into());
        }
        let mut at = HEADER;
        let mut parts = lens.map(|n| {
            let part = &bytes[at..at + n];
            at += n;
            part
        });
        let found_version = u64_at(8);
        if parts[0] != store.as_bytes()
            || parts[1] != aggregate.as_bytes()
            || found_version != version
        {
            return Err(format!(
                "index entry for {store:?}/{aggregate:?} v{version} points at {:?}/{:?} v{found_version}",
                String::from_utf8_lossy(parts[0]),
                String::from_utf8_lossy(parts[1]),
            ));
        }
        let event_type = std::str::from_utf8(std::mem::take(&mut parts[2]))
            .map_err(|_| "event type is not UTF-8")?;
        Ok(EntryView {
            version,
            timestamp_ms: u64_at(16) as i64,
            event_type,
            schema_version: u32_at(24),
            payload: parts[3],
            metadata: parts[4],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(lengths: &[usize]) -> Vec<Run> {
        let mut first_version = 1;
        lengths
            .iter()
            .map(|&n| {
                let run = Run {
                    first_version,
                    first_position: first_version,
                    segment_id: 1,
                    offset: 64 + first_version * 100,
                    lens: vec![10; n],
                };
                first_version += n as u64;
                run
            })
            .collect()
    }

    fn versions(runs: &[Run]) -> Vec<u64> {
        runs.iter()
            .flat_map(Run::locations)
            .map(|(v, _)| v)
            .collect()
    }

    #[test]
    fn a_limit_keeps_the_oldest_or_with_reverse_the_newest_events() {
        let mut forward = runs(&[2, 3, 2]);
        limit_runs(&mut forward, 4, false);
        assert_eq!(versions(&forward), vec![1, 2, 3, 4]);
        let mut exact = runs(&[2, 3, 2]);
        limit_runs(&mut exact, 5, false);
        assert_eq!(versions(&exact), vec![1, 2, 3, 4, 5]);
        let mut reverse = runs(&[2, 3, 2]);
        limit_runs(&mut reverse, 4, true);
        assert_eq!(versions(&reverse), vec![4, 5, 6, 7]);
        let mut boundary = runs(&[2, 3, 2]);
        limit_runs(&mut boundary, 2, true);
        assert_eq!(versions(&boundary), vec![6, 7]);
        let mut all = runs(&[2, 3]);
        limit_runs(&mut all, 9, true);
        assert_eq!(versions(&all), vec![1, 2, 3, 4, 5]);
    }
}
