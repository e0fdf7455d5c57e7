//! `verify`, `rebuild-index`, `compact` and `snapshots prune`.

use annals::storage::{SnapshotRecord, StorageAdapter};
use predicates::str::contains;
use serde_json::json;

use crate::fixture::{annals, json, pokemon_store};

#[tokio::test]
async fn verify_reports_a_clean_store_and_keeps_its_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let report = json(tmp.path(), &["verify"]);
    assert_eq!(report["events"], 5);
    assert_eq!(report["aggregates"], 3);
    assert_eq!(report["problems"], json!([]));
    // The store directory may still be given as an argument, as before.
    annals()
        .arg("verify")
        .arg(tmp.path())
        .assert()
        .code(0)
        .stdout(contains("result       OK: no problems found"));
    let held = annals::open(tmp.path()).unwrap();
    annals()
        .arg("verify")
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(contains("is open in another process"));
    drop(held);
    // Damage: a flipped byte inside the first frame.
    let segment = std::fs::read_dir(tmp.path().join("log"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    annals()
        .arg("verify")
        .arg(tmp.path())
        .assert()
        .code(1)
        .stdout(contains("problem(s):"));
}

#[tokio::test]
async fn rebuild_index_rebuilds_it_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let before = json(tmp.path(), &["stores"]);
    let rebuilt = json(tmp.path(), &["rebuild-index"]);
    assert_eq!(rebuilt["events"], 5);
    assert_eq!(json(tmp.path(), &["stores"]), before);
    let stats = json(tmp.path(), &["stats"]);
    assert_eq!(
        stats["index"],
        json!({ "indexedThrough": 5, "unindexedEvents": 0 })
    );
    assert!(
        json(tmp.path(), &["verify"])["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn snapshots_prune_keeps_the_newest_per_aggregate() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let adapter = annals::open(tmp.path()).unwrap();
    let snapshots = adapter.snapshots().unwrap();
    for version in 1..=3 {
        let record = SnapshotRecord::new(version, 1, version, 0, vec![version as u8]);
        snapshots.put("POKEMONS", "pikachu", &record).unwrap();
    }
    snapshots
        .put("TRAINERS", "ash", &SnapshotRecord::new(1, 1, 4, 0, vec![]))
        .unwrap();
    drop(adapter);

    assert_eq!(json(tmp.path(), &["stats"])["snapshots"]["records"], 4);
    let pruned = json(tmp.path(), &["snapshots", "prune", "--keep", "1"]);
    assert_eq!(pruned, json!({ "removed": 2, "aggregates": 3, "keep": 1 }));
    assert_eq!(json(tmp.path(), &["stats"])["snapshots"]["records"], 2);
    let adapter = annals::open(tmp.path()).unwrap();
    let newest = adapter
        .snapshots()
        .unwrap()
        .latest("POKEMONS", "pikachu", u64::MAX)
        .unwrap();
    assert_eq!(newest.map(|r| r.version), Some(3));
    drop(adapter);
    let all = json(
        tmp.path(),
        &["snapshots", "prune", "--keep", "0", "--store", "TRAINERS"],
    );
    assert_eq!(all["removed"], 1);
}

#[tokio::test]
async fn compact_reports_what_it_did_and_leaves_a_store_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let before = json(tmp.path(), &["stores"]);
    let compacted = json(tmp.path(), &["compact"]);
    assert_eq!(compacted["report"]["events_removed"], 0);
    assert_eq!(json(tmp.path(), &["stores"]), before);
    annals()
        .arg("compact")
        .arg(tmp.path())
        .assert()
        .code(0)
        .stdout(contains("event(s) removed"));
    let report = json(tmp.path(), &["verify"]);
    assert_eq!(report["problems"], json!([]));
}

/// A store whose sealed segments were compacted verifies, and compacts again.
#[cfg(feature = "testing")]
#[tokio::test]
async fn verify_and_compact_accept_a_compacted_store() {
    use annals::storage::{AppendEvent, EncodedEvent, Limits, LogAdapter};
    let tmp = tempfile::tempdir().unwrap();
    let open = || {
        LogAdapter::builder(tmp.path())
            .segment_bytes(64 << 10)
            .checkpoint_events(16)
            .limits(Limits {
                event_bytes_max: 8 << 10,
                group_events_max: 16,
                group_bytes_max: 32 << 10,
                ..Limits::default()
            })
            .open()
            .unwrap()
    };
    let log = open();
    for version in 1..=120u64 {
        let e = AppendEvent {
            event_store_id: "POKEMONS".into(),
            event: EncodedEvent {
                aggregate_id: if version % 2 == 0 {
                    "pikachu"
                } else {
                    "bulbasaur"
                }
                .into(),
                version: version.div_ceil(2),
                timestamp: annals::Timestamp::from_unix_millis(version as i64),
                event_type: "TRAINED".into(),
                schema_version: 1,
                payload: vec![0xc0; 1500],
                metadata: vec![0xc0],
            },
        };
        log.push_event(e).await.unwrap();
    }
    drop(log);
    let log = open();
    let report = log
        .compact_where(|e| e.aggregate != "bulbasaur" || e.version > 20)
        .await
        .unwrap();
    assert_eq!(report.events_removed, 20);
    drop(log);
    let verified = json(tmp.path(), &["verify"]);
    assert_eq!(verified["problems"], json!([]));
    assert_eq!(verified["events"], 100);
    let compacted = json(tmp.path(), &["compact"]);
    assert_eq!(compacted["report"]["events_removed"], 0);
}
