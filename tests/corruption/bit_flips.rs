//! Every single-bit flip of the fixture's segment files and index.

use std::path::Path;
use std::time::Instant;

use annals::StorageError;
use annals::storage::Corruption;

use crate::fixture::{self, Contents, Image, contents, open};

/// What one damaged image did.
#[derive(Debug, Default)]
pub struct Tally {
    pub cases: u64,
    /// Opened and read back identical (the flip hit bytes nobody reads, or was repaired).
    pub identical: u64,
    /// Open refused with `Corruption` naming the file.
    pub refused_open: u64,
    /// Opened, but reading the damaged events failed with `Corruption`.
    pub refused_read: u64,
    /// `verify()` reported the flip.
    pub verify_reported: u64,
}

/// Flips bit `bit` of `path` in `image`, reopens and checks; panics on any violation.
pub async fn flip(
    image: &Image,
    expected: &Contents,
    path: &Path,
    bit: usize,
    live: bool,
    t: &mut Tally,
) {
    let fs = image.disk_with(path, |b| b[bit / 8] ^= 1 << (bit % 8));
    let context = format!("flip of bit {bit} (byte {}) of {}", bit / 8, path.display());
    t.cases += 1;
    let log = match open(&fs) {
        Ok(log) => log,
        Err(StorageError::Corruption(Corruption { file, .. })) => {
            assert_eq!(file, path, "{context}: corruption reported in another file");
            t.refused_open += 1;
            return;
        }
        Err(e) => panic!("{context}: open failed with an untyped error: {e:?}"),
    };
    let read = contents(&log).await;
    let refused = match read {
        Ok(c) => {
            assert!(
                &c == expected,
                "{context}: data differs after reopen: {}",
                fixture::difference(expected, &c)
            );
            false
        }
        Err(StorageError::Corruption(_)) => true,
        Err(e) => panic!("{context}: read failed with an untyped error: {e:?}"),
    };
    let report = log
        .verify()
        .unwrap_or_else(|e| panic!("{context}: verify failed: {e:?}"));
    if !report.is_clean() {
        t.verify_reported += 1;
    }
    if refused {
        t.refused_read += 1;
    } else {
        t.identical += 1;
    }
    if live {
        assert!(
            refused || !report.is_clean(),
            "{context}: a flip in live data went unreported (verify: clean)"
        );
    }
}

/// Bits to flip in a file of `len` bytes: about `want` of them, evenly spread, each in a
/// different bit position of its byte; every bit when `ANNALS_CORRUPTION_FULL` is set.
pub fn sample(len: usize, want: usize) -> impl Iterator<Item = usize> {
    let full = std::env::var_os("ANNALS_CORRUPTION_FULL").is_some();
    let stride = if full {
        1
    } else {
        ((len * 8) / want.max(1)).max(1) | 1
    };
    (0..len * 8).step_by(stride)
}

/// The end of data of a segment image: just past its last non-zero byte.
pub fn end_of_data(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

#[tokio::test]
async fn a_flipped_bit_in_a_segment_never_alters_or_loses_acknowledged_data() {
    let start = Instant::now();
    let (image, expected) = fixture::build(true).await;
    let mut t = Tally::default();
    for id in [1, 2] {
        let path = fixture::segment(id);
        let bytes = image.file(&path).to_vec();
        let live = end_of_data(&bytes);
        // Densely over the header and live data, sparsely over the zero-filled rest.
        for bit in sample(live, 300) {
            flip(&image, &expected, &path, bit, true, &mut t).await;
        }
        for bit in sample(bytes.len() - live, 40) {
            flip(&image, &expected, &path, live * 8 + bit, false, &mut t).await;
        }
    }
    println!("segment bit flips: {t:?} in {:?}", start.elapsed());
    assert!(t.refused_open + t.refused_read > 0 && t.identical > 0);
}

#[tokio::test]
async fn a_flipped_bit_in_the_index_is_repaired_or_refused_never_wrong() {
    let start = Instant::now();
    let (image, expected) = fixture::build(true).await;
    let path = fixture::index();
    let bytes = image.file(&path).to_vec();
    let mut t = Tally::default();
    // redb's file is mostly unused, zero-filled space: flip the bytes in use densely.
    let used: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != 0).collect();
    for i in sample(used.len(), 250) {
        flip(
            &image,
            &expected,
            &path,
            used[i / 8] * 8 + i % 8,
            false,
            &mut t,
        )
        .await;
    }
    for bit in sample(bytes.len(), 30) {
        flip(&image, &expected, &path, bit, false, &mut t).await;
    }
    println!(
        "index bit flips: {t:?} ({} of {} bytes in use) in {:?}",
        used.len(),
        bytes.len(),
        start.elapsed()
    );
}
