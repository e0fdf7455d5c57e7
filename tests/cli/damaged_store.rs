//! A damaged store met through the command line: a segment truncated below its header after
//! the store was closed cleanly is refused by every command that opens the store (non-zero
//! exit, the file named), no byte of the store changes, and `verify` keeps reporting it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use predicates::str::contains;

use crate::fixture::annals;

/// Every file under `dir` (the lock file aside) with its bytes.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("lists the store") {
            let path = entry.expect("reads an entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n != "LOCK") {
                let bytes = std::fs::read(&path).expect("reads a file");
                files.insert(path, bytes);
            }
        }
    }
    files
}

#[test]
fn a_segment_truncated_to_seven_bytes_makes_stats_fail_and_changes_no_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.jsonl");
    let line = |id: &str, version: u64| {
        format!(
            concat!(
                r#"{{"eventStoreId":"POKEMONS","aggregateId":"{}","version":{},"#,
                r#""timestamp":"2024-05-01T12:00:00.000Z","type":"APPEARED","#,
                r#""payload":{{"level":{}}}}}"#
            ),
            id, version, version
        )
    };
    let lines = [line("pikachu", 1), line("pikachu", 2), line("bulbasaur", 1)];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let dir = tmp.path().join("store");
    annals()
        .arg("--dir")
        .arg(&dir)
        .arg("import")
        .arg(&file)
        .assert()
        .success()
        .stdout(contains("imported 3 events"));

    // What `truncate -s 7 STORE/log/0000000001.seg` does.
    let segment = dir.join("log").join("0000000001.seg");
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(7)
        .unwrap();
    let before = snapshot(&dir);

    annals()
        .arg("verify")
        .arg(&dir)
        .assert()
        .code(1)
        .stdout(contains("0000000001.seg"));
    annals()
        .arg("--dir")
        .arg(&dir)
        .arg("stats")
        .assert()
        .failure()
        .stderr(contains("0000000001.seg"))
        .stderr(contains("7 bytes"));
    assert!(
        snapshot(&dir) == before,
        "a refused open changed the store's files"
    );
    annals()
        .arg("verify")
        .arg(&dir)
        .assert()
        .code(1)
        .stdout(contains("0000000001.seg"));
    annals()
        .arg("--dir")
        .arg(&dir)
        .args(["events", "POKEMONS", "pikachu"])
        .assert()
        .failure();
    assert!(
        snapshot(&dir) == before,
        "a second command changed the files"
    );
}
