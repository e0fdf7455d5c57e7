//! The last acknowledged frame after a crash: no later frame vouches that it was synced, yet
//! damage to it is refused, never truncated away as if it were a torn write.

use std::time::Instant;

use annals::engine::raw::SEGMENT_HEADER_BYTES;
use annals::engine::raw::decode_frame_header;

use crate::bit_flips::{Tally, end_of_data, flip, sample};
use crate::fixture;

/// Where the last frame of a segment image starts and ends.
fn last_frame(bytes: &[u8]) -> (usize, usize) {
    let mut at = SEGMENT_HEADER_BYTES as usize;
    let mut last = None;
    while let Ok(header) = decode_frame_header(&bytes[at..]) {
        let end = at + header.frame_len() as usize;
        last = Some((at, end));
        at = end;
    }
    last.expect("the segment holds frames")
}

#[tokio::test]
async fn a_flipped_bit_in_the_last_acknowledged_frame_after_a_crash_is_refused_not_truncated() {
    let start = Instant::now();
    let (image, expected) = fixture::build(false).await;
    let path = fixture::segment(2);
    let bytes = image.file(&path);
    let (from, to) = last_frame(bytes);
    assert_eq!(to, end_of_data(bytes), "the last frame ends the data");
    let mut t = Tally::default();
    for bit in sample(to - from, 1500) {
        flip(&image, &expected, &path, from * 8 + bit, true, &mut t).await;
    }
    println!(
        "last-frame bit flips: {t:?} over {} bytes in {:?}",
        to - from,
        start.elapsed()
    );
    // Recovery replays this frame (it lies past the index checkpoint), so every flip in it is
    // met, and refused, when the store opens.
    assert_eq!(t.refused_open, t.cases, "{t:?}");
}
