//! Compaction of the log's sealed segments, through the log adapter: positions stay, reads in
//! order skip removed events, reads by aggregate start at the first surviving version, the
//! index can be rebuilt over compacted segments, a segment can be compacted twice, live
//! readers and the integrity check understand compacted segments, a predicate leaving a hole
//! is refused, and damage in a compacted segment is corruption.

use std::collections::BTreeMap;
use std::path::Path;

use annals::Timestamp;
use annals::engine::{CompactEntry, verify_dir};
use annals::storage::{
    AppendEvent, EncodedEvent, GetEventsOptions, Limits, ListAggregateIdsOptions, LogAdapter,
    LoggedEvent, StorageAdapter, StorageError,
};

fn event(aggregate: &str, version: u64) -> AppendEvent {
    AppendEvent {
        event_store_id: "S".into(),
        event: EncodedEvent {
            aggregate_id: aggregate.into(),
            version,
            timestamp: Timestamp::from_unix_millis(1_000 + version as i64),
            event_type: "HAPPENED".into(),
            schema_version: 1,
            payload: vec![version as u8; 1500],
            metadata: vec![0xc0],
        },
    }
}

fn open(dir: &Path) -> LogAdapter {
    open_result(dir).unwrap()
}

const AGGREGATES: [&str; 4] = ["a", "b", "c", "d"];

/// 40 versions of each of four aggregates, interleaved, in commits of two events of one
/// aggregate; closed and reopened, so every segment but the last is sealed.
async fn filled(dir: &Path) -> LogAdapter {
    let log = open(dir);
    for round in 0..20u64 {
        for aggregate in AGGREGATES {
            let events = vec![
                event(aggregate, round * 2 + 1),
                event(aggregate, round * 2 + 2),
            ];
            log.push_event_group(events).await.unwrap();
        }
    }
    drop(log);
    open(dir)
}

async fn all(log: &LogAdapter) -> BTreeMap<u64, LoggedEvent> {
    let events = log.read_log(1, usize::MAX).await.unwrap();
    events.into_iter().map(|e| (e.position, e)).collect()
}

/// Removes all of `a`, `b` up to version 30, `c` up to version 5.
fn keep(e: &CompactEntry<'_>) -> bool {
    match e.aggregate {
        "a" => false,
        "b" => e.version > 30,
        "c" => e.version > 5,
        _ => true,
    }
}

fn kept(e: &LoggedEvent) -> bool {
    match e.event.aggregate_id.as_str() {
        "a" => false,
        "b" => e.event.version > 30,
        "c" => e.event.version > 5,
        _ => true,
    }
}

async fn versions(log: &LogAdapter, aggregate: &str) -> Vec<(u64, u64)> {
    log.get_events("S", aggregate, &GetEventsOptions::default())
        .await
        .unwrap()
        .iter()
        .map(|e| (e.event.version, e.position))
        .collect()
}

/// The events of the log that the sealed segments held and `kept` removes are gone; the
/// others are where they were.
async fn assert_compacted(log: &LogAdapter, before: &BTreeMap<u64, LoggedEvent>) {
    let after = all(log).await;
    for (position, e) in &after {
        assert_eq!(before.get(position), Some(e), "position {position} changed");
    }
    let removed: Vec<u64> = before
        .keys()
        .filter(|p| !after.contains_key(p))
        .copied()
        .collect();
    assert!(!removed.is_empty());
    assert!(
        removed.iter().all(|p| !kept(&before[p])),
        "a kept event went"
    );
    for aggregate in AGGREGATES {
        let by_aggregate = versions(log, aggregate).await;
        let expected: Vec<(u64, u64)> = after
            .values()
            .filter(|e| e.event.aggregate_id == aggregate)
            .map(|e| (e.event.version, e.position))
            .collect();
        assert_eq!(
            by_aggregate, expected,
            "{aggregate} by aggregate and in order"
        );
    }
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let summaries = log.event_store_summaries().await.unwrap();
    assert_eq!(
        summaries[0].events,
        after.len() as u64,
        "events counted per store"
    );
}

#[tokio::test]
async fn compaction_keeps_positions_and_reads_in_order_skip_removed_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    let before = all(&log).await;
    let report = log.compact_where(keep).await.unwrap();
    assert!(report.segments_rewritten > 0);
    assert!(report.bytes_reclaimed() > 0);
    assert_compacted(&log, &before).await;
    // Reads in small batches continue across the removed positions.
    let mut from = 1;
    let mut seen = Vec::new();
    loop {
        let batch = log.read_log(from, 3).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        seen.extend(batch.iter().map(|e| e.position));
    }
    assert_eq!(seen, all(&log).await.keys().copied().collect::<Vec<_>>());
    // A read of versions the compaction removed is empty, never an error.
    let options = GetEventsOptions {
        min_version: Some(1),
        max_version: Some(3),
        ..Default::default()
    };
    assert!(log.get_events("S", "c", &options).await.unwrap().is_empty());
    // Appends continue, and everything holds after reopening and offline.
    let next = versions(&log, "d").await.last().unwrap().0 + 1;
    log.push_event(event("d", next)).await.unwrap();
    drop(log);
    let report = verify_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let log = open(dir.path());
    let mut before = before;
    before.insert(
        log.last_position(),
        all(&log).await[&log.last_position()].clone(),
    );
    assert_compacted(&log, &before).await;
}

#[tokio::test]
async fn an_aggregate_compacted_away_disappears_from_listings_and_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    // `a` lives in sealed segments only if its last commit is sealed: check what is left.
    log.compact_where(keep).await.unwrap();
    let left = versions(&log, "a").await;
    let listed = log
        .list_aggregate_ids("S", &ListAggregateIdsOptions::default())
        .await
        .unwrap();
    let ids: Vec<&str> = listed
        .aggregate_ids
        .iter()
        .map(|e| e.aggregate_id.as_str())
        .collect();
    assert_eq!(ids.contains(&"a"), !left.is_empty());
    assert!(ids.contains(&"b") && ids.contains(&"c") && ids.contains(&"d"));
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[tokio::test]
async fn the_index_is_rebuilt_from_a_compacted_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    log.compact_where(keep).await.unwrap();
    let compacted = all(&log).await;
    let by_aggregate: Vec<_> = {
        let mut out = Vec::new();
        for aggregate in AGGREGATES {
            out.push(versions(&log, aggregate).await);
        }
        out
    };
    drop(log);
    std::fs::remove_file(dir.path().join("index.redb")).unwrap();
    let log = open(dir.path());
    assert_eq!(all(&log).await, compacted);
    for (aggregate, expected) in AGGREGATES.iter().zip(&by_aggregate) {
        assert_eq!(&versions(&log, aggregate).await, expected, "{aggregate}");
    }
    drop(log);
    // Once checkpointed, the rebuilt index holds what the compaction's index held.
    let report = verify_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_compacted_segment_can_be_compacted_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    let before = all(&log).await;
    let first = log.compact_where(keep).await.unwrap();
    // Then more of `c` and `d` goes: versions up to 12 and 8.
    let second = log
        .compact_where(|e| match e.aggregate {
            "a" => false,
            "b" => e.version > 30,
            "c" => e.version > 12,
            "d" => e.version > 8,
            _ => true,
        })
        .await
        .unwrap();
    assert!(second.segments_rewritten > 0 && second.events_removed == 7 + 8);
    assert!(first.events_removed > 0);
    assert_eq!(versions(&log, "c").await.first().unwrap().0, 13);
    assert_eq!(versions(&log, "d").await.first().unwrap().0, 9);
    let after = all(&log).await;
    for (position, e) in &after {
        assert_eq!(before.get(position), Some(e));
    }
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    drop(log);
    let report = verify_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let log = open(dir.path());
    assert_eq!(all(&log).await, after);
}

#[tokio::test]
async fn a_predicate_leaving_a_hole_in_a_stream_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    let before = all(&log).await;
    let refused = log
        .compact_where(|e| !(e.aggregate == "b" && e.version == 2))
        .await;
    assert!(
        matches!(
            &refused,
            Err(StorageError::CompactionRefused { aggregate_id, version: 2, kept: 1, .. })
                if aggregate_id == "b"
        ),
        "{refused:?}"
    );
    assert_eq!(all(&log).await, before);
    // After a first compaction, the hole is judged from the first surviving version.
    log.compact_where(keep).await.unwrap();
    let refused = log
        .compact_where(|e| !(e.aggregate == "c" && e.version == 7))
        .await;
    assert!(
        matches!(
            refused,
            Err(StorageError::CompactionRefused {
                version: 7,
                kept: 6,
                ..
            })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_live_reader_reads_a_compacted_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    log.compact_where(keep).await.unwrap();
    let compacted = all(&log).await;
    let reader = LogAdapter::open_reader(dir.path()).unwrap();
    let read: BTreeMap<u64, LoggedEvent> = reader
        .read_log(1, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.position, e))
        .collect();
    assert_eq!(read, compacted);
    for aggregate in AGGREGATES {
        let events = reader
            .get_events("S", aggregate, &GetEventsOptions::default())
            .await
            .unwrap();
        let got: Vec<(u64, u64)> = events
            .iter()
            .map(|e| (e.event.version, e.position))
            .collect();
        assert_eq!(got, versions(&log, aggregate).await, "{aggregate}");
    }
    let summaries = reader.event_store_summaries().await.unwrap();
    assert_eq!(summaries[0].events, compacted.len() as u64);
    // The writer appends on; the reader follows.
    let next = versions(&log, "d").await.last().unwrap().0 + 1;
    let position = log.push_event(event("d", next)).await.unwrap();
    assert_eq!(reader.refresh().unwrap(), position);
}

/// The compacted segment files of a store, by name.
fn compacted_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir.join("log")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if path.extension().is_some_and(|e| e == "seg") && bytes[8..12] == 3u32.to_le_bytes() {
            found.push(path);
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn damage_in_a_compacted_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    log.compact_where(keep).await.unwrap();
    drop(log);
    let segment = compacted_segments(dir.path()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    // A flipped bit in the first entry's payload.
    bytes[64 + 40 + 100] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    let report = verify_dir(dir.path()).unwrap();
    assert!(!report.is_clean());
    // Rebuilding the index reads every segment: the damage refuses the open.
    std::fs::remove_file(dir.path().join("index.redb")).unwrap();
    let opened = open_result(dir.path());
    assert!(
        matches!(opened, Err(StorageError::Corruption(_))),
        "{opened:?}"
    );
}

#[tokio::test]
async fn a_truncated_compacted_segment_is_corruption_not_a_short_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    log.compact_where(keep).await.unwrap();
    drop(log);
    let segment = compacted_segments(dir.path()).into_iter().next().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() - 8]).unwrap();
    let opened = open_result(dir.path());
    assert!(
        matches!(opened, Err(StorageError::Corruption(_))),
        "{opened:?}"
    );
    assert_eq!(std::fs::read(&segment).unwrap().len(), bytes.len() - 8);
}

fn open_result(dir: &Path) -> Result<LogAdapter, StorageError> {
    LogAdapter::builder(dir)
        .segment_bytes(64 << 10)
        .checkpoint_events(16)
        .limits(Limits {
            event_bytes_max: 8 << 10,
            group_events_max: 16,
            group_bytes_max: 32 << 10,
            ..Limits::default()
        })
        .open()
}

#[tokio::test]
async fn a_rewrite_the_index_does_not_vouch_for_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    let before = all(&log).await;
    drop(log);
    // A rewrite left by a compaction that crashed before its commit point.
    let leftover = dir.path().join("log/0000000001.seg.compact");
    let first = std::fs::read(dir.path().join("log/0000000001.seg")).unwrap();
    std::fs::write(&leftover, &first[..4096]).unwrap();
    let log = open(dir.path());
    assert!(!leftover.exists());
    assert_eq!(all(&log).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_during_a_compaction_see_the_log_before_or_after_it_never_a_mix() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(filled(dir.path()).await);
    let before = all(&log).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (log, stop, before) = (log.clone(), stop.clone(), before.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    for aggregate in AGGREGATES {
                        let events = log
                            .get_events("S", aggregate, &GetEventsOptions::default())
                            .await
                            .expect("a read during compaction");
                        for e in &events {
                            let logged = &before[&e.position];
                            assert_eq!(logged.event, e.event, "a read paired the wrong bytes");
                        }
                        let versions: Vec<u64> = events.iter().map(|e| e.event.version).collect();
                        if let Some(&first) = versions.first() {
                            assert_eq!(versions, (first..=40).collect::<Vec<_>>());
                        }
                    }
                    for e in log.read_log(1, usize::MAX).await.expect("read in order") {
                        assert_eq!(before[&e.position], e);
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    // Compactions removing more and more of `c`, one version at a time.
    for cut in 1..=12u64 {
        log.compact_where(move |e| e.aggregate != "c" || e.version > cut)
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    assert_eq!(versions(&log, "c").await.first().unwrap().0, 13);
}

#[tokio::test]
async fn the_old_segment_put_back_after_a_compaction_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    let first = dir.path().join("log/0000000001.seg");
    let old = std::fs::read(&first).unwrap();
    log.compact_where(keep).await.unwrap();
    drop(log);
    assert_ne!(
        std::fs::read(&first).unwrap(),
        old,
        "segment 1 was compacted"
    );
    // The index records the compacted header: the old file is not the segment any more, and
    // no rewrite beside it explains the difference.
    std::fs::write(&first, &old).unwrap();
    let report = verify_dir(dir.path()).unwrap();
    assert!(!report.is_clean());
    let opened = open_result(dir.path());
    assert!(
        matches!(opened, Err(StorageError::Corruption(_))),
        "{opened:?}"
    );
    assert_eq!(std::fs::read(&first).unwrap(), old, "nothing was changed");
}

#[tokio::test]
async fn a_rewrite_the_index_vouches_for_is_rolled_forward_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path()).await;
    let first = dir.path().join("log/0000000001.seg");
    let old = std::fs::read(&first).unwrap();
    log.compact_where(keep).await.unwrap();
    let compacted = all(&log).await;
    drop(log);
    // As a crash after the commit point leaves it: the rewrite under its own name, the old
    // segment under the segment's.
    let rewrite = dir.path().join("log/0000000001.seg.compact");
    std::fs::rename(&first, &rewrite).unwrap();
    std::fs::write(&first, &old).unwrap();
    let report = verify_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let log = open(dir.path());
    assert!(!rewrite.exists());
    assert_ne!(std::fs::read(&first).unwrap(), old);
    assert_eq!(all(&log).await, compacted);
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}
