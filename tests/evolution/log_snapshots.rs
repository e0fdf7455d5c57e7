//! Snapshots of the log adapter, in `snapshots.redb`: durable across a reopen, and a damaged
//! file or record never fails a read — the aggregate is replayed from its events instead.

use annals::GetAggregateOptions;
use annals::SnapshotPolicy;
use annals::storage::StorageAdapter;
use redb::ReadableTable;

use crate::fixtures::*;

const SNAPSHOTS_FILE: &str = "snapshots.redb";
const TABLE: redb::TableDefinition<(&str, &str, u64), &[u8]> =
    redb::TableDefinition::new("snapshots");

/// Writes 1,000 events and a snapshot at 1,000 in a log store in `dir`, closes it, and
/// returns the aggregate a full replay gives.
async fn store_with_snapshot(dir: &std::path::Path) -> annals::Aggregate<Ledger> {
    let adapter = open_log(dir);
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(100));
    seed(&ledgers, "acct", 1_000).await;
    let full = ledgers
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(full.events.len(), 1_000);
    ledgers.flush_snapshots().await;
    assert_eq!(snapshot_versions(&*adapter, "acct"), [1_000]);
    adapter.close();
    full.aggregate
}

#[tokio::test]
async fn snapshots_survive_a_reopen_of_the_log_store() {
    let dir = tempfile::tempdir().unwrap();
    let expected = store_with_snapshot(dir.path()).await;
    assert!(dir.path().join(SNAPSHOTS_FILE).exists());

    let adapter = open_log(dir.path());
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(100));
    let read = ledgers
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert!(
        read.events.is_empty(),
        "the read starts from the reopened snapshot"
    );
    assert_eq!(read.aggregate, expected);
}

#[tokio::test]
async fn a_store_that_never_snapshots_has_no_snapshot_file() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = open_log(dir.path());
    let ledgers = ledgers_without(adapter.clone());
    seed(&ledgers, "acct", 300).await;
    ledgers
        .get_aggregate("acct", Default::default())
        .await
        .unwrap();
    adapter.close();
    assert!(!dir.path().join(SNAPSHOTS_FILE).exists());
}

/// Reopens the store in `dir` after its snapshot file was damaged and checks that reads are
/// right (a full replay), and that snapshots work again afterwards.
async fn reads_survive_damage(dir: &std::path::Path, expected: &annals::Aggregate<Ledger>) {
    let adapter = open_log(dir);
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(100));
    let read = ledgers
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(&read.aggregate, expected);
    assert_eq!(read.events.len(), 1_000, "the damaged snapshot is not used");
    ledgers.flush_snapshots().await;
    let again = ledgers
        .get_existing_aggregate("acct", Default::default())
        .await
        .unwrap();
    assert_eq!(&again.aggregate, expected);
    assert!(
        again.events.is_empty(),
        "a fresh snapshot was written and used"
    );
}

#[tokio::test]
async fn a_garbage_snapshot_file_falls_back_to_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let expected = store_with_snapshot(dir.path()).await;
    let path = dir.path().join(SNAPSHOTS_FILE);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    std::fs::write(&path, vec![0xa5; len]).unwrap();
    reads_survive_damage(dir.path(), &expected).await;
}

#[tokio::test]
async fn a_truncated_snapshot_file_falls_back_to_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let expected = store_with_snapshot(dir.path()).await;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(SNAPSHOTS_FILE))
        .unwrap();
    file.set_len(1_000).unwrap();
    drop(file);
    reads_survive_damage(dir.path(), &expected).await;
}

#[tokio::test]
async fn a_snapshot_file_with_every_page_scrambled_falls_back_to_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let expected = store_with_snapshot(dir.path()).await;
    let path = dir.path().join(SNAPSHOTS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip one byte in every 512 after redb's header, where its pages and our records live.
    for i in (4096..bytes.len()).step_by(512) {
        bytes[i] ^= 0xff;
    }
    std::fs::write(&path, bytes).unwrap();
    reads_survive_damage(dir.path(), &expected).await;
}

/// Rewrites the value of the snapshot record at `version` with redb itself, as bit rot that
/// redb's own checks do not see would.
fn rewrite_record(dir: &std::path::Path, version: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let db = redb::Database::open(dir.join(SNAPSHOTS_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(TABLE).unwrap();
        let mut value = table
            .get((LEDGERS, "acct", version))
            .unwrap()
            .expect("the record exists")
            .value()
            .to_vec();
        edit(&mut value);
        table
            .insert((LEDGERS, "acct", version), value.as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_snapshot_record_failing_its_checksum_in_the_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let expected = store_with_snapshot(dir.path()).await;
    rewrite_record(dir.path(), 1_000, |value| {
        let last = value.len() - 1;
        value[last] ^= 0x40;
    });
    reads_survive_damage(dir.path(), &expected).await;
}

#[tokio::test]
async fn a_malformed_snapshot_record_in_the_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let expected = store_with_snapshot(dir.path()).await;
    rewrite_record(dir.path(), 1_000, |value| value.truncate(7));
    reads_survive_damage(dir.path(), &expected).await;
}

#[tokio::test]
async fn snapshots_written_at_a_max_version_are_reused_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let adapter = open_log(dir.path());
        let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(50).keep(4));
        seed(&ledgers, "acct", 200).await;
        for max in [60, 120, 180] {
            let options = GetAggregateOptions {
                max_version: Some(max),
            };
            ledgers.get_aggregate("acct", options).await.unwrap();
            ledgers.flush_snapshots().await;
        }
        assert_eq!(snapshot_versions(&*adapter, "acct"), [50, 100, 150]);
        adapter.close();
    }
    let adapter = open_log(dir.path());
    let ledgers = ledgers_with(adapter.clone(), SnapshotPolicy::every(50).keep(4));
    let reference = ledgers_without(adapter.clone() as std::sync::Arc<dyn StorageAdapter>);
    for max in [49, 50, 99, 170, 200] {
        let options = GetAggregateOptions {
            max_version: Some(max),
        };
        let read = ledgers.get_aggregate("acct", options).await.unwrap();
        let full = reference.get_aggregate("acct", options).await.unwrap();
        assert_eq!(read.aggregate, full.aggregate, "at max_version {max}");
        assert_eq!(read.last_event, full.last_event, "at max_version {max}");
    }
}
