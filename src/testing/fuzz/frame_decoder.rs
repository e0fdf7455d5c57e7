//! Target `frame_decoder`: frames, frame headers and entries decode without panicking and
//! round-trip.

use crate::engine::frame;
use crate::engine::frame::{
    EncodedCommit, FRAME_HEADER_BYTES, FrameHeader, LogEvent, decode_entry, decode_frame,
    decode_frame_header, encode_entry, write_frame,
};
use crate::engine::segment::SEGMENT_HEADER_BYTES;

use super::input::Input;
use super::template::template;

/// Decodes `data` as a frame, a frame header and an entry, then reads events out of `data`,
/// encodes them into a frame and checks the decoder gives them back exactly, and that one
/// flipped bit of that frame is detected.
pub fn frame_decoder(data: &[u8]) {
    check_frame(data);
    if let Ok(header) = decode_frame_header(data) {
        assert_eq!(header.kind, frame::KIND_EVENTS, "decoded an unknown kind");
        assert!(header.entry_count >= 1, "decoded a frame without entries");
    }
    if let Ok(event) = decode_entry(data) {
        check_entry_reencodes(&event, data.len());
    }
    frame_round_trip(data);
}

/// Whatever `decode_frame` accepts is consistent: entries tile the body and re-encode.
fn check_frame(data: &[u8]) {
    let Ok((header, entries)) = decode_frame(data) else {
        return;
    };
    assert_eq!(entries.len(), header.entry_count as usize, "entry count");
    let mut expected_offset = 0usize;
    for (offset, bytes) in &entries {
        assert_eq!(*offset as usize, expected_offset, "entries tile the body");
        expected_offset += bytes.len();
        if let Ok(event) = decode_entry(bytes) {
            check_entry_reencodes(&event, bytes.len());
        }
    }
    assert_eq!(
        expected_offset, header.body_len as usize,
        "entries fill the body"
    );
    assert!(header.frame_len() >= (FRAME_HEADER_BYTES + expected_offset) as u64);
}

fn check_entry_reencodes(event: &LogEvent, len: usize) {
    let mut out = Vec::new();
    let written = encode_entry(event, &mut out);
    assert_eq!(
        written as usize, len,
        "a decoded entry re-encodes to its length"
    );
    assert_eq!(
        decode_entry(&out).as_ref(),
        Ok(event),
        "a re-encoded entry decodes"
    );
}

fn events_from(input: &mut Input<'_>) -> Vec<LogEvent> {
    let count = 1 + usize::from(input.byte() % 4);
    (0..count)
        .map(|_| LogEvent {
            store: input.text(12),
            aggregate: input.text(16),
            version: input.u64(8),
            timestamp_ms: input.u64(8) as i64,
            event_type: input.text(12),
            schema_version: input.u64(4) as u32,
            payload: {
                let n = usize::from(input.byte());
                input.take(n).to_vec()
            },
            metadata: {
                let n = usize::from(input.byte() % 16);
                input.take(n).to_vec()
            },
        })
        .collect()
}

fn frame_round_trip(data: &[u8]) {
    let mut input = Input::new(data);
    let first_position = input.u64(8);
    let durable_offset = input.u64(8);
    let flip = input.u64(2) as usize;
    let events = events_from(&mut input);
    let commit = EncodedCommit::encode(events.clone());
    let offsets: Vec<u32> = commit.keys.iter().map(|k| k.body_offset).collect();
    let mut bytes = Vec::new();
    write_frame(&commit, first_position, durable_offset, &mut bytes);
    let expected = FrameHeader {
        body_len: commit.body().len() as u32,
        kind: frame::KIND_EVENTS,
        first_position,
        durable_offset,
        entry_count: events.len() as u32,
    };
    assert_eq!(
        bytes.len() as u64,
        expected.frame_len(),
        "the frame's length"
    );
    // The next frame may follow: it must not matter.
    let mut followed = bytes.clone();
    followed.resize(bytes.len() + 8, 0xA5);
    for framed in [&bytes, &followed] {
        let (header, entries) = decode_frame(framed).expect("an encoded frame decodes");
        assert_eq!(header, expected, "the frame header round-trips");
        let decoded: Vec<LogEvent> = entries
            .iter()
            .map(|(_, e)| decode_entry(e).expect("an encoded entry decodes"))
            .collect();
        assert_eq!(decoded, events, "encode -> decode gives the events back");
        let got: Vec<u32> = entries.iter().map(|(o, _)| *o).collect();
        assert_eq!(got, offsets, "entry offsets match the commit's keys");
    }
    let bit = flip % (bytes.len() * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
    assert!(
        decode_frame(&bytes).is_err(),
        "a flip of bit {bit} went unnoticed"
    );
}

pub(super) fn frame_seeds() -> Vec<Vec<u8>> {
    let template = template();
    let mut seeds = Vec::new();
    // Real frames, cut out of the template's segment.
    let mut at = SEGMENT_HEADER_BYTES as usize;
    while let Ok(h) = decode_frame_header(&template.segment[at..]) {
        let len = h.frame_len() as usize;
        if seeds.len() < 2 {
            seeds.push(template.segment[at..at + len].to_vec());
        }
        at += h.frame_len() as usize;
    }
    let event = LogEvent {
        store: "POKEMONS".into(),
        aggregate: "pikachu".into(),
        version: 1,
        timestamp_ms: 1_700_000_000_000,
        event_type: "POKEMON_APPEARED".into(),
        schema_version: 1,
        payload: vec![0x81, 0xa4, b'n', b'a', b'm', b'e', 0xa1, b'p'],
        metadata: vec![0x80],
    };
    let mut entry = Vec::new();
    encode_entry(&event, &mut entry);
    seeds.push(entry);
    // Events for the round trip: positions, flip, then events.
    let mut round_trip = vec![1, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 7, 0, 2];
    for part in ["POKEMONS", "pikachu"] {
        round_trip.push(part.len() as u8);
        round_trip.extend_from_slice(part.as_bytes());
    }
    round_trip.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    seeds.push(round_trip);
    seeds
}
