//! A live log: a store read by another process than the one writing it, while it writes.
//!
//! The writer holds the store's `LOCK`, and the persisted index is a redb file that only the
//! process holding it may open (redb keeps no record of other processes' read transactions,
//! so pages a reader is still reading could be freed and reused under it). A live reader
//! therefore takes no lock and opens neither database file: it reads the segment files,
//! through read-only handles, and builds its own index in memory ([`MemTable`]) while it
//! scans them, as recovery replays the log.
//!
//! What makes this safe is how the writer changes the log:
//! - a segment file appears under its name complete (zero-filled, its header written and
//!   synced, then renamed into place: see `segment::install`), and is never removed or
//!   rewritten once it holds a frame — except by compaction, which replaces a sealed segment
//!   whole, by a rename, with a compacted one holding a subset of its frames' events at the
//!   same positions (a reader holding the old file keeps reading it, consistently; one that
//!   opens the segment later reads the compacted one, whose gaps it accepts, see `compaction`);
//! - frames are only ever written past the end of data, each commit in one frame whose
//!   checksum covers every one of its events;
//! - the writer writes the last frames of a segment before it creates the next one.
//!
//! So a reader exposes a frame only once it has read it whole and verified it (header,
//! frame checksum, every entry's checksum, gap-free positions, each aggregate's versions
//! `1..=n`): never a torn commit or part of an event group. At the end of the data, a frame
//! that does not verify is one the writer is still writing (or a torn write a crash left,
//! which the writer's next open zero-fills): the scan stops before it and tries again on the
//! next refresh. Whether the writer has finished with a segment is told by the next segment's
//! existence: once it exists, the segment is read again from where the scan stopped, and
//! whatever does not verify there now is damage, reported as [`EngineError::Corruption`].
//! Damage in the segment being written is told apart from a write in progress the way
//! recovery tells it from a torn tail: a later valid frame whose `durable_offset` says the
//! bytes had been synced before it was written.
//!
//! A live reader sees a commit as soon as its frame is written, which is at the latest when
//! the append is acknowledged (under `Durability::Immediate`, possibly a moment before its
//! sync returns). A crash of the writer's process loses nothing it has written, so a reader
//! never sees a commit that the writer's next open would not find. A power loss, or an
//! fsync failure after which the kernel drops the written pages, can unmake the last commits
//! a reader has seen if they were not yet acknowledged: readers on the writer's machine go
//! down with it in the first case; the second leaves the reader stopped or reporting
//! corruption until it is reopened.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use super::continuity;
use super::entry_view::EntryView;
use super::error::EngineError;
use super::frame::{self, FRAME_HEADER_BYTES, FrameError};
use super::index::{Cursor, Location, MemTable};
use super::io::FileSystem;
use super::layout;
use super::read::{limit_runs, read_runs};
use super::recovery::{in_sequence, read_frame, vouched_by};
use super::scan::{self, LogBatch, LogCursor, SegmentSource};
use super::segment::{self, SEGMENT_HEADER_BYTES, Segment};
use super::stats::StoreSummary;

/// Events a refresh reads before it makes them visible, so that a long scan (the first one,
/// of a large store) publishes as it goes and holds a bounded number of events aside.
const APPLY_EVENTS: usize = 65_536;

/// How long a scan stopped at an invalid frame waits before it first looks through the rest
/// of the segment for a later frame vouching for it; the wait doubles up to
/// [`STALL_CHECK_MAX`], as that look reads the whole segment.
const STALL_CHECK_FIRST: Duration = Duration::from_secs(1);
const STALL_CHECK_MAX: Duration = Duration::from_secs(64);

/// A store's log, read while another process writes it.
#[derive(Debug)]
pub(crate) struct LiveLog {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    log_dir: PathBuf,
    /// What readers see: every verified commit up to `last_position`.
    view: RwLock<View>,
    /// Where the next refresh continues; one refresh at a time.
    scan: Mutex<Scan>,
    /// Marked changed whenever a refresh makes commits visible; gone once the log is closed
    /// or the follower met damage.
    published: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
    /// The damage that stopped the follower, reported by reads at the end of the log.
    failure: Mutex<Option<EngineError>>,
    closed: AtomicBool,
}

/// The verified log: an index of every event, the segments it lies in, its last position.
#[derive(Debug, Default)]
struct View {
    mem: MemTable,
    segments: BTreeMap<u64, Arc<Segment>>,
    last_position: u64,
}

/// Where the scan of the log continues.
#[derive(Debug, Default)]
struct Scan {
    /// Where the next frame is expected (meaningless until `segment` is set).
    cursor: Cursor,
    /// The segment the cursor is in; `None` until the log's first segment exists.
    segment: Option<Arc<Segment>>,
    /// The invalid frame the scan is stopped at, if any.
    stall: Option<Stall>,
}

/// An invalid frame at the end of the data of the last segment, and when to look next for a
/// later frame that would make it damage rather than a write in progress.
#[derive(Debug)]
struct Stall {
    segment_id: u64,
    offset: u64,
    next_check: Instant,
    every: Duration,
}

/// What one pass of a refresh found: frames verified, not yet visible.
struct Step {
    cursor: Cursor,
    segment: Option<Arc<Segment>>,
    segments: Vec<Arc<Segment>>,
    events: Vec<Found>,
}

/// An event of a verified frame.
struct Found {
    store: String,
    aggregate: String,
    version: u64,
    timestamp_ms: i64,
    location: Location,
}

impl LiveLog {
    /// Opens the store in `dir` for reading while another process may write it, and reads
    /// every commit verified so far. Creates, locks and modifies nothing.
    pub(crate) fn open(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<Arc<LiveLog>, EngineError> {
        let log_dir = layout::log_dir(dir);
        let exists = fs
            .exists(&log_dir)
            .map_err(|e| EngineError::io("look for", &log_dir, e))?;
        if !exists {
            let e = io::Error::new(io::ErrorKind::NotFound, "not a store: it has no log");
            return Err(EngineError::io("open", &log_dir, e));
        }
        let live = Arc::new(LiveLog {
            fs,
            dir: dir.to_owned(),
            log_dir,
            view: RwLock::new(View::default()),
            scan: Mutex::new(Scan::default()),
            published: Mutex::new(Some(tokio::sync::watch::Sender::new(0))),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        live.refresh()?;
        Ok(live)
    }

    /// The store directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The position of the last event verified (0 when none).
    pub(crate) fn last_position(&self) -> u64 {
        self.view().last_position
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the commits written since the last refresh, up to the last one that verifies,
    /// and makes them visible; returns the last position. Damage is
    /// [`EngineError::Corruption`], and leaves what was visible as it was.
    pub(crate) fn refresh(&self) -> Result<u64, EngineError> {
        let mut scan = self.scan.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut step = Step {
                cursor: scan.cursor,
                segment: scan.segment.clone(),
                segments: Vec::new(),
                events: Vec::new(),
            };
            let more = self.scan_frames(&mut scan.stall, &mut step)?;
            if !step.events.is_empty() || !step.segments.is_empty() {
                self.apply(&step)?;
            }
            scan.cursor = step.cursor;
            scan.segment = step.segment;
            if !more {
                break;
            }
        }
        let last = self.last_position();
        if let Some(sender) = &*self.published.lock().unwrap_or_else(|p| p.into_inner()) {
            sender.send_if_modified(|published| {
                let newer = *published != last;
                *published = last;
                newer
            });
        }
        Ok(last)
    }

    /// Reads and verifies frames from `step.cursor` into `step`, up to the end of the data
    /// verified so far; `true` when it stopped early to make what it found visible first.
    fn scan_frames(&self, stall: &mut Option<Stall>, step: &mut Step) -> Result<bool, EngineError> {
        if step.segment.is_none() {
            let Some(first) = self.next_segment_file(None)? else {
                return Ok(false);
            };
            step.cursor = Cursor {
                segment_id: first.header.segment_id,
                offset: SEGMENT_HEADER_BYTES,
                next_position: first.header.first_position,
            };
            step.segments.push(Arc::clone(&first));
            step.segment = Some(first);
        }
        while let Some(segment) = step.segment.clone() {
            if step.events.len() >= APPLY_EVENTS {
                return Ok(true);
            }
            let offset = step.cursor.offset;
            let mut read = read_frame(&segment, offset)?;
            if !matches!(read, Some(Ok(_))) {
                // The end of the data so far, or a frame not (yet) whole. Once the next
                // segment exists the writer has finished this one: what is here now is final.
                let id = segment.header.segment_id;
                let Some(next) = self.next_segment_file(Some(id))? else {
                    if let Some(Err(e)) = read {
                        self.judge_stall(stall, &segment, offset, e)?;
                    }
                    return Ok(false);
                };
                read = read_frame(&segment, offset)?;
                if read.is_none() {
                    // A compacted segment's positions end where the next segment's begin.
                    let next_position = segment
                        .header
                        .compacted
                        .map_or(step.cursor.next_position, |c| c.end_position);
                    if next.header.first_position != next_position {
                        return Err(EngineError::corruption(
                            next.path.clone(),
                            0,
                            format!(
                                "segment starts at position {}, expected {next_position}",
                                next.header.first_position
                            ),
                        ));
                    }
                    step.cursor = Cursor {
                        segment_id: next.header.segment_id,
                        offset: SEGMENT_HEADER_BYTES,
                        next_position,
                    };
                    step.segments.push(Arc::clone(&next));
                    step.segment = Some(next);
                    continue;
                }
            }
            let (header, bytes) = match read {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Err(corruption(&segment, offset, e)),
                None => return Ok(false),
            };
            if !in_sequence(&segment, &header, step.cursor.next_position) {
                let e = FrameError::Malformed("frame position out of sequence");
                return Err(corruption(&segment, offset, e));
            }
            *stall = None;
            let (_, entries) =
                frame::decode_frame(&bytes).map_err(|e| corruption(&segment, offset, e))?;
            for (i, (body_offset, entry)) in entries.into_iter().enumerate() {
                let event =
                    frame::decode_entry(entry).map_err(|e| corruption(&segment, offset, e))?;
                step.events.push(Found {
                    store: event.store,
                    aggregate: event.aggregate,
                    version: event.version,
                    timestamp_ms: event.timestamp_ms,
                    location: Location {
                        position: header.first_position + i as u64,
                        segment_id: segment.header.segment_id,
                        offset: offset + FRAME_HEADER_BYTES as u64 + u64::from(body_offset),
                        len: entry.len() as u32,
                    },
                });
            }
            step.cursor.offset = offset + header.frame_len();
            step.cursor.next_position = header.first_position + u64::from(header.entry_count);
        }
        Ok(false)
    }

    /// The segment after segment `after` (the first one when `None`), once it exists and its
    /// header is whole; `None` before. A segment missing between two others, or a header
    /// that does not check in a segment followed by another, is damage.
    fn next_segment_file(&self, after: Option<u64>) -> Result<Option<Arc<Segment>>, EngineError> {
        let later: Vec<u64> = segment::list_ids(self.fs.as_ref(), &self.log_dir)?
            .into_iter()
            .filter(|&id| after.is_none_or(|a| id > a))
            .collect();
        let Some(&id) = later.first() else {
            return Ok(None);
        };
        if let Some(after) = after
            && id != after + 1
        {
            return Err(EngineError::corruption(
                self.log_dir.join(segment::file_name(after + 1)),
                0,
                format!("the segment file is missing, but segment {id} follows it"),
            ));
        }
        let found = segment::find_read_only(self.fs.as_ref(), &self.log_dir, id)?;
        match found.header {
            Ok(_) => Ok(found.into_segment().map(Arc::new)),
            // The last segment, not usable yet: a creation that has not finished (stores of
            // older versions created segments in place). The writer's next open removes it.
            Err(_) if later.len() == 1 => Ok(None),
            Err(reason) => Err(EngineError::corruption(found.path, 0, reason)),
        }
    }

    /// Decides whether the invalid frame at `offset` of the last segment, where the scan
    /// stopped, is damage (an error) or a write in progress (to be read again later).
    fn judge_stall(
        &self,
        stall: &mut Option<Stall>,
        segment: &Arc<Segment>,
        offset: u64,
        e: FrameError,
    ) -> Result<(), EngineError> {
        let id = segment.header.segment_id;
        let now = Instant::now();
        let mut vouched = next_frame_vouches(segment, offset)?;
        match stall {
            Some(s) if s.segment_id == id && s.offset == offset => {
                if !vouched && now >= s.next_check {
                    vouched = vouched_by(segment, offset)?.is_some();
                    s.every = (s.every * 2).min(STALL_CHECK_MAX);
                    s.next_check = now + s.every;
                }
            }
            _ => {
                *stall = Some(Stall {
                    segment_id: id,
                    offset,
                    next_check: now + STALL_CHECK_FIRST,
                    every: STALL_CHECK_FIRST,
                });
            }
        }
        // A later frame was written after this one: read it again, as its write may have
        // finished since it was first read.
        if vouched && !matches!(read_frame(segment, offset)?, Some(Ok(_))) {
            return Err(EngineError::corruption(
                segment.path.clone(),
                offset,
                format!("{e} (a later frame says these bytes were synced before it was written)"),
            ));
        }
        Ok(())
    }

    /// Makes the events of `step` visible, once each aggregate's versions are checked to
    /// follow one another from 1.
    fn apply(&self, step: &Step) -> Result<(), EngineError> {
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        let mut next: HashMap<(&str, &str), u64> = HashMap::new();
        // Once a compacted segment was read, an aggregate may first appear past version 1:
        // a compaction removed its earlier versions.
        let compacted_before = |segment_id: u64| {
            view.segments
                .range(..=segment_id)
                .any(|(_, s)| s.header.compacted.is_some())
                || step
                    .segments
                    .iter()
                    .any(|s| s.header.segment_id <= segment_id && s.header.compacted.is_some())
        };
        for event in &step.events {
            let key = (event.store.as_str(), event.aggregate.as_str());
            let expected = match next.get(&key) {
                Some(&v) => v,
                None => match view.mem.last_version(key.0, key.1) {
                    Some(v) => v + 1,
                    None if event.version > 1 && compacted_before(event.location.segment_id) => {
                        event.version
                    }
                    None => 1,
                },
            };
            if event.version != expected {
                let loc = event.location;
                return Err(EngineError::corruption(
                    self.log_dir.join(segment::file_name(loc.segment_id)),
                    loc.offset,
                    format!(
                        "aggregate version out of sequence: {:?}/{:?} v{} where v{expected} \
                         comes next",
                        event.store, event.aggregate, event.version
                    ),
                ));
            }
            next.insert(key, expected + 1);
        }
        for segment in &step.segments {
            view.segments
                .insert(segment.header.segment_id, Arc::clone(segment));
        }
        view.mem.insert_all(step.events.iter().map(|e| {
            let (store, aggregate) = (e.store.as_str(), e.aggregate.as_str());
            (store, aggregate, e.version, e.timestamp_ms, e.location)
        }));
        view.mem.end = step.cursor;
        view.last_position = step.cursor.next_position.saturating_sub(1);
        Ok(())
    }

    /// Reads up to `max_events` verified events from `from`, in global order. At the end of
    /// the log, after the follower met damage, that damage.
    pub(crate) fn read_log(
        &self,
        from: LogCursor,
        max_events: usize,
    ) -> Result<LogBatch, EngineError> {
        let last = self.last_position();
        if from.position() > last
            && let Some(e) = &*self.failure.lock().unwrap_or_else(|p| p.into_inner())
        {
            return Err(e.duplicate());
        }
        scan::read_log(self, last, from, max_events)
    }

    /// Visits the events of one aggregate with versions in `min..=max`, as
    /// [`Engine::visit_events`](super::Engine::visit_events) does.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn visit_events(
        &self,
        store: &str,
        aggregate: &str,
        min: u64,
        max: u64,
        limit: Option<usize>,
        reverse: bool,
        visit: &mut dyn FnMut(u64, EntryView<'_>) -> ControlFlow<()>,
    ) -> Result<(), EngineError> {
        let mut min = min.max(1);
        let (mut runs, last) = {
            let view = self.view();
            match view.mem.tail(store, aggregate) {
                Some(tail) => {
                    // Versions a compaction removed are not asked for.
                    min = min.max(tail.first_version);
                    (tail.runs_in(min, max).collect(), tail.last_version())
                }
                None => (Vec::new(), 0),
            }
        };
        if min > max {
            return Ok(());
        }
        continuity::check(&runs, min, max, last, &self.log_dir, (store, aggregate))?;
        if let Some(limit) = limit {
            limit_runs(&mut runs, limit, reverse);
        }
        read_runs(self, &self.log_dir, store, aggregate, &runs, visit)
    }

    /// Aggregates of `store` by initial-event timestamp (inclusive bounds), strictly beyond
    /// `cursor` in scan order, at most `limit`.
    pub(crate) fn list_aggregates(
        &self,
        store: &str,
        after: Option<i64>,
        before: Option<i64>,
        reverse: bool,
        cursor: Option<(i64, &str)>,
        limit: usize,
    ) -> Vec<(i64, String)> {
        let view = self.view();
        let Some(created) = view.mem.created(store) else {
            return Vec::new();
        };
        let admits = |(t, _): &&(i64, String)| {
            after.is_none_or(|a| *t >= a) && before.is_none_or(|b| *t <= b)
        };
        let past = cursor.map(|(t, id)| (t, id.to_owned()));
        match (reverse, past) {
            (false, None) => created.iter().filter(admits).take(limit).cloned().collect(),
            (false, Some(past)) => created
                .range((Bound::Excluded(past), Bound::Unbounded))
                .filter(admits)
                .take(limit)
                .cloned()
                .collect(),
            (true, None) => created
                .iter()
                .rev()
                .filter(admits)
                .take(limit)
                .cloned()
                .collect(),
            (true, Some(past)) => created
                .range((Bound::Unbounded, Bound::Excluded(past)))
                .rev()
                .filter(admits)
                .take(limit)
                .cloned()
                .collect(),
        }
    }

    /// Every store of the log with its number of aggregates and events, ordered by store id.
    pub(crate) fn store_summaries(&self) -> Vec<StoreSummary> {
        let view = self.view();
        let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (store, _, first, last) in view.mem.spans() {
            let (aggregates, events) = totals.entry(store).or_default();
            *aggregates += 1;
            // Versions are gap-free (checked as the log was read), from 1 unless a compaction
            // removed the first ones.
            *events += last + 1 - first;
        }
        totals
            .into_iter()
            .map(|(store, (aggregates, events))| StoreSummary {
                store: store.to_owned(),
                aggregates,
                events,
            })
            .collect()
    }

    /// The segments read so far: how many, and their bytes on disk.
    pub(crate) fn segment_sizes(&self) -> (usize, u64) {
        let view = self.view();
        let bytes = view.segments.values().map(|s| s.header.size).sum();
        (view.segments.len(), bytes)
    }

    /// A receiver of the last verified position, marked changed whenever a refresh makes
    /// commits visible. Waiting on it fails once the log is closed or its follower stopped.
    pub(crate) fn watch_last_position(&self) -> tokio::sync::watch::Receiver<u64> {
        match &*self.published.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(sender) => sender.subscribe(),
            None => tokio::sync::watch::channel(self.last_position()).1,
        }
    }

    /// Refreshes the log every `every` on a thread of its own, until the log is closed or
    /// dropped, or the refresh meets damage (which reads at the end of the log then report).
    pub(crate) fn follow(self: &Arc<Self>, every: Duration) -> Result<(), EngineError> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("annals-live-log".into())
            .spawn(move || follow_loop(&weak, every))
            .map(drop)
            .map_err(|e| EngineError::io("spawn the live reader's thread for", &self.dir, e))
    }

    /// Stops following the log: followers waiting on it wake up and find it closed. What was
    /// read stays readable.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(
            self.published
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

fn follow_loop(weak: &Weak<LiveLog>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(live) = weak.upgrade() else { return };
        if live.closed.load(Ordering::Acquire) {
            return;
        }
        match live.refresh() {
            Ok(_) => {}
            Err(e @ EngineError::Corruption(_)) => {
                tracing::error!(dir = %live.dir.display(), error = %e, "a live reader met damage");
                *live.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                live.close();
                return;
            }
            Err(e) => {
                tracing::warn!(dir = %live.dir.display(), error = %e, "refreshing a live reader");
            }
        }
    }
}

/// Whether the frame right after the invalid one at `offset` (when its header gives its
/// length) is valid and says that `offset` had been synced before it was written.
fn next_frame_vouches(segment: &Segment, offset: u64) -> Result<bool, EngineError> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    if offset + FRAME_HEADER_BYTES as u64 > segment.header.size {
        return Ok(false);
    }
    segment
        .file
        .read_exact_at(&mut head, offset)
        .map_err(|e| EngineError::io("read", &segment.path, e))?;
    let Ok(header) = frame::decode_frame_header(&head) else {
        return Ok(false);
    };
    let next = offset + header.frame_len();
    Ok(matches!(
        read_frame(segment, next)?,
        Some(Ok((later, _))) if later.durable_offset > offset
    ))
}

fn corruption(segment: &Segment, offset: u64, e: FrameError) -> EngineError {
    EngineError::corruption(segment.path.clone(), offset, e)
}

impl SegmentSource for LiveLog {
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        self.view().segments.get(&id).cloned()
    }

    fn next_segment(&self, id: u64) -> Option<Arc<Segment>> {
        let view = self.view();
        view.segments
            .range(id + 1..)
            .next()
            .map(|(_, s)| Arc::clone(s))
    }

    fn segment_holding(&self, position: u64) -> Option<Arc<Segment>> {
        let view = self.view();
        view.segments
            .values()
            .rev()
            .find(|s| s.header.first_position <= position)
            .cloned()
    }
}
