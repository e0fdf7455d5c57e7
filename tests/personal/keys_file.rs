//! The log adapter's `keys.redb`: created by the first key, forgetting survives a reopen, and a
//! forgotten key's record is really gone from the file.

use std::sync::Arc;

use annals::storage::StorageAdapter;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::{TrainerEvent, registered, trainers};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");

/// The subjects with a record in `keys.redb`, and whether any record is all zeros.
fn records(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let db = redb::Database::open(dir.join("keys.redb")).expect("open keys.redb");
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(KEYS).expect("keys table");
    table
        .iter()
        .expect("iter")
        .map(|entry| {
            let (subject, record) = entry.expect("entry");
            (subject.value().to_owned(), record.value().to_vec())
        })
        .collect()
}

#[tokio::test]
async fn a_store_without_personal_data_has_no_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter: Arc<dyn StorageAdapter> = annals::open(dir.path()).expect("open");
    let trainers = trainers(&adapter);
    trainers
        .push_events("ash", 0, [crate::caught("pikachu")], &())
        .await
        .expect("push");
    assert!(!dir.path().join("keys.redb").exists());
}

#[tokio::test]
async fn forgetting_survives_a_reopen_and_leaves_no_key_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let adapter: Arc<dyn StorageAdapter> = annals::open(dir.path()).expect("open");
        let trainers = trainers(&adapter);
        for subject in ["ash", "misty"] {
            trainers
                .push_events(subject, 0, [registered(subject, subject)], &())
                .await
                .expect("push");
        }
        assert!(trainers.forget("ash").await.expect("forget"));
    }
    let left = records(dir.path());
    let subjects: Vec<&str> = left.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(subjects, ["misty"], "ash's record is deleted");
    assert_eq!(left[0].1.len(), 41);
    assert_eq!(left[0].1[0], 1, "a key record of format 1");

    let adapter: Arc<dyn StorageAdapter> = annals::open(dir.path()).expect("reopen");
    let trainers = trainers(&adapter);
    let read = |events: Vec<annals::EventDetail<TrainerEvent>>| match &events[0].event {
        TrainerEvent::Registered(r) => r.name.clone(),
        other => panic!("{other:?}"),
    };
    let ash = read(
        trainers
            .get_events("ash", Default::default())
            .await
            .expect("read"),
    );
    assert!(ash.is_forgotten());
    let misty = read(
        trainers
            .get_events("misty", Default::default())
            .await
            .expect("read"),
    );
    assert_eq!(misty.known().map(String::as_str), Some("misty"));
}
