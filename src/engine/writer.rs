//! The group-commit writer: one thread owns the log's tail.
//!
//! Appenders send pre-encoded commits over a channel. The writer takes every commit waiting
//! (up to a batch limit), checks each commit's versions against the latest version of every
//! aggregate it touches (memtables, then the persisted index, then earlier commits of the same
//! batch), lays the accepted commits out as frames in one buffer, writes it with one call,
//! syncs once (under [`Durability::Immediate`]), publishes the new locations to readers, and
//! only then acknowledges each commit. A refused commit consumes no position, so global
//! positions stay gap-free.
//!
//! What one commit costs, beyond its write and sync, is kept small: a commit written alone is
//! sealed and written in the buffer it was encoded into (which then goes back to the engine's
//! pool for a later commit), one or two acknowledgements are sent by the writer itself rather
//! than through the notifier thread, and a writer whose lone appender comes back within
//! microseconds looks for its next commit before it goes to sleep. None of this changes what
//! is written, or in which order it is written, synced and published.
//!
//! Any failed write or sync **poisons** the engine: the outcome on disk is unknown (after a
//! failed fsync the kernel may have dropped the dirty pages), so nothing more is acknowledged
//! until the store is reopened and recovery has re-read the log. The exception is a full disk
//! while creating a segment: nothing was written to the log, so only the commits that needed
//! the new segment fail, with [`EngineError::StorageFull`], and later appends retry.
//!
//! Before any of that, back-pressure (`Writer::admit`) bounds the unindexed tail: a commit that
//! would grow it past its bound while the checkpointer cannot index the previous memtable (a
//! full disk under `index.redb`) is refused at once, with the checkpointer's error
//! (`StorageFull` for a full disk), and nothing of it is written; appends are accepted again
//! once a checkpoint succeeds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::engine_state::{EngineState, OnFailure};
use super::error::EngineError;
use super::frame::{EncodedCommit, FRAME_HEADER_BYTES};
use super::index::{Cursor, IndexReader, Location, MemTable};
use super::options::Durability;
use super::preparer::Preparer;
use super::segment::{self, Segment, SegmentHeader};
use super::tiers::IndexTiers;

/// Most bytes of commits written in one batch.
const BATCH_BYTES_MAX: usize = 32 << 20;
/// Most commits in one batch.
const BATCH_COMMITS_MAX: usize = 4096;
/// The writer keeps the buffer it lays a batch's frames out in for the next batch, unless a
/// large batch grew it past this.
const BATCH_BUFFER_KEPT_MAX: usize = 4 << 20;
/// How long the writer looks for a lone appender's next commit before it sleeps, when the
/// last one came within this time: about what waking a sleeping thread takes.
const SPIN_MAX: Duration = Duration::from_micros(50);
/// Acknowledgements of at most this many commits are sent by the writer itself: handing them
/// to the notifier thread would add a thread wake-up to each one's latency, for little saved.
const DIRECT_ACKS_MAX: usize = 2;

/// A message to the writer.
pub(crate) enum Request {
    /// Append a commit; reply with the position of its first event.
    Append {
        commit: EncodedCommit,
        reply: oneshot::Sender<Result<u64, EngineError>>,
    },
    /// Make everything written so far durable.
    Sync {
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
}

/// A commit waiting to be written, with its appender's reply.
type Append = (EncodedCommit, oneshot::Sender<Result<u64, EngineError>>);

/// A durable commit's acknowledgement: its waiting appender and its first position.
pub(crate) type Ack = (oneshot::Sender<Result<u64, EngineError>>, u64);

/// Sends acknowledgements, in order, until the writer hangs up.
pub(crate) fn notify_loop(acks: &Receiver<Vec<Ack>>) {
    while let Ok(batch) = acks.recv() {
        for (reply, position) in batch {
            let _ = reply.send(Ok(position));
        }
    }
}

pub(crate) struct Writer {
    pub shared: Arc<EngineState>,
    pub rx: Receiver<Request>,
    pub acks: mpsc::Sender<Vec<Ack>>,
    pub checkpoints: Sender<Arc<MemTable>>,
    pub segment: Arc<Segment>,
    pub cursor: Cursor,
    /// Bytes of the current segment known durable.
    pub durable_offset: u64,
    pub last_sync: Instant,
    /// Prepares the next segment in the background.
    pub preparer: Preparer,
    /// Whether the preparer was asked for the segment after the active one.
    pub next_requested: bool,
    /// Where the frames of a batch of several commits are laid out, reused.
    pub batch: Vec<u8>,
}

struct Accepted {
    commit: EncodedCommit,
    reply: oneshot::Sender<Result<u64, EngineError>>,
    first_position: u64,
    segment_id: u64,
    frame_offset: u64,
}

impl Writer {
    /// Runs until every sender is gone, then syncs and hands the last memtable over.
    pub fn run(mut self) {
        // A recovered log tail may already be due for a checkpoint, and the active segment
        // for the preparation of the next one.
        self.maybe_freeze();
        self.prepare_ahead();
        let tick = match self.shared.options.durability {
            Durability::Periodic(every) => Some(every),
            _ => None,
        };
        // How long the writer waited for its last batch, and whether that was one commit:
        // when a lone appender comes back within `SPIN_MAX` (one writer committing in a
        // loop), the writer looks for its next commit before going to sleep, since a sleeping
        // thread takes longer than that to wake up. With several appenders it does not: they
        // keep it busy anyway, and its yields would only slow them down.
        let mut last_wait = Duration::MAX;
        let mut last_batch = 0;
        loop {
            let idle_since = Instant::now();
            let spun = if last_wait <= SPIN_MAX && last_batch == 1 {
                self.spin_recv(idle_since)
            } else {
                self.rx.try_recv()
            };
            let first = match (spun, tick) {
                (Ok(r), _) => r,
                (Err(TryRecvError::Disconnected), _) => break,
                (Err(TryRecvError::Empty), Some(every)) => match self.rx.recv_timeout(every) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        self.periodic_sync();
                        last_wait = Duration::MAX;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                (Err(TryRecvError::Empty), None) => match self.rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            last_wait = idle_since.elapsed();
            let mut batch = vec![first];
            let mut bytes = 0usize;
            while batch.len() < BATCH_COMMITS_MAX && bytes < BATCH_BYTES_MAX {
                match self.rx.try_recv() {
                    Ok(r) => {
                        if let Request::Append { commit, .. } = &r {
                            bytes += commit.body().len();
                        }
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            last_batch = batch.len();
            self.process(batch);
            if tick.is_some() {
                self.periodic_sync();
            }
        }
        self.shutdown();
    }

    /// Looks for a request until `SPIN_MAX` after `since`, yielding the CPU in between (to
    /// the appenders, on a machine with few cores).
    fn spin_recv(&self, since: Instant) -> Result<Request, TryRecvError> {
        loop {
            match self.rx.try_recv() {
                Err(TryRecvError::Empty) if since.elapsed() < SPIN_MAX => {
                    std::thread::yield_now();
                }
                other => return other,
            }
        }
    }

    fn poisoned(&self) -> Option<EngineError> {
        self.shared
            .poison_reason()
            .map(|reason| EngineError::Poisoned { reason })
    }

    fn poison(&self, error: &EngineError) {
        self.shared.poison(error.to_string());
    }

    fn process(&mut self, batch: Vec<Request>) {
        // Compaction changes which aggregates the index knows only between batches, never
        // between a batch's version checks and its publication (see `compaction`).
        let shared = Arc::clone(&self.shared);
        let _gate = shared
            .versions_gate
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut appends = Vec::with_capacity(batch.len());
        let mut syncs = Vec::new();
        for request in batch {
            match request {
                Request::Append { commit, reply } => appends.push((commit, reply)),
                Request::Sync { reply } => syncs.push(reply),
            }
        }
        if let Some(e) = self.poisoned() {
            for (_, reply) in appends {
                let _ = reply.send(Err(EngineError::Poisoned {
                    reason: e.to_string(),
                }));
            }
            for reply in syncs {
                let _ = reply.send(Err(EngineError::Poisoned {
                    reason: e.to_string(),
                }));
            }
            return;
        }
        let appends = self.admit(appends);
        let accepted = self.check_versions(appends);
        let accepted = self.write(accepted);
        let sync_result = if syncs.is_empty() {
            Ok(())
        } else {
            self.sync()
        };
        for reply in syncs {
            let _ =
                reply.send(
                    sync_result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| EngineError::Poisoned {
                            reason: e.to_string(),
                        }),
                );
        }
        if accepted.is_empty() {
            return;
        }
        self.publish(&accepted);
        let events: usize = accepted.iter().map(|a| a.commit.keys.len()).sum();
        let counters = &self.shared.counters;
        counters
            .commits
            .fetch_add(accepted.len() as u64, Ordering::Relaxed);
        counters.events.fetch_add(events as u64, Ordering::Relaxed);
        let mut acks: Vec<Ack> = Vec::with_capacity(accepted.len());
        for a in accepted {
            acks.push((a.reply, a.first_position));
            self.shared.commit_pool.put(a.commit);
        }
        // Waking every waiting appender costs more than the write and sync of a batch, so a
        // separate thread does it while the writer moves on to the next batch; but for one
        // or two, going through that thread would only add its own wake-up to their latency.
        if acks.len() <= DIRECT_ACKS_MAX {
            for (reply, position) in acks {
                let _ = reply.send(Ok(position));
            }
        } else if let Err(mpsc::SendError(acks)) = self.acks.send(acks) {
            for (reply, position) in acks {
                let _ = reply.send(Ok(position));
            }
        }
        self.maybe_freeze();
    }

    /// Back-pressure, before anything is written: admits commits while the unindexed tail has
    /// room. The active memtable grows to at most twice `checkpoint_events` events (a commit
    /// into an empty one always fits, and so do the batch's own earlier commits), so a
    /// memtable handed to the checkpointer holds no more either. A commit that would take it
    /// further hands it over at once when no checkpoint is pending, or waits for the pending
    /// one, then hands it over.
    /// If the checkpointer cannot succeed for now (a full disk: `StorageFull`; another
    /// failure, or a stopped checkpointer: its error), the commit is refused at once, with
    /// every later one of the batch: nothing of them is written, no position is consumed, and
    /// memory stays bounded. Acknowledged commits are untouched and stay readable.
    fn admit(&mut self, appends: Vec<Append>) -> Vec<Append> {
        let limit = self.shared.options.checkpoint_events.saturating_mul(2);
        let mut admitted = Vec::with_capacity(appends.len());
        // Events of the commits admitted so far, not yet in the active memtable.
        let mut taken = 0usize;
        let mut appends = appends.into_iter();
        while let Some((commit, reply)) = appends.next() {
            let events = commit.keys.len();
            loop {
                let (pending, active) = {
                    let tiers = self.shared.tiers.read().unwrap_or_else(|p| p.into_inner());
                    (tiers.frozen.is_some(), tiers.active.events)
                };
                let unindexed = active + taken;
                if unindexed == 0 || unindexed + events <= limit {
                    break;
                }
                // The commit would take the active memtable past its bound. With a checkpoint
                // pending, wait for it (or refuse, if it is failing); with none, hand the
                // active memtable to the checkpointer now, so that the next pending one also
                // holds at most `limit` events. Commits of this batch that are not written yet
                // (`taken` alone) go to the fresh memtable: a batch is bounded by itself.
                let idle = if pending {
                    self.shared.wait_for_checkpoint(OnFailure::Return)
                } else if active == 0 {
                    break;
                } else {
                    Ok(())
                };
                let ready = idle.and_then(|()| {
                    self.freeze();
                    self.poisoned().map_or(Ok(()), Err)
                });
                if let Err(e) = ready {
                    for (_, reply) in std::iter::once((commit, reply)).chain(appends) {
                        let _ = reply.send(Err(e.duplicate()));
                    }
                    return admitted;
                }
            }
            taken += events;
            admitted.push((commit, reply));
        }
        admitted
    }

    /// Refuses (and answers) commits whose versions are not the next ones.
    fn check_versions(
        &self,
        appends: Vec<(EncodedCommit, oneshot::Sender<Result<u64, EngineError>>)>,
    ) -> Vec<(EncodedCommit, oneshot::Sender<Result<u64, EngineError>>)> {
        // Hold the tiers' read lock while the index reader is opened: the checkpointer drops
        // a frozen memtable only after its index commit, so one of the two always has it.
        // The reader is opened only if a version is not in memory (an aggregate untouched
        // since the last checkpoint): most commits never need it.
        let tiers = self.shared.tiers.read().unwrap_or_else(|p| p.into_inner());
        let mut reader = IndexView {
            shared: &self.shared,
            reader: None,
        };
        // Verdicts first, borrowing the commits; then the commits are moved out.
        let verdicts: Vec<Result<(), EngineError>> = {
            let mut batch_versions = HashMap::new();
            appends
                .iter()
                .map(|(commit, _)| check_commit(commit, &mut batch_versions, &tiers, &mut reader))
                .collect()
        };
        let mut accepted = Vec::with_capacity(appends.len());
        for ((commit, reply), verdict) in appends.into_iter().zip(verdicts) {
            match verdict {
                Ok(()) => accepted.push((commit, reply)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        accepted
    }

    /// Lays out and writes the accepted commits; returns those that are now written (and
    /// durable, under `Immediate`).
    fn write(
        &mut self,
        commits: Vec<(EncodedCommit, oneshot::Sender<Result<u64, EngineError>>)>,
    ) -> Vec<Accepted> {
        let mut batch = std::mem::take(&mut self.batch);
        let done = self.write_through(commits, &mut batch);
        batch.clear();
        if batch.capacity() <= BATCH_BUFFER_KEPT_MAX {
            self.batch = batch;
        }
        done
    }

    /// [`Writer::write`], laying the frames of several commits out in `batch`. A commit
    /// written alone is written from its own buffer, where it is sealed, without a copy.
    fn write_through(
        &mut self,
        commits: Vec<(EncodedCommit, oneshot::Sender<Result<u64, EngineError>>)>,
        batch: &mut Vec<u8>,
    ) -> Vec<Accepted> {
        let mut done: Vec<Accepted> = Vec::with_capacity(commits.len());
        let mut pending: Vec<Accepted> = Vec::new();
        let mut buffer_offset = self.cursor.offset;
        let mut commits = commits.into_iter();
        while let Some((mut commit, reply)) = commits.next() {
            let frame_len = commit.frame_len();
            if self.cursor.offset + frame_len > self.segment.header.size {
                // Seal this segment (write and sync what it has), then start the next one.
                if let Err(e) = self
                    .flush(staged(batch, &pending), buffer_offset)
                    .and_then(|()| self.sync())
                {
                    self.fail(e, pending, Some((commit, reply)), commits);
                    return done;
                }
                done.append(&mut pending);
                batch.clear();
                if let Err(e) = self.roll(frame_len) {
                    let storage_full = matches!(e, EngineError::StorageFull { .. });
                    if !storage_full {
                        self.poison(&e);
                    }
                    let _ = reply.send(Err(e.duplicate()));
                    for (_, reply) in commits {
                        let _ = reply.send(Err(e.duplicate()));
                    }
                    return done;
                }
                buffer_offset = self.cursor.offset;
                if self.cursor.offset + frame_len > self.segment.header.size {
                    // Later commits of the batch were version-checked assuming this one
                    // lands, so they fail with it: writing them could leave a version gap.
                    let e = EngineError::InvalidOptions(format!(
                        "a commit of {frame_len} bytes does not fit in a segment"
                    ));
                    for (_, reply) in std::iter::once((commit, reply)).chain(commits) {
                        let _ = reply.send(Err(e.duplicate()));
                    }
                    return done;
                }
            }
            let first_position = self.cursor.next_position;
            commit.seal(first_position, self.durable_offset);
            if let Some(first) = pending.first() {
                if batch.is_empty() {
                    batch.extend_from_slice(first.commit.frame());
                }
                batch.extend_from_slice(commit.frame());
            }
            let events = commit.keys.len() as u64;
            pending.push(Accepted {
                first_position,
                segment_id: self.segment.header.segment_id,
                frame_offset: self.cursor.offset,
                commit,
                reply,
            });
            self.cursor.offset += frame_len;
            self.cursor.next_position += events;
        }
        let staged = staged(batch, &pending);
        let result = match self.shared.options.durability {
            Durability::Immediate => self.flush_durable(staged, buffer_offset),
            _ => self.flush(staged, buffer_offset),
        };
        if let Err(e) = result {
            self.fail(e, pending, None, Vec::new().into_iter());
            return done;
        }
        done.append(&mut pending);
        self.prepare_ahead();
        done
    }

    /// Poisons the engine and fails every commit not yet acknowledged.
    fn fail(
        &mut self,
        e: EngineError,
        pending: Vec<Accepted>,
        current: Option<(EncodedCommit, oneshot::Sender<Result<u64, EngineError>>)>,
        rest: impl Iterator<Item = (EncodedCommit, oneshot::Sender<Result<u64, EngineError>>)>,
    ) {
        self.poison(&e);
        let replies = pending
            .into_iter()
            .map(|a| a.reply)
            .chain(current.map(|c| c.1))
            .chain(rest.map(|c| c.1));
        for reply in replies {
            let _ = reply.send(Err(e.duplicate()));
        }
    }

    fn flush(&self, buffer: &[u8], offset: u64) -> Result<(), EngineError> {
        if buffer.is_empty() {
            return Ok(());
        }
        self.segment
            .file
            .write_all_at(buffer, offset)
            .map_err(|e| EngineError::io("write", &self.segment.path, e))?;
        let counters = &self.shared.counters;
        counters
            .bytes_written
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Writes `buffer` and makes everything written so far durable, in one call when possible.
    fn flush_durable(&mut self, buffer: &[u8], offset: u64) -> Result<(), EngineError> {
        if buffer.is_empty() || self.durable_offset != offset {
            // Nothing new, or older bytes are still unsynced: write, then sync it all.
            self.flush(buffer, offset)?;
            return self.sync();
        }
        let started = Instant::now();
        self.segment
            .file
            .write_all_durable_at(buffer, offset)
            .map_err(|e| EngineError::io("write durably", &self.segment.path, e))?;
        let counters = &self.shared.counters;
        counters
            .bytes_written
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        self.durable_offset = self.cursor.offset;
        self.last_sync = Instant::now();
        self.count_sync(self.last_sync - started);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), EngineError> {
        if self.durable_offset == self.cursor.offset {
            return Ok(());
        }
        let started = Instant::now();
        self.segment.file.sync_data().map_err(|e| {
            let e = EngineError::io("sync", &self.segment.path, e);
            self.poison(&e);
            e
        })?;
        self.durable_offset = self.cursor.offset;
        self.last_sync = Instant::now();
        self.count_sync(self.last_sync - started);
        Ok(())
    }

    /// Counts one data sync of the log that took `took`.
    fn count_sync(&self, took: std::time::Duration) {
        let counters = &self.shared.counters;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        counters.syncs.fetch_add(1, Ordering::Relaxed);
        counters.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
        counters.sync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
    }

    fn periodic_sync(&mut self) {
        if let Durability::Periodic(every) = self.shared.options.durability
            && self.last_sync.elapsed() >= every
            && self.poisoned().is_none()
        {
            let _ = self.sync();
        }
    }

    /// Rolls over to the next segment, big enough for a frame of `needed` bytes: the one the
    /// preparer made ready (waiting for it if it is still being made), installed; or, when
    /// none was prepared, its preparation failed or it is too small, one created here.
    fn roll(&mut self, needed: u64) -> Result<(), EngineError> {
        let id = self.segment.header.segment_id + 1;
        let max = self.shared.options.segment_bytes;
        let fs = self.shared.fs.as_ref();
        let dir = &self.shared.log_dir;
        let prepared = match self.preparer.take(id) {
            Some(Ok(prepared)) if needed + segment::SEGMENT_HEADER_BYTES <= prepared.size => {
                Some(prepared)
            }
            Some(Ok(small)) => {
                segment::discard(fs, small);
                None
            }
            Some(Err(e)) => {
                tracing::warn!(
                    segment = id,
                    error = %e,
                    "preparing the next segment failed; creating it now"
                );
                None
            }
            None => None,
        };
        let size = prepared.as_ref().map_or_else(
            || segment::next_size(self.segment.header.size, needed, max),
            |p| p.size,
        );
        let header = SegmentHeader {
            segment_id: id,
            first_position: self.cursor.next_position,
            size,
            compacted: None,
        };
        let created = match prepared {
            Some(prepared) => segment::install(fs, dir, prepared, header),
            None => segment::create(fs, dir, header),
        };
        let segment = Arc::new(created.map_err(|e| EngineError::io("create segment in", dir, e))?);
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(header.segment_id, Arc::clone(&segment));
        self.segment = segment;
        self.cursor.segment_id = header.segment_id;
        self.cursor.offset = segment::SEGMENT_HEADER_BYTES;
        self.durable_offset = self.cursor.offset;
        self.shared
            .counters
            .segment_rolls
            .fetch_add(1, Ordering::Relaxed);
        // The writer is filling segments: have the next one made at once. It may be twice
        // this one's size, so it gets all the time this one takes to fill.
        self.preparer
            .request(id + 1, segment::next_size(size, 0, max));
        self.next_requested = true;
        Ok(())
    }

    /// Asks the preparer for the segment after the one active when the store opened, once
    /// that one is a quarter full (at once, if it already is): a store opened only to be read
    /// or barely written prepares nothing. After a roll, the next segment is asked for at
    /// once (see [`Writer::roll`]).
    fn prepare_ahead(&mut self) {
        let size = self.segment.header.size;
        if self.next_requested || self.cursor.offset < size / 4 {
            return;
        }
        let max = self.shared.options.segment_bytes;
        self.preparer.request(
            self.segment.header.segment_id + 1,
            segment::next_size(size, 0, max),
        );
        self.next_requested = true;
    }

    /// Makes written commits visible to readers and to the next version checks.
    fn publish(&self, accepted: &[Accepted]) {
        let mut tiers = self.shared.tiers.write().unwrap_or_else(|p| p.into_inner());
        for a in accepted {
            let entries_start = a.frame_offset + FRAME_HEADER_BYTES as u64;
            tiers
                .active
                .insert_all(a.commit.keys.iter().enumerate().map(|(i, key)| {
                    let loc = Location {
                        position: a.first_position + i as u64,
                        segment_id: a.segment_id,
                        offset: entries_start + u64::from(key.body_offset),
                        len: key.len,
                    };
                    let (store, aggregate) = (a.commit.store(key), a.commit.aggregate(key));
                    (store, aggregate, key.version, key.timestamp_ms, loc)
                }));
        }
        tiers.active.end = self.cursor;
        self.shared.set_last_position(self.cursor.next_position - 1);
    }

    /// Hands the active memtable to the checkpointer once it is large enough and the previous
    /// one is done. Its events must be durable first: the index never points past the
    /// durable log.
    ///
    /// While the previous one is still being checkpointed, the active memtable keeps growing
    /// up to its bound; [`Writer::admit`] then holds back (or refuses) further commits. This
    /// bounds memory and the log tail a crash recovery must replay.
    pub(crate) fn maybe_freeze(&mut self) {
        let threshold = self.shared.options.checkpoint_events;
        let (pending, events) = {
            let tiers = self.shared.tiers.read().unwrap_or_else(|p| p.into_inner());
            (tiers.frozen.is_some(), tiers.active.events)
        };
        if events >= threshold && !pending {
            self.freeze();
        }
    }

    fn freeze(&mut self) {
        if self.sync().is_err() {
            return;
        }
        let frozen = {
            let mut tiers = self.shared.tiers.write().unwrap_or_else(|p| p.into_inner());
            if tiers.active.events == 0 || tiers.frozen.is_some() {
                return;
            }
            let active = std::mem::replace(&mut tiers.active, MemTable::starting_at(self.cursor));
            let frozen = Arc::new(active);
            tiers.frozen = Some(Arc::clone(&frozen));
            frozen
        };
        let _ = self.checkpoints.send(frozen);
    }

    fn shutdown(&mut self) {
        self.shared.start_closing();
        if self.poisoned().is_some() {
            return;
        }
        if self.sync().is_err() {
            return;
        }
        // Wait for a checkpoint in flight, then checkpoint the rest, so the next open replays
        // nothing.
        let _ = self.shared.wait_for_checkpoint(OnFailure::Wait);
        self.freeze();
        let _ = self.shared.wait_for_checkpoint(OnFailure::Wait);
        // Everything is synced and indexed: mark the close as clean, so the next open need not
        // look for stale bytes after the end of data (only a crash leaves any).
        let index = self.shared.index();
        if index.checkpoint().ok().flatten() == Some(self.cursor)
            && let Err(e) = index.set_clean_end(Some(self.cursor))
        {
            tracing::warn!(
                error = %e,
                "could not mark the close as clean; the next open checks the log's tail"
            );
        }
    }
}

/// The bytes of the frames not yet written: the one pending commit's own sealed frame, or the
/// batch buffer they were laid out in.
fn staged<'a>(batch: &'a [u8], pending: &'a [Accepted]) -> &'a [u8] {
    match pending {
        [only] if batch.is_empty() => only.commit.frame(),
        _ => batch,
    }
}

/// Checks that every event of `commit` has the next version of its aggregate, given the
/// latest versions of the batch's earlier accepted commits (`batch`, updated when it passes),
/// then the memtables and the index. Consecutive events of one aggregate are checked against
/// each other without a lookup.
fn check_commit<'c>(
    commit: &'c EncodedCommit,
    batch: &mut HashMap<(&'c str, &'c str), u64>,
    tiers: &IndexTiers,
    index: &mut IndexView<'_>,
) -> Result<(), EngineError> {
    let mut local: HashMap<(&str, &str), u64> = HashMap::new();
    let mut previous: Option<((&str, &str), u64)> = None;
    for key in &commit.keys {
        let k = (commit.store(key), commit.aggregate(key));
        let last = match previous {
            Some((p, v)) if p == k => v,
            _ => {
                if let Some((p, v)) = previous {
                    local.insert(p, v);
                }
                match local.get(&k).or_else(|| batch.get(&k)) {
                    Some(&v) => v,
                    None => index.last_version(tiers, k.0, k.1)?,
                }
            }
        };
        if key.version != last + 1 {
            return Err(EngineError::Conflict {
                store: k.0.to_owned(),
                aggregate: k.1.to_owned(),
                version: key.version,
                last,
            });
        }
        previous = Some((k, key.version));
    }
    batch.extend(local);
    batch.extend(previous);
    Ok(())
}

/// The version checks' view of the index: the memtables, then the persisted index, whose
/// reader is opened at the first version the memtables do not hold.
struct IndexView<'s> {
    shared: &'s EngineState,
    reader: Option<IndexReader>,
}

impl IndexView<'_> {
    /// The latest version of an aggregate (0 when it has none).
    fn last_version(
        &mut self,
        tiers: &IndexTiers,
        store: &str,
        aggregate: &str,
    ) -> Result<u64, EngineError> {
        if let Some(v) = tiers.in_memory_version(store, aggregate) {
            return Ok(v);
        }
        let reader = match &mut self.reader {
            Some(reader) => reader,
            empty => empty.insert(self.shared.index_reader().map_err(|e| {
                EngineError::index("read index", &self.shared.index_path, e.to_string())
            })?),
        };
        Ok(reader.last_version(store, aggregate)?.unwrap_or(0))
    }
}
