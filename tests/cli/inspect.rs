//! `stats`, `stores`, `ls` (and its paging: a token alone continues with the page size it was
//! made with), `events`, `get`, `tail`, the errors people meet first (no store, a locked
//! store, nothing at a position), and reading a store another process holds.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use annals::storage::StorageAdapter;
use predicates::str::contains;
use serde_json::json;

use crate::fixture::{annals, event, json, pokemon_store};

#[tokio::test]
async fn stats_and_stores_report_the_real_figures() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let stats = json(tmp.path(), &["stats"]);
    assert_eq!(stats["eventStores"], 2);
    assert_eq!(stats["aggregates"], 3);
    assert_eq!(stats["events"], 5);
    assert_eq!(stats["lastPosition"], 5);
    assert_eq!(stats["segments"], 1);
    assert_eq!(stats["snapshots"]["records"], 0);
    let bytes = &stats["bytesOnDisk"];
    assert!(bytes["segments"].as_u64().unwrap() > 0 && bytes["index"].as_u64().unwrap() > 0);
    assert_eq!(
        bytes["total"].as_u64(),
        Some(
            ["segments", "index", "snapshots"]
                .iter()
                .map(|k| bytes[k].as_u64().unwrap())
                .sum()
        )
    );
    // A clean close checkpointed every event into the index.
    assert_eq!(
        stats["index"],
        json!({ "indexedThrough": 5, "unindexedEvents": 0 })
    );

    assert_eq!(
        json(tmp.path(), &["stores"]),
        json!([
            { "eventStoreId": "POKEMONS", "aggregates": 2, "events": 4 },
            { "eventStoreId": "TRAINERS", "aggregates": 1, "events": 1 }
        ])
    );
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .arg("stores")
        .assert()
        .success()
        .stdout("EVENT STORE  AGGREGATES  EVENTS\nPOKEMONS              2       4\nTRAINERS              1       1\n");
}

#[tokio::test]
async fn ls_pages_aggregate_ids_by_creation() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let first = json(tmp.path(), &["ls", "POKEMONS", "--limit", "1"]);
    assert_eq!(
        first["aggregateIds"],
        json!([{ "aggregateId": "pikachu", "initialEventTimestamp": "2024-05-01T12:00:00.000Z" }])
    );
    let token = first["nextPageToken"].as_str().expect("a second page");
    let second = json(
        tmp.path(),
        &["ls", "POKEMONS", "--limit", "1", "--page-token", token],
    );
    assert_eq!(second["aggregateIds"][0]["aggregateId"], "bulbasaur");
    assert_eq!(second["nextPageToken"], json!(null));
    let reversed = json(tmp.path(), &["ls", "POKEMONS", "--reverse"]);
    assert_eq!(reversed["aggregateIds"][0]["aggregateId"], "bulbasaur");
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["ls", "POKEMONS"])
        .assert()
        .success()
        .stdout(contains("pikachu       2024-05-01 12:00:00.000 UTC"));
}

/// The pages of `annals ls STORE ARGS…`, following each page's token with `ARGS…` plus
/// `--page-token` (and only that when `then` is empty), up to the last page.
fn pages(dir: &std::path::Path, first: &[&str], then: &[&str]) -> Vec<serde_json::Value> {
    let mut pages = vec![json(dir, &[&["ls", "HORDE"], first].concat())];
    while let Some(token) = pages.last().unwrap()["nextPageToken"].as_str() {
        let token = token.to_owned();
        let args = [&["ls", "HORDE"], then, &["--page-token", &token]].concat();
        pages.push(json(dir, &args));
        assert!(pages.len() < 20, "the listing ends");
    }
    pages
}

#[tokio::test]
async fn ls_continues_a_listing_with_the_page_size_of_its_token() {
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..7).map(|i| format!("mon-{i}")).collect();
    {
        let adapter = annals::open(tmp.path()).expect("opens");
        for (minute, id) in (0..).zip(&ids) {
            let appeared = event("HORDE", id, 1, minute, "APPEARED", json!({ "n": minute }));
            adapter.push_event_group(vec![appeared]).await.unwrap();
        }
        adapter.close();
    }

    let with_limit = pages(tmp.path(), &["--limit", "2"], &["--limit", "2"]);
    let token_only = pages(tmp.path(), &["--limit", "2"], &[]);
    assert_eq!(with_limit.len(), 4, "7 ids in pages of 2");
    assert_eq!(
        token_only, with_limit,
        "a token alone continues with its page size, page by page"
    );
    let listed: Vec<_> = token_only
        .iter()
        .flat_map(|page| page["aggregateIds"].as_array().unwrap().clone())
        .map(|entry| entry["aggregateId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids);
    // The same with filters and order kept in the token.
    let reversed = pages(tmp.path(), &["--limit", "3", "--reverse"], &[]);
    let sizes: Vec<_> = reversed
        .iter()
        .map(|page| page["aggregateIds"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(reversed[0]["aggregateIds"][0]["aggregateId"], "mon-6");
    // An explicit --limit still overrides the token's; without a token the default is 50.
    let first = json(tmp.path(), &["ls", "HORDE", "--limit", "2"]);
    let token = first["nextPageToken"].as_str().unwrap();
    let rest = json(
        tmp.path(),
        &["ls", "HORDE", "--limit", "5", "--page-token", token],
    );
    assert_eq!(rest["aggregateIds"].as_array().unwrap().len(), 5);
    assert_eq!(rest["nextPageToken"], json!(null));
    let all = json(tmp.path(), &["ls", "HORDE"]);
    assert_eq!(all["aggregateIds"].as_array().unwrap().len(), 7);
    assert_eq!(all["nextPageToken"], json!(null));
    // The table form prints a token that continues by itself.
    let out = annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["ls", "HORDE", "--limit", "4"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let printed = text
        .lines()
        .find_map(|l| l.strip_prefix("next page: --page-token '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("a next-page line");
    let next = json(tmp.path(), &["ls", "HORDE", "--page-token", printed]);
    assert_eq!(next["aggregateIds"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn events_and_get_show_one_aggregate_and_one_position() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let newest = json(
        tmp.path(),
        &["events", "POKEMONS", "pikachu", "--reverse", "--limit", "2"],
    );
    let versions: Vec<_> = newest
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].clone())
        .collect();
    assert_eq!(versions, [json!(3), json!(2)]);
    let middle = json(
        tmp.path(),
        &["events", "POKEMONS", "pikachu", "--from", "2", "--to", "2"],
    );
    assert_eq!(middle[0]["type"], "POKEMON_LEVELED_UP");
    assert_eq!(middle[0]["position"], 3);

    let fourth = json(tmp.path(), &["get", "4"]);
    assert_eq!(
        fourth,
        json!({ "aggregateId": "ash", "version": 1, "timestamp": "2024-05-01T12:02:00.000Z",
            "type": "TRAINER_CREATED", "payload": { "name": "Ash" }, "metadata": { "by": "test" },
            "eventStoreId": "TRAINERS", "position": 4 })
    );
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["get", "6"])
        .assert()
        .code(5)
        .stderr(contains("there is no event at position 6"))
        .stderr(contains("positions run from 1 to 5"));
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["events", "POKEMONS", "mew"])
        .assert()
        .code(5)
        .stderr(contains("store \"POKEMONS\" has no aggregate \"mew\""));
}

#[test]
fn a_missing_store_is_not_created_by_inspecting_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nowhere");
    annals()
        .arg("--dir")
        .arg(&dir)
        .arg("stats")
        .assert()
        .code(5)
        .stderr(contains("does not exist"));
    assert!(!dir.exists());
    annals()
        .arg("stats")
        .assert()
        .code(2)
        .stderr(contains("pass the store directory with --dir"));
}

#[tokio::test]
async fn read_commands_read_a_store_open_elsewhere_live() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let held = annals::open(tmp.path()).unwrap();
    let out = annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["--json", "stats"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading it live, read-only"));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["live"], true);
    assert_eq!(
        (stats["events"].clone(), stats["aggregates"].clone()),
        (json!(5), json!(3))
    );
    assert_eq!(stats["lastPosition"], 5);
    assert_eq!(stats["segments"], 1);
    let pikachu = json(tmp.path(), &["events", "POKEMONS", "pikachu"]);
    assert_eq!(pikachu.as_array().map(Vec::len), Some(3));
    assert_eq!(json(tmp.path(), &["get", "4"])["aggregateId"], "ash");
    let listed = json(tmp.path(), &["ls", "POKEMONS"]);
    assert_eq!(listed["aggregateIds"].as_array().map(Vec::len), Some(2));
    // The writer goes on as if nothing happened.
    held.push_event(event(
        "POKEMONS",
        "pikachu",
        4,
        9,
        "POKEMON_FAINTED",
        json!({}),
    ))
    .await
    .unwrap();
    assert_eq!(json(tmp.path(), &["get", "6"])["version"], 4);
}

#[tokio::test]
async fn commands_that_write_refuse_a_store_open_elsewhere_and_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let held = annals::open(tmp.path()).unwrap();
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["snapshots", "prune", "--keep", "1"])
        .assert()
        .code(3)
        .stderr(contains(format!(
            "{} is locked by another process",
            tmp.path().display()
        )))
        .stderr(contains("stop the program that has it open"));
    drop(held);
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["--read-only", "rebuild-index"])
        .assert()
        .code(2)
        .stderr(contains("--read-only is for commands that only read"));
    // With no writer, --read-only reads without the lock, and without writing.
    let stats = json(tmp.path(), &["--read-only", "stats"]);
    assert_eq!(
        (stats["live"].clone(), stats["events"].clone()),
        (json!(true), json!(5))
    );
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .arg("stats")
        .assert()
        .success();
}

#[tokio::test]
async fn tail_follows_the_appends_of_the_process_holding_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let held = annals::open(tmp.path()).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("annals");
    let mut child = std::process::Command::new(bin)
        .arg("--dir")
        .arg(tmp.path())
        .args(["--json", "tail", "--from-position", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut note = String::new();
    stderr.read_line(&mut note).unwrap();
    assert!(note.contains("reading it live"), "{note}");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for version in 4..=6 {
        held.push_event(event(
            "POKEMONS",
            "pikachu",
            version,
            9,
            "POKEMON_FAINTED",
            json!({}),
        ))
        .await
        .unwrap();
        let line: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(line["position"], version + 2);
        assert_eq!(line["version"], version);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn postgres_without_support_says_so() {
    annals()
        .args(["--postgres", "postgres://localhost/annals", "stats"])
        .assert()
        .code(2)
        .stderr(contains("PostgreSQL"));
}

#[tokio::test]
async fn tail_follows_the_log_filtered_and_stops_when_killed() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let bin = assert_cmd::cargo::cargo_bin("annals");
    let mut child = std::process::Command::new(bin)
        .arg("--dir")
        .arg(tmp.path())
        .args([
            "--json",
            "tail",
            "--from-position",
            "1",
            "--store",
            "POKEMONS",
        ])
        .args(["--type", "POKEMON_APPEARED", "--type", "POKEMON_CAUGHT"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let line: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        seen.push((
            line["position"].as_u64().unwrap(),
            line["type"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        seen,
        [
            (1, "POKEMON_APPEARED".into()),
            (2, "POKEMON_APPEARED".into()),
            (5, "POKEMON_CAUGHT".into())
        ]
    );
    // Still running, waiting for more.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn tail_ends_quietly_when_its_reader_closes_the_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = annals::open(tmp.path()).unwrap();
    let many: Vec<_> = (1..=5000)
        .map(|v| crate::fixture::event("P", "a", v, 0, "T", json!({ "n": v })))
        .collect();
    adapter.push_event_group(many).await.unwrap();
    drop(adapter);
    let bin = assert_cmd::cargo::cargo_bin("annals");
    let mut child = std::process::Command::new(bin)
        .arg("--dir")
        .arg(tmp.path())
        .args(["tail", "--from-position", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("#1  P/a v1  T  {\"n\":1}"), "{first}");
    drop(stdout); // like `annals tail | head -1`
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a closed pipe ends tail with success"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
