//! Truncated segments: the only, the first, a middle and the last segment cut to 0, 7, 63 and
//! 64 bytes and in the middle of a frame, after a clean close, after a crash and after a crash
//! of a reopened store, with the index kept or deleted. Whenever the index (its checkpoint or
//! its record of the segment), the clean-close mark or a later segment vouches for the lost
//! bytes, opening must fail with `Corruption` naming the file and its length and change no
//! byte, and `verify` must report it, before and after. Only a last segment left with no byte
//! at all, which nothing names, is taken for an interrupted creation: it is removed and the
//! store opens with every event before it. Also: an all-zero last segment is removed only
//! when nothing names it, and a sealed segment damaged after the store opened is reported as
//! `Corruption` by the read that meets it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use annals::engine::FileSystem;
use annals::engine::raw::{SEGMENT_HEADER_BYTES, SegmentHeader};
use annals::engine::sim::{Damage, SimFs};
use annals::engine::verify::verify_dir_with;
use annals::storage::Corruption;
use annals::storage::{
    AppendEvent, EncodedEvent, Limits, LogAdapter, StorageAdapter, StorageError,
};
use annals::{Durability, Timestamp};

use crate::bit_flips::end_of_data;
use crate::fixture::{self, Contents, Image, contents, open};

/// How the image was left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// Closed cleanly: the clean-close mark names the last segment.
    Clean,
    /// Power lost once every append was acknowledged.
    Crash,
    /// Closed cleanly, reopened (which removes the clean-close mark) and then power lost: the
    /// checkpoint names the last segment, no mark does.
    ReopenedCrash,
}

/// A store image of `events` acknowledged events of about 8 KB (about seven per 64 KiB
/// segment), what it holds, and the segment its index checkpoint lies in (0: none).
struct Built {
    image: Image,
    expected: Contents,
    checkpoint_segment: u64,
    ending: Ending,
}

fn event(i: usize, version: u64) -> AppendEvent {
    let mut payload = format!("event {i}").into_bytes();
    payload.resize(8_000, b'.');
    AppendEvent {
        event_store_id: fixture::STORES[i % 2].to_owned(),
        event: EncodedEvent {
            aggregate_id: fixture::AGGREGATES[i % 4].to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + i as i64),
            event_type: "HAPPENED".to_owned(),
            schema_version: 1,
            payload,
            metadata: vec![0x80],
        },
    }
}

async fn build(events: usize, ending: Ending) -> Built {
    let fs = SimFs::new();
    let log = open(&fs).expect("open the fixture");
    let mut versions: BTreeMap<usize, u64> = BTreeMap::new();
    for i in 0..events {
        // STORES[i % 2] and AGGREGATES[i % 4]: four distinct aggregates.
        let v = versions.entry(i % 4).or_default();
        *v += 1;
        log.push_event(event(i, *v)).await.expect("fixture append");
    }
    let crash = |fs: &SimFs| {
        // Let the checkpointer finish what it started, then "lose power".
        std::thread::sleep(std::time::Duration::from_millis(100));
        Image::take(&fs.crash_image(Damage::DropUnsynced))
    };
    let image = match ending {
        Ending::Clean => {
            drop(log);
            Image::take(&fs)
        }
        Ending::Crash => {
            let image = crash(&fs);
            drop(log);
            image
        }
        Ending::ReopenedCrash => {
            drop(log);
            let fs = Image::take(&fs).disk();
            let log = open(&fs).expect("reopen");
            let image = crash(&fs);
            drop(log);
            image
        }
    };
    let fs = image.disk();
    let report = verify_dir_with(Arc::new(fs.clone()), Path::new(fixture::DIR)).expect("verify");
    assert!(report.is_clean(), "fixture: {:?}", report.problems);
    let checkpoint_segment = report.checkpoint.map_or(0, |c| c.segment_id);
    let log = open(&fs).expect("reopen the fixture");
    let expected = contents(&log).await.expect("read the fixture");
    drop(log);
    Built {
        image,
        expected,
        checkpoint_segment,
        ending,
    }
}

/// The segment ids of an image, ascending.
fn segment_ids(image: &Image) -> Vec<u64> {
    let mut ids: Vec<u64> = image
        .files
        .iter()
        .filter_map(|(p, _)| {
            let name = p.file_name()?.to_str()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// `expected` without the events from position `cut` on.
fn before(expected: &Contents, cut: u64) -> Contents {
    let events: BTreeMap<_, Vec<_>> = expected
        .events
        .iter()
        .map(|(k, v)| {
            let kept = v.iter().filter(|(p, _)| *p < cut).cloned().collect();
            (k.clone(), kept)
        })
        .collect();
    let listed = expected
        .listed
        .iter()
        .map(|(store, ids)| {
            let kept = ids
                .iter()
                .filter(|(id, _)| !events[&(store.clone(), id.clone())].is_empty())
                .cloned()
                .collect();
            (store.clone(), kept)
        })
        .collect();
    Contents {
        events,
        listed,
        last_position: cut - 1,
    }
}

/// Every file of the disk (the lock file aside) with its bytes.
fn files(fs: &SimFs) -> Vec<(PathBuf, Arc<Vec<u8>>)> {
    Image::take(fs).files
}

/// The first position a segment image holds.
fn first_position(bytes: &[u8]) -> u64 {
    SegmentHeader::decode(bytes)
        .expect("an intact header")
        .first_position
}

#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    refused: u64,
    removed_unfinished: u64,
}

/// Cuts segment `id` of `built` to `len` bytes (deleting the index too when `no_index`),
/// opens the store and checks the outcome against the rule (see the module docs).
async fn cut(built: &Built, id: u64, len: usize, no_index: bool, t: &mut Tally) {
    let path = fixture::segment(id);
    let ids = segment_ids(&built.image);
    let original = built.image.file(&path);
    let fs = built.image.disk_with(&path, |b| b.truncate(len));
    if no_index {
        FileSystem::remove(&fs, &fixture::index()).expect("delete the index");
    }
    let context = format!(
        "{:?} store of {} segments, segment {id} cut to {len} bytes{}",
        built.ending,
        ids.len(),
        if no_index { ", index deleted" } else { "" }
    );
    t.cases += 1;
    let nothing_vouches = id == *ids.last().expect("segments")
        && original[..len].iter().all(|&b| b == 0)
        && (no_index || (built.ending != Ending::Clean && built.checkpoint_segment < id));
    let damaged = files(&fs);
    let report = verify_dir_with(Arc::new(fs.clone()), Path::new(fixture::DIR))
        .unwrap_or_else(|e| panic!("{context}: verify failed: {e:?}"));
    if nothing_vouches {
        assert!(
            report.problems.iter().all(|p| p.file != path),
            "{context}: verify reports an unfinished creation as a problem: {:?}",
            report.problems
        );
        let log = open(&fs).unwrap_or_else(|e| panic!("{context}: open failed: {e:?}"));
        let expected = before(&built.expected, first_position(original));
        let got = contents(&log)
            .await
            .unwrap_or_else(|e| panic!("{context}: read failed: {e:?}"));
        assert!(
            got == expected,
            "{context}: {}",
            fixture::difference(&expected, &got)
        );
        let report = log.verify().expect("verify");
        assert!(report.is_clean(), "{context}: {:?}", report.problems);
        let next = log
            .push_event(event(99, 1).with_aggregate("after-the-cut"))
            .await
            .unwrap_or_else(|e| panic!("{context}: append failed: {e:?}"));
        assert_eq!(next, expected.last_position + 1, "{context}");
        t.removed_unfinished += 1;
        return;
    }
    assert!(
        report.problems.iter().any(|p| p.file == path),
        "{context}: verify does not report the cut segment: {:?}",
        report.problems
    );
    for attempt in ["first", "second"] {
        match open(&fs) {
            Err(StorageError::Corruption(Corruption { file, kind, .. })) => {
                let reason = kind.to_string();
                assert_eq!(file, path, "{context}: {attempt} open names another file");
                assert!(
                    reason.contains(&format!("{len} bytes")),
                    "{context}: {attempt} open does not give the found length: {reason}"
                );
            }
            Err(e) => panic!("{context}: {attempt} open failed with another error: {e:?}"),
            Ok(_) => panic!("{context}: {attempt} open succeeded"),
        }
        assert!(
            files(&fs) == damaged,
            "{context}: the {attempt} refused open changed the store's files"
        );
    }
    let again = verify_dir_with(Arc::new(fs.clone()), Path::new(fixture::DIR)).expect("verify");
    let sorted = |r: &annals::engine::VerifyReport| {
        let mut p: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        p.sort();
        p
    };
    assert_eq!(sorted(&again), sorted(&report), "{context}: verify changed");
    t.refused += 1;
}

trait WithAggregate {
    fn with_aggregate(self, aggregate: &str) -> Self;
}

impl WithAggregate for AppendEvent {
    fn with_aggregate(mut self, aggregate: &str) -> Self {
        self.event.aggregate_id = aggregate.to_owned();
        self
    }
}

/// The lengths to cut segment `bytes` to: inside and at the end of its header, and in the
/// middle of its first and of its last frame.
fn lengths(bytes: &[u8]) -> Vec<usize> {
    let header = SEGMENT_HEADER_BYTES as usize;
    let end = end_of_data(bytes);
    let mut lengths = vec![0, 7, header - 1, header];
    if end > header {
        lengths.extend([header + 100, end - 50]);
    }
    lengths
}

async fn matrix(events: usize, segments: usize) -> Tally {
    let mut t = Tally::default();
    for ending in [Ending::Clean, Ending::Crash, Ending::ReopenedCrash] {
        let built = build(events, ending).await;
        let ids = segment_ids(&built.image);
        assert_eq!(ids.len(), segments, "{ending:?}: segments of the fixture");
        for &id in &ids {
            let bytes = built.image.file(&fixture::segment(id)).to_vec();
            for len in lengths(&bytes) {
                for no_index in [false, true] {
                    cut(&built, id, len, no_index, &mut t).await;
                }
            }
        }
    }
    t
}

#[tokio::test]
async fn a_truncated_only_segment_is_refused_unless_nothing_vouches_for_it() {
    let start = Instant::now();
    let t = matrix(5, 1).await;
    println!("only segment truncated: {t:?} in {:?}", start.elapsed());
    assert!(t.refused > 0 && t.removed_unfinished > 0, "{t:?}");
}

#[tokio::test]
async fn a_truncated_first_middle_or_last_segment_is_refused_unless_nothing_vouches_for_it() {
    let start = Instant::now();
    let t = matrix(20, 3).await;
    println!(
        "one of three segments truncated: {t:?} in {:?}",
        start.elapsed()
    );
    assert!(t.refused > 0 && t.removed_unfinished > 0, "{t:?}");
}

/// The fixture with segment `id` replaced by `len` zero bytes.
fn zeroed(image: &Image, id: u64, len: usize) -> SimFs {
    let fs = image.disk();
    fs.write_file(&fixture::segment(id), vec![0u8; len]);
    fs
}

#[tokio::test]
async fn an_all_zero_last_segment_is_removed_only_when_nothing_names_it() {
    let clean = build(20, Ending::Clean).await;
    let reopened = build(20, Ending::ReopenedCrash).await;
    let full = 64 << 10;
    // A fourth segment that nothing names: the creation of the next segment, interrupted at
    // any point before its header was written.
    for (built, name) in [(&clean, "clean"), (&reopened, "reopened")] {
        for len in [0, 7, 4096, full] {
            let context = format!("{name} store, zero-filled segment 4 of {len} bytes");
            let fs = zeroed(&built.image, 4, len);
            let report =
                verify_dir_with(Arc::new(fs.clone()), Path::new(fixture::DIR)).expect("verify");
            assert!(report.is_clean(), "{context}: {:?}", report.problems);
            let torn = report.torn_tail.expect("reported as unfinished");
            assert_eq!(torn.file, fixture::segment(4), "{context}");
            let log = open(&fs).unwrap_or_else(|e| panic!("{context}: open failed: {e:?}"));
            let got = contents(&log).await.expect("read");
            assert!(
                got == built.expected,
                "{context}: {}",
                fixture::difference(&built.expected, &got)
            );
            drop(log);
            assert!(
                fs.read_file(&fixture::segment(4)).is_none(),
                "{context}: the unfinished segment was not removed"
            );
        }
    }
    // The last segment zero-filled where the clean-close mark, or the checkpoint, names it.
    for (built, name) in [(&clean, "clean"), (&reopened, "reopened")] {
        assert_eq!(
            built.checkpoint_segment, 3,
            "{name}: the checkpoint is in segment 3"
        );
        for len in [0, 7, full] {
            let context = format!("{name} store, segment 3 zero-filled to {len} bytes");
            let fs = zeroed(&built.image, 3, len);
            let damaged = files(&fs);
            let report =
                verify_dir_with(Arc::new(fs.clone()), Path::new(fixture::DIR)).expect("verify");
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.file == fixture::segment(3)),
                "{context}: {:?}",
                report.problems
            );
            match open(&fs) {
                Err(StorageError::Corruption(Corruption { file, .. })) => {
                    assert_eq!(file, fixture::segment(3), "{context}");
                }
                other => panic!("{context}: expected Corruption, got {other:?}"),
            }
            assert!(
                files(&fs) == damaged,
                "{context}: the refused open changed files"
            );
        }
    }
}

#[tokio::test]
async fn a_checkpoint_or_recorded_segment_beyond_the_log_is_refused_not_rebuilt() {
    let built = build(20, Ending::Clean).await;
    // The index names segments 1 to 3; the log lost its last one, then its last two.
    for missing in [vec![3], vec![2, 3]] {
        let fs = built.image.disk();
        for id in &missing {
            FileSystem::remove(&fs, &fixture::segment(*id)).expect("remove");
        }
        let context = format!("segments {missing:?} deleted");
        let damaged = files(&fs);
        match open(&fs) {
            Err(StorageError::Corruption(Corruption { file, kind, .. })) => {
                let reason = kind.to_string();
                assert_eq!(file, fixture::segment(missing[0]), "{context}: {reason}");
                assert!(reason.contains("missing"), "{context}: {reason}");
            }
            other => panic!("{context}: expected Corruption, got {other:?}"),
        }
        assert!(
            files(&fs) == damaged,
            "{context}: the refused open changed files"
        );
        let report =
            verify_dir_with(Arc::new(fs.clone()), Path::new(fixture::DIR)).expect("verify");
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.file == fixture::segment(missing[0])),
            "{context}: {:?}",
            report.problems
        );
    }
}

#[tokio::test]
async fn a_sealed_segment_damaged_after_open_is_corruption_on_read() {
    let built = build(20, Ending::Clean).await;
    let path = fixture::segment(1);
    let original = built.image.file(&path).to_vec();
    let mut other_header = original.clone();
    let mut header = SegmentHeader::decode(&original).expect("header");
    header.first_position += 1;
    other_header[..SEGMENT_HEADER_BYTES as usize].copy_from_slice(&header.encode());
    let damages: [(&str, Vec<u8>); 3] = [
        ("cut to 7 bytes", original[..7].to_vec()),
        ("cut to 64 bytes", original[..64].to_vec()),
        ("given another valid header", other_header),
    ];
    for (what, bytes) in damages {
        let fs = built.image.disk();
        let log: LogAdapter = open(&fs).expect("open");
        // Segment 1 is sealed and below the checkpoint: opened on its first read.
        fs.write_file(&path, bytes);
        match contents(&log).await {
            Err(StorageError::Corruption(Corruption { file, .. })) => {
                assert_eq!(file, path, "{what}")
            }
            other => panic!("segment 1 {what}: expected Corruption, got {other:?}"),
        }
        let report = log.verify().expect("verify");
        assert!(
            report.problems.iter().any(|p| p.file == path),
            "segment 1 {what}: {:?}",
            report.problems
        );
    }
}

#[tokio::test]
async fn a_rebuild_asked_for_still_refuses_a_log_shorter_than_the_index_says() {
    let built = build(20, Ending::Clean).await;
    let path = fixture::segment(3);
    let fs = built.image.disk_with(&path, |b| b.truncate(64));
    let damaged = files(&fs);
    let opened = LogAdapter::builder(fixture::DIR)
        .file_system(Arc::new(fs.clone()))
        .durability(Durability::Immediate)
        .segment_bytes(64 << 10)
        .limits(Limits {
            event_bytes_max: 48 << 10,
            group_events_max: 4,
            group_bytes_max: 48 << 10,
            ..Limits::default()
        })
        .rebuild_index()
        .open();
    match opened {
        Err(StorageError::Corruption(Corruption { file, .. })) => assert_eq!(file, path),
        other => panic!("expected Corruption, got {other:?}"),
    }
    assert!(files(&fs) == damaged, "the refused open changed files");
}
