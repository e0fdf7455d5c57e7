//! `verify`, `rebuild-index` and `snapshots prune`.

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
