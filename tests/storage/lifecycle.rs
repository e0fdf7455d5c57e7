//! Lifecycle rules across a reopen and through a live reader: the rules are the fold of the
//! `$lifecycle` events, rebuilt by every handle that opens the log.

use std::time::Duration;

use annals::storage::{
    AppendEvent, DeleteMode, EncodedEvent, GetEventsOptions, LIFECYCLE_STORE, Limits, LogAdapter,
    LogAdapterBuilder, Retention, StorageAdapter, StorageError, Timestamp,
};

fn event(aggregate: &str, version: u64) -> AppendEvent {
    AppendEvent {
        event_store_id: "POKEMONS".into(),
        event: EncodedEvent {
            aggregate_id: aggregate.into(),
            version,
            timestamp: Timestamp::from_unix_millis(1_000 * version as i64),
            event_type: "APPEARED".into(),
            schema_version: 1,
            payload: vec![0xc0],
            metadata: Vec::new(),
        },
    }
}

async fn versions(adapter: &dyn StorageAdapter, aggregate: &str) -> Vec<u64> {
    adapter
        .get_events("POKEMONS", aggregate, &GetEventsOptions::default())
        .await
        .expect("get_events")
        .iter()
        .map(|e| e.event.version)
        .collect()
}

async fn fill(adapter: &dyn StorageAdapter) {
    for aggregate in ["pikachu", "eevee", "mew"] {
        for version in 1..=3 {
            adapter
                .push_event(event(aggregate, version))
                .await
                .expect("push");
        }
    }
}

#[tokio::test]
async fn the_rules_are_rebuilt_when_the_log_reopens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let adapter = LogAdapter::builder(dir.path()).open().unwrap();
        fill(&adapter).await;
        adapter
            .delete_aggregate("POKEMONS", "pikachu", DeleteMode::Hard)
            .await
            .unwrap();
        adapter
            .truncate_before("POKEMONS", "eevee", 3)
            .await
            .unwrap();
        let retention = Retention {
            max_age: None,
            max_count: Some(2),
        };
        adapter.set_retention("POKEMONS", retention).await.unwrap();
        adapter.close();
    }
    let adapter = LogAdapter::builder(dir.path()).open().unwrap();
    assert!(versions(&adapter, "pikachu").await.is_empty());
    assert_eq!(versions(&adapter, "eevee").await, [3]);
    assert_eq!(versions(&adapter, "mew").await, [2, 3]);
    assert!(matches!(
        adapter.push_event(event("pikachu", 4)).await,
        Err(StorageError::AggregateDeleted { hard: true, .. })
    ));
    assert_eq!(
        adapter.retention("POKEMONS").await.unwrap().max_count,
        Some(2)
    );
    // The next lifecycle event of the store continues its numbering.
    let position = adapter
        .restore_aggregate("POKEMONS", "eevee")
        .await
        .unwrap();
    let logged = adapter.read_log(position, 1).await.unwrap();
    assert_eq!(logged[0].event_store_id, LIFECYCLE_STORE);
    assert_eq!(
        (
            logged[0].event.aggregate_id.as_str(),
            logged[0].event.version
        ),
        ("POKEMONS", 4)
    );
}

#[tokio::test]
async fn a_live_reader_honours_the_writers_rules_as_they_come_and_refuses_to_change_them() {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogAdapter::builder(dir.path()).open().unwrap();
    fill(&writer).await;
    let reader = LogAdapter::open_reader(dir.path()).unwrap();
    reader.refresh().unwrap();
    assert_eq!(versions(&reader, "pikachu").await, [1, 2, 3]);
    writer
        .delete_aggregate("POKEMONS", "pikachu", DeleteMode::Soft)
        .await
        .unwrap();
    writer
        .truncate_before("POKEMONS", "eevee", 2)
        .await
        .unwrap();
    reader.refresh().unwrap();
    assert!(versions(&reader, "pikachu").await.is_empty());
    assert_eq!(versions(&reader, "eevee").await, [2, 3]);
    let ids: Vec<String> = reader
        .list_aggregate_ids("POKEMONS", &Default::default())
        .await
        .unwrap()
        .aggregate_ids
        .into_iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&"pikachu".to_owned()));
    assert!(matches!(
        reader
            .delete_aggregate("POKEMONS", "mew", DeleteMode::Soft)
            .await,
        Err(StorageError::ReadOnly { .. })
    ));
    assert!(matches!(
        reader.compact().await,
        Err(StorageError::ReadOnly { .. })
    ));
    // The reader's view of the log matches the writer's.
    assert_eq!(
        reader.read_log(1, usize::MAX).await.unwrap(),
        writer.read_log(1, usize::MAX).await.unwrap()
    );
}

#[tokio::test]
async fn an_unreadable_lifecycle_event_refuses_the_open_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let adapter = LogAdapter::builder(dir.path()).open().unwrap();
        fill(&adapter).await;
        // `append` trusts its caller to have validated the commit: a way to write what a newer
        // annals might.
        let unknown = AppendEvent {
            event_store_id: LIFECYCLE_STORE.into(),
            event: EncodedEvent {
                aggregate_id: "POKEMONS".into(),
                version: 1,
                timestamp: Timestamp::from_unix_millis(0),
                event_type: "aggregate_exploded".into(),
                schema_version: 1,
                payload: vec![0x80],
                metadata: Vec::new(),
            },
        };
        adapter.append(vec![unknown]).await.unwrap();
        adapter.close();
    }
    let refused = LogAdapter::builder(dir.path()).open();
    assert!(
        matches!(
            refused,
            Err(StorageError::UnreadableLifecycleEvent { position: 10, .. })
        ),
        "{refused:?}"
    );
    let reader = LogAdapter::open_reader(dir.path());
    assert!(matches!(
        reader,
        Err(StorageError::UnreadableLifecycleEvent { .. })
    ));
    // Nothing was changed: the store is intact, every event there.
    let report = annals::engine::verify_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.events, 10);
}

/// A log of 256 KiB segments (limits to match), so a few hundred events seal several.
fn small_segments(dir: &std::path::Path) -> LogAdapterBuilder {
    LogAdapter::builder(dir)
        .segment_bytes(256 << 10)
        .limits(Limits {
            event_bytes_max: 16 << 10,
            group_events_max: 100,
            group_bytes_max: 64 << 10,
            ..Limits::default()
        })
}

/// `count` events of 1 KiB for each aggregate, one commit per version across the aggregates.
async fn fill_large(adapter: &dyn StorageAdapter, aggregates: &[&str], count: u64) {
    for version in 1..=count {
        let events = aggregates
            .iter()
            .map(|aggregate| {
                let mut e = event(aggregate, version);
                e.event.payload = vec![0x61; 1024];
                e
            })
            .collect();
        adapter.push_event_group(events).await.expect("push");
    }
}

#[tokio::test]
async fn compaction_of_the_log_removes_what_the_rules_hide_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let open = || small_segments(dir.path()).open().unwrap();
    let aggregates = ["hard", "soft", "cut", "gone", "kept"];
    let positions_before;
    {
        let adapter = open();
        fill_large(&adapter, &aggregates, 100).await;
        adapter
            .delete_aggregate("POKEMONS", "hard", DeleteMode::Hard)
            .await
            .unwrap();
        adapter
            .delete_aggregate("POKEMONS", "soft", DeleteMode::Soft)
            .await
            .unwrap();
        adapter
            .truncate_before("POKEMONS", "cut", 61)
            .await
            .unwrap();
        // Past the last version: nothing visible, yet the aggregate goes on at version 101.
        adapter
            .truncate_before("POKEMONS", "gone", 500)
            .await
            .unwrap();
        positions_before = adapter.read_log(1, usize::MAX).await.unwrap();
        // Closing checkpoints the index: every segment but the last is sealed behind it.
        adapter.close();
    }
    let adapter = open();
    let bytes_before = adapter.stats().segment_bytes;
    let report = adapter.compact().await.unwrap();
    // Hidden: 100 (hard) + 60 (cut) + 100 (gone), less what lies in the unsealed last segment
    // and the last event of "gone", which compaction keeps so that its numbering goes on.
    assert!(report.segments_rewritten > 0, "{report:?}");
    assert!((150..=259).contains(&report.events_removed), "{report:?}");
    assert!(report.bytes_reclaimed() > 100 * 1024, "{report:?}");
    assert!(adapter.stats().segment_bytes < bytes_before);
    let check = |adapter: LogAdapter| async move {
        assert!(versions(&adapter, "hard").await.is_empty());
        assert!(versions(&adapter, "gone").await.is_empty());
        assert_eq!(
            versions(&adapter, "cut").await,
            (61..=100).collect::<Vec<_>>()
        );
        assert_eq!(
            versions(&adapter, "kept").await,
            (1..=100).collect::<Vec<_>>()
        );
        // The visible log, positions included, is what it was.
        assert_eq!(
            adapter.read_log(1, usize::MAX).await.unwrap(),
            positions_before
        );
        adapter.restore_aggregate("POKEMONS", "soft").await.unwrap();
        assert_eq!(
            versions(&adapter, "soft").await,
            (1..=100).collect::<Vec<_>>()
        );
        assert!(matches!(
            adapter.push_event(event("hard", 101)).await,
            Err(StorageError::AggregateDeleted { hard: true, .. })
        ));
        adapter.push_event(event("gone", 101)).await.unwrap();
        assert_eq!(versions(&adapter, "gone").await, [101]);
        let verified = adapter.verify().unwrap();
        assert!(verified.is_clean(), "{verified:?}");
        adapter.close();
    };
    check(adapter).await;
    // A second compaction finds nothing more (the soft delete was restored) and a reopened
    // store reads the same.
    let adapter = open();
    let again = adapter.compact().await.unwrap();
    assert_eq!(again.events_removed, 0, "{again:?}");
    assert_eq!(
        versions(&adapter, "cut").await,
        (61..=100).collect::<Vec<_>>()
    );
    assert_eq!(versions(&adapter, "gone").await, [101]);
    assert_eq!(
        versions(&adapter, "soft").await,
        (1..=100).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_background_compaction_reclaims_a_hard_deleted_aggregate_without_being_asked() {
    let dir = tempfile::tempdir().unwrap();
    let builder = || small_segments(dir.path()).compact_every(Duration::from_millis(20));
    {
        let adapter = builder().open().unwrap();
        fill_large(&adapter, &["hard", "kept"], 200).await;
        // Closing checkpoints the index and stops the compactor (nothing to do yet).
        adapter.close();
    }
    let adapter = builder().open().unwrap();
    let bytes_before = adapter.stats().segment_bytes;
    adapter
        .delete_aggregate("POKEMONS", "hard", DeleteMode::Hard)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while adapter.stats().segment_bytes >= bytes_before {
        assert!(
            std::time::Instant::now() < deadline,
            "no background compaction within a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        versions(&adapter, "kept").await,
        (1..=200).collect::<Vec<_>>()
    );
    assert!(versions(&adapter, "hard").await.is_empty());
    // Close stops the compactor; the store reopens whole and verifies clean.
    adapter.close();
    drop(adapter);
    let adapter = LogAdapter::builder(dir.path()).open().unwrap();
    assert_eq!(
        versions(&adapter, "kept").await,
        (1..=200).collect::<Vec<_>>()
    );
    assert!(adapter.verify().unwrap().is_clean());
}
