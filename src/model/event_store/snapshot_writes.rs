//! The snapshot writes of one store in flight: reads hand snapshots to background tasks, which
//! claim a slot here, so that one snapshot is not written twice at once, their number stays
//! bounded, and [`EventStore::flush_snapshots`] can wait for them.
//!
//! [`EventStore::flush_snapshots`]: crate::model::event_store::EventStore::flush_snapshots

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Snapshot writes in flight per store beyond which further ones are skipped (they are an
/// optimisation; the next read past a policy point takes them).
const IN_FLIGHT_MAX: usize = 16;

/// Background snapshot writes of one store: how many are running, and which.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    running: AtomicUsize,
    keys: Mutex<HashSet<(String, u64)>>,
    done: tokio::sync::Notify,
}

/// A claimed write slot; releasing it (on drop) wakes [`Writes::flushed`] waiters.
pub(crate) struct WriteSlot {
    writes: Arc<Writes>,
    key: (String, u64),
}

impl Writes {
    /// Claims a slot for the snapshot of `aggregate_id` at `version`; `None` if that snapshot
    /// is already being written or too many writes are running.
    pub(crate) fn claim(self: &Arc<Self>, aggregate_id: &str, version: u64) -> Option<WriteSlot> {
        let key = (aggregate_id.to_owned(), version);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= IN_FLIGHT_MAX || !keys.insert(key.clone()) {
            return None;
        }
        self.running.fetch_add(1, Ordering::SeqCst);
        Some(WriteSlot {
            writes: Arc::clone(self),
            key,
        })
    }

    /// Resolves once no write is running.
    pub(crate) async fn flushed(&self) {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        self.writes
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        if self.writes.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.writes.done.notify_waiters();
        }
    }
}
