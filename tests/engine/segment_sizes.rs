//! Segment files grow geometrically: a small store stays small, a large one still gets
//! segments of the configured size, and a store whose segments all have that size (as earlier
//! versions made them) opens and keeps growing at that size.

use std::path::Path;

use annals::storage::{GetEventsOptions, Limits, LogAdapter, StorageAdapter};

use crate::basics::event;

/// The lengths of the segment files, in order.
fn segment_lengths(dir: &Path) -> Vec<u64> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| (e.file_name(), e.metadata().unwrap().len()))
        .collect();
    files.sort();
    files.into_iter().map(|(_, len)| len).collect()
}

/// Limits that let commits of up to `group_bytes` fit in the segments of these tests.
fn limits(group_bytes: usize) -> Limits {
    Limits {
        group_bytes_max: group_bytes,
        group_events_max: 1_000,
        event_bytes_max: 16 << 10,
        ..Limits::default()
    }
}

/// Bytes of every file of the store, its subdirectories included.
fn store_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                store_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[tokio::test]
async fn each_segment_is_twice_the_one_before_up_to_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        LogAdapter::builder(dir.path())
            .segment_bytes(512 << 10)
            .durability(annals::Durability::None)
            .limits(limits(64 << 10))
            .open()
            .unwrap()
    };
    let log = open();
    let mut version = 0;
    while log.stats().segments < 6 {
        version += 1;
        log.push_event(event("S", "a", version, 0)).await.unwrap();
    }
    log.close();
    drop(log);
    assert_eq!(
        segment_lengths(dir.path()),
        vec![
            64 << 10,
            128 << 10,
            256 << 10,
            512 << 10,
            512 << 10,
            512 << 10
        ]
    );
    let log = open();
    let events = log
        .get_events("S", "a", &GetEventsOptions::default())
        .await
        .unwrap();
    assert_eq!(events.len() as u64, version);
}

#[tokio::test]
async fn a_store_of_a_thousand_events_takes_at_most_one_mebibyte() {
    let dir = tempfile::tempdir().unwrap();
    let log = annals::open(dir.path()).unwrap();
    for n in 0..1_000u64 {
        let aggregate = format!("pokemon-{}", n % 7);
        log.push_event(event("POKEMONS", &aggregate, n / 7 + 1, 0))
            .await
            .unwrap();
    }
    log.close();
    drop(log);
    let bytes = store_bytes(dir.path());
    assert!(
        bytes <= 1 << 20,
        "{bytes} bytes: {:?}",
        segment_lengths(dir.path())
    );
}

#[tokio::test]
async fn a_commit_larger_than_the_next_segment_gets_a_segment_it_fits_in() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogAdapter::builder(dir.path())
        .segment_bytes(4 << 20)
        .limits(limits(1 << 20))
        .open()
        .unwrap();
    // About 300 KiB in one commit: more than the first segments hold.
    let group: Vec<_> = (1..=1_000).map(|v| event("S", "big", v, 0)).collect();
    log.push_event_group(group).await.unwrap();
    let lengths = segment_lengths(dir.path());
    // The frame did not fit in the first segment, nor in twice its size: the second is the
    // smallest power of two that holds its header and the frame.
    let needed = log.counters().bytes_written + 64;
    assert!(
        needed > 128 << 10,
        "the commit is larger than doubling gives: {needed}"
    );
    assert_eq!(lengths.len(), 2, "{lengths:?}");
    assert_eq!(lengths[0], 64 << 10, "{lengths:?}");
    assert_eq!(lengths[1], needed.next_power_of_two(), "{lengths:?}");
    let events = log
        .get_events("S", "big", &GetEventsOptions::default())
        .await
        .unwrap();
    assert_eq!(events.len(), 1_000);
}

#[tokio::test]
async fn a_store_whose_segments_all_have_the_configured_size_keeps_that_size() {
    use annals::engine::raw::SegmentHeader;
    // A store as earlier versions began it: its first segment at the configured size.
    let dir = tempfile::tempdir().unwrap();
    let size = 256 << 10;
    let header = SegmentHeader {
        segment_id: 1,
        first_position: 1,
        size,
        compacted: None,
    };
    let mut first = header.encode().to_vec();
    first.resize(size as usize, 0);
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    std::fs::write(dir.path().join("log/0000000001.seg"), first).unwrap();
    let open = || {
        LogAdapter::builder(dir.path())
            .segment_bytes(size)
            .durability(annals::Durability::None)
            .limits(limits(64 << 10))
            .open()
            .unwrap()
    };
    let log = open();
    let mut version = 0;
    while log.stats().segments < 3 {
        version += 1;
        log.push_event(event("S", "a", version, 0)).await.unwrap();
    }
    log.close();
    drop(log);
    assert_eq!(segment_lengths(dir.path()), vec![size; 3]);
    let log = open();
    let events = log
        .get_events("S", "a", &GetEventsOptions::default())
        .await
        .unwrap();
    assert_eq!(events.len() as u64, version);
}
