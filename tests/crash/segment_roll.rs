//! Segments are prepared ahead of need by a background thread, under a temporary name, and
//! installed when the log rolls over to them. A crash at any step of either leaves a store
//! that opens with every acknowledged commit; a leftover prepared file is never data, and is
//! removed — unless a witness vouches for its segment, when it is left untouched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use annals::StorageError;
use annals::engine::FileSystem;
use annals::engine::raw::{SEGMENT_HEADER_BYTES, SegmentHeader};
use annals::engine::sim::{Damage, Fault, SimFs};

use crate::workload::{self, append_more, check, dir, open, run};

const COMMITS: usize = 30;

fn log_dir() -> PathBuf {
    dir().join("log")
}

/// The prepared (temporary) segment files of an image.
fn prepared_files(image: &SimFs) -> Vec<PathBuf> {
    image
        .paths()
        .into_iter()
        .filter(|p| p.parent() == Some(log_dir().as_path()))
        .filter(|p| p.to_string_lossy().ends_with(".seg.creating"))
        .collect()
}

/// The segment files of an image, in order.
fn segment_files(image: &SimFs) -> Vec<PathBuf> {
    image
        .paths()
        .into_iter()
        .filter(|p| p.parent() == Some(log_dir().as_path()))
        .filter(|p| p.to_string_lossy().ends_with(".seg"))
        .collect()
}

/// Names the states of preparing and rolling that the image shows.
fn states(image: &SimFs) -> BTreeSet<&'static str> {
    let mut states = BTreeSet::new();
    for path in prepared_files(image) {
        let bytes = image.read_file(&path).expect("listed");
        if bytes.len() >= 8 && &bytes[..8] == b"ANNALSEG" {
            states.insert("a prepared file with its header, not yet renamed");
        } else {
            states.insert("a prepared file, zero-filled or being zero-filled");
        }
    }
    let segments = segment_files(image);
    if segments.len() > 1 {
        let last = image
            .read_file(segments.last().expect("some"))
            .expect("listed");
        let first_frame = SEGMENT_HEADER_BYTES as usize;
        if last[first_frame..first_frame + 8].iter().all(|&b| b == 0) {
            states.insert("an installed segment holding no commit yet");
        }
    }
    states
}

#[tokio::test]
async fn a_crash_at_every_step_of_preparing_and_rolling_segments_loses_no_acknowledged_commit() {
    let total = workload::count_ops(COMMITS).await;
    let mut seen = BTreeSet::new();
    let mut images = 0;
    for k in 1..=total + 1 {
        let fs = SimFs::new();
        fs.inject(Fault::FailFrom(k));
        let Ok(log) = open(&fs) else {
            continue;
        };
        let attempts = run(&log, COMMITS).await;
        let damages = [
            Damage::DropUnsynced,
            Damage::KeepUnsynced,
            Damage::TornLast {
                sector: 512,
                seed: k,
            },
        ];
        let crashed: Vec<SimFs> = damages.iter().map(|d| fs.crash_image(*d)).collect();
        drop(log);
        for (image, damage) in crashed.into_iter().zip(damages) {
            let context = format!("crash after op {k}/{total}, {damage:?}");
            seen.extend(states(&image));
            let log = open(&image).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
            // The reopened store may already be preparing its next segment; nothing else.
            let prepared = prepared_files(&image);
            assert!(
                prepared.iter().all(|p| is_next_segment(&image, p)),
                "{context}: a leftover prepared file survived the open: {prepared:?}"
            );
            check(&log, &attempts, &context).await;
            append_more(&log, &context).await;
            images += 1;
        }
    }
    println!("segment roll: {total} I/O steps, {images} crash images, states seen: {seen:?}");
    // The other states last a few operations each, which the preparer's and the
    // checkpointer's own operations can push past every crash point of a run; they are made
    // directly by `a_leftover_prepared_segment_is_never_data_and_opening_removes_it` (a
    // prepared file with a header, and more) and
    // `an_installed_segment_holding_no_commit_yet_takes_the_next_commits`.
    let state = "a prepared file, zero-filled or being zero-filled";
    assert!(
        seen.contains(state),
        "no crash image showed {state}: {seen:?}"
    );
}

/// Whether `prepared` is the temporary file of the segment after the image's last one.
fn is_next_segment(image: &SimFs, prepared: &Path) -> bool {
    let last = segment_files(image).len() as u64;
    prepared.file_name().and_then(|n| n.to_str()) == Some(&format!("{:010}.seg.creating", last + 1))
}

/// A closed store after a clean run of the workload, and its acknowledged attempts.
async fn closed_store() -> (SimFs, Vec<workload::Attempt>) {
    let fs = SimFs::new();
    let log = open(&fs).expect("open");
    let attempts = run(&log, COMMITS).await;
    assert!(attempts.iter().all(|a| a.acked.is_some()));
    log.close();
    drop(log);
    (fs.crash_image(Damage::DropUnsynced), attempts)
}

#[tokio::test]
async fn a_leftover_prepared_segment_is_never_data_and_opening_removes_it() {
    let (image, attempts) = closed_store().await;
    let segments = segment_files(&image);
    let last = segments.len() as u64;
    // The worst leftover: the next segment's header and what looks like committed frames
    // (the last segment's own), as if it had been written to before its rename.
    let mut bytes = image
        .read_file(segments.last().expect("some"))
        .expect("read")
        .to_vec();
    let header = SegmentHeader {
        segment_id: last + 1,
        first_position: 1,
        size: bytes.len() as u64,
        compacted: None,
    };
    bytes[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&header.encode());
    let leftover = log_dir().join(format!("{:010}.seg.creating", last + 1));
    image.write_file(&leftover, bytes.clone());
    let log = open(&image).expect("a leftover prepared file does not stop the open");
    // The store may prepare that segment again at once, but never from the leftover.
    assert_ne!(
        image.read_file(&leftover).as_deref(),
        Some(&bytes),
        "the leftover prepared file survived the open"
    );
    assert!(
        !segment_files(&image).contains(&log_dir().join(format!("{:010}.seg", last + 1))),
        "the leftover became a segment"
    );
    check(&log, &attempts, "leftover prepared segment").await;
    append_more(&log, "leftover prepared segment").await;
}

#[tokio::test]
async fn a_prepared_file_under_a_segment_a_witness_vouches_for_is_left_untouched() {
    let (image, _) = closed_store().await;
    let segments = segment_files(&image);
    let last = segments.last().expect("some").clone();
    let bytes = image.read_file(&last).expect("read");
    // The index (its checkpoint after the clean close) names the last segment; its file is
    // found only under the temporary name.
    let temp = PathBuf::from(format!("{}.creating", last.display()));
    image.remove(&last).expect("remove");
    image.write_file(&temp, bytes.to_vec());
    let err = open(&image).expect_err("a segment the index vouches for is missing");
    assert!(matches!(err, StorageError::Corruption(_)), "{err:?}");
    assert_eq!(
        image.read_file(&temp).as_deref(),
        Some(&*bytes),
        "the file a witness vouches for was touched"
    );
    assert!(!image.exists(&last).expect("exists"), "nothing was made up");
}

#[tokio::test]
async fn an_installed_segment_holding_no_commit_yet_takes_the_next_commits() {
    let (image, attempts) = closed_store().await;
    let last_position = {
        let log = open(&image).expect("open");
        let position = log.last_position();
        log.close();
        position
    };
    // What a crash right after a roll leaves: the next segment renamed into place, durably,
    // with its header and nothing else.
    let next = segment_files(&image).len() as u64 + 1;
    let size = 64 << 10;
    let header = SegmentHeader {
        segment_id: next,
        first_position: last_position + 1,
        size,
        compacted: None,
    };
    let mut bytes = header.encode().to_vec();
    bytes.resize(size as usize, 0);
    let installed = log_dir().join(format!("{next:010}.seg"));
    image.write_file(&installed, bytes);
    let log = open(&image).expect("an installed, empty last segment opens");
    check(&log, &attempts, "installed empty segment").await;
    append_more(&log, "installed empty segment").await;
    assert!(
        image.read_file(&installed).expect("kept")[SEGMENT_HEADER_BYTES as usize..]
            .iter()
            .any(|&b| b != 0),
        "the next commits went into the installed segment"
    );
}
