//! Buffers of commits, reused: an appender encodes its commit into a buffer taken from the
//! pool, and the writer puts it back once the commit is written.
//!
//! A commit of a thousand events is a frame of a few hundred kilobytes. Allocated afresh for
//! each commit, such a buffer comes from (and returns to) the operating system every time, and
//! every page of it faults in again while the events are copied in. Kept here, a few of them
//! serve all commits at the cost of their memory alone.

use std::sync::Mutex;

use super::frame::EncodedCommit;

/// Buffers kept at most.
const POOLED_MAX: usize = 4;
/// A frame buffer larger than this is freed rather than kept, so that one large commit does
/// not hold its memory for good.
const POOLED_FRAME_BYTES_MAX: usize = 4 << 20;

/// The engine's spare commit buffers.
#[derive(Debug, Default)]
pub(crate) struct CommitPool {
    spare: Mutex<Vec<EncodedCommit>>,
}

impl CommitPool {
    /// An empty commit, in a reused buffer when one is spare.
    pub fn take(&self) -> EncodedCommit {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match spare {
            Some(commit) => {
                let (frame, keys, ids) = commit.into_buffers();
                EncodedCommit::with_buffers(frame, keys, ids)
            }
            None => EncodedCommit::default(),
        }
    }

    /// Keeps the buffers of a written (or refused) commit for a later one.
    pub fn put(&self, commit: EncodedCommit) {
        if commit.capacity() > POOLED_FRAME_BYTES_MAX {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < POOLED_MAX {
            spare.push(commit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::frame::NewEntry;

    fn entry(version: u64) -> NewEntry<'static> {
        NewEntry {
            store: "S",
            aggregate: "a",
            version,
            timestamp_ms: 0,
            event_type: "T",
            schema_version: 1,
            payload: &[1, 2, 3],
            metadata: &[],
        }
    }

    #[test]
    fn a_reused_buffer_starts_empty() {
        let pool = CommitPool::default();
        let mut first = pool.take();
        first.push(&entry(1));
        first.push(&entry(2));
        first.seal(1, 0);
        pool.put(first);
        let mut second = pool.take();
        assert!(second.keys.is_empty() && second.body().is_empty());
        second.push(&entry(3));
        let mut fresh = EncodedCommit::default();
        fresh.push(&entry(3));
        assert_eq!(second.seal(7, 64), fresh.seal(7, 64));
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_small_buffers() {
        let pool = CommitPool::default();
        for _ in 0..POOLED_MAX + 3 {
            pool.put(EncodedCommit::default());
        }
        let mut large = EncodedCommit::default();
        large.reserve(1, POOLED_FRAME_BYTES_MAX + 1);
        pool.put(large);
        let spare = pool.spare.lock().unwrap();
        assert_eq!(spare.len(), POOLED_MAX);
        assert!(spare.iter().all(|c| c.capacity() <= POOLED_FRAME_BYTES_MAX));
    }
}
