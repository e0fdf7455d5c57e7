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

pub mod error;
pub mod frame;
pub mod index;
pub mod io;
mod recovery;
pub mod segment;
pub mod sim;
pub mod verify;
mod writer;

use std::collections::BTreeMap;
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
use index::{Cursor, Index, IndexReader, Location, MemTable};
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
    /// Events held in memory before they are checkpointed into the persisted index.
    pub checkpoint_events: usize,
    /// Cache of the persisted index, in bytes.
    pub index_cache_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            durability: Durability::Immediate,
            segment_bytes: 64 << 20,
            checkpoint_events: 100_000,
            index_cache_bytes: 64 << 20,
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
    poison: Mutex<Option<String>>,
    checkpoint_done: Condvar,
    checkpoint_lock: Mutex<()>,
    last_position: AtomicU64,
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
    }

    /// Blocks until no memtable is waiting for the checkpointer, or `limit` has passed.
    pub fn wait_for_checkpoint_up_to(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut guard = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while Instant::now() < deadline {
            let busy = self
                .overlay
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .frozen
                .is_some();
            if !busy || self.checkpointer_stopped.load(Ordering::Acquire) {
                return;
            }
            guard = self
                .checkpoint_done
                .wait_timeout(guard, Duration::from_millis(10))
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
        let segments = load_segments(fs.as_ref(), &log_dir)?;
        let index_path = dir.join("index.redb");
        let (index, checkpoint) = open_index(fs.as_ref(), &index_path, &options, &segments)?;
        // The index file may have just been created: make its name durable.
        fs.sync_dir(dir)
            .map_err(|e| EngineError::io("sync directory", dir, e))?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            log_dir,
            index_path,
            fs,
            options,
            segments: RwLock::new(segments),
            overlay: RwLock::new(Overlay::default()),
            index: RwLock::new(Arc::new(index)),
            closing: std::sync::atomic::AtomicBool::new(false),
            checkpointer_stopped: std::sync::atomic::AtomicBool::new(false),
            poison: Mutex::new(None),
            checkpoint_done: Condvar::new(),
            checkpoint_lock: Mutex::new(()),
            last_position: AtomicU64::new(0),
            _lock: lock,
        });
        let (segment, cursor) = recover(&shared, checkpoint)?;
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
        let mut locations = self.locations(store, aggregate, min.max(1), max)?;
        if let Some(limit) = limit {
            if reverse {
                let skip = locations.len().saturating_sub(limit);
                locations.drain(..skip);
            } else {
                locations.truncate(limit);
            }
        }
        let mut events = self.read_locations(store, aggregate, &locations)?;
        if reverse {
            events.reverse();
        }
        Ok(events)
    }

    /// Locations of versions `min..=max` of an aggregate, ascending by version.
    fn locations(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
    ) -> Result<Vec<(u64, Location)>, EngineError> {
        if min > max {
            return Ok(Vec::new());
        }
        let (tails, reader) = {
            let overlay = self
                .shared
                .overlay
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let mut tails = Vec::with_capacity(2);
            for mem in [Some(&overlay.active), overlay.frozen.as_deref()]
                .into_iter()
                .flatten()
            {
                if let Some(tail) = mem.tail(store, aggregate) {
                    let lo = min.max(tail.first_version);
                    let hi = max.min(tail.last_version());
                    let slice: Vec<(u64, Location)> = (lo..=hi)
                        .map(|v| (v, tail.locations[(v - tail.first_version) as usize]))
                        .collect();
                    tails.push((tail.first_version, slice));
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
            reader.locations(
                store,
                aggregate,
                min,
                max.min(oldest_in_memory.saturating_sub(1)),
            )?
        } else {
            Vec::new()
        };
        // Frozen (older) first, then active; a version present twice keeps one copy.
        for (_, slice) in tails.into_iter().rev() {
            for (v, loc) in slice {
                if out.last().is_none_or(|(last, _)| *last < v) {
                    out.push((v, loc));
                }
            }
        }
        Ok(out)
    }

    /// Reads and verifies entries, coalescing neighbouring ones into single reads.
    fn read_locations(
        &self,
        store: &str,
        aggregate: &str,
        locations: &[(u64, Location)],
    ) -> Result<Vec<(u64, LogEvent)>, EngineError> {
        const GAP_MAX: u64 = 64 << 10;
        const RUN_MAX: u64 = 4 << 20;
        let mut out = Vec::with_capacity(locations.len());
        let mut i = 0;
        while i < locations.len() {
            let first = locations[i].1;
            let mut end = first.offset + u64::from(first.len);
            let mut j = i + 1;
            while j < locations.len() {
                let next = locations[j].1;
                if next.segment_id != first.segment_id
                    || next.offset < end
                    || next.offset - end > GAP_MAX
                    || next.offset + u64::from(next.len) - first.offset > RUN_MAX
                {
                    break;
                }
                end = next.offset + u64::from(next.len);
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
            let mut buf = vec![0u8; (end - first.offset) as usize];
            segment
                .file
                .read_exact_at(&mut buf, first.offset)
                .map_err(|e| EngineError::io("read", &segment.path, e))?;
            for (version, loc) in &locations[i..j] {
                let start = (loc.offset - first.offset) as usize;
                let bytes = &buf[start..start + loc.len as usize];
                let corrupt = |reason: String| EngineError::Corruption {
                    file: segment.path.clone(),
                    offset: loc.offset,
                    reason,
                };
                let event = frame::decode_entry(bytes).map_err(|e| corrupt(e.to_string()))?;
                if event.store != store || event.aggregate != aggregate || event.version != *version
                {
                    return Err(corrupt(format!(
                        "index entry for {store:?}/{aggregate:?} v{version} points at {:?}/{:?} v{}",
                        event.store, event.aggregate, event.version
                    )));
                }
                out.push((loc.position, event));
            }
            i = j;
        }
        Ok(out)
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

    /// Stops the writer after it has drained and synced, checkpoints the index, and releases
    /// the store. Dropping the engine does the same.
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

/// Writes frozen memtables to the index. A failed checkpoint (a full disk, say) is retried
/// with backoff on a reopened index; the memtable stays readable meanwhile. The loop gives up
/// when the store is poisoned or closing: the log is durable, so the next open replays it.
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
    let _stopped = Stopped(shared);
    'memtables: while let Ok(mem) = rx.recv() {
        let mut backoff = Duration::from_millis(10);
        loop {
            // Bind the handle in its own statement: it must not live across the reopen below.
            let result = shared.index().apply(&mem);
            let Err(e) = result else { break };
            if let EngineError::Corruption { .. } = e {
                // The derived index is damaged: stop checkpointing (the log stays the source
                // of truth, and the tail stays readable in memory) and delete the file so the
                // next open rebuilds it from the log.
                tracing::error!(error = %e, "index damaged; it will be rebuilt on the next open");
                let _ = shared.fs.remove(&shared.index_path);
                let _ = shared.fs.sync_dir(&shared.dir);
                break 'memtables;
            }
            tracing::warn!(error = %e, "index checkpoint failed; reopening the index to retry");
            // redb refuses all work, reads included, after a failed write: reopen at once.
            while let Err(e) = shared.reopen_index() {
                if shared.poison_reason().is_some() || shared.closing.load(Ordering::Acquire) {
                    break 'memtables;
                }
                tracing::warn!(error = %e, "reopening the index failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            if shared.poison_reason().is_some() || shared.closing.load(Ordering::Acquire) {
                break 'memtables;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
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

/// Opens every segment of `log_dir`, checking headers and sequence. A last segment with an
/// unreadable header and nothing but zeros after it was being created when the store stopped:
/// it holds no data and is removed. One with data after a bad header is corruption (a damaged
/// header must never make acknowledged commits disappear).
fn load_segments(
    fs: &dyn FileSystem,
    log_dir: &Path,
) -> Result<BTreeMap<u64, Arc<Segment>>, EngineError> {
    let found = segment::find_all(fs, log_dir)?;
    let last_id = found.last().map(|f| f.id);
    let mut segments = BTreeMap::new();
    for f in found {
        let id = f.id;
        let reason = match &f.header {
            Ok(_) => None,
            Err(reason) => Some(*reason),
        };
        if let Some(reason) = reason {
            if Some(id) == last_id && f.holds_no_data()? {
                remove_unfinished(fs, log_dir, &f.path, reason)?;
                continue;
            }
            return Err(EngineError::Corruption {
                file: f.path,
                offset: 0,
                reason: reason.into(),
            });
        }
        if let Some(prev) = segments.keys().next_back()
            && *prev + 1 != id
        {
            return Err(EngineError::Corruption {
                file: f.path,
                offset: 0,
                reason: format!("segment {} is missing", prev + 1),
            });
        }
        let segment = f.into_segment().expect("the header was checked above");
        segments.insert(id, Arc::new(segment));
    }
    Ok(segments)
}

fn remove_unfinished(
    fs: &dyn FileSystem,
    log_dir: &Path,
    path: &Path,
    reason: &str,
) -> Result<(), EngineError> {
    tracing::warn!(file = %path.display(), reason, "removing a segment whose creation did not finish");
    fs.remove(path)
        .map_err(|e| EngineError::io("remove", path, e))?;
    fs.sync_dir(log_dir)
        .map_err(|e| EngineError::io("sync directory", log_dir, e))
}

/// Opens the index and reads its checkpoint. An index that cannot be read, or whose
/// checkpoint does not point into the log, is replaced by an empty one, rebuilt from the log.
fn open_index(
    fs: &dyn FileSystem,
    path: &Path,
    options: &EngineOptions,
    segments: &BTreeMap<u64, Arc<Segment>>,
) -> Result<(Index, Option<Cursor>), EngineError> {
    let file = fs
        .open(path, true)
        .map_err(|e| EngineError::io("open", path, e))?;
    let problem = match Index::open(file, path, options.index_cache_bytes) {
        Err(e) => e.to_string(),
        Ok(index) => match index.checkpoint() {
            Err(e) => e.to_string(),
            Ok(None) if segments.is_empty() => return Ok((index, None)),
            Ok(None) => match index.event_count() {
                Ok(0) => return Ok((index, None)),
                _ => "the index holds events but no checkpoint".to_owned(),
            },
            Ok(Some(c)) => match segments.get(&c.segment_id) {
                Some(s) if c.offset >= SEGMENT_HEADER_BYTES && c.offset <= s.header.size => {
                    return Ok((index, Some(c)));
                }
                _ => format!("its checkpoint {c:?} points outside the log"),
            },
        },
    };
    tracing::warn!(file = %path.display(), %problem, "rebuilding the index from the log");
    fs.remove(path)
        .map_err(|e| EngineError::io("remove", path, e))?;
    let file = fs
        .open(path, true)
        .map_err(|e| EngineError::io("create", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir)
        .map_err(|e| EngineError::io("sync directory", dir, e))?;
    Ok((Index::open(file, path, options.index_cache_bytes)?, None))
}

/// Replays the log past the index checkpoint into the active memtable; returns the segment to
/// write to and the cursor where the next frame goes.
fn recover(
    shared: &Arc<Shared>,
    checkpoint: Option<Cursor>,
) -> Result<(Arc<Segment>, Cursor), EngineError> {
    let segments: Vec<Arc<Segment>> = shared
        .segments
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let Some(last) = segments.last().cloned() else {
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
        shared
            .overlay
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .active = MemTable::starting_at(cursor);
        return Ok((segment, cursor));
    };
    // What is in the page cache may not be durable: sync the last segment before anything is
    // indexed from it.
    last.file
        .sync_data()
        .map_err(|e| EngineError::io("sync", &last.path, e))?;
    let first = &segments[0];
    let start = Cursor {
        segment_id: first.header.segment_id,
        offset: SEGMENT_HEADER_BYTES,
        next_position: first.header.first_position,
    };
    let mut cursor = checkpoint.unwrap_or(start);
    let mut mem = MemTable::starting_at(cursor);
    // Writers keep the unindexed tail below about twice the threshold (see
    // `Writer::maybe_freeze`); a longer one (an index rebuild) is indexed in chunks meanwhile.
    let flush_every = shared.options.checkpoint_events.saturating_mul(4);
    let mut flush = |mem: &mut MemTable, at: Cursor| -> Result<(), EngineError> {
        shared.index().apply(mem)?;
        *mem = MemTable::starting_at(at);
        Ok(())
    };
    let start_segment = cursor.segment_id;
    for segment in segments
        .iter()
        .filter(|s| s.header.segment_id >= start_segment)
    {
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
        let is_last = Arc::ptr_eq(segment, &last);
        recovery::scan_segment(
            segment,
            is_last,
            &mut cursor,
            &mut mem,
            flush_every,
            &mut flush,
        )?;
    }
    // The replayed tail stays in memory: the writer hands it to the checkpointer as soon as
    // it starts, so opening does not wait for it to be indexed.
    mem.end = cursor;
    shared
        .overlay
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .active = mem;
    Ok((last, cursor))
}
