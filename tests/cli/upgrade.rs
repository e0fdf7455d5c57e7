//! A store written by annals 0.1, whose database files are in redb's older file format: every
//! open refuses it with a typed error naming the file and changes no byte; `annals upgrade`
//! converts it, after which every event, consumer position and view position is there, and a
//! second upgrade changes nothing.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use annals::StorageError;
use annals::state::StateStore;
use predicates::str::contains;

use crate::damaged_store::snapshot;
use crate::fixture::{annals, json};

/// The store the Pokémon example wrote with annals 0.1: 42 events in 3 event stores, consumer
/// `notify-trainer` and the SQL view `pokedex` both past position 42.
const FIXTURE: &str = "tests/fixtures/store-annals-0.1.tar.gz";

/// Unpacks the fixture into `root`; returns the store directory.
fn unpack(root: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let status = Process::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(root)
        .status()
        .expect("runs tar");
    assert!(status.success(), "tar unpacks {}", fixture.display());
    root.join("fixture-store")
}

#[test]
fn a_store_of_the_older_format_is_refused_by_every_open_and_changes_no_byte() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = unpack(root.path());
    let before = snapshot(&dir);

    annals()
        .arg("--dir")
        .arg(&dir)
        .arg("stats")
        .assert()
        .failure()
        .stderr(contains("index.redb"))
        .stderr(contains("older file format"))
        .stderr(contains("annals upgrade"));
    match annals::open(&dir) {
        Err(StorageError::FormatUpgradeRequired { path, found }) => {
            assert_eq!(path, dir.join("index.redb"));
            assert_eq!(found, 2);
        }
        other => panic!("expected FormatUpgradeRequired, got {other:?}"),
    }
    match StateStore::open(dir.join("state.redb")) {
        Err(StorageError::FormatUpgradeRequired { path, .. }) => {
            assert_eq!(path, dir.join("state.redb"));
        }
        other => panic!(
            "expected FormatUpgradeRequired, got {:?}",
            other.map(|_| ())
        ),
    }
    annals().arg("verify").arg(&dir).assert().code(2);
    assert!(before == snapshot(&dir), "a refused open changed the store");
}

#[test]
fn upgrade_converts_the_store_and_keeps_every_event_and_position() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = unpack(root.path());

    annals()
        .arg("upgrade")
        .arg(&dir)
        .assert()
        .success()
        .stdout(contains("2 file(s) converted"));
    let stats = json(&dir, &["stats"]);
    assert_eq!(stats["events"], 42);
    assert_eq!(stats["lastPosition"], 42);
    assert_eq!(stats["eventStores"], 3);
    assert_eq!(stats["aggregates"], 11);
    let consumers = json(&dir, &["consumers"]);
    assert_eq!(consumers["consumers"][0]["name"], "notify-trainer");
    assert_eq!(consumers["consumers"][0]["nextPosition"], 43);
    let views = json(&dir, &["views"]);
    assert_eq!(views["views"][0]["name"], "pokedex");
    assert_eq!(views["views"][0]["nextPosition"], 43);
    annals().arg("verify").arg(&dir).assert().success();

    // Already converted: a second run changes no byte.
    let converted = snapshot(&dir);
    let again = json(&dir, &["upgrade"]);
    assert_eq!(again["upgraded"], 0);
    assert!(
        converted == snapshot(&dir),
        "a second upgrade changed the store"
    );
    assert!(!dir.join("index.redb.upgrading").exists());
    assert!(!dir.join("state.redb.upgrading").exists());
}

#[test]
fn upgrade_refuses_a_store_that_is_open() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = unpack(root.path());
    annals().arg("upgrade").arg(&dir).assert().success();
    let open = annals::open(&dir).expect("the converted store opens");
    annals()
        .arg("upgrade")
        .arg(&dir)
        .assert()
        .code(3)
        .stderr(contains("open in another process"));
    drop(open);
}
