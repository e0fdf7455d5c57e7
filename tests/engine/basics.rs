use std::sync::Arc;

use annals::storage::{
    AppendEvent, EncodedEvent, GetEventsOptions, ListAggregateIdsOptions, LogAdapter,
    StorageAdapter, StorageError,
};
use annals::{Durability, Timestamp};

pub fn event(store: &str, aggregate: &str, version: u64, ts: i64) -> AppendEvent {
    AppendEvent {
        event_store_id: store.into(),
        event: EncodedEvent {
            aggregate_id: aggregate.into(),
            version,
            timestamp: Timestamp::from_unix_millis(ts),
            event_type: "HAPPENED".into(),
            schema_version: 1,
            payload: vec![version as u8; 200],
            metadata: vec![0xc0],
        },
    }
}

pub fn small(dir: &std::path::Path) -> LogAdapter {
    LogAdapter::builder(dir)
        .segment_bytes(256 << 10)
        .checkpoint_events(50)
        .limits(annals::storage::Limits {
            group_bytes_max: 64 << 10,
            group_events_max: 1000,
            event_bytes_max: 16 << 10,
            ..Default::default()
        })
        .open()
        .unwrap()
}

#[tokio::test]
async fn events_survive_reopen_across_segments_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = small(dir.path());
        for v in 0..3000u64 {
            let agg = format!("agg-{}", v % 7);
            let version = v / 7 + 1;
            log.push_event(event("S", &agg, version, v as i64))
                .await
                .unwrap();
        }
        assert!(log.stats().segments > 1, "rolled over: {:?}", log.stats());
    }
    let log = small(dir.path());
    assert_eq!(log.last_position(), 3000);
    let all = log
        .get_events("S", "agg-3", &GetEventsOptions::default())
        .await
        .unwrap();
    let versions: Vec<u64> = all.iter().map(|e| e.event.version).collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    assert_eq!(all[0].event.payload, vec![1u8; 200]);
    let rev = log
        .get_events(
            "S",
            "agg-3",
            &GetEventsOptions {
                reverse: true,
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rev.len(), 2);
    assert_eq!(rev[0].event.version, versions.len() as u64);
    let page = log
        .list_aggregate_ids("S", &ListAggregateIdsOptions::default())
        .await
        .unwrap();
    assert_eq!(page.aggregate_ids.len(), 7);
    let err = log.push_event(event("S", "agg-3", 2, 0)).await.unwrap_err();
    assert!(
        matches!(err, StorageError::EventAlreadyExists(_)),
        "{err:?}"
    );
    let err = log
        .push_event(event("S", "agg-3", 1000, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::UnexpectedVersion { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrent_pushes_on_one_aggregate_have_one_winner_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        LogAdapter::builder(dir.path())
            .durability(Durability::Immediate)
            .open()
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0;
            for _ in 0..20 {
                let last = log
                    .get_events(
                        "S",
                        "hot",
                        &GetEventsOptions {
                            reverse: true,
                            limit: Some(1),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap()
                    .first()
                    .map_or(0, |e| e.event.version);
                match log.push_event(event("S", "hot", last + 1, 0)).await {
                    Ok(_) => wins += 1,
                    Err(StorageError::EventAlreadyExists(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            wins
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let events = log
        .get_events("S", "hot", &GetEventsOptions::default())
        .await
        .unwrap();
    assert_eq!(events.len(), total);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.event.version == i as u64 + 1)
    );
}

#[tokio::test]
async fn a_second_open_is_refused_while_the_store_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let first = annals::open(dir.path()).unwrap();
    assert!(matches!(
        annals::open(dir.path()),
        Err(StorageError::Locked { .. })
    ));
    first.close();
    drop(first);
    annals::open(dir.path()).unwrap();
}
