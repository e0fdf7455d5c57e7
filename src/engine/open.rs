//! Opening a store: judging it, repairing what a crash left, replaying the log past the
//! checkpoint, and starting the writer, checkpointer and notifier threads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use super::checkpointer::checkpoint_loop;
use super::engine_state::{Counters, EngineState};
use super::error::EngineError;
use super::handle::Engine;
use super::health::{self, IndexState};
use super::index::{Cursor, Index, MemTable};
use super::io::FileSystem;
use super::layout;
use super::options::EngineOptions;
use super::preparer::Preparer;
use super::recovery;
use super::segment::{self, SEGMENT_HEADER_BYTES, Segment, SegmentHeader};
use super::tiers::IndexTiers;
use super::writer::{self, Writer};

impl Engine {
    /// Opens (or creates) the store in `dir` through `fs`.
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        if !(64 << 10..=u64::from(u32::MAX)).contains(&options.segment_bytes) {
            return Err(EngineError::InvalidOptions(format!(
                "segment_bytes must be between 64 KiB and 4 GiB, not {}",
                options.segment_bytes
            )));
        }
        if options.checkpoint_events == 0 {
            return Err(EngineError::InvalidOptions(
                "checkpoint_events must be at least 1".into(),
            ));
        }
        fs.create_dir_all(dir)
            .map_err(|e| EngineError::io("create directory", dir, e))?;
        let lock = lock_store(fs.as_ref(), dir)?;
        let log_dir = layout::log_dir(dir);
        fs.create_dir_all(&log_dir)
            .map_err(|e| EngineError::io("create directory", &log_dir, e))?;
        fs.sync_dir(dir)
            .map_err(|e| EngineError::io("sync directory", dir, e))?;
        let index_path = layout::index_file(dir);
        // Held under the lock: nobody else reads or repairs the store meanwhile.
        let opened = open_log(&fs, &log_dir, &index_path, &options)?;
        // The index file may have just been created: make its name durable.
        fs.sync_dir(dir)
            .map_err(|e| EngineError::io("sync directory", dir, e))?;
        let shared = Arc::new(EngineState {
            dir: dir.to_owned(),
            log_dir,
            index_path,
            fs,
            options,
            segments: RwLock::new(opened.segments),
            tiers: RwLock::new(IndexTiers::default()),
            index: RwLock::new(Arc::new(opened.index)),
            closing: AtomicBool::new(false),
            checkpointer_stopped: AtomicBool::new(false),
            checkpoint_failure: Mutex::new(None),
            poison: Mutex::new(None),
            checkpoint_done: Condvar::new(),
            checkpoint_lock: Mutex::new(()),
            last_position: AtomicU64::new(0),
            counters: Counters::default(),
            commit_pool: Default::default(),
            published: Mutex::new(Some(tokio::sync::watch::Sender::new(0))),
            compaction_gate: RwLock::new(()),
            transition: RwLock::new(None),
            versions_gate: RwLock::new(()),
            compaction_running: Mutex::new(()),
            _lock: lock,
        });
        let (segment, cursor) = recover(&shared, opened.replay)?;
        shared.set_last_position(cursor.next_position - 1);
        let (tx, rx) = mpsc::channel();
        let (ctx, crx) = mpsc::channel::<Arc<MemTable>>();
        let checkpointer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("annals-checkpoint".into())
                .spawn(move || checkpoint_loop(&shared, &crx))
                .map_err(|e| EngineError::io("spawn checkpoint thread for", dir, e))?
        };
        let (acks, acks_rx) = mpsc::channel();
        let notifier = std::thread::Builder::new()
            .name("annals-notify".into())
            .spawn(move || writer::notify_loop(&acks_rx))
            .map_err(|e| EngineError::io("spawn notifier thread for", dir, e))?;
        let preparer = Preparer::start(Arc::clone(&shared.fs), shared.log_dir.clone())
            .map_err(|e| EngineError::io("spawn segment preparer thread for", dir, e))?;
        let writer = Writer {
            shared: Arc::clone(&shared),
            rx,
            acks,
            checkpoints: ctx,
            durable_offset: cursor.offset,
            cursor,
            segment,
            last_sync: Instant::now(),
            preparer,
            next_requested: false,
            batch: Vec::new(),
        };
        let writer = std::thread::Builder::new()
            .name("annals-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| EngineError::io("spawn writer thread for", dir, e))?;
        Ok(Engine {
            shared,
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![writer, checkpointer, notifier]),
        })
    }
}

/// Takes the store's `LOCK`; [`EngineError::Locked`] while another handle holds it.
pub(crate) fn lock_store(
    fs: &dyn FileSystem,
    dir: &Path,
) -> Result<Box<dyn std::fmt::Debug + Send + Sync>, EngineError> {
    let lock_path = layout::lock(dir);
    fs.try_lock(&lock_path)
        .map_err(|e| EngineError::io("lock", &lock_path, e))?
        .ok_or_else(|| EngineError::Locked {
            path: dir.to_owned(),
        })
}

/// The open segments, by id.
type Segments = BTreeMap<u64, Arc<Segment>>;

/// What opening found, judged healthy and repaired: handed to [`recover`].
struct Opened {
    index: Index,
    segments: Segments,
    replay: Replay,
}

/// The log past the checkpoint, as opening left it for [`recover`].
enum Replay {
    /// No segment yet.
    Empty,
    /// Replayed while the log was judged: the events past the checkpoint, up to `cursor`.
    Done { mem: MemTable, cursor: Cursor },
    /// Too many events to hold in memory: replay again from `start`, writing them to the
    /// index as the replay goes (`clean_end`: see [`recovery::scan_segment`]).
    Again {
        start: Cursor,
        clean_end: Option<Cursor>,
    },
}

/// Opens the index and the segments, in two phases.
///
/// First the store is judged, and nothing is modified: the index is read through a
/// copy-on-write view, the segment files are checked against what it and the clean-close mark
/// vouch for (see [`health`]), and the log past the checkpoint is replayed. Any damage fails the
/// open with [`EngineError::Corruption`], leaving every byte as it was.
///
/// Only then is the store repaired: an unfinished last segment and leftover prepared
/// segments removed, a torn tail
/// zero-filled, the index opened (giving up its clean-close mark, durably) or — when it is
/// missing, unreadable or a rebuild was asked for — built anew from the log.
///
/// Segments before the checkpoint's whose headers the index recorded are checked by length
/// and opened lazily, on first read (see [`Segment::lazy`]); the others — all of them when the
/// index is rebuilt — are opened and checked now. So a clean open reads a bounded number of
/// files whatever the store's size.
fn open_log(
    fs: &Arc<dyn FileSystem>,
    log_dir: &Path,
    index_path: &Path,
    options: &EngineOptions,
) -> Result<Opened, EngineError> {
    // Phase 1: judge, changing nothing.
    let view = health::read_index(fs.as_ref(), index_path, options.index_cache_bytes)?;
    let witnesses = view.witnesses.clone();
    let mut rebuild = match &view.state {
        IndexState::Usable if options.rebuild_index => Some("a rebuild was asked for".to_owned()),
        IndexState::Usable => None,
        IndexState::Missing => Some("the index is missing".to_owned()),
        IndexState::Damaged(problem) => Some(problem.clone()),
    };
    // Giving up the clean-close mark is the index's first write: try it on the view, so an
    // index that cannot take it is rebuilt instead.
    if rebuild.is_none()
        && witnesses.clean_end.is_some()
        && let Some(index) = &view.index
        && let Err(e) = index.set_clean_end(None)
    {
        rebuild = Some(format!("its clean-close mark cannot be removed: {e}"));
    }
    drop(view);
    let checkpoint = witnesses.checkpoint.filter(|_| rebuild.is_none());
    let lazy_below = checkpoint.map_or(0, |c| c.segment_id);
    let files = health::assess(fs, log_dir, &witnesses, lazy_below)?;
    if let Some(damage) = files.damage.into_iter().next() {
        return Err(damage.into());
    }
    let mut segments: Segments = files
        .segments
        .into_iter()
        .map(|s| (s.header.segment_id, s))
        .collect();
    let start = checkpoint.or_else(|| log_start(&segments));
    // After a clean close nothing lies past the end of data, so the rest of the last segment
    // (up to its whole size) need not be read.
    let skip_at = checkpoint.and(witnesses.clean_end);
    let flush_every = options.checkpoint_events.saturating_mul(4);
    let (replay, torn) = match (start, segments.values().next_back()) {
        (Some(start), Some(last)) => {
            // What is in the page cache may not be durable: sync the last segment before
            // anything is indexed from it.
            last.file
                .sync_data()
                .map_err(|e| EngineError::io("sync", &last.path, e))?;
            let mut too_long = false;
            let mut drop_events = |mem: &mut MemTable, at: Cursor| {
                too_long = true;
                mem.restart_at(at);
                Ok(())
            };
            let (mem, cursor, torn) =
                replay_log(&segments, start, skip_at, flush_every, &mut drop_events)?;
            if let Some(damage) = health::short_of_clean_end(log_dir, witnesses.clean_end, cursor) {
                return Err(damage.into());
            }
            let replay = if too_long {
                Replay::Again {
                    start,
                    clean_end: skip_at,
                }
            } else {
                Replay::Done { mem, cursor }
            };
            (replay, torn.map(|t| (Arc::clone(last), t)))
        }
        _ => (Replay::Empty, None),
    };
    // Phase 2: the log holds everything its witnesses vouch for; repair what a crash left.
    if let Some((path, len)) = &files.unfinished {
        remove_unfinished(fs.as_ref(), log_dir, path, *len)?;
    }
    for path in &files.leftovers {
        tracing::debug!(file = %path.display(), "removing a segment prepared ahead of need");
        fs.remove(path)
            .map_err(|e| EngineError::io("remove", path, e))?;
    }
    if !files.roll_forward.is_empty() {
        roll_forward(fs.as_ref(), log_dir, &files.roll_forward, &mut segments)?;
    }
    if let Some((segment, torn)) = &torn {
        recovery::clear_torn(segment, torn)?;
    }
    let (index, replay) = match rebuild {
        Some(problem) => {
            let warn = !segments.is_empty();
            let index = fresh_index(fs.as_ref(), index_path, options, warn.then_some(&problem))?;
            (index, replay)
        }
        None => match open_index(fs.as_ref(), index_path, options, &witnesses) {
            Ok(index) => (index, replay),
            // It could be read, but not opened for writing: rebuild it from the whole log.
            Err(e @ EngineError::Corruption(_)) => {
                let index = fresh_index(fs.as_ref(), index_path, options, Some(&e.to_string()))?;
                let replay = match log_start(&segments) {
                    Some(start) => Replay::Again {
                        start,
                        clean_end: None,
                    },
                    None => Replay::Empty,
                };
                (index, replay)
            }
            Err(e) => return Err(e),
        },
    };
    Ok(Opened {
        index,
        segments,
        replay,
    })
}

/// Finishes the compactions whose commit point passed (see `compaction`): renames each
/// rewrite over its segment, syncs the directory, and reopens the segments that were judged
/// through the rewrite's name.
fn roll_forward(
    fs: &dyn FileSystem,
    log_dir: &Path,
    rewrites: &[(u64, std::path::PathBuf)],
    segments: &mut Segments,
) -> Result<(), EngineError> {
    for (id, path) in rewrites {
        let target = log_dir.join(segment::file_name(*id));
        tracing::info!(file = %target.display(), "finishing an interrupted compaction");
        fs.rename(path, &target)
            .map_err(|e| EngineError::io("rename", path, e))?;
    }
    fs.sync_dir(log_dir)
        .map_err(|e| EngineError::io("sync directory", log_dir, e))?;
    for (id, path) in rewrites {
        if let Some(segment) = segments.get_mut(id)
            && segment.path == *path
        {
            let target = log_dir.join(segment::file_name(*id));
            let file = fs
                .open(&target, false)
                .map_err(|e| EngineError::io("open", &target, e))?;
            *segment = Arc::new(Segment {
                header: segment.header,
                path: target,
                file,
            });
        }
    }
    Ok(())
}

/// Where the log starts: the first frame of its first segment.
fn log_start(segments: &Segments) -> Option<Cursor> {
    segments.values().next().map(|first| Cursor {
        segment_id: first.header.segment_id,
        offset: SEGMENT_HEADER_BYTES,
        next_position: first.header.first_position,
    })
}

fn remove_unfinished(
    fs: &dyn FileSystem,
    log_dir: &Path,
    path: &Path,
    len: u64,
) -> Result<(), EngineError> {
    tracing::warn!(
        file = %path.display(),
        len,
        "removing a last segment whose creation did not finish (all zeros, named by nothing)"
    );
    fs.remove(path)
        .map_err(|e| EngineError::io("remove", path, e))?;
    fs.sync_dir(log_dir)
        .map_err(|e| EngineError::io("sync directory", log_dir, e))
}

/// Opens the index for writing and durably removes its clean-close mark, if it has one (the
/// mark only holds until the next open for writing: see [`Index::clean_end`]).
fn open_index(
    fs: &dyn FileSystem,
    path: &Path,
    options: &EngineOptions,
    witnesses: &health::Witnesses,
) -> Result<Index, EngineError> {
    let file = fs
        .open(path, false)
        .map_err(|e| EngineError::io("open", path, e))?;
    let index = Index::open(file, path, options.index_cache_bytes)?;
    if witnesses.clean_end.is_some() {
        index.set_clean_end(None)?;
    }
    Ok(index)
}

/// Replaces the index with an empty one, to be filled from the log; `problem` says why, when
/// the log is not empty.
fn fresh_index(
    fs: &dyn FileSystem,
    path: &Path,
    options: &EngineOptions,
    problem: Option<&String>,
) -> Result<Index, EngineError> {
    if let Some(problem) = problem {
        tracing::warn!(file = %path.display(), %problem, "rebuilding the index from the log");
    }
    if fs
        .exists(path)
        .map_err(|e| EngineError::io("inspect", path, e))?
    {
        fs.remove(path)
            .map_err(|e| EngineError::io("remove", path, e))?;
    }
    let file = fs
        .open(path, true)
        .map_err(|e| EngineError::io("create", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir)
        .map_err(|e| EngineError::io("sync directory", dir, e))?;
    Index::open(file, path, options.index_cache_bytes)
}

/// Replays the log from `start` to its end into a memtable (`on_full` is called whenever it
/// holds `flush_every` events); returns it, the cursor where the next frame goes and the torn
/// tail of the last segment, if any, not yet repaired.
fn replay_log(
    segments: &Segments,
    start: Cursor,
    clean_end: Option<Cursor>,
    flush_every: usize,
    on_full: &mut dyn FnMut(&mut MemTable, Cursor) -> Result<(), EngineError>,
) -> Result<(MemTable, Cursor, Option<recovery::Torn>), EngineError> {
    let last_id = segments.keys().next_back().copied();
    let mut cursor = start;
    let mut mem = MemTable::starting_at(cursor);
    let mut torn = None;
    for segment in segments.range(start.segment_id..).map(|(_, s)| s) {
        if segment.header.segment_id != cursor.segment_id {
            if segment.header.first_position != cursor.next_position {
                return Err(EngineError::corruption(
                    segment.path.clone(),
                    0,
                    format!(
                        "segment starts at position {}, expected {}",
                        segment.header.first_position, cursor.next_position
                    ),
                ));
            }
            cursor = Cursor {
                segment_id: segment.header.segment_id,
                offset: SEGMENT_HEADER_BYTES,
                next_position: cursor.next_position,
            };
        }
        let is_last = Some(segment.header.segment_id) == last_id;
        // Aggregates met from a compacted segment on may start past version 1 (see
        // `Index::apply`).
        mem.allow_floors |= segment.header.compacted.is_some();
        torn = recovery::scan_segment(
            segment,
            is_last,
            clean_end,
            &mut cursor,
            &mut mem,
            flush_every,
            on_full,
        )?;
        if let Some(c) = segment.header.compacted {
            // Its positions end where the next segment's begin, whatever it still holds.
            cursor.next_position = c.end_position;
        }
    }
    mem.end = cursor;
    Ok((mem, cursor, torn))
}

/// Puts the replayed log tail in the active memtable (replaying it again first, writing to the
/// index as it goes, when it was too long to keep); returns the segment to write to and the
/// cursor where the next frame goes. A store without segments gets its first one.
fn recover(
    shared: &Arc<EngineState>,
    replay: Replay,
) -> Result<(Arc<Segment>, Cursor), EngineError> {
    let last = shared
        .segments
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .next_back()
        .cloned();
    let (last, (mem, cursor)) = match (last, replay) {
        (Some(last), Replay::Done { mem, cursor }) => (last, (mem, cursor)),
        (Some(last), Replay::Again { start, clean_end }) => {
            // Writers keep the unindexed tail below about twice the threshold (see
            // `Writer::maybe_freeze`); a longer one (an index rebuild) is indexed in chunks.
            let flush_every = shared.options.checkpoint_events.saturating_mul(4);
            let mut flush = |mem: &mut MemTable, at: Cursor| -> Result<(), EngineError> {
                shared.index().apply(mem, &shared.segment_headers())?;
                mem.restart_at(at);
                Ok(())
            };
            let segments = shared
                .segments
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let (mem, cursor, torn) =
                replay_log(&segments, start, clean_end, flush_every, &mut flush)?;
            if let Some(torn) = torn {
                // Cleared once already, so only a write from outside can have put it back.
                recovery::clear_torn(&last, &torn)?;
            }
            (last, (mem, cursor))
        }
        (_, _) => {
            let header = SegmentHeader {
                segment_id: 1,
                first_position: 1,
                size: segment::FIRST_SEGMENT_BYTES.min(shared.options.segment_bytes),
                compacted: None,
            };
            let segment = segment::create(shared.fs.as_ref(), &shared.log_dir, header)
                .map_err(|e| EngineError::io("create segment in", &shared.log_dir, e))?;
            let segment = Arc::new(segment);
            shared
                .segments
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(1, Arc::clone(&segment));
            let cursor = Cursor {
                segment_id: 1,
                offset: SEGMENT_HEADER_BYTES,
                next_position: 1,
            };
            (segment, (MemTable::starting_at(cursor), cursor))
        }
    };
    // The replayed tail stays in memory: the writer hands it to the checkpointer as soon as
    // it starts, so opening does not wait for it to be indexed.
    shared
        .tiers
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .active = mem;
    Ok((last, cursor))
}
