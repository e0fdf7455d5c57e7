//! Reading the log in global order: what subscriptions catch up from.
//!
//! Every committed event has a global position, and the log holds them in that order: frames
//! follow one another within a segment, and segment `n + 1` starts where segment `n` ends. A
//! [`LogCursor`] names the next position to read and, once known, the frame that holds it, so a
//! reader that keeps its cursor continues without searching. A cursor made from a bare position
//! is located once: the segment is found from the segments' first positions, then frame headers
//! are skipped (40 bytes read per frame) up to the frame that holds the position.
//!
//! A compacted segment (see `compaction`) lacks the positions of the events it removed: a read
//! skips them, and a cursor whose segment was rewritten since locates its position again.
//!
//! Only published positions are read (those at or below [`super::Engine::last_position`]): their
//! frames are complete and acknowledged, so a frame that does not verify there is corruption,
//! never a torn write in progress.

use std::path::Path;
use std::sync::Arc;

use super::Engine;
use super::engine_state::EngineState;
use super::error::EngineError;
use super::frame::{self, FRAME_HEADER_BYTES, LogEvent};
use super::recovery::read_frame;
use super::segment::{SEGMENT_HEADER_BYTES, Segment};

/// Where a read of the log in global order continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogCursor {
    /// The next global position to read (positions start at 1).
    position: u64,
    /// The frame that holds `position`, when known: (segment id, the segment's generation,
    /// offset of the frame). A compaction rewrites a segment under a new generation, which
    /// moves its frames: the cursor then locates its position again.
    frame: Option<(u64, u32, u64)>,
}

impl LogCursor {
    /// A cursor at global position `position` (0 is read as 1, the first position).
    pub fn at(position: u64) -> Self {
        LogCursor {
            position: position.max(1),
            frame: None,
        }
    }

    /// The next global position this cursor reads.
    pub fn position(&self) -> u64 {
        self.position
    }
}

/// Events read from the log in global order, and where the next read continues.
#[derive(Debug)]
pub struct LogBatch {
    /// The events with their global positions, ascending (gap-free, but for the positions of
    /// events a compaction removed).
    pub events: Vec<(u64, LogEvent)>,
    /// The cursor after the last event returned.
    pub next: LogCursor,
}

/// The segments a read of the log in global order goes through: the open store's, or those a
/// live reader has verified (see `live`).
pub(crate) trait SegmentSource {
    /// The log directory, named by errors that concern no one segment.
    fn log_dir(&self) -> &Path;
    /// Segment `id`, when known.
    fn segment(&self, id: u64) -> Option<Arc<Segment>>;
    /// The first segment after segment `id`, when known.
    fn next_segment(&self, id: u64) -> Option<Arc<Segment>>;
    /// The last segment starting at or before global position `position`.
    fn segment_holding(&self, position: u64) -> Option<Arc<Segment>>;
}

impl SegmentSource for EngineState {
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        EngineState::segment(self, id)
    }

    fn next_segment(&self, id: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        segments.range(id + 1..).next().map(|(_, s)| Arc::clone(s))
    }

    fn segment_holding(&self, position: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        segments
            .values()
            .rev()
            .find(|s| s.header.first_position <= position)
            .cloned()
    }
}

impl Engine {
    /// Reads up to `max_events` committed events from `from`, in global order.
    ///
    /// Returns fewer (possibly none) when the log has no more published events; the batch's
    /// `next` cursor then continues where it stopped, so a reader can wait for
    /// [`Engine::last_position`] to grow and read again. Reads run concurrently with appends.
    pub fn read_log(&self, from: LogCursor, max_events: usize) -> Result<LogBatch, EngineError> {
        // Segment files from one side of a compaction's swap (see `compaction`).
        let _gate = self.shared.reading();
        read_log(&*self.shared, self.last_position(), from, max_events)
    }
}

/// Reads up to `max_events` events of `source` from `from`, in global order, none past
/// position `last` (the last one published, whose frames are all complete and verified).
pub(crate) fn read_log(
    source: &dyn SegmentSource,
    last: u64,
    from: LogCursor,
    max_events: usize,
) -> Result<LogBatch, EngineError> {
    let mut cursor = from;
    let mut events = Vec::new();
    if cursor.position > last || max_events == 0 {
        return Ok(LogBatch {
            events,
            next: cursor,
        });
    }
    let known = cursor.frame.and_then(|(id, generation, offset)| {
        let segment = source.segment(id)?;
        (segment.header.generation() == generation).then_some((segment, offset))
    });
    let (mut segment, mut offset) = match known {
        Some(found) => found,
        None => locate(source, cursor.position)?,
    };
    while cursor.position <= last && events.len() < max_events {
        let Some(read) = read_frame(&segment, offset)? else {
            // The end of this segment's data: the log continues in the next segment.
            let id = segment.header.segment_id;
            let next = source.next_segment(id).ok_or_else(|| {
                missing(&segment, offset, "the log ends before the last position")
            })?;
            if segment.header.compacted.is_some() {
                // Positions a compaction removed from the end of the segment are skipped.
                cursor.position = cursor.position.max(next.header.first_position);
            }
            segment = next;
            offset = SEGMENT_HEADER_BYTES;
            continue;
        };
        let (header, bytes) = read.map_err(|e| missing(&segment, offset, &e.to_string()))?;
        let (_, entries) =
            frame::decode_frame(&bytes).map_err(|e| missing(&segment, offset, &e.to_string()))?;
        let first = header.first_position;
        if first > cursor.position {
            if segment.header.compacted.is_none() {
                return Err(missing(&segment, offset, "a gap in the global positions"));
            }
            // Positions a compaction removed: the next event is this frame's first.
            cursor.position = first;
            if cursor.position > last {
                break;
            }
        }
        let frame_end = first + u64::from(header.entry_count);
        for (i, (_, entry)) in entries.into_iter().enumerate() {
            let position = first + i as u64;
            if position < cursor.position {
                continue;
            }
            if position > last || events.len() >= max_events {
                break;
            }
            let event = frame::decode_entry(entry)
                .map_err(|e| missing(&segment, offset, &e.to_string()))?;
            events.push((position, event));
            cursor.position = position + 1;
        }
        if cursor.position >= frame_end {
            offset += header.frame_len();
        }
    }
    cursor.frame = Some((
        segment.header.segment_id,
        segment.header.generation(),
        offset,
    ));
    Ok(LogBatch {
        events,
        next: cursor,
    })
}

/// The segment and frame offset holding published position `position`.
fn locate(source: &dyn SegmentSource, position: u64) -> Result<(Arc<Segment>, u64), EngineError> {
    let segment = source.segment_holding(position).ok_or_else(|| {
        EngineError::corruption(
            source.log_dir().to_owned(),
            0,
            format!("no segment holds position {position}"),
        )
    })?;
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        let mut head = [0u8; FRAME_HEADER_BYTES];
        if offset + FRAME_HEADER_BYTES as u64 > segment.header.size {
            return Err(missing(&segment, offset, "position past the segment's end"));
        }
        segment
            .file
            .read_exact_at(&mut head, offset)
            .map_err(|e| EngineError::io("read", &segment.path, e))?;
        if head == [0; FRAME_HEADER_BYTES] {
            // The end of this segment's data: the position is the next segment's first.
            return Ok((segment, offset));
        }
        let header = frame::decode_frame_header(&head)
            .map_err(|e| missing(&segment, offset, &e.to_string()))?;
        if header.first_position + u64::from(header.entry_count) > position {
            return Ok((segment, offset));
        }
        offset += header.frame_len();
    }
}

/// A published part of the log that cannot be read back as it should.
fn missing(segment: &Segment, offset: u64, reason: &str) -> EngineError {
    EngineError::corruption(
        segment.path.clone(),
        offset,
        format!("reading the log in order: {reason}"),
    )
}

impl Engine {
    /// A receiver of the last published position, to follow the log without polling: it is
    /// marked changed whenever appends are acknowledged (and holds the newest position only).
    /// Once the engine is closed, waiting on it fails at once (its sender is gone).
    pub fn watch_last_position(&self) -> tokio::sync::watch::Receiver<u64> {
        let published = self
            .shared
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &*published {
            Some(sender) => sender.subscribe(),
            None => tokio::sync::watch::channel(self.last_position()).1,
        }
    }
}
