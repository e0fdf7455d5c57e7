//! `Durability::Periodic` and `Durability::None` acknowledge before syncing; what they promise
//! instead is checked here on the simulated disk: a sync within the interval, and on demand.

use std::sync::Arc;
use std::time::Duration;

use annals::engine::sim::{Damage, SimFs};
use annals::storage::{AppendEvent, EncodedEvent, GetEventsOptions, LogAdapter, StorageAdapter};
use annals::{Durability, Timestamp};

fn event(version: u64) -> AppendEvent {
    AppendEvent {
        event_store_id: "S".into(),
        event: EncodedEvent {
            aggregate_id: "a".into(),
            version,
            timestamp: Timestamp::from_unix_millis(version as i64),
            event_type: "HAPPENED".into(),
            schema_version: 1,
            payload: vec![version as u8; 100],
            metadata: vec![],
        },
    }
}

fn open(fs: &SimFs, durability: Durability) -> LogAdapter {
    LogAdapter::builder("/store")
        .file_system(Arc::new(fs.clone()))
        .durability(durability)
        .open()
        .unwrap()
}

async fn durable_events(fs: &SimFs) -> usize {
    let image = fs.crash_image(Damage::DropUnsynced);
    let log = open(&image, Durability::Immediate);
    log.get_events("S", "a", &GetEventsOptions::default())
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn immediate_durability_makes_every_acknowledged_append_survive_power_loss() {
    let fs = SimFs::new();
    let log = open(&fs, Durability::Immediate);
    for v in 1..=10 {
        log.push_event(event(v)).await.unwrap();
        assert_eq!(
            durable_events(&fs).await,
            v as usize,
            "after acknowledging v{v}"
        );
    }
}

#[tokio::test]
async fn periodic_durability_syncs_acknowledged_appends_within_its_interval() {
    let fs = SimFs::new();
    let log = open(&fs, Durability::Periodic(Duration::from_millis(20)));
    for v in 1..=10 {
        log.push_event(event(v)).await.unwrap();
    }
    // Generous against scheduling noise: the promise is "within the interval", and nothing
    // else is appending, so the writer's idle tick syncs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(durable_events(&fs).await, 10);
}

#[tokio::test]
async fn no_durability_is_made_durable_by_sync_and_by_close() {
    let fs = SimFs::new();
    let log = open(&fs, Durability::None);
    for v in 1..=10 {
        log.push_event(event(v)).await.unwrap();
    }
    assert_eq!(
        durable_events(&fs).await,
        0,
        "nothing is synced on the append path"
    );
    log.sync().await.unwrap();
    assert_eq!(durable_events(&fs).await, 10);
    log.push_event(event(11)).await.unwrap();
    log.close();
    assert_eq!(durable_events(&fs).await, 11, "closing syncs");
}
