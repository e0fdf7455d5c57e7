//! The handle of an open log: appends go to the writer thread, reads run on the caller's.

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::engine_state::EngineState;
use super::error::EngineError;
use super::frame::EncodedCommit;
use super::writer::Request;

/// An open log: appends go through the writer thread, reads run concurrently on any thread.
pub(crate) struct Engine {
    pub(crate) shared: Arc<EngineState>,
    pub(crate) tx: Mutex<Option<mpsc::Sender<Request>>>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// An empty commit to encode events into, in a buffer of an earlier commit when one is
    /// spare: [`append`](Self::append) it.
    pub fn new_commit(&self) -> EncodedCommit {
        self.shared.commit_pool.take()
    }

    /// Appends a commit atomically; resolves with the global position of its first event once
    /// it is durable under the configured [`Durability`]. A version conflict is
    /// [`EngineError::Conflict`], naming the event.
    pub async fn append(&self, mut commit: EncodedCommit) -> Result<u64, EngineError> {
        // The body's checksum is computed here, on the appender's thread, not the writer's.
        commit.finish();
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
