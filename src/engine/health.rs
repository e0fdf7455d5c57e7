//! Whether the log holds everything its witnesses vouch for: the one rule that opening a store
//! (`Engine::open_with`) and the integrity check ([`verify`](super::verify)) both apply, before
//! anything is modified.
//!
//! The log is the source of truth, but three records vouch for what it must hold: the index's
//! **checkpoint** (the log is complete up to a cursor), the **segment headers the index
//! recorded** (each segment up to the checkpoint's, with its size and first position), and the
//! **clean-close mark** (where the data ended when the store was last closed cleanly). Whenever
//! one of them vouches for more than the log holds — a segment file missing, shorter than its
//! header or than its recorded size, a header other than the recorded one, a checkpoint or a
//! clean end beyond a segment's end, data ending before the clean end — the store is damaged:
//! opening refuses it with [`EngineError::Corruption`] naming the file, with the expected and
//! the found length in the reason, and changes nothing; `verify` reports the same as a
//! problem. Nothing is ever deleted, truncated or rebuilt from less information than was there.
//!
//! An index that cannot be read at all vouches for nothing: it is rebuilt from the log.
//!
//! A segment may be taken for a creation that a crash interrupted, and removed, only when
//! everything says so: it is the last segment, every byte of it (header included) is zero —
//! earlier versions created segments in place and wrote the header last, after the
//! zero-filled file was synced — and no witness names it or a later segment.
//!
//! A compaction's rewrite of a segment (`<id>.seg.compact`, see `compaction`) is the segment
//! when the index records its header for segment `<id>` — the compaction's commit point passed
//! and only the rename was left: it is judged in the segment's place and opening renames it
//! over the segment. Any other rewrite is a leftover the index does not vouch for, removed by
//! opening: the segment under its own name still holds everything the rewrite holds. So the
//! old segment's header differing from the recorded one is accepted in that one case only.
//!
//! A segment prepared ahead of need under its temporary name (`*.seg.creating`, see
//! [`segment::prepare`]) holds no data: a segment gets its name, with a durable header, before
//! any commit is written to it. Such a file is a leftover, and removed, when no witness names
//! its segment id or a later one; otherwise it is left untouched (a segment a witness vouches
//! for is judged under its own name).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compaction;
use super::cow::CopyOnWrite;
use super::error::{Corruption, EngineError};
use super::index::{Cursor, Index};
use super::io::FileSystem;
use super::segment::{self, SEGMENT_HEADER_BYTES, Segment, SegmentHeader};

/// What the index and the clean-close mark vouch for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Witnesses {
    /// The index checkpoint: the log is complete up to it.
    pub checkpoint: Option<Cursor>,
    /// The segment headers the index recorded, ascending by id.
    pub recorded: Vec<SegmentHeader>,
    /// Where the data ended when the store was last closed cleanly.
    pub clean_end: Option<Cursor>,
}

impl Witnesses {
    /// The highest segment id any witness names (0: none).
    pub fn last_named(&self) -> u64 {
        let recorded = self.recorded.iter().map(|h| h.segment_id).max();
        [
            self.checkpoint.map(|c| c.segment_id),
            recorded,
            self.clean_end.map(|c| c.segment_id),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    }

    /// The index's record of segment `id`.
    pub fn recorded(&self, id: u64) -> Option<&SegmentHeader> {
        self.recorded.iter().find(|h| h.segment_id == id)
    }

    /// The most bytes a witness vouches that segment `id` holds, and what vouches for them.
    pub fn vouched(&self, id: u64) -> Option<(u64, String)> {
        let mut claims = Vec::new();
        if let Some(h) = self.recorded(id) {
            claims.push((h.size, format!("the index records it as {} bytes", h.size)));
        }
        if let Some(c) = self.checkpoint.filter(|c| c.segment_id == id) {
            claims.push((
                c.offset,
                format!(
                    "the index checkpoint vouches for data up to offset {}",
                    c.offset
                ),
            ));
        }
        if let Some(c) = self.clean_end.filter(|c| c.segment_id == id) {
            claims.push((
                c.offset,
                format!(
                    "the store was closed cleanly with data up to offset {}",
                    c.offset
                ),
            ));
        }
        let last = self.last_named();
        if last > id {
            claims.push((
                SEGMENT_HEADER_BYTES,
                format!("the index names the later segment {last}, so this one was complete"),
            ));
        }
        claims.into_iter().max_by_key(|(bytes, _)| *bytes)
    }
}

/// The state of the index, as read without writing to it.
#[derive(Debug)]
pub(crate) enum IndexState {
    /// No index file: nothing vouches for anything; the index is built from the log.
    Missing,
    /// The index cannot be read: it vouches for nothing and is rebuilt from the log.
    Damaged(String),
    /// The index was read; its witnesses hold.
    Usable,
}

/// The index opened over a copy-on-write view of its file (nothing is written to disk, even by
/// redb's repair after an unclean shutdown), with what it vouches for.
#[derive(Debug)]
pub(crate) struct IndexView {
    /// The opened index, unless it is missing or could not be opened.
    pub index: Option<Arc<Index>>,
    pub state: IndexState,
    pub witnesses: Witnesses,
}

/// Reads the index at `path` without modifying it.
pub(crate) fn read_index(
    fs: &dyn FileSystem,
    path: &Path,
    cache_bytes: usize,
) -> Result<IndexView, EngineError> {
    let missing = IndexView {
        index: None,
        state: IndexState::Missing,
        witnesses: Witnesses::default(),
    };
    if !fs
        .exists(path)
        .map_err(|e| EngineError::io("inspect", path, e))?
    {
        return Ok(missing);
    }
    let damaged = |index: Option<Arc<Index>>, reason: String| IndexView {
        index,
        state: IndexState::Damaged(reason),
        witnesses: Witnesses::default(),
    };
    let file = fs
        .open(path, false)
        .map_err(|e| EngineError::io("open", path, e))?;
    let view = CopyOnWrite::over(file).map_err(|e| EngineError::io("stat", path, e))?;
    let index = match Index::open(view, path, cache_bytes) {
        Ok(index) => Arc::new(index),
        // Not damage: an index this version cannot read is left for `annals upgrade`.
        Err(e @ EngineError::FormatUpgradeRequired { .. }) => return Err(e),
        Err(e) => return Ok(damaged(None, format!("the index is unreadable: {e}"))),
    };
    let read = (|| {
        let checkpoint = index.checkpoint()?;
        let recorded = index.segment_headers()?;
        let clean_end = index.clean_end()?;
        let holds_events = index.holds_events()?;
        Ok::<_, EngineError>((checkpoint, recorded, clean_end, holds_events))
    })();
    let malformed = |c: &Option<Cursor>| {
        c.is_some_and(|c| c.segment_id == 0 || c.offset < SEGMENT_HEADER_BYTES)
    };
    match read {
        Err(e) => Ok(damaged(
            Some(index),
            format!("the index is unreadable: {e}"),
        )),
        Ok((checkpoint, _, clean_end, _)) if malformed(&checkpoint) || malformed(&clean_end) => {
            Ok(damaged(
                Some(index),
                "the index's checkpoint or clean-close mark is malformed".into(),
            ))
        }
        Ok((None, _, _, true)) => Ok(damaged(
            Some(index),
            "the index holds events but no checkpoint".into(),
        )),
        Ok((checkpoint, recorded, clean_end, _)) => Ok(IndexView {
            index: Some(index),
            state: IndexState::Usable,
            witnesses: Witnesses {
                checkpoint,
                recorded,
                clean_end,
            },
        }),
    }
}

/// The segment files, judged against the witnesses.
#[derive(Debug, Default)]
pub(crate) struct LogFiles {
    /// The usable segments, ascending by id.
    pub segments: Vec<Arc<Segment>>,
    /// The last segment when it is an unfinished creation (see the module docs): its path and
    /// length. Opening removes it.
    pub unfinished: Option<(PathBuf, u64)>,
    /// Segments prepared ahead of need (temporary files) that no witness names: never data
    /// (see [`segment::prepare`]), and compactions' rewrites the index does not vouch for
    /// (their segment still holds all they hold). Opening removes them.
    pub leftovers: Vec<PathBuf>,
    /// Compactions' rewrites (`<id>.seg.compact`) whose header is the one the index records
    /// for their segment: the commit point of the compaction passed, so the rewrite is the
    /// segment (it is judged in its place). Opening renames each over its segment.
    pub roll_forward: Vec<(u64, PathBuf)>,
    /// What is missing or damaged; empty when the segment files hold what the witnesses vouch
    /// for.
    pub damage: Vec<Corruption>,
}

/// Lists and judges the segment files of `log_dir` against `witnesses`, reading only headers
/// and lengths and modifying nothing. Segments below `lazy_below` whose headers the index
/// recorded, except the last, are checked by length only and opened on first use
/// ([`Segment::lazy`]); the others are opened and their headers read now.
pub(crate) fn assess(
    fs: &Arc<dyn FileSystem>,
    log_dir: &Path,
    witnesses: &Witnesses,
    lazy_below: u64,
) -> Result<LogFiles, EngineError> {
    let ids = segment::list_ids(fs.as_ref(), log_dir)?;
    let mut files = LogFiles::default();
    let last_listed = ids.last().copied().unwrap_or(0);
    let last_named = witnesses.last_named();
    // Segments are numbered from 1 without gaps, up to the last one a witness names.
    let mut next = 1;
    for &id in ids
        .iter()
        .chain((last_named > last_listed).then_some(&last_named.saturating_add(1)))
    {
        if id > next {
            let last_missing = id - 1;
            let who = witnesses.vouched(last_missing).map_or_else(
                || format!("segment {id} follows it, so it was complete"),
                |(_, who)| who,
            );
            let reason = if last_missing == next {
                format!("the file is missing (found no bytes), but {who}")
            } else {
                format!(
                    "segments {next} to {last_missing} are missing (found no bytes); of \
                     segment {last_missing}, {who}"
                )
            };
            files.damage.push(Corruption::new(
                log_dir.join(segment::file_name(next)),
                0,
                reason,
            ));
        }
        next = id.saturating_add(1);
    }
    for id in segment::list_prepared(fs.as_ref(), log_dir)? {
        // A prepared file under a name a witness vouches for is left as it is: whatever
        // happened to the segment of that name, it is not for opening to clear away.
        if id > last_named {
            files
                .leftovers
                .push(log_dir.join(segment::prepared_file_name(id)));
        }
    }
    for id in list_compacted(fs.as_ref(), log_dir)? {
        let path = log_dir.join(compaction::compact_file_name(id));
        let found = segment::find_at(fs.as_ref(), &path, id)?;
        match (&found.header, witnesses.recorded(id)) {
            (Ok(header), Some(recorded)) if header == recorded && ids.contains(&id) => {
                files.roll_forward.push((id, path));
            }
            _ => files.leftovers.push(path),
        }
    }
    for &id in &ids {
        let is_last = id == last_listed;
        let rolled = files
            .roll_forward
            .iter()
            .find(|(rolled, _)| *rolled == id)
            .map(|(_, path)| path.clone());
        let path = rolled
            .clone()
            .unwrap_or_else(|| log_dir.join(segment::file_name(id)));
        if id < lazy_below
            && !is_last
            && let Some(recorded) = witnesses.recorded(id)
        {
            match segment::path_len(fs.as_ref(), &path)? {
                Some(len) if len == recorded.size => {
                    let lazy = Segment::lazy(Arc::clone(fs), log_dir, *recorded);
                    files.segments.push(Arc::new(lazy));
                }
                found => files.damage.push(Corruption::new(
                    path,
                    0,
                    format!(
                        "the file is {} long, but the index records it as {} bytes",
                        found.map_or("missing".to_owned(), |len| format!("{len} bytes")),
                        recorded.size
                    ),
                )),
            }
            continue;
        }
        let found = segment::find_at(fs.as_ref(), &path, id)?;
        let header = match &found.header {
            Ok(header) => *header,
            Err(reason) => {
                if is_last && id > last_named && found.all_zero()? {
                    files.unfinished = Some((found.path, found.len));
                    continue;
                }
                let reason = match witnesses.vouched(id) {
                    Some((_, who)) => format!("{reason}; {who}"),
                    None => reason.clone(),
                };
                files.damage.push(Corruption::new(found.path, 0, reason));
                continue;
            }
        };
        let problem = match (witnesses.recorded(id), witnesses.vouched(id)) {
            (Some(recorded), _) if *recorded != header => {
                Some(segment::differs_from_record(&header, recorded))
            }
            (_, Some((bytes, who))) if bytes > header.size => Some(format!(
                "{who}, beyond the end of the segment ({} bytes)",
                header.size
            )),
            _ => None,
        };
        match problem {
            Some(reason) => files.damage.push(Corruption::new(found.path, 0, reason)),
            None => files.segments.extend(found.into_segment().map(Arc::new)),
        }
    }
    Ok(files)
}

/// The segment ids of the compactions' rewrites (`<id>.seg.compact`) in `log_dir`.
fn list_compacted(fs: &dyn FileSystem, log_dir: &Path) -> Result<Vec<u64>, EngineError> {
    let mut ids: Vec<u64> = fs
        .list(log_dir)
        .map_err(|e| EngineError::io("list", log_dir, e))?
        .iter()
        .filter_map(|name| compaction::parse_compact_file_name(name))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Damage when the log's data ends at `end` (where a scan of the whole log stopped: the end of
/// data, or the first invalid frame) before the clean-close mark `clean_end` says it did.
pub(crate) fn short_of_clean_end(
    log_dir: &Path,
    clean_end: Option<Cursor>,
    end: Cursor,
) -> Option<Corruption> {
    let clean = clean_end?;
    if (end.segment_id, end.offset) >= (clean.segment_id, clean.offset) {
        return None;
    }
    let reason = if end.segment_id == clean.segment_id {
        format!(
            "the data ends at offset {}, but the store was closed cleanly with data up to \
             offset {}",
            end.offset, clean.offset
        )
    } else {
        format!(
            "the data ends in segment {}, but the store was closed cleanly with data up to \
             offset {} of this segment",
            end.segment_id, clean.offset
        )
    };
    let offset = if end.segment_id == clean.segment_id {
        end.offset
    } else {
        0
    };
    Some(Corruption::new(
        log_dir.join(segment::file_name(clean.segment_id)),
        offset,
        reason,
    ))
}
