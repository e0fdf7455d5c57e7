//! The log's public counters move with what the writer does.

use std::sync::Arc;

use annals::Durability;
use annals::storage::{LogAdapter, StorageAdapter};

use crate::basics::event;

#[tokio::test]
async fn concurrent_single_event_appends_count_one_commit_each_and_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(LogAdapter::builder(dir.path()).open().unwrap());
    assert_eq!(
        log.counters().commits,
        0,
        "a fresh store has committed nothing"
    );
    const TASKS: u64 = 64;
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let aggregate = format!("agg-{i}");
                log.push_event(event("S", &aggregate, 1, 0)).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let c = log.counters();
    assert_eq!(c.commits, TASKS, "{c:?}");
    assert_eq!(c.events, TASKS, "{c:?}");
    assert!(c.syncs >= 1 && c.syncs <= c.commits, "{c:?}");
    assert!(c.events_per_sync() >= 1.0, "{c:?}");
    // Each single-event frame holds at least its 200-byte payload.
    assert!(c.bytes_written >= TASKS * 200, "{c:?}");
    assert_eq!(c.segment_rolls, 0, "{c:?}");
}

#[tokio::test]
async fn an_event_group_is_one_commit_and_refused_commits_are_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogAdapter::builder(dir.path()).open().unwrap();
    let group = (1..=5).map(|v| event("S", "a", v, 0)).collect();
    log.push_event_group(group).await.unwrap();
    let conflict = log.push_event(event("S", "a", 3, 0)).await;
    assert!(conflict.is_err(), "version 3 exists");
    let c = log.counters();
    assert_eq!((c.commits, c.events), (1, 5), "{c:?}");
}

#[tokio::test]
async fn rolling_into_a_new_segment_counts_a_roll() {
    let dir = tempfile::tempdir().unwrap();
    let log = crate::basics::small(dir.path());
    let mut version = 0;
    while log.stats().segments < 3 {
        version += 1;
        log.push_event(event("S", "a", version, 0)).await.unwrap();
    }
    let c = log.counters();
    assert_eq!(c.segment_rolls, 2, "{c:?}");
    assert_eq!(c.commits, version, "{c:?}");
}

#[tokio::test]
async fn checkpoint_lag_counts_the_events_not_yet_in_the_persisted_index() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogAdapter::builder(dir.path())
        .checkpoint_events(1_000)
        .open()
        .unwrap();
    for v in 1..=10 {
        log.push_event(event("S", "a", v, 0)).await.unwrap();
    }
    assert_eq!(log.counters().checkpoint_lag, 10);
    log.close();
    drop(log);
    // A clean close checkpoints everything; the reopened store's counters start afresh.
    let log = LogAdapter::builder(dir.path()).open().unwrap();
    let c = log.counters();
    assert_eq!((c.checkpoint_lag, c.commits, c.syncs), (0, 0, 0), "{c:?}");
}

#[tokio::test]
async fn syncs_are_counted_when_asked_for_under_no_durability() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogAdapter::builder(dir.path())
        .durability(Durability::None)
        .open()
        .unwrap();
    for v in 1..=3 {
        log.push_event(event("S", "a", v, 0)).await.unwrap();
    }
    assert_eq!(log.counters().syncs, 0, "no sync on the append path");
    log.sync().await.unwrap();
    assert_eq!(log.counters().syncs, 1);
}
