//! Snapshots: a read that starts from a snapshot gives exactly the aggregate of a full replay;
//! snapshots are taken by reads (never by pushes), kept per policy, survive a reopen of the
//! log adapter, and are ignored (and deleted) when taken under another reducer version,
//! damaged, undecodable or stale — always with the right aggregate and never an error.

use annals::storage::SnapshotRecord;
use annals::{EventStore, GetAggregateOptions, SnapshotPolicy};

use crate::fixtures::*;

fn at(max_version: u64) -> GetAggregateOptions {
    GetAggregateOptions {
        max_version: Some(max_version),
    }
}

#[tokio::test]
async fn reads_take_snapshots_and_later_reads_replay_only_newer_events() {
    let adapter = memory();
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(100));
    seed(&ledgers, "acct", 250).await;

    let first = ledgers
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(first.events.len(), 250, "no snapshot yet: a full replay");
    ledgers.flush_snapshots().await;
    assert_eq!(
        snapshot_versions(&*adapter, "acct"),
        [200],
        "the last policy point of the read"
    );

    let second = ledgers
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(
        second.events.len(),
        50,
        "only the events after the snapshot are folded"
    );
    assert_eq!(second.aggregate, first.aggregate);
    assert_eq!(second.last_event, first.last_event);
}

#[tokio::test]
async fn pushes_never_write_snapshots() {
    let adapter = memory();
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(10));
    seed(&ledgers, "acct", 95).await;
    for version in 96..=100 {
        ledgers
            .push_event(
                annals::NewEvent::new("acct", version, nth_event(version)),
                Default::default(),
            )
            .await
            .unwrap();
    }
    ledgers.flush_snapshots().await;
    assert!(
        adapter.snapshot_storage().is_empty(),
        "only reads take snapshots"
    );
}

#[tokio::test]
async fn a_read_at_the_snapshot_version_returns_its_last_event() {
    let adapter = memory();
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(10));
    seed(&ledgers, "acct", 30).await;
    ledgers
        .get_aggregate("acct", Default::default())
        .await
        .unwrap();
    ledgers.flush_snapshots().await;
    assert_eq!(snapshot_versions(&*adapter, "acct"), [30]);

    let read = ledgers
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    let full = ledgers_without(adapter.clone())
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert!(
        read.events.is_empty(),
        "the snapshot is the whole aggregate"
    );
    assert_eq!(read.aggregate, full.aggregate);
    assert_eq!(read.last_event, full.last_event);
}

#[tokio::test]
async fn max_version_reads_start_from_the_newest_snapshot_at_or_below_it() {
    let adapter = memory();
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(10).keep(3));
    seed(&ledgers, "acct", 45).await;
    for max in [25, 35, 45] {
        ledgers.get_aggregate("acct", at(max)).await.unwrap();
        ledgers.flush_snapshots().await;
    }
    assert_eq!(snapshot_versions(&*adapter, "acct"), [20, 30, 40]);
    let reference = ledgers_without(adapter.clone());
    for max in [19, 20, 27, 33, 45] {
        let read = ledgers.get_aggregate("acct", at(max)).await.unwrap();
        let full = reference.get_aggregate("acct", at(max)).await.unwrap();
        assert_eq!(read.aggregate, full.aggregate, "at max_version {max}");
        assert_eq!(read.last_event, full.last_event, "at max_version {max}");
        let start = [20, 30, 40].into_iter().rfind(|v| *v <= max).unwrap_or(0);
        assert_eq!(
            read.events.len() as u64,
            max - start,
            "at max_version {max}"
        );
    }
}

#[tokio::test]
async fn only_the_newest_snapshots_are_kept() {
    let adapter = memory();
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(5).keep(2));
    seed(&ledgers, "acct", 40).await;
    for max in [5, 10, 15, 20, 25, 40] {
        ledgers.get_aggregate("acct", at(max)).await.unwrap();
        ledgers.flush_snapshots().await;
    }
    assert_eq!(snapshot_versions(&*adapter, "acct"), [25, 40]);
}

#[tokio::test]
async fn a_predicate_policy_snapshots_where_it_holds() {
    let adapter = memory();
    let policy = SnapshotPolicy::when(|_, e: &annals::EventDetail<LedgerEvent>| {
        matches!(e.event, LedgerEvent::Cleared(_))
    });
    let ledgers = ledgers_with(adapter.clone(), policy);
    seed(&ledgers, "acct", 50).await;
    ledgers
        .get_aggregate("acct", Default::default())
        .await
        .unwrap();
    ledgers.flush_snapshots().await;
    // nth_event(i) is a clear when i % 11 == 10: versions 10, 21, 32, 43; the last is kept.
    assert_eq!(snapshot_versions(&*adapter, "acct"), [43]);
    let read = ledgers
        .get_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(read.events.len(), 7);
}

#[tokio::test]
async fn a_reducer_version_bump_ignores_and_deletes_old_snapshots() {
    let adapter = memory();
    let v1 = ledgers_with(adapter.clone(), SnapshotPolicy::every(10));
    seed(&v1, "acct", 35).await;
    v1.get_aggregate("acct", Default::default()).await.unwrap();
    v1.flush_snapshots().await;
    assert_eq!(snapshot_at(&*adapter, "acct", 30).reducer_version, 1);

    let v2 = EventStore::builder(LEDGERS, reduce_doubled)
        .storage_adapter(adapter.clone())
        .snapshots(SnapshotPolicy::every(10))
        .reducer_version(2)
        .build()
        .unwrap();
    let read = v2
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(read.events.len(), 35, "the old snapshot is not used");
    let full = EventStore::builder(LEDGERS, reduce_doubled)
        .storage_adapter(adapter.clone())
        .build()
        .unwrap()
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(
        read.aggregate, full.aggregate,
        "the new reducer folds every event"
    );
    v2.flush_snapshots().await;
    let record = snapshot_at(&*adapter, "acct", 30);
    assert_eq!(
        record.reducer_version, 2,
        "the old snapshot was replaced by the new reducer's"
    );
    assert_eq!(snapshot_versions(&*adapter, "acct"), [30]);
}

/// Takes a snapshot at 30 of a 35-event ledger, lets `damage` rewrite it, and checks that the
/// next read is correct, folds every event and deleted the damaged record.
async fn damaged_snapshot_is_ignored(damage: impl FnOnce(SnapshotRecord) -> SnapshotRecord) {
    let adapter = memory();
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(10));
    seed(&ledgers, "acct", 35).await;
    let full = ledgers
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    ledgers.flush_snapshots().await;
    let good = snapshot_at(&*adapter, "acct", 30);
    let damaged = damage(good.clone());
    assert_ne!(damaged, good);
    snapshots(&*adapter).put(LEDGERS, "acct", &damaged).unwrap();

    let read = ledgers
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(read.aggregate, full.aggregate);
    assert_eq!(read.events.len(), 35, "a full replay");
    ledgers.flush_snapshots().await;
    assert_eq!(
        snapshot_at(&*adapter, "acct", 30),
        good,
        "the damaged record was replaced by a good one"
    );
}

#[tokio::test]
async fn a_snapshot_failing_its_checksum_is_ignored() {
    damaged_snapshot_is_ignored(|mut record| {
        record.state[0] ^= 0x01;
        record
    })
    .await;
}

#[tokio::test]
async fn a_snapshot_whose_state_does_not_decode_is_ignored() {
    damaged_snapshot_is_ignored(|record| {
        SnapshotRecord::new(
            record.version,
            record.reducer_version,
            record.event_position,
            record.event_checksum,
            vec![0xc1],
        )
    })
    .await;
}

#[tokio::test]
async fn a_snapshot_whose_event_reads_back_differently_is_ignored() {
    damaged_snapshot_is_ignored(|record| {
        SnapshotRecord::new(
            record.version,
            record.reducer_version,
            record.event_position,
            record.event_checksum ^ 1,
            record.state,
        )
    })
    .await;
}

#[tokio::test]
async fn a_snapshot_whose_event_position_differs_is_ignored() {
    damaged_snapshot_is_ignored(|record| {
        SnapshotRecord::new(
            record.version,
            record.reducer_version,
            record.event_position + 1,
            record.event_checksum,
            record.state,
        )
    })
    .await;
}

#[tokio::test]
async fn snapshots_of_a_mock_store_are_dropped_by_reset() {
    let adapter = memory();
    let ledgers = ledgers_with(adapter, SnapshotPolicy::every(2));
    let initial: Vec<_> = (1..=4)
        .map(|v| annals::EventDetail {
            aggregate_id: "acct".into(),
            version: v,
            timestamp: annals::Timestamp::from_unix_millis(v as i64),
            event: nth_event(v),
            metadata: (),
        })
        .collect();
    let mock = annals::testing::MockEventStore::new(&ledgers, initial)
        .await
        .unwrap();
    let before = mock
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    mock.flush_snapshots().await;
    let adapter = mock.storage_adapter().unwrap();
    assert_eq!(snapshot_versions(&*adapter, "acct"), [4]);
    mock.reset().await.unwrap();
    assert!(snapshot_versions(&*adapter, "acct").is_empty());
    let after = mock
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(after.aggregate, before.aggregate);
}

#[tokio::test]
async fn a_policy_by_replay_cost_snapshots_the_end_of_a_read_over_its_budget() {
    let adapter = memory();
    let over = ledgers_with(
        adapter.clone(),
        SnapshotPolicy::replay_budget(std::time::Duration::ZERO),
    );
    let reference = ledgers_without(adapter.clone());
    seed(&over, "acct", 40).await;

    // Any fold of 16 events or more is over a zero budget: a snapshot at its last event.
    let first = over
        .get_aggregate("acct", Default::default())
        .await
        .unwrap();
    over.flush_snapshots().await;
    assert_eq!(snapshot_versions(&*adapter, "acct"), vec![40]);
    let replay = reference
        .get_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(first.aggregate, replay.aggregate);

    // Ten more events: the next read folds them from the snapshot, too few to check the clock.
    push_all(&over, "acct", 41, (41..=50).map(nth_event).collect()).await;
    let second = over
        .get_aggregate_state("acct", Default::default())
        .await
        .unwrap();
    over.flush_snapshots().await;
    assert_eq!(snapshot_versions(&*adapter, "acct"), vec![40]);
    let replay = reference
        .get_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(second.aggregate, replay.aggregate);
    assert_eq!(second.last_event, replay.last_event);

    // An older version read over budget snapshots the last event it folded.
    let old = over.get_aggregate("acct", at(33)).await.unwrap();
    over.flush_snapshots().await;
    assert_eq!(snapshot_versions(&*adapter, "acct"), vec![33, 40]);
    assert_eq!(old.aggregate.unwrap().version, 33);

    // A budget no read reaches takes none.
    let other = memory();
    let under = ledgers_with(
        other.clone(),
        SnapshotPolicy::replay_budget(std::time::Duration::from_secs(3600)),
    );
    seed(&under, "acct", 40).await;
    under
        .get_aggregate("acct", Default::default())
        .await
        .unwrap();
    under.flush_snapshots().await;
    assert!(snapshot_versions(&*other, "acct").is_empty());
    assert_eq!(
        format!("{:?}", SnapshotPolicy::<LedgerEvent, Ledger>::default()),
        "SnapshotPolicy { replay_budget: 250µs, keep: 2 }"
    );
}
