//! The state an open engine's handle, writer and checkpointer share.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use super::commit_pool::CommitPool;
use super::error::EngineError;
use super::index::{Index, IndexReader};
use super::io::FileSystem;
use super::options::EngineOptions;
use super::segment::{Segment, SegmentHeader};
use super::tiers::IndexTiers;

/// State shared by the engine handle, the writer and the checkpointer.
pub(crate) struct EngineState {
    pub(crate) dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) index_path: PathBuf,
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) options: EngineOptions,
    pub(crate) segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub(crate) tiers: RwLock<IndexTiers>,
    /// The persisted index; replaced by a fresh handle after a failed checkpoint.
    pub(crate) index: RwLock<Arc<Index>>,
    /// Set when the writer shuts down; a failing checkpointer then gives up.
    pub(crate) closing: AtomicBool,
    /// Set when the checkpointer has exited.
    pub(crate) checkpointer_stopped: AtomicBool,
    /// Why the checkpointer's last attempt failed (a full disk, say); `None` once one succeeds.
    /// While it is set, the writer refuses commits that would grow the unindexed tail past
    /// its bound (see `Writer::admit`) instead of waiting for a checkpoint that cannot come.
    pub(crate) checkpoint_failure: Mutex<Option<EngineError>>,
    pub(crate) poison: Mutex<Option<String>>,
    pub(crate) checkpoint_done: Condvar,
    pub(crate) checkpoint_lock: Mutex<()>,
    pub(crate) last_position: AtomicU64,
    /// What the writer has done since the store opened (read as `LogCounters`).
    pub(crate) counters: Counters,
    /// Buffers of written commits, for the next ones.
    pub(crate) commit_pool: CommitPool,
    /// Tells readers following the log (see `scan`) that `last_position` moved.
    /// `None` once the engine is closed: dropping the sender wakes every follower, which then
    /// finds the store closed.
    pub(crate) published: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
    /// Held shared by every read of the log through the index or in global order; held
    /// exclusively by compaction while it renames a rewritten segment into place and swaps
    /// the engine's handle of it, so no read sees the file change under it (see
    /// `compaction`).
    pub(crate) compaction_gate: RwLock<()>,
    /// The segment a compaction is replacing, between its index commit and its swap: readers
    /// pick the file that matches their view of the index (see `compaction`).
    pub(crate) transition: RwLock<Option<Transition>>,
    /// Held shared by the writer while it checks and publishes a batch; held exclusively by
    /// a compaction whose index commit may delete an aggregate's rows, so that no append is
    /// checked against rows the commit then deletes.
    pub(crate) versions_gate: RwLock<()>,
    /// One compaction at a time.
    pub(crate) compaction_running: Mutex<()>,
    pub(crate) _lock: Box<dyn fmt::Debug + Send + Sync>,
}

impl EngineState {
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

    /// Blocks until no memtable is waiting for the checkpointer. Returns an error instead
    /// once the checkpointer has stopped or the store is poisoned: the memtable then cannot be
    /// indexed for now, and waiting would only stall the caller. While the checkpointer's
    /// attempts fail (its last error: `StorageFull` for a full disk), `on_failure` says
    /// whether to return that error at once or to keep waiting for a retry to succeed.
    pub(crate) fn wait_for_checkpoint(&self, on_failure: OnFailure) -> Result<(), EngineError> {
        let mut guard = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            let busy = self
                .tiers
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
            if on_failure == OnFailure::Return
                && let Some(e) = self.checkpoint_failure()
            {
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
    pub(crate) fn checkpoint_failure(&self) -> Option<EngineError> {
        self.checkpoint_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(EngineError::duplicate)
    }

    /// The current index handle.
    pub fn index(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the index handle with a freshly opened one (redb refuses all work after a
    /// failed write or sync; reopening runs its repair). Waits until no reader still uses the
    /// old handle, so the two never touch the file at once.
    pub(crate) fn reopen_index(&self) -> Result<(), EngineError> {
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
    pub(crate) fn segment_headers(&self) -> Vec<SegmentHeader> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.header)
            .collect()
    }

    /// The compaction gate, shared (see [`EngineState::compaction_gate`]).
    pub(crate) fn reading(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.compaction_gate
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// A reader of the persisted index. After a failed checkpoint, redb refuses all work on
    /// the old handle until the checkpointer swaps in a reopened one; a reader that hits that
    /// window waits briefly for the swap and tries again on the new handle.
    pub(crate) fn index_reader(&self) -> Result<IndexReader, EngineError> {
        let index = self.index();
        let first_error = match index.reader() {
            Ok(reader) => return Ok(reader),
            Err(e) => e,
        };
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(1));
            let current = self.index();
            if !Arc::ptr_eq(&current, &index) {
                return current.reader();
            }
        }
        Err(first_error)
    }
}

/// A segment being replaced by its compacted rewrite: the handle of each file, and the
/// rewrite's generation, which the index records once the compaction has committed.
#[derive(Debug)]
pub(crate) struct Transition {
    pub(crate) old: Arc<Segment>,
    pub(crate) new: Arc<Segment>,
}

impl EngineState {
    /// The handle of segment `id` matching an index view that records generation
    /// `generation` for it, while a compaction replaces it; `None` when no compaction is
    /// replacing it (the segment map's handle is then the one).
    pub(crate) fn transition_handle(&self, id: u64, generation: u32) -> Option<Arc<Segment>> {
        let transition = self.transition.read().unwrap_or_else(|p| p.into_inner());
        let t = transition
            .as_ref()
            .filter(|t| t.new.header.segment_id == id)?;
        Some(if generation == t.new.header.generation() {
            Arc::clone(&t.new)
        } else {
            Arc::clone(&t.old)
        })
    }

    /// The id of the segment a compaction is replacing, if any.
    pub(crate) fn in_transition(&self) -> Option<u64> {
        let transition = self.transition.read().unwrap_or_else(|p| p.into_inner());
        transition.as_ref().map(|t| t.new.header.segment_id)
    }
}

/// The writer's running counts, read as `LogCounters`. Relaxed atomics: each is exact on
/// its own, and the writer thread alone updates them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) syncs: AtomicU64,
    /// Nanoseconds spent in those syncs (a durable write counted whole), and the longest one.
    pub(crate) sync_nanos: AtomicU64,
    pub(crate) sync_nanos_max: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) segment_rolls: AtomicU64,
}

/// What [`EngineState::wait_for_checkpoint`] does while the checkpointer's attempts fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnFailure {
    /// Return the checkpointer's last error at once.
    Return,
    /// Keep waiting: a retry may succeed.
    Wait,
}
