//! Target `segment_recovery`: a store opens on any segment file and keeps what it validly
//! holds.

use std::collections::BTreeMap;

use crate::engine::frame::{
    FRAME_HEADER_BYTES, LogEvent, decode_entry, decode_frame, decode_frame_header,
};
use crate::engine::segment::{SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::engine::sim::SimFs;
use crate::storage::{GetEventsOptions, LogAdapter, StorageAdapter, StorageError};

use super::input::Input;
use super::store::{
    SEGMENT_BYTES, fuzz_event, limits, next_version, open_store, runtime, segment_path,
};
use super::template::template;

/// Flag of [`segment_recovery()`]'s first byte: replace the first 64 bytes with a valid header
/// (segment 1, position 1, 64 KiB) and zero-pad the file to 64 KiB.
pub const SEGMENT_VALID_HEADER: u8 = 1;

/// Flag of [`segment_recovery()`]'s first byte: zero-pad (or cut) the file to 64 KiB.
pub const SEGMENT_PAD: u8 = 2;

/// The first byte holds flags ([`SEGMENT_VALID_HEADER`], [`SEGMENT_PAD`]); the rest is written
/// as `log/0000000001.seg` of an otherwise empty store, which is then opened. Open must give
/// `Ok` or a typed error; after `Ok`, every event the file validly holds reads back identically,
/// the next append succeeds, and it is still there after a reopen.
pub fn segment_recovery(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let mut file = input.take(usize::MAX).to_vec();
    if flags & (SEGMENT_VALID_HEADER | SEGMENT_PAD) != 0 {
        file.resize(SEGMENT_BYTES as usize, 0);
    }
    if flags & SEGMENT_VALID_HEADER != 0 {
        let header = SegmentHeader {
            segment_id: 1,
            first_position: 1,
            size: SEGMENT_BYTES,
            compacted: None,
        };
        file[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&header.encode());
    }
    let scanned = scan_segment(&file);
    let fs = SimFs::new();
    fs.write_file(&segment_path(1), file);
    let log = match open_store(&fs, 1000) {
        Ok(log) => log,
        Err(e) => {
            assert!(
                matches!(e, StorageError::Corruption { .. }),
                "opening a damaged segment failed with {e:?}"
            );
            return;
        }
    };
    runtime().block_on(check_recovered(log, &fs, &scanned));
}

/// What a segment holds, read independently of the engine.
#[derive(Default)]
struct Scanned {
    /// Events of the valid frames at the start of the segment, by position, as recovery
    /// should find them.
    events: BTreeMap<u64, LogEvent>,
    /// The valid frames end at an all-zero frame header, yet non-zero bytes follow it: stale
    /// data the engine never leaves behind (it zero-fills a torn tail to the segment's end).
    stale_after_end: bool,
}

fn scan_segment(file: &[u8]) -> Scanned {
    let mut events = BTreeMap::new();
    let Ok(header) = SegmentHeader::decode(file) else {
        return Scanned::default();
    };
    let mut at = SEGMENT_HEADER_BYTES as usize;
    let mut next = header.first_position;
    while let Some(rest) = file.get(at..) {
        let Ok(h) = decode_frame_header(rest) else {
            break;
        };
        let Ok((h2, entries)) = decode_frame(rest) else {
            break;
        };
        if h.first_position != next {
            break;
        }
        let decoded: Result<Vec<LogEvent>, _> =
            entries.iter().map(|(_, e)| decode_entry(e)).collect();
        let Ok(decoded) = decoded else { break };
        for (i, e) in decoded.into_iter().enumerate() {
            events.insert(next + i as u64, e);
        }
        next += u64::from(h2.entry_count);
        at += h2.frame_len() as usize;
    }
    let rest = file.get(at..).unwrap_or_default();
    let marker = rest.len() >= FRAME_HEADER_BYTES && rest[..FRAME_HEADER_BYTES] == [0; 40];
    Scanned {
        events,
        stale_after_end: marker && rest.iter().any(|&b| b != 0),
    }
}

async fn check_recovered(log: LogAdapter, fs: &SimFs, scanned: &Scanned) {
    let stale_after_end = scanned.stale_after_end;
    let scanned = &scanned.events;
    let last = log.last_position();
    let mut keys: Vec<(String, String)> = scanned
        .values()
        .map(|e| (e.store.clone(), e.aggregate.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    for (store, aggregate) in &keys {
        let Ok(events) = log
            .get_events(store, aggregate, &GetEventsOptions::default())
            .await
        else {
            // Ids outside the limits cannot be asked for; anything else is a read failure.
            let bad = limits().check_event_store_id(store).is_err()
                || limits().check_aggregate_id(aggregate).is_err();
            assert!(
                bad,
                "reading {store:?}/{aggregate:?} of a recovered store failed"
            );
            continue;
        };
        for e in &events {
            assert!(
                e.position >= 1 && e.position <= last,
                "position out of range"
            );
            if let Some(raw) = scanned.get(&e.position) {
                assert_eq!(
                    (&raw.store, &raw.aggregate, raw.version, &raw.payload),
                    (
                        store,
                        &e.event.aggregate_id,
                        e.event.version,
                        &e.event.payload
                    ),
                    "the event at position {} differs from the file",
                    e.position
                );
            }
        }
    }
    let version = next_version(&log, "FUZZ", "next").await;
    let appended = fuzz_event("FUZZ", "next", version, 0, 1);
    let position = log
        .push_event(appended.clone())
        .await
        .unwrap_or_else(|e| panic!("the first append after recovery failed: {e:?}"));
    assert_eq!(position, last + 1, "an append takes the next position");
    drop(log);
    // Stale bytes after a clean end of data are cleared by recovery (regression
    // fuzz/regressions/segment_recovery/crash-076b…), so the store always reopens.
    let _ = stale_after_end;
    let log = open_store(fs, 1000).unwrap_or_else(|e| panic!("reopen after recovery: {e:?}"));
    let back = log
        .get_events("FUZZ", "next", &GetEventsOptions::default())
        .await
        .unwrap_or_else(|e| panic!("read after reopen: {e:?}"));
    let found = back.iter().find(|e| e.position == position);
    assert_eq!(
        found.map(|e| &e.event),
        Some(&appended.event),
        "the append after recovery is lost on reopen"
    );
}

pub(super) fn segment_seeds() -> Vec<Vec<u8>> {
    let segment = trim_zeros(&template().segment);
    let mut whole = vec![SEGMENT_VALID_HEADER];
    whole.extend_from_slice(segment);
    let mut torn = whole.clone();
    torn.truncate(torn.len() - 30);
    let mut raw = vec![SEGMENT_PAD];
    raw.extend_from_slice(&segment[..(SEGMENT_HEADER_BYTES as usize + 200).min(segment.len())]);
    vec![whole, torn, raw, vec![0]]
}

fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bytes[..end]
}
