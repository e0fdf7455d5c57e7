//! The checkpointer thread: writes frozen memtables into the persisted index.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::engine_state::EngineState;
use super::error::EngineError;
use super::index::MemTable;

/// Writes frozen memtables to the index. A failed checkpoint (a full disk, say) is retried
/// with backoff on a reopened index; the memtable stays readable meanwhile, and the failure is
/// recorded so the writer refuses what would grow the unindexed tail past its bound (with
/// `StorageFull` for a full disk) rather than wait. The first attempt that succeeds clears it:
/// appends are accepted again without a reopen. The loop gives up when the store is poisoned
/// or closing (the log is durable, so the next open replays it), or when the index is
/// damaged.
pub(crate) fn checkpoint_loop(shared: &EngineState, rx: &mpsc::Receiver<Arc<MemTable>>) {
    /// Tells waiters the checkpointer is gone, however it ends (a panic included), so a
    /// closing writer never waits for it forever.
    struct Stopped<'a>(&'a EngineState);
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
            if let EngineError::Corruption(_) = e {
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
        let mut tiers = shared.tiers.write().unwrap_or_else(|p| p.into_inner());
        if tiers.frozen.as_ref().is_some_and(|f| Arc::ptr_eq(f, &mem)) {
            tiers.frozen = None;
        }
        drop(tiers);
        let _guard = shared
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shared.checkpoint_done.notify_all();
    }
}

impl EngineState {
    /// Records a failed checkpoint attempt and wakes whoever waits for one.
    pub(crate) fn checkpoint_failed(&self, failure: EngineError) {
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
    pub(crate) fn pause_checkpoints(&self, pause: Duration) {
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
}
