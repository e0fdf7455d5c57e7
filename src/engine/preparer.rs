//! The segment preparer: a thread that creates and zero-fills the next segment file while the
//! writer fills the current one, so that rolling over costs the writer a header write, a
//! rename and two syncs instead of writing and syncing a whole segment of zeros.
//!
//! The writer asks for segment `id` of `size` bytes ([`Preparer::request`]) as soon as it has
//! rolled over to the segment before (or, for the segment active when the store opened, once
//! that one is a quarter full), and takes it when it rolls ([`Preparer::take`]), waiting if the
//! preparation is still under way. A preparation that failed (a full disk, say) is reported
//! there, and the writer creates the segment itself. The prepared file lives under a temporary
//! name and holds no data (see [`segment::prepare`]): a crash at any step leaves at most a
//! leftover that the next open removes. One still unused when the writer stops is removed.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::io::FileSystem;
use super::segment::{self, Prepared};

/// What the preparer is doing, or has done, for the writer.
#[derive(Debug)]
enum Slot {
    /// Nothing asked for, or the last result was taken.
    Idle,
    /// Preparing a segment.
    Working,
    /// Prepared, waiting to be installed.
    Ready(Prepared),
    /// The preparation of segment `id` failed.
    Failed { id: u64, error: io::Error },
}

#[derive(Debug)]
struct Shared {
    slot: Mutex<Slot>,
    done: Condvar,
}

impl Shared {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's handle on the preparer thread.
#[derive(Debug)]
pub(crate) struct Preparer {
    fs: Arc<dyn FileSystem>,
    shared: Arc<Shared>,
    requests: Option<Sender<(u64, u64)>>,
    thread: Option<JoinHandle<()>>,
}

impl Preparer {
    /// Starts the preparer thread for the segments of `log_dir`.
    pub fn start(fs: Arc<dyn FileSystem>, log_dir: PathBuf) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::Idle),
            done: Condvar::new(),
        });
        let (requests, rx) = mpsc::channel::<(u64, u64)>();
        let thread = {
            let fs = Arc::clone(&fs);
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("annals-prepare".into())
                .spawn(move || {
                    while let Ok((id, size)) = rx.recv() {
                        let outcome = segment::prepare(fs.as_ref(), &log_dir, id, size);
                        let mut slot = shared.slot();
                        *slot = match outcome {
                            Ok(prepared) => Slot::Ready(prepared),
                            Err(error) => Slot::Failed { id, error },
                        };
                        shared.done.notify_all();
                    }
                })?
        };
        Ok(Preparer {
            fs,
            shared,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Asks for segment `id` of `size` bytes, replacing (and removing) one prepared before.
    pub fn request(&self, id: u64, size: u64) {
        let Some(requests) = &self.requests else {
            return;
        };
        let mut slot = self.shared.slot();
        while let Slot::Working = *slot {
            slot = self
                .shared
                .done
                .wait(slot)
                .unwrap_or_else(|p| p.into_inner());
        }
        if let Slot::Ready(old) = std::mem::replace(&mut *slot, Slot::Working) {
            segment::discard(self.fs.as_ref(), old);
        }
        if requests.send((id, size)).is_err() {
            *slot = Slot::Idle;
        }
    }

    /// The prepared segment `id`, waiting for its preparation to finish; `None` when none was
    /// asked for (one prepared for another id is removed), the error when it failed.
    pub fn take(&self, id: u64) -> Option<io::Result<Prepared>> {
        let mut slot = self.shared.slot();
        while let Slot::Working = *slot {
            slot = self
                .shared
                .done
                .wait(slot)
                .unwrap_or_else(|p| p.into_inner());
        }
        match std::mem::replace(&mut *slot, Slot::Idle) {
            Slot::Ready(prepared) if prepared.segment_id == id => Some(Ok(prepared)),
            Slot::Ready(other) => {
                segment::discard(self.fs.as_ref(), other);
                None
            }
            Slot::Failed { id: failed, error } if failed == id => Some(Err(error)),
            _ => None,
        }
    }
}

impl Drop for Preparer {
    /// Stops the thread and removes a prepared segment nobody will use.
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Slot::Ready(prepared) = std::mem::replace(&mut *self.shared.slot(), Slot::Idle) {
            segment::discard(self.fs.as_ref(), prepared);
        }
    }
}
