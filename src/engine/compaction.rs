//! Compaction: rewriting sealed segments without the events a predicate rejects, to reclaim
//! their disk space, while appends and reads go on.
//!
//! Only **sealed** segments are rewritten: those entirely behind the persisted index
//! checkpoint (whose every event the index holds), never the one the writer appends to. The
//! events that survive keep their global positions; the survivors of a commit are written as
//! frames of consecutive positions, each entry copied byte for byte (its checksum unchanged)
//! and each frame with a new checksum. The segment's header becomes a compacted one (format
//! version 3): it names the position the next segment starts at, so positions may have gaps
//! inside it, and a generation, so that two rewrites of one segment never have equal headers.
//!
//! **The kept set of every aggregate is a suffix of its versions.** A predicate that would
//! remove a version while an earlier one stays is refused with
//! [`EngineError::CompactionRefused`] before anything is written: an aggregate only ever loses
//! a prefix of its versions, so reads, the index's continuity check and folds stay simple.
//! Segments are rewritten in ascending order, so every intermediate state keeps that shape.
//!
//! **Crash protocol**, per segment (`docs/format.md`, "Compacted segments"):
//! 1. the rewritten segment is written as `log/<id>.seg.compact`, synced, and the directory
//!    synced;
//! 2. one redb transaction moves the segment's runs to their new offsets, deletes the runs of
//!    removed versions, moves each aggregate's start (`first_versions`, `aggregates`,
//!    `by_initial_event`) to its first surviving event or deletes its rows when nothing of it
//!    is left, and records the new header — **its commit is the commit point**;
//! 3. the file is renamed over `<id>.seg` and the directory synced;
//! 4. the engine's handle of the segment is swapped for the new file.
//!
//! **Concurrency.** Reading the old segment and writing the new one happen beside appends and
//! reads. Between the commit (step 2) and the swap (step 4) the engine's segment map still
//! holds the old file while the index already describes the new one: the compaction publishes
//! both handles (`EngineState::transition`) before it commits, and a read through the index
//! picks the one whose generation its own view of the index records, so no read pairs the new
//! runs with the old file or the reverse. The rename and the swap happen under the compaction
//! gate (`EngineState::compaction_gate`), held exclusively — reads through the index and in
//! global order hold it shared, so no read sees the file change under it; it is taken by
//! trying, so a waiting compaction never holds up new readers. Appends are held back
//! (`EngineState::versions_gate`) only during an index commit that may delete an aggregate's
//! rows (every version of it removed), so that no append is checked against rows the commit
//! then deletes.
//!
//! On open, a `<id>.seg.compact` file whose header is the one the index records for segment
//! `<id>` is rolled forward (renamed into place); any other is removed — the index does not
//! vouch for it, and `<id>.seg` still holds everything it held (see `health`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::engine_state::{EngineState, Transition};
use super::error::EngineError;
use super::frame::{self, FRAME_HEADER_BYTES, FrameError};
use super::handle::Engine;
use super::index::{AggregateRewrite, Location, MemTable, Run, SegmentRewrite};
use super::segment::{self, Compacted, SEGMENT_HEADER_BYTES, Segment, SegmentHeader};

/// One entry of the log as a compaction's predicate sees it: the predicate keeps the entry
/// or lets compaction remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactEntry<'a> {
    /// The event store.
    pub store: &'a str,
    /// The aggregate.
    pub aggregate: &'a str,
    /// The event's version in its aggregate.
    pub version: u64,
    /// Its global position.
    pub position: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The event type.
    pub event_type: &'a str,
}

/// The compaction predicate: `true` keeps the entry.
pub(crate) type Keep<'k> = &'k (dyn Fn(&CompactEntry<'_>) -> bool + Sync);

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompactionReport {
    /// Sealed segments read.
    pub segments_scanned: u64,
    /// Size of the sealed segments' files read.
    pub bytes_scanned: u64,
    /// Segments rewritten without some of their events.
    pub segments_rewritten: u64,
    /// Events removed from the log.
    pub events_removed: u64,
    /// Size of the rewritten segments' files before (on adapters without segments: the
    /// removed events' bytes).
    pub bytes_before: u64,
    /// Size of the rewritten segments' files after (0 on adapters without segments).
    pub bytes_after: u64,
}

impl CompactionReport {
    /// Disk space given back: `bytes_before - bytes_after`.
    pub fn bytes_reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// How far a compaction is, reported as it goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompactionProgress {
    /// What the compaction is doing.
    pub phase: CompactionPhase,
    /// Segments done in this phase.
    pub segments_done: u64,
    /// Segments this phase goes through.
    pub segments_total: u64,
}

/// The phases of a compaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum CompactionPhase {
    /// Reading the sealed segments and asking the predicate about every entry.
    #[default]
    Scanning,
    /// Rewriting the segments holding removed entries.
    Rewriting,
}

/// The file a segment is rewritten into before it replaces the segment.
pub(crate) fn compact_file_name(id: u64) -> String {
    format!("{}{COMPACT_SUFFIX}", segment::file_name(id))
}

/// Appended to a segment's name while its rewrite is being made.
pub(crate) const COMPACT_SUFFIX: &str = ".compact";

/// The segment id of a rewrite's file name (`<id>.seg.compact`), if it is one.
pub(crate) fn parse_compact_file_name(name: &str) -> Option<u64> {
    segment::parse_file_name(name.strip_suffix(COMPACT_SUFFIX)?)
}

impl Engine {
    /// The shared state, for a compaction run on a thread of its own ([`compact`]).
    pub(crate) fn state(&self) -> Arc<EngineState> {
        Arc::clone(&self.shared)
    }
}

/// An aggregate's removal: its versions up to `through` go.
type Cuts = HashMap<(String, String), u64>;

/// Compacts the sealed segments of the engine whose shared state is `shared` (see the
/// [module docs](self); `Engine::state` gives it): removes the entries `keep` rejects,
/// reporting progress to `progress`. Runs on the caller's thread; appends and reads go on
/// meanwhile. One compaction runs at a time (a second call waits for the first).
pub(crate) fn compact(
    shared: &Arc<EngineState>,
    keep: Keep<'_>,
    progress: &dyn Fn(CompactionProgress),
) -> Result<CompactionReport, EngineError> {
    let _one = shared
        .compaction_running
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(reason) = shared.poison_reason() {
        return Err(EngineError::Poisoned { reason });
    }
    let mut report = CompactionReport::default();
    let Some(checkpoint) = shared.index().checkpoint()? else {
        return Ok(report);
    };
    let sealed: Vec<Arc<Segment>> = {
        let segments = shared.segments.read().unwrap_or_else(|p| p.into_inner());
        let last = segments.keys().next_back().copied().unwrap_or(0);
        segments
            .range(..checkpoint.segment_id.min(last))
            .map(|(_, s)| Arc::clone(s))
            .collect()
    };
    // Pass 1: what goes, checked to leave every aggregate a suffix of its versions.
    let (cuts, to_rewrite) = plan(shared, &sealed, keep, progress)?;
    report.segments_scanned = sealed.len() as u64;
    report.bytes_scanned = sealed.iter().map(|s| s.header.size).sum();
    let total = to_rewrite.len() as u64;
    progress(CompactionProgress {
        phase: CompactionPhase::Rewriting,
        segments_done: 0,
        segments_total: total,
    });
    // Pass 2: rewrite, in ascending order, so every intermediate state removes a prefix.
    for (done, id) in to_rewrite.into_iter().enumerate() {
        if shared.closing.load(std::sync::atomic::Ordering::Acquire) {
            // The store is closing: what is done is done, the rest waits for the next run.
            break;
        }
        let Some(old) = shared.segment(id) else {
            continue;
        };
        let next_first = shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .range(id + 1..)
            .next()
            .map(|(_, s)| s.header.first_position);
        let Some(next_first) = next_first else {
            continue;
        };
        let (removed, before, after) = rewrite(shared, &old, next_first, &cuts)?;
        report.segments_rewritten += 1;
        report.events_removed += removed;
        report.bytes_before += before;
        report.bytes_after += after;
        progress(CompactionProgress {
            phase: CompactionPhase::Rewriting,
            segments_done: done as u64 + 1,
            segments_total: total,
        });
    }
    Ok(report)
}

/// The facts of an entry of a verified frame — store, aggregate, version, timestamp, event
/// type — once its own checksum is checked too: it is copied as it is into the rewrite, whose
/// frame checksum then covers it anew.
fn facts(entry: &[u8]) -> Option<(&str, &str, u64, i64, &str)> {
    let (store, aggregate, event_type) = {
        let u16_at = |at: usize| usize::from(u16::from_le_bytes([entry[at], entry[at + 1]]));
        let u32_at = |at: usize| {
            u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]])
        };
        if entry.len() < frame::ENTRY_HEADER_BYTES
            || u32_at(0) as usize != entry.len()
            || u32_at(4) != crc32fast::hash(&entry[8..])
        {
            return None;
        }
        let (s, a, t) = (u16_at(28), u16_at(30), u16_at(32));
        let start = frame::ENTRY_HEADER_BYTES;
        if start + s + a + t > entry.len() {
            return None;
        }
        (
            std::str::from_utf8(&entry[start..start + s]).ok()?,
            std::str::from_utf8(&entry[start + s..start + s + a]).ok()?,
            std::str::from_utf8(&entry[start + s + a..start + s + a + t]).ok()?,
        )
    };
    let mut v = [0u8; 8];
    v.copy_from_slice(&entry[8..16]);
    let mut t = [0u8; 8];
    t.copy_from_slice(&entry[16..24]);
    Some((
        store,
        aggregate,
        u64::from_le_bytes(v),
        i64::from_le_bytes(t),
        event_type,
    ))
}

/// What [`visit_entries`] calls with each entry: frame offset, position, entry bytes.
type EntryVisitor<'v> = dyn FnMut(u64, u64, &[u8]) -> Result<(), EngineError> + 'v;

/// Calls `visit` with every entry of `segment` (frame offset, position, entry bytes), in
/// order. A frame that does not verify is corruption: a sealed segment was synced whole.
fn visit_entries(segment: &Segment, visit: &mut EntryVisitor<'_>) -> Result<(), EngineError> {
    let size = segment.header.size;
    let mut window = Window {
        segment,
        start: 0,
        bytes: Vec::new(),
    };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut next = segment.header.first_position;
    let end = segment.header.compacted.map(|c| c.end_position);
    let damaged =
        |offset: u64, e: FrameError| EngineError::corruption(segment.path.clone(), offset, e);
    while offset + FRAME_HEADER_BYTES as u64 <= size {
        let head = window.get(offset, FRAME_HEADER_BYTES as u64)?;
        if head.iter().all(|&b| b == 0) {
            // The end of data.
            break;
        }
        let header = frame::decode_frame_header(head).map_err(|e| damaged(offset, e))?;
        let len = header.frame_len();
        if offset + len > size {
            let e = FrameError::Truncated {
                needed: len,
                available: size - offset,
            };
            return Err(damaged(offset, e));
        }
        let bytes = window.get(offset, len)?;
        let (_, entries) = frame::decode_frame(bytes).map_err(|e| damaged(offset, e))?;
        let frame_end = header.first_position + u64::from(header.entry_count);
        let in_order = match end {
            None => header.first_position == next,
            Some(end) => header.first_position >= next && frame_end <= end,
        };
        if !in_order {
            let e = FrameError::Malformed("frame position out of sequence");
            return Err(damaged(offset, e));
        }
        for (i, (_, entry)) in entries.into_iter().enumerate() {
            visit(offset, header.first_position + i as u64, entry)?;
        }
        next = frame_end;
        offset += len;
    }
    Ok(())
}

/// Bytes of a segment read ahead in large slices, so a compaction reads a segment in a few
/// calls rather than two per frame.
struct Window<'s> {
    segment: &'s Segment,
    /// The offset of `bytes[0]` in the segment.
    start: u64,
    bytes: Vec<u8>,
}

impl Window<'_> {
    /// Bytes read ahead at a time (at least a whole frame).
    const READ_AHEAD: u64 = 4 << 20;

    /// The segment's `len` bytes at `offset` (within its size).
    fn get(&mut self, offset: u64, len: u64) -> Result<&[u8], EngineError> {
        let held = offset >= self.start && offset + len <= self.start + self.bytes.len() as u64;
        if !held {
            let want = len
                .max(Self::READ_AHEAD)
                .min(self.segment.header.size - offset);
            self.bytes.resize(want as usize, 0);
            self.segment
                .file
                .read_exact_at(&mut self.bytes, offset)
                .map_err(|e| EngineError::io("read", &self.segment.path, e))?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(&self.bytes[at..at + len as usize])
    }
}

/// Pass 1: asks `keep` about every entry of the sealed segments; returns how far each
/// aggregate is cut and the segments that hold removed entries. Refuses a hole.
fn plan(
    shared: &EngineState,
    sealed: &[Arc<Segment>],
    keep: Keep<'_>,
    progress: &dyn Fn(CompactionProgress),
) -> Result<(Cuts, Vec<u64>), EngineError> {
    let reader = shared.index_reader()?;
    let mut cuts: Cuts = HashMap::new();
    let mut to_rewrite = Vec::new();
    let total = sealed.len() as u64;
    for (done, segment) in sealed.iter().enumerate() {
        progress(CompactionProgress {
            phase: CompactionPhase::Scanning,
            segments_done: done as u64,
            segments_total: total,
        });
        let mut removes = false;
        visit_entries(segment, &mut |offset, position, entry| {
            let damaged = || {
                EngineError::corruption(segment.path.clone(), offset, "malformed entry in a frame")
            };
            let (store, aggregate, version, timestamp_ms, event_type) =
                facts(entry).ok_or_else(damaged)?;
            let verdict = keep(&CompactEntry {
                store,
                aggregate,
                version,
                position,
                timestamp_ms,
                event_type,
            });
            if verdict {
                return Ok(());
            }
            let key = (store.to_owned(), aggregate.to_owned());
            // The removed versions of an aggregate must run from its first one without a gap:
            // any version in between is kept, and would be a hole.
            let expected = match cuts.get(&key) {
                Some(&through) => through + 1,
                None => reader.first_version(store, aggregate)?.unwrap_or(1),
            };
            if version != expected {
                return Err(EngineError::CompactionRefused {
                    store: store.to_owned(),
                    aggregate: aggregate.to_owned(),
                    version,
                    kept: expected,
                });
            }
            cuts.insert(key, version);
            removes = true;
            Ok(())
        })?;
        if removes {
            to_rewrite.push(segment.header.segment_id);
        }
    }
    progress(CompactionProgress {
        phase: CompactionPhase::Scanning,
        segments_done: total,
        segments_total: total,
    });
    Ok((cuts, to_rewrite))
}

/// A survivor of the rewrite: where it lands in the new file.
struct Survivor {
    store: String,
    aggregate: String,
    version: u64,
    timestamp_ms: i64,
    location: Location,
}

/// Rewrites segment `old` (whose next segment starts at `next_first`) without the versions
/// `cuts` removes, following the crash protocol of the module docs. Returns the events
/// removed and the file's size before and after.
fn rewrite(
    shared: &EngineState,
    old: &Arc<Segment>,
    next_first: u64,
    cuts: &Cuts,
) -> Result<(u64, u64, u64), EngineError> {
    let id = old.header.segment_id;
    let mut out = vec![0u8; SEGMENT_HEADER_BYTES as usize];
    let mut survivors: Vec<Survivor> = Vec::new();
    // (store, aggregate) → (first version, last version, some removed) in the old segment.
    let mut touched: BTreeMap<(String, String), (u64, u64, bool)> = BTreeMap::new();
    let mut removed = 0u64;
    // The survivors of the frame being read: (position, entry bytes), flushed as frames of
    // consecutive positions when the frame ends or a position is skipped.
    let mut group: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut group_frame = None;
    let flush =
        |group: &mut Vec<(u64, Vec<u8>)>, out: &mut Vec<u8>, survivors: &mut Vec<Survivor>| {
            let Some((first, _)) = group.first() else {
                return;
            };
            let frame_at = out.len() as u64;
            let entries: Vec<&[u8]> = group.iter().map(|(_, e)| e.as_slice()).collect();
            frame::write_raw_frame(&entries, *first, frame_at, out);
            let mut at = frame_at + FRAME_HEADER_BYTES as u64;
            for (position, entry) in group.iter() {
                if let Some((store, aggregate, version, timestamp_ms, _)) = facts(entry) {
                    survivors.push(Survivor {
                        store: store.to_owned(),
                        aggregate: aggregate.to_owned(),
                        version,
                        timestamp_ms,
                        location: Location {
                            position: *position,
                            segment_id: id,
                            offset: at,
                            len: entry.len() as u32,
                        },
                    });
                }
                at += entry.len() as u64;
            }
            group.clear();
        };
    visit_entries(old, &mut |offset, position, entry| {
        let (store, aggregate, version, _, _) = facts(entry).ok_or_else(|| {
            EngineError::corruption(old.path.clone(), offset, "malformed entry in a frame")
        })?;
        let key = (store.to_owned(), aggregate.to_owned());
        let gone = cuts.get(&key).is_some_and(|&through| version <= through);
        let slot = touched.entry(key).or_insert((version, version, false));
        slot.1 = version;
        slot.2 |= gone;
        let consecutive = group.last().is_some_and(|(p, _)| p + 1 == position);
        if group_frame != Some(offset) || !consecutive {
            flush(&mut group, &mut out, &mut survivors);
            group_frame = Some(offset);
        }
        if gone {
            removed += 1;
        } else {
            group.push((position, entry.to_vec()));
        }
        Ok(())
    })?;
    flush(&mut group, &mut out, &mut survivors);
    let header = SegmentHeader {
        segment_id: id,
        first_position: old.header.first_position,
        size: out.len() as u64,
        compacted: Some(Compacted {
            end_position: old.header.compacted.map_or(next_first, |c| c.end_position),
            generation: old.header.generation() + 1,
        }),
    };
    out[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&header.encode());
    // The survivors' runs, as the memtable groups them.
    let mut runs = MemTable::default();
    runs.insert_all(survivors.iter().map(|s| {
        (
            s.store.as_str(),
            s.aggregate.as_str(),
            s.version,
            s.timestamp_ms,
            s.location,
        )
    }));
    let timestamps: HashMap<(&str, &str, u64), i64> = survivors
        .iter()
        .map(|s| {
            (
                (s.store.as_str(), s.aggregate.as_str(), s.version),
                s.timestamp_ms,
            )
        })
        .collect();
    // Step 1: the rewritten file, durable under its temporary name.
    let log_dir = &shared.log_dir;
    let temp = log_dir.join(compact_file_name(id));
    write_durably(shared, &temp, &out)?;
    // Readers between the commit and the swap pick the file matching their index view.
    let new_file = shared
        .fs
        .open(&temp, false)
        .map_err(|e| EngineError::io("open", &temp, e))?;
    let new_segment = Arc::new(Segment {
        header,
        path: temp.clone(),
        file: new_file,
    });
    *shared.transition.write().unwrap_or_else(|p| p.into_inner()) = Some(Transition {
        old: Arc::clone(old),
        new: new_segment,
    });
    let committed = commit(
        shared,
        id,
        &header,
        &touched,
        cuts,
        &runs,
        &timestamps,
        &temp,
    );
    if let Err(e) = committed {
        *shared.transition.write().unwrap_or_else(|p| p.into_inner()) = None;
        return Err(after_failed_commit(shared, &temp, &header, e));
    }
    // The commit point has passed: the index vouches for the new file, so the engine swaps
    // to it whatever happens next, and never reads the old file with the new runs. The
    // rename and the swap happen under the gate, which no read holds meanwhile.
    let _gate = exclusive_gate(shared);
    let path = log_dir.join(segment::file_name(id));
    let renamed = shared
        .fs
        .rename(&temp, &path)
        .map_err(|e| EngineError::io("rename", &temp, e));
    let (live, synced) = match &renamed {
        Ok(()) => (
            &path,
            shared
                .fs
                .sync_dir(log_dir)
                .map_err(|e| EngineError::io("sync directory", log_dir, e)),
        ),
        Err(_) => (&temp, Ok(())),
    };
    let swapped = shared
        .fs
        .open(live, false)
        .map_err(|e| EngineError::io("open", live, e))
        .map(|file| {
            let segment = Segment {
                header,
                path: live.clone(),
                file,
            };
            shared
                .segments
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Arc::new(segment));
        });
    *shared.transition.write().unwrap_or_else(|p| p.into_inner()) = None;
    if let Err(e) = renamed.and(swapped) {
        // The segment's file is not where the index says, or not open: the store must be
        // reopened, which finishes the rename (see `health`).
        shared.poison(format!("compaction of segment {id} could not finish: {e}"));
        return Err(e);
    }
    // A directory sync that failed leaves the rename maybe not durable: a crash then leaves
    // the rewrite under its own name, which opening rolls forward. Nothing to undo.
    synced?;
    Ok((removed, old.header.size, header.size))
}

/// Step 2, the commit point: the index transaction of the rewrite of segment `id` into
/// `header`, whose survivors' runs are in `runs`.
#[allow(clippy::too_many_arguments)]
fn commit(
    shared: &EngineState,
    id: u64,
    header: &SegmentHeader,
    touched: &BTreeMap<(String, String), (u64, u64, bool)>,
    cuts: &Cuts,
    runs: &MemTable,
    timestamps: &HashMap<(&str, &str, u64), i64>,
    temp: &Path,
) -> Result<(), EngineError> {
    // An aggregate whose every version goes loses its rows: the writer must not check an
    // append against them meanwhile. Only then is it held back, for this one transaction.
    let doomed = {
        let tiers = shared.tiers.read().unwrap_or_else(|p| p.into_inner());
        let reader = shared.index_reader()?;
        let mut doomed = false;
        for ((store, aggregate), (_, _, gone)) in touched {
            if !gone {
                continue;
            }
            let last = match tiers.in_memory_version(store, aggregate) {
                Some(last) => last,
                None => reader.last_version(store, aggregate)?.unwrap_or(0),
            };
            let cut = cuts.get(&(store.clone(), aggregate.clone())).copied();
            doomed |= cut.is_some_and(|cut| last <= cut);
        }
        doomed
    };
    let _writer = doomed.then(|| {
        shared
            .versions_gate
            .write()
            .unwrap_or_else(|p| p.into_inner())
    });
    let in_memory: HashMap<(String, String), Run> = {
        let tiers = shared.tiers.read().unwrap_or_else(|p| p.into_inner());
        let mut found = HashMap::new();
        for ((store, aggregate), (_, _, gone)) in touched {
            if !gone {
                continue;
            }
            for mem in [tiers.frozen.as_deref(), Some(&tiers.active)]
                .into_iter()
                .flatten()
            {
                if let Some(run) = mem.tail(store, aggregate).and_then(|t| t.runs().next()) {
                    found
                        .entry((store.clone(), aggregate.clone()))
                        .or_insert(run);
                }
            }
        }
        found
    };
    let rewrite = SegmentRewrite {
        header: *header,
        aggregates: touched
            .iter()
            .map(|((store, aggregate), &(lo, hi, gone))| AggregateRewrite {
                store: store.clone(),
                aggregate: aggregate.clone(),
                old_versions: (lo, hi),
                runs: runs
                    .tail(store, aggregate)
                    .map(|t| t.runs().collect())
                    .unwrap_or_default(),
                removed: gone,
                in_memory: in_memory.get(&(store.clone(), aggregate.clone())).cloned(),
            })
            .collect(),
    };
    let mut timestamp = |store: &str, aggregate: &str, run: &Run| {
        if run.segment_id == id {
            return timestamps
                .get(&(store, aggregate, run.first_version))
                .copied()
                .ok_or_else(|| EngineError::corruption(temp, 0, "a survivor is missing"));
        }
        first_timestamp(shared, store, aggregate, run)
    };
    // The index handle is not held past the transaction: after a failure it is reopened.
    shared.index().rewrite_segment(&rewrite, &mut timestamp)
}

/// Takes the compaction gate exclusively. It is tried rather than waited for: a writer
/// waiting on the lock would hold up every new reader — the log's writer thread included —
/// behind the reads in progress (an integrity check holds the gate for its whole run).
fn exclusive_gate(shared: &EngineState) -> std::sync::RwLockWriteGuard<'_, ()> {
    loop {
        match shared.compaction_gate.try_write() {
            Ok(gate) => return gate,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }
}

/// After the index transaction failed: when its commit nevertheless became durable (the
/// index records the new header), the store is poisoned, to be reopened, which rolls the
/// rewrite forward; otherwise the rewritten file is removed and nothing happened.
fn after_failed_commit(
    shared: &EngineState,
    temp: &Path,
    header: &SegmentHeader,
    e: EngineError,
) -> EngineError {
    // redb refuses all work on a handle after a failed commit: reopen it.
    let recorded = shared
        .reopen_index()
        .and_then(|()| shared.index().segment_headers());
    match recorded {
        Ok(headers) if !headers.contains(header) => {
            if let Err(removal) = shared.fs.remove(temp) {
                tracing::debug!(file = %temp.display(), error = %removal,
                    "could not remove a compaction's file (opening removes it)");
            }
        }
        _ => shared.poison(format!(
            "the index transaction of a compaction failed ({e}); reopen the store"
        )),
    }
    e
}

/// Writes `bytes` as the whole file `path`, then syncs it and its directory.
fn write_durably(shared: &EngineState, path: &PathBuf, bytes: &[u8]) -> Result<(), EngineError> {
    let fs = &shared.fs;
    let result = (|| {
        let file = fs.open(path, true)?;
        file.set_len(0)?;
        file.write_all_at(bytes, 0)?;
        file.sync_data()?;
        fs.sync_dir(&shared.log_dir)
    })();
    result.map_err(|e| {
        let _ = fs.remove(path);
        EngineError::io("write", path, e)
    })
}

/// The timestamp of the first event of `run`, read from the log and verified.
fn first_timestamp(
    shared: &EngineState,
    store: &str,
    aggregate: &str,
    run: &Run,
) -> Result<i64, EngineError> {
    let segment = shared.segment(run.segment_id).ok_or_else(|| {
        EngineError::corruption(
            shared.index_path.clone(),
            0,
            format!("index points into missing segment {}", run.segment_id),
        )
    })?;
    let len = run.lens.first().copied().unwrap_or(0) as usize;
    let mut buf = vec![0u8; len];
    segment
        .file
        .read_exact_at(&mut buf, run.offset)
        .map_err(|e| EngineError::io("read", &segment.path, e))?;
    let entry = super::EntryView::decode(&buf, store, aggregate, run.first_version)
        .map_err(|reason| EngineError::corruption(segment.path.clone(), run.offset, reason))?;
    Ok(entry.timestamp_ms)
}
