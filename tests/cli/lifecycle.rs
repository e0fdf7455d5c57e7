//! `delete`, `restore`, `truncate` and `retention`.

use predicates::str::contains;
use serde_json::{Value, json};

use crate::fixture::{annals, json, pokemon_store};

fn versions(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .expect("an array of events")
        .iter()
        .map(|e| e["version"].as_u64().expect("a version"))
        .collect()
}

/// `annals events POKEMONS <id>` finds no event (exit 5).
fn absent(dir: &std::path::Path, id: &str) {
    annals()
        .arg("--dir")
        .arg(dir)
        .args(["events", "POKEMONS", id])
        .assert()
        .code(5)
        .stderr(contains("has no aggregate"));
}

#[tokio::test]
async fn delete_hides_an_aggregate_restore_brings_it_back_and_hard_is_final() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let deleted = json(tmp.path(), &["delete", "POKEMONS", "pikachu"]);
    assert_eq!(deleted["hard"], false);
    assert_eq!(
        deleted["position"], 6,
        "the lifecycle event follows the five events"
    );
    // A deleted aggregate reads as one that does not exist.
    absent(tmp.path(), "pikachu");
    let stores = json(tmp.path(), &["stores"]);
    assert!(
        stores
            .as_array()
            .unwrap()
            .contains(&json!({ "eventStoreId": "POKEMONS", "aggregates": 1, "events": 1 })),
        "{stores}"
    );
    json(tmp.path(), &["restore", "POKEMONS", "pikachu"]);
    let events = json(tmp.path(), &["events", "POKEMONS", "pikachu"]);
    assert_eq!(versions(&events), [1, 2, 3]);

    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["delete", "POKEMONS", "pikachu", "--hard"])
        .assert()
        .code(0)
        .stdout(contains("deleted POKEMONS/pikachu (hard)"));
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["restore", "POKEMONS", "pikachu"])
        .assert()
        .code(4)
        .stderr(contains("is hard deleted"));
}

#[tokio::test]
async fn lifecycle_commands_refuse_read_only_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["--read-only", "delete", "POKEMONS", "pikachu"])
        .assert()
        .code(2)
        .stderr(contains("--read-only is for commands that only read"));
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["retention", "POKEMONS", "--max-count", "0"])
        .assert()
        .code(4)
        .stderr(contains("max_count must be at least 1"));
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["retention", "POKEMONS", "--max-age", "30x"])
        .assert()
        .code(2)
        .stderr(contains("unknown unit"));
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["delete", "bad store", "pikachu"])
        .assert()
        .code(4);
    // Nothing was recorded.
    assert_eq!(json(tmp.path(), &["stats"])["events"], 5);
}

#[tokio::test]
async fn truncate_and_retention_hide_old_versions() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let truncated = json(
        tmp.path(),
        &["truncate", "POKEMONS", "pikachu", "--before", "2"],
    );
    assert_eq!(truncated["before"], 2);
    let events = json(tmp.path(), &["events", "POKEMONS", "pikachu"]);
    assert_eq!(versions(&events), [2, 3]);

    let set = json(tmp.path(), &["retention", "POKEMONS", "--max-count", "1"]);
    assert_eq!(set["retention"], json!({ "maxAgeMs": null, "maxCount": 1 }));
    let events = json(tmp.path(), &["events", "POKEMONS", "pikachu"]);
    assert_eq!(versions(&events), [3]);
    let shown = json(tmp.path(), &["retention", "POKEMONS"]);
    assert_eq!(
        shown["retention"],
        json!({ "maxAgeMs": null, "maxCount": 1 })
    );

    // The fixture's events are from 2024: a 30-day age expires them all.
    json(tmp.path(), &["retention", "POKEMONS", "--max-age", "30d"]);
    absent(tmp.path(), "bulbasaur");
    json(tmp.path(), &["retention", "POKEMONS", "--clear"]);
    let shown = json(tmp.path(), &["retention", "POKEMONS"]);
    assert_eq!(
        shown["retention"],
        json!({ "maxAgeMs": null, "maxCount": null })
    );
    let events = json(tmp.path(), &["events", "POKEMONS", "pikachu"]);
    assert_eq!(versions(&events), [2, 3], "the truncation stays");
}

#[tokio::test]
async fn an_export_leaves_deleted_aggregates_and_lifecycle_events_out_and_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, copy) = (tmp.path().join("source"), tmp.path().join("copy"));
    pokemon_store(&source).await;
    json(&source, &["delete", "POKEMONS", "bulbasaur", "--hard"]);
    let file = tmp.path().join("events.jsonl");
    annals()
        .arg("--dir")
        .arg(&source)
        .args(["export", "-o"])
        .arg(&file)
        .assert()
        .success();
    annals()
        .arg("--dir")
        .arg(&copy)
        .arg("import")
        .arg(&file)
        .assert()
        .success()
        .stdout(contains("imported 4 events"));
    let ids = json(&copy, &["ls", "POKEMONS"]);
    let ids: Vec<&str> = ids["aggregateIds"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["aggregateId"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["pikachu"]);
}
