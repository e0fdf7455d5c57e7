//! Lifecycle rules shared by every adapter on a schema: a delete made through one adapter is
//! seen by another's reads and refuses its pushes at once (alone: appends beside it commit),
//! and a compaction through one keeps the versions of another's aggregates continuing.

use annals::storage::{DeleteMode, GetEventsOptions, StorageAdapter, StorageError};

use crate::fixture::{self, STORE, event};
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 2;
        a_delete_through_one_adapter_binds_every_adapter_on_the_schema,
        compaction_through_one_adapter_keeps_versions_continuing_for_another,
    )
}

async fn a_delete_through_one_adapter_binds_every_adapter_on_the_schema() {
    let url = fixture::url();
    let (first, guard) = fixture::adapter(&url).await;
    let second = fixture::builder(&url, &guard.schema)
        .connect()
        .await
        .expect("a second adapter on the schema");
    first.push_event(event("mew", 1)).await.expect("push");
    second.push_event(event("eevee", 1)).await.expect("push");
    first
        .delete_aggregate(STORE, "mew", DeleteMode::Soft)
        .await
        .expect("delete");
    let read = second
        .get_events(STORE, "mew", &GetEventsOptions::default())
        .await
        .expect("read");
    assert!(read.is_empty(), "the other adapter's reads hide it");
    // A group with the deleted aggregate is refused whole; the other push commits.
    let refused = second
        .push_event_group(vec![event("eevee", 2), event("mew", 2)])
        .await;
    match &refused {
        Err(StorageError::AggregateDeleted {
            aggregate_id,
            hard: false,
            ..
        }) => assert_eq!(aggregate_id, "mew"),
        other => panic!("expected AggregateDeleted, got {other:?}"),
    }
    let (a, b) = tokio::join!(
        second.push_event(event("mew", 2)),
        second.push_event(event("eevee", 2))
    );
    assert!(
        matches!(a, Err(StorageError::AggregateDeleted { .. })),
        "{a:?}"
    );
    b.expect("the other append of the batch commits");
    second
        .restore_aggregate(STORE, "mew")
        .await
        .expect("restore through the other adapter");
    first
        .push_event(event("mew", 2))
        .await
        .expect("pushes accepted again");
}

async fn compaction_through_one_adapter_keeps_versions_continuing_for_another() {
    let url = fixture::url();
    let (first, guard) = fixture::adapter(&url).await;
    let second = fixture::builder(&url, &guard.schema)
        .connect()
        .await
        .expect("a second adapter on the schema");
    for version in 1..=3 {
        first.push_event(event("mew", version)).await.expect("push");
    }
    first
        .truncate_before(STORE, "mew", 10)
        .await
        .expect("truncate past the end");
    let report = first.compact().await.expect("compact");
    assert_eq!(report.events_removed, 3);
    // Every event of it is gone, yet it is still listed and numbered.
    let ids = second
        .list_aggregate_ids(STORE, &Default::default())
        .await
        .expect("list");
    assert_eq!(ids.aggregate_ids.len(), 1);
    assert_eq!(ids.aggregate_ids[0].aggregate_id, "mew");
    let conflict = second.push_event(event("mew", 1)).await;
    assert!(
        matches!(&conflict, Err(StorageError::EventAlreadyExists(e)) if e.version == 1),
        "{conflict:?}"
    );
    second
        .push_event(event("mew", 4))
        .await
        .expect("version 4 follows");
    let read = first
        .get_events(STORE, "mew", &GetEventsOptions::default())
        .await
        .expect("read");
    let versions: Vec<u64> = read.iter().map(|e| e.event.version).collect();
    assert_eq!(versions, [4]);
}
