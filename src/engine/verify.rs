//! The integrity check: reads every byte the store depends on and reports what is wrong.
//!
//! [`LogAdapter::verify`](crate::storage::LogAdapter::verify) checks an open store while it
//! keeps serving appends; [`verify_dir`] checks a closed store without opening it (read-only:
//! it changes no byte, but takes the store's `LOCK`, so a store held by another handle gives
//! [`EngineError::Locked`]). Both return a [`VerifyReport`]: counts, and a list of
//! [`Problem`]s, each naming the file and the offset or aggregate involved.
//!
//! What is checked:
//! - the segment files against what the index's checkpoint, its recorded segment headers and
//!   the clean-close mark vouch for, by the same rule that opening the store applies (see
//!   `health`): a segment missing or shorter than they say, or data ending before the clean
//!   end, is a problem; a last segment that is an unfinished creation (all zeros, named by
//!   nothing) is reported in [`VerifyReport::torn_tail`], as opening removes it;
//! - every segment header (magic, version, checksum, id, size, first position), segments
//!   numbered without gaps, and zeros after the end of data in every sealed segment;
//! - every frame checksum and every entry checksum, positions gap-free across frames and
//!   segments, and the versions of every aggregate exactly `1..=n` — except that a compacted
//!   segment (see `compaction`) may skip positions, within its header's range, and an
//!   aggregate met first after one may start at a later version `f..=n`, which the index's
//!   `first_versions` row must then record;
//! - **index against log**: every event up to the index checkpoint has an `events` entry
//!   pointing exactly at it (segment, offset, length, position) and no entry points anywhere
//!   else; each aggregate's row in `aggregates` holds its last checkpointed version and its
//!   initial-event timestamp; `by_initial_event` holds exactly one row per aggregate; the
//!   checkpoint lies on a frame boundary of the log. On an open store, events past the
//!   checkpoint (held in memory) are looked up through the engine's read path and must point
//!   at the same bytes.
//!
//! **Concurrency.** [`LogAdapter::verify`](crate::storage::LogAdapter::verify) takes a
//! consistent snapshot when it starts — the last published position, the segment list and a
//! read transaction of the index, all under the lock that the writer publishes under — and
//! checks the log up to that position only; appends made meanwhile are neither blocked nor
//! checked. The index read transaction is held until the check ends, so an index reopen after
//! a failed checkpoint waits for it.
//!
//! **Offline.** [`verify_dir`] reads the log as recovery would, without repairing it: an
//! invalid frame in the last segment that recovery would truncate as a torn, unacknowledged
//! tail is reported in [`VerifyReport::torn_tail`], not as a problem (unless a later frame
//! proves those bytes were durable). The index is opened over a copy-on-write view of its
//! file, so redb's own repair after an unclean shutdown happens in memory only.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::error::EngineError;
use super::frame::{self, FRAME_HEADER_BYTES};
use super::health::{self, IndexState};
use super::index::{Cursor, IndexReader, Location};
use super::io::{FileSystem, OsFileSystem};
use super::layout;
use super::open::lock_store;
use super::recovery::{self, read_frame};
use super::segment::{SEGMENT_HEADER_BYTES, Segment, SegmentHeader};
use super::{Engine, EngineOptions};

/// What [`LogAdapter::verify`](crate::storage::LogAdapter::verify) or [`verify_dir`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The store directory.
    pub dir: PathBuf,
    /// Segment files checked.
    pub segments: u64,
    /// Commit frames checked.
    pub frames: u64,
    /// Events (entries) checked.
    pub events: u64,
    /// Distinct aggregates (across event stores) seen in the log.
    pub aggregates: u64,
    /// Bytes of the log in use: segment headers and frames, padding included.
    pub bytes: u64,
    /// Bytes of the segment files (they are preallocated).
    pub file_bytes: u64,
    /// Global position of the last event checked (0 when empty).
    pub last_position: u64,
    /// The index checkpoint, when the index has one.
    pub checkpoint: Option<Checkpoint>,
    /// Entries of the persisted index's `events` table.
    pub index_entries: u64,
    /// Events past the checkpoint (held in memory by an open store, replayed on open).
    pub unindexed_events: u64,
    /// An invalid frame at the end of the last segment that opening the store will truncate:
    /// a write interrupted by a crash, never acknowledged. Only [`verify_dir`] reports it.
    pub torn_tail: Option<TornTail>,
    /// Everything that is wrong; empty when the store is intact.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The log position up to which the persisted index is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// Segment of the next frame.
    pub segment_id: u64,
    /// Offset of the next frame in that segment.
    pub offset: u64,
    /// Global position of the next event.
    pub next_position: u64,
}

impl From<Cursor> for Checkpoint {
    fn from(c: Cursor) -> Self {
        Checkpoint {
            segment_id: c.segment_id,
            offset: c.offset,
            next_position: c.next_position,
        }
    }
}

/// An unacknowledged, torn write at the end of the log (see [`VerifyReport::torn_tail`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// The last segment.
    pub file: PathBuf,
    /// Where the invalid data starts.
    pub offset: u64,
    /// Why the frame there is invalid.
    pub reason: String,
}

/// One thing wrong with the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file involved (a segment, or the index).
    pub file: PathBuf,
    /// Byte offset in `file`, when the problem has one.
    pub offset: Option<u64>,
    /// Event store id, when the problem concerns an aggregate.
    pub store: Option<String>,
    /// Aggregate id, when the problem concerns an aggregate.
    pub aggregate: Option<String>,
    /// Version, when the problem concerns one event.
    pub version: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        if let (Some(store), Some(aggregate)) = (&self.store, &self.aggregate) {
            write!(f, ", aggregate {store:?}/{aggregate:?}")?;
        }
        if let Some(version) = self.version {
            write!(f, " v{version}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Checks the closed store in `dir` without modifying it. Fails with
/// [`EngineError::Locked`] when another handle holds the store, and with an I/O error when
/// `dir` is not a store.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport, EngineError> {
    verify_dir_with(Arc::new(OsFileSystem), dir)
}

/// [`verify_dir`] through `fs` (the simulated disk in tests).
pub fn verify_dir_with(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<VerifyReport, EngineError> {
    let log_dir = layout::log_dir(dir);
    // Listing fails when `dir` holds no log: not a store (and no LOCK file is created there).
    fs.list(&log_dir)
        .map_err(|e| EngineError::io("open the log directory of", &log_dir, e))?;
    let _lock = lock_store(fs.as_ref(), dir)?;
    let mut check = Check::new(dir);
    let index_path = layout::index_file(dir);
    let cache = EngineOptions::default().index_cache_bytes;
    // The same judgement as opening the store makes, before it changes anything.
    let view = health::read_index(fs.as_ref(), &index_path, cache)?;
    match &view.state {
        IndexState::Usable => {}
        IndexState::Missing => check.problem(
            &index_path,
            None,
            "the index is missing; opening rebuilds it from the log".into(),
        ),
        IndexState::Damaged(reason) => {
            check.problem(&index_path, None, format!("{reason}; opening rebuilds it"));
        }
    }
    let files = health::assess(&fs, &log_dir, &view.witnesses, 0)?;
    for damage in files.damage {
        check.problem(&damage.file, Some(damage.offset), damage.kind.to_string());
    }
    if let Some((file, len)) = files.unfinished {
        check.report.torn_tail = Some(TornTail {
            file,
            offset: 0,
            reason: format!(
                "a last segment of {len} bytes, all zeros and named by nothing: a creation \
                 that did not finish (opening removes it)"
            ),
        });
    }
    let reader = match (&view.state, &view.index) {
        (IndexState::Usable, Some(index)) => match index.reader() {
            Ok(reader) => Some(reader),
            Err(e) => {
                check.problem(&index_path, None, format!("{e}; opening rebuilds it"));
                None
            }
        },
        _ => None,
    };
    let clean_end = view.witnesses.clean_end;
    check.run(
        &files.segments,
        reader.as_ref(),
        &index_path,
        None,
        clean_end,
    )?;
    Ok(check.report)
}

impl Engine {
    /// Checks the whole store (see the [module docs](crate::engine::verify)) up to the last
    /// position published when the call starts; appends continue meanwhile. Reads every
    /// segment, so it takes about as long as reading the log once.
    pub fn verify(&self) -> Result<VerifyReport, EngineError> {
        let shared = &self.shared;
        // The segment files and the index read stay on one side of any compaction's swap.
        let _gate = shared.reading();
        let (limit, segments, reader) = {
            // The writer publishes positions under this lock, and the checkpointer drops a
            // frozen memtable only under it too: what is read here is one consistent state.
            let _tiers = shared.tiers.read().unwrap_or_else(|p| p.into_inner());
            let limit = self.last_position();
            let segments: Vec<Arc<Segment>> = shared
                .segments
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect();
            (limit, segments, shared.index().reader()?)
        };
        let mut check = Check::new(&shared.dir);
        for s in &segments {
            check.segment_header(s, true);
        }
        let unindexed = check.run(
            &segments,
            Some(&reader),
            &shared.index_path,
            Some(limit),
            None,
        )?;
        drop(reader);
        check.check_unindexed(self, unindexed);
        if check.report.last_position != limit {
            let file = segments
                .last()
                .map_or(shared.log_dir.clone(), |s| s.path.clone());
            check.problem(
                &file,
                None,
                format!(
                    "the log ends at position {}, but the store has published position {limit}",
                    check.report.last_position
                ),
            );
        }
        Ok(check.report)
    }
}

/// State of one aggregate while the log is scanned.
#[derive(Debug, Default)]
pub(super) struct AggregateState {
    pub(super) last: u64,
    pub(super) initial_ms: i64,
    /// Last version at a position below the checkpoint (0: none).
    pub(super) last_indexed: u64,
    /// The first version the log holds (past 1 when a compaction removed earlier ones).
    pub(super) first: u64,
}

/// An event past the checkpoint, to be looked up through the engine.
pub(super) type Unindexed = HashMap<(String, String), Vec<(u64, Location)>>;

pub(super) struct Check {
    pub(super) report: VerifyReport,
    pub(super) aggregates: HashMap<(String, String), AggregateState>,
}

impl Check {
    fn new(dir: &Path) -> Self {
        Check {
            report: VerifyReport {
                dir: dir.to_owned(),
                ..VerifyReport::default()
            },
            aggregates: HashMap::new(),
        }
    }

    pub(super) fn problem(&mut self, file: &Path, offset: Option<u64>, message: String) {
        self.report.problems.push(Problem {
            file: file.to_owned(),
            offset,
            store: None,
            aggregate: None,
            version: None,
            message,
        });
    }

    pub(super) fn event_problem(
        &mut self,
        file: &Path,
        offset: Option<u64>,
        key: (&str, &str, u64),
        message: String,
    ) {
        self.report.problems.push(Problem {
            file: file.to_owned(),
            offset,
            store: Some(key.0.to_owned()),
            aggregate: Some(key.1.to_owned()),
            version: Some(key.2),
            message,
        });
    }

    /// Re-reads a segment's header from disk and compares it with the one in use.
    fn segment_header(&mut self, s: &Segment, online: bool) {
        let mut head = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        let problem = match s.file.read_exact_at(&mut head, 0) {
            Err(e) => Some(format!("cannot read the segment header: {e}")),
            Ok(()) => match SegmentHeader::decode(&head) {
                Err(reason) => Some(reason.to_owned()),
                Ok(h) if online && h != s.header => {
                    Some("the segment header changed since the store was opened".to_owned())
                }
                Ok(_) => None,
            },
        };
        if let Some(message) = problem {
            self.problem(&s.path, Some(0), message);
        }
    }

    /// Scans the log (up to position `limit`, when given) and checks the persisted index
    /// against it, and the end of data against the clean-close mark `clean_end`. Returns the
    /// events past the checkpoint, for the caller to look up.
    fn run(
        &mut self,
        segments: &[Arc<Segment>],
        reader: Option<&IndexReader>,
        index_path: &Path,
        limit: Option<u64>,
        clean_end: Option<Cursor>,
    ) -> Result<Unindexed, EngineError> {
        let checkpoint = match reader.map(IndexReader::checkpoint).transpose() {
            Ok(c) => c.flatten(),
            Err(e) => {
                self.problem(index_path, None, e.to_string());
                None
            }
        };
        self.report.checkpoint = checkpoint.map(Checkpoint::from);
        let indexed_below = checkpoint.map_or(1, |c| c.next_position);
        let mut scan = Scan {
            expected: segments.first().map_or(1, |s| s.header.first_position),
            compacted_seen: false,
            checkpoint,
            checkpoint_seen: false,
            end: None,
            indexed_below,
            limit,
            unindexed: HashMap::new(),
            matched: 0,
        };
        // Missing segments were reported when the files were listed (see `health::assess`).
        for (i, s) in segments.iter().enumerate() {
            self.report.segments += 1;
            self.report.file_bytes += s.header.size;
            self.report.bytes += SEGMENT_HEADER_BYTES;
            let is_last = i + 1 == segments.len();
            self.scan_segment(s, is_last, reader, &mut scan)?;
        }
        if let (Some(end), Some(first)) = (scan.end, segments.first())
            && let Some(damage) = health::short_of_clean_end(
                first.path.parent().unwrap_or(Path::new(".")),
                clean_end,
                end,
            )
        {
            self.problem(&damage.file, Some(damage.offset), damage.kind.to_string());
        }
        self.report.last_position = scan.expected.saturating_sub(1);
        self.report.aggregates = self.aggregates.len() as u64;
        self.report.unindexed_events = self.report.events - scan.matched.min(self.report.events);
        if let Some(c) = checkpoint
            && !scan.checkpoint_seen
        {
            self.problem(
                index_path,
                None,
                format!("the checkpoint {c:?} is not a frame boundary of the log"),
            );
        }
        if let Some(reader) = reader
            && let Err(e) = self.check_index_tables(reader, index_path, scan.matched)
        {
            self.problem(index_path, None, format!("cannot read the index: {e}"));
        }
        Ok(scan.unindexed)
    }

    fn scan_segment(
        &mut self,
        s: &Arc<Segment>,
        is_last: bool,
        reader: Option<&IndexReader>,
        scan: &mut Scan,
    ) -> Result<(), EngineError> {
        if s.header.first_position != scan.expected {
            self.problem(
                &s.path,
                Some(24),
                format!(
                    "the segment starts at position {}, expected {}",
                    s.header.first_position, scan.expected
                ),
            );
            scan.expected = s.header.first_position;
        }
        let mut offset = SEGMENT_HEADER_BYTES;
        scan.compacted_seen |= s.header.compacted.is_some();
        scan.at_boundary(s.header.segment_id, offset);
        loop {
            if scan.limit.is_some_and(|l| scan.expected > l) {
                return Ok(());
            }
            let (header, bytes) = match read_frame(s, offset) {
                Err(e) => {
                    self.problem(&s.path, Some(offset), e.to_string());
                    return Ok(());
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    if is_last && scan.limit.is_none() {
                        self.torn_or_corrupt(s, offset, e.to_string())?;
                    } else {
                        self.problem(&s.path, Some(offset), format!("invalid frame: {e}"));
                    }
                    return Ok(());
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if !recovery::in_sequence(s, &header, scan.expected) {
                let message = format!(
                    "frame starts at position {}, expected {}",
                    header.first_position, scan.expected
                );
                if is_last && scan.limit.is_none() {
                    self.torn_or_corrupt(s, offset, message)?;
                } else {
                    self.problem(&s.path, Some(offset), message);
                }
                return Ok(());
            }
            self.report.frames += 1;
            scan.expected = header.first_position;
            self.frame_entries(s, offset, &bytes, reader, scan);
            offset += header.frame_len();
            self.report.bytes += header.frame_len();
            scan.expected = header
                .first_position
                .saturating_add(u64::from(header.entry_count));
            scan.at_boundary(s.header.segment_id, offset);
        }
        if !is_last || scan.limit.is_none() {
            self.zeros_after(s, offset)?;
        }
        if let Some(c) = s.header.compacted {
            // The positions a compaction removed from the segment's end are skipped.
            scan.expected = c.end_position;
        }
        Ok(())
    }

    /// Checks the entries of a verified frame, their versions and their index entries.
    fn frame_entries(
        &mut self,
        s: &Segment,
        frame_offset: u64,
        bytes: &[u8],
        reader: Option<&IndexReader>,
        scan: &mut Scan,
    ) {
        let (header, entries) = match frame::decode_frame(bytes) {
            Ok(f) => f,
            Err(e) => {
                self.problem(&s.path, Some(frame_offset), format!("invalid frame: {e}"));
                return;
            }
        };
        for (i, (body_offset, entry)) in entries.into_iter().enumerate() {
            let offset = frame_offset + FRAME_HEADER_BYTES as u64 + u64::from(body_offset);
            let event = match frame::decode_entry(entry) {
                Ok(e) => e,
                Err(e) => {
                    self.problem(&s.path, Some(offset), format!("invalid entry: {e}"));
                    continue;
                }
            };
            self.report.events += 1;
            let position = header.first_position.saturating_add(i as u64);
            let key = (
                event.store.as_str(),
                event.aggregate.as_str(),
                event.version,
            );
            let loc = Location {
                position,
                segment_id: s.header.segment_id,
                offset,
                len: entry.len() as u32,
            };
            let state = self
                .aggregates
                .entry((event.store.clone(), event.aggregate.clone()))
                .or_default();
            let mut expected = state.last + 1;
            if state.last == 0 {
                state.initial_ms = event.timestamp_ms;
                // After a compacted segment, an aggregate may start past version 1.
                if scan.compacted_seen {
                    expected = event.version.max(1);
                }
                state.first = expected;
            }
            state.last = event.version;
            if position < scan.indexed_below {
                state.last_indexed = event.version;
            }
            if event.version != expected {
                self.event_problem(
                    &s.path,
                    Some(offset),
                    key,
                    format!("version out of sequence: expected v{expected}"),
                );
            }
            if position < scan.indexed_below {
                if let Some(reader) = reader {
                    self.indexed(reader, &s.path, key, loc, scan);
                }
            } else {
                scan.unindexed
                    .entry((event.store.clone(), event.aggregate.clone()))
                    .or_default()
                    .push((event.version, loc));
            }
        }
    }

    /// An invalid frame in the last segment of a closed store: a torn tail that recovery will
    /// truncate, unless a later valid frame proves the bytes had been synced or the frame was
    /// written whole (the rules of `recovery`).
    fn torn_or_corrupt(
        &mut self,
        s: &Segment,
        offset: u64,
        reason: String,
    ) -> Result<(), EngineError> {
        if let Some(later) = recovery::vouched_by(s, offset)? {
            self.problem(
                &s.path,
                Some(offset),
                format!(
                    "invalid frame ({reason}) in data that a later frame (at offset {later}) \
                     records as durable"
                ),
            );
            return Ok(());
        }
        if !recovery::looks_torn(s, offset)? {
            self.problem(
                &s.path,
                Some(offset),
                format!(
                    "invalid frame ({reason}) that was written whole: damage, not a torn write"
                ),
            );
            return Ok(());
        }
        self.report.torn_tail = Some(TornTail {
            file: s.path.clone(),
            offset,
            reason,
        });
        Ok(())
    }

    /// Reports non-zero bytes after the end of data of a segment.
    fn zeros_after(&mut self, s: &Segment, end: u64) -> Result<(), EngineError> {
        let mut at = end;
        while at < s.header.size {
            let n = ((s.header.size - at).min(1 << 20)) as usize;
            let chunk = read(s, at, n)?;
            if let Some(i) = chunk.iter().position(|&b| b != 0) {
                self.problem(
                    &s.path,
                    Some(at + i as u64),
                    "non-zero bytes after the end of data".into(),
                );
                return Ok(());
            }
            at += n as u64;
        }
        Ok(())
    }
}

/// Progress through the log.
pub(super) struct Scan {
    /// Position of the next event.
    expected: u64,
    /// Whether a compacted segment was scanned (aggregates may then start past version 1).
    compacted_seen: bool,
    checkpoint: Option<Cursor>,
    checkpoint_seen: bool,
    /// Where the scan stopped so far: after the last valid frame.
    end: Option<Cursor>,
    /// Events below this position are in the persisted index.
    indexed_below: u64,
    limit: Option<u64>,
    unindexed: Unindexed,
    /// Checkpointed events whose index entry matched exactly.
    pub(super) matched: u64,
}

impl Scan {
    fn at_boundary(&mut self, segment_id: u64, offset: u64) {
        let here = Cursor {
            segment_id,
            offset,
            next_position: self.expected,
        };
        self.end = Some(here);
        if self.checkpoint == Some(here) {
            self.checkpoint_seen = true;
        }
    }
}

fn read(s: &Segment, offset: u64, len: usize) -> Result<Vec<u8>, EngineError> {
    let mut buf = vec![0u8; len];
    s.file
        .read_exact_at(&mut buf, offset)
        .map_err(|e| EngineError::io("read", &s.path, e))?;
    Ok(buf)
}
