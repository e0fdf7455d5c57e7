//! Recovery: rebuilding the writer's state from the log when a store opens.
//!
//! Starting at the index checkpoint, every frame is read and verified and its events are put in
//! a fresh memtable. The scan stops at the first all-zero frame header (the end of data).
//!
//! A frame that fails verification is handled by where it is:
//! - in a segment that is not the last one, it is [`EngineError::Corruption`]: a segment is
//!   synced completely before the next one is created, so its content was durable;
//! - in the last segment, it is a **torn tail** (a write that a crash interrupted, which was
//!   never acknowledged) only if both hold:
//!   1. no later valid frame says, through its `durable_offset`, that the bytes at the bad frame
//!      had been synced before;
//!   2. the frame shows the mark of a torn write (see [`looks_torn`]): some part of it that is
//!      never zero when written reads as zeros.
//!
//!   Otherwise it is corruption. A torn tail is zero-filled up to the segment's end and synced,
//!   so no stale frame can ever reappear — but only once the whole log has been judged healthy:
//!   the scan itself changes nothing ([`scan_segment`] reports the torn tail, [`clear_torn`]
//!   removes it).
//!
//! Rule 2 rests on how a write can tear. The bytes past the end of data are always zero (segments
//! are created zero-filled, and a torn tail is zero-filled before anything is appended), so the
//! part of an interrupted write that did not reach the disk reads as zeros. Disks write whole
//! 512-byte sectors atomically, so what is missing is a set of whole sectors; a write that stops
//! part-way loses a suffix. A frame's magic, its header's end mark and its footer are never zero
//! and no single flipped bit can zero them, and every sector strictly inside a frame holds some
//! entry bytes. So a frame written whole and then damaged by a flipped bit is refused as
//! corruption even when it is the very last one, where no later frame vouches for it — the only
//! exception being a frame that holds a whole sector of zero bytes of its own (a payload with
//! 512 aligned zero bytes), which the rule cannot tell from a lost sector.

use std::sync::Arc;

use super::error::EngineError;
use super::frame::{self, FRAME_ALIGN, FRAME_HEADER_BYTES, FrameError};
use super::index::{Cursor, Location, MemTable};
use super::segment::Segment;

/// Reads a region of a segment, mapping errors.
fn read(segment: &Segment, offset: u64, len: usize) -> Result<Vec<u8>, EngineError> {
    let mut buf = vec![0u8; len];
    segment
        .file
        .read_exact_at(&mut buf, offset)
        .map_err(|e| EngineError::io("read", &segment.path, e))?;
    Ok(buf)
}

/// A frame read from disk: its header and bytes, or why it is invalid.
pub(crate) type FrameRead = Result<(frame::FrameHeader, Vec<u8>), FrameError>;

/// Reads and verifies the frame at `offset`; `Ok(None)` at the end of data.
pub(crate) fn read_frame(segment: &Segment, offset: u64) -> Result<Option<FrameRead>, EngineError> {
    let size = segment.header.size;
    if offset + FRAME_HEADER_BYTES as u64 > size {
        return Ok(None);
    }
    let head = read(segment, offset, FRAME_HEADER_BYTES)?;
    if head.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let header = match frame::decode_frame_header(&head) {
        Ok(h) => h,
        Err(e) => return Ok(Some(Err(e))),
    };
    let len = header.frame_len();
    if offset + len > size {
        return Ok(Some(Err(FrameError::Truncated {
            needed: len,
            available: size - offset,
        })));
    }
    let bytes = read(segment, offset, len as usize)?;
    let checked = frame::decode_frame(&bytes).map(|(h, _)| h);
    Ok(Some(checked.map(|h| (h, bytes))))
}

/// An unacknowledged torn write at the end of the last segment, found by [`scan_segment`]:
/// everything from `offset` to the segment's end is to be zero-filled ([`clear_torn`]).
#[derive(Debug)]
pub(crate) struct Torn {
    /// Where the invalid bytes start.
    pub offset: u64,
    /// Why the frame there is invalid.
    pub reason: FrameError,
}

/// Scans `segment` from `cursor` (which must point into it), applying every valid frame to
/// `mem` and advancing `cursor`, up to the end of data or a torn tail (returned, not yet
/// repaired: the scan never writes). `on_full` is called whenever `mem` holds `flush_every`
/// events (to write it to the index during long replays, or to drop it while the log is only
/// being checked). When the data of the last segment ends exactly at `clean_end` (where a clean
/// close left it), the rest of the segment is known to be zeros and is not read.
pub(crate) fn scan_segment(
    segment: &Arc<Segment>,
    is_last: bool,
    clean_end: Option<Cursor>,
    cursor: &mut Cursor,
    mem: &mut MemTable,
    flush_every: usize,
    on_full: &mut dyn FnMut(&mut MemTable, Cursor) -> Result<(), EngineError>,
) -> Result<Option<Torn>, EngineError> {
    loop {
        let offset = cursor.offset;
        let frame = match read_frame(segment, offset)? {
            None if is_last && clean_end == Some(*cursor) => return Ok(None),
            None if is_last => return clear_after_end(segment, offset),
            None => return Ok(None),
            Some(Ok((header, bytes))) if in_sequence(segment, &header, cursor.next_position) => {
                (header, bytes)
            }
            Some(Ok(_)) => {
                let e = FrameError::Malformed("frame position out of sequence");
                return bad(segment, is_last, offset, e);
            }
            Some(Err(e)) => return bad(segment, is_last, offset, e),
        };
        let (header, bytes) = frame;
        let (_, entries) =
            frame::decode_frame(&bytes).map_err(|e| corruption(segment, offset, e))?;
        for (i, (body_offset, entry)) in entries.into_iter().enumerate() {
            let event = frame::decode_entry(entry).map_err(|e| corruption(segment, offset, e))?;
            let loc = Location {
                position: header.first_position + i as u64,
                segment_id: segment.header.segment_id,
                offset: offset + FRAME_HEADER_BYTES as u64 + u64::from(body_offset),
                len: entry.len() as u32,
            };
            let expected = mem
                .last_version(&event.store, &event.aggregate)
                .map(|v| v + 1);
            if expected.is_some_and(|v| v != event.version) {
                return Err(corruption(
                    segment,
                    offset,
                    FrameError::Malformed("aggregate version out of sequence"),
                ));
            }
            mem.insert(
                &event.store,
                &event.aggregate,
                event.version,
                event.timestamp_ms,
                loc,
            );
        }
        cursor.offset = offset + header.frame_len();
        cursor.next_position = header.first_position + u64::from(header.entry_count);
        mem.end = *cursor;
        if mem.events >= flush_every {
            on_full(mem, *cursor)?;
        }
    }
}

/// Whether a frame read at the point where position `next` is expected follows in sequence:
/// it starts exactly there — or, in a compacted segment, whose positions may have gaps, at or
/// after it, and ends within the segment's positions.
pub(crate) fn in_sequence(segment: &Segment, header: &frame::FrameHeader, next: u64) -> bool {
    match segment.header.compacted {
        None => header.first_position == next,
        Some(c) => {
            header.first_position >= next
                && header
                    .first_position
                    .checked_add(u64::from(header.entry_count))
                    .is_some_and(|end| end <= c.end_position)
        }
    }
}

/// Zero-fills the torn tail `torn` of `segment` (the last one) and syncs it, so no stale frame
/// from the interrupted write can ever be read back.
pub(crate) fn clear_torn(segment: &Segment, torn: &Torn) -> Result<(), EngineError> {
    zero_from(segment, torn.offset)?;
    tracing::warn!(
        file = %segment.path.display(),
        offset = torn.offset,
        reason = %torn.reason,
        "truncated a torn log tail (unacknowledged data)"
    );
    Ok(())
}

fn corruption(segment: &Segment, offset: u64, e: FrameError) -> EngineError {
    EngineError::corruption(segment.path.clone(), offset, e)
}

/// Decides what a bad frame at `offset` means (see the module docs) and acts on it.
/// At the end of data of the last segment, everything after must be zero. A crash can persist
/// the later sectors of an unacknowledged write but not its first ones, leaving valid-looking
/// frames behind zeros; later appends could then line up with them. Such bytes are a torn
/// tail: checked and zero-filled like one.
fn clear_after_end(segment: &Segment, offset: u64) -> Result<Option<Torn>, EngineError> {
    let size = segment.header.size;
    let mut at = offset;
    while at < size {
        let n = ((size - at).min(1 << 20)) as usize;
        if read(segment, at, n)?.iter().any(|&b| b != 0) {
            let e = FrameError::Malformed("stale bytes after the end of data");
            return bad(segment, true, offset, e);
        }
        at += n as u64;
    }
    Ok(None)
}

fn bad(
    segment: &Segment,
    is_last: bool,
    offset: u64,
    e: FrameError,
) -> Result<Option<Torn>, EngineError> {
    if !is_last {
        return Err(corruption(segment, offset, e));
    }
    if !looks_torn(segment, offset)? {
        return Err(EngineError::corruption(
            segment.path.clone(),
            offset,
            format!("{e} (the frame was written whole, so this is damage, not a torn write)"),
        ));
    }
    if vouched_by(segment, offset)?.is_some() {
        return Err(corruption(segment, offset, e));
    }
    Ok(Some(Torn { offset, reason: e }))
}

/// The offset of a later valid frame whose `durable_offset` says the bytes at `offset` had been
/// synced before it was written, if there is one.
pub(crate) fn vouched_by(segment: &Segment, offset: u64) -> Result<Option<u64>, EngineError> {
    let size = segment.header.size;
    let mut probe = offset + FRAME_ALIGN;
    while probe + FRAME_HEADER_BYTES as u64 <= size {
        let chunk_len = ((size - probe).min(1 << 20)) as usize;
        let chunk = read(segment, probe, chunk_len)?;
        let mut at = 0usize;
        while at + 4 <= chunk.len() {
            let candidate = probe + at as u64;
            if chunk[at..at + 4] == frame::FRAME_MAGIC.to_le_bytes()
                && let Some(Ok((header, _))) = read_frame(segment, candidate)?
                && header.durable_offset > offset
            {
                return Ok(Some(candidate));
            }
            at += FRAME_ALIGN as usize;
        }
        probe += chunk_len as u64;
    }
    Ok(None)
}

/// Sector size assumed atomic by [`looks_torn`].
const SECTOR: u64 = 512;

/// Whether the invalid frame at `offset` (or the non-zero bytes after an all-zero header there)
/// carries the mark of an interrupted write: a part that is never zero once written reads as
/// zeros. See the module docs.
pub(crate) fn looks_torn(segment: &Segment, offset: u64) -> Result<bool, EngineError> {
    let size = segment.header.size;
    let header_len = (size - offset).min(FRAME_HEADER_BYTES as u64) as usize;
    let head = read(segment, offset, header_len)?;
    if head.len() < FRAME_HEADER_BYTES || head[..4] == [0; 4] || head[39] == 0 {
        // The start or the end of the header never reached the disk.
        return Ok(true);
    }
    let header = match frame::decode_frame_header(&head) {
        Ok(header) => header,
        // A header that was written whole but does not check is damage.
        Err(_) => return Ok(false),
    };
    let footer_at = offset + header.footer_offset();
    if footer_at + frame::FRAME_FOOTER_BYTES as u64 > size {
        return Ok(false);
    }
    let footer = read(segment, footer_at, frame::FRAME_FOOTER_BYTES)?;
    if footer.contains(&0) {
        // The end of the frame never reached the disk.
        return Ok(true);
    }
    if footer != frame::FRAME_FOOTER {
        return Ok(false);
    }
    // Written from its first to its last sector: was a sector in between lost?
    let mut sector = offset.next_multiple_of(SECTOR);
    while sector + SECTOR <= footer_at {
        if read(segment, sector, SECTOR as usize)?
            .iter()
            .all(|&b| b == 0)
        {
            return Ok(true);
        }
        sector += SECTOR;
    }
    Ok(false)
}

/// Zero-fills `segment` from `offset` to its end (skipping regions already zero) and syncs.
fn zero_from(segment: &Segment, offset: u64) -> Result<(), EngineError> {
    let size = segment.header.size;
    let mut at = offset;
    let zeros = vec![0u8; 1 << 20];
    while at < size {
        let n = ((size - at).min(zeros.len() as u64)) as usize;
        let current = read(segment, at, n)?;
        if current.iter().any(|&b| b != 0) {
            segment
                .file
                .write_all_at(&zeros[..n], at)
                .map_err(|e| EngineError::io("truncate", &segment.path, e))?;
        }
        at += n as u64;
    }
    segment
        .file
        .sync_data()
        .map_err(|e| EngineError::io("sync", &segment.path, e))
}
