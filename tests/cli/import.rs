//! `export` and `import`: round trips (byte for byte: member order, `null`s, absent payloads
//! and metadata, the whole 64-bit integer range and floats kept), Castore files, resuming, and
//! bad files (invalid JSON, unknown keys, duplicate keys, integers MessagePack cannot hold)
//! refused with the line named and nothing of a failed batch written.

use std::path::Path;

use predicates::str::contains;
use serde_json::json;

use crate::fixture::{annals, export_lines, json, pokemon_store};

fn import(dir: &Path, file: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    annals()
        .arg("--dir")
        .arg(dir)
        .arg("import")
        .arg(file)
        .args(extra)
        .assert()
}

#[tokio::test]
async fn export_then_import_into_a_fresh_store_gives_identical_events_and_aggregates() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, copy) = (tmp.path().join("source"), tmp.path().join("copy"));
    pokemon_store(&source).await;
    let file = tmp.path().join("events.jsonl");
    annals()
        .arg("--dir")
        .arg(&source)
        .args(["export", "-o"])
        .arg(&file)
        .assert()
        .success();

    let exported = export_lines(&source);
    assert_eq!(exported.len(), 5);
    assert_eq!(
        exported[0],
        json!({ "aggregateId": "pikachu", "version": 1, "timestamp": "2024-05-01T12:00:00.000Z",
            "type": "POKEMON_APPEARED", "payload": { "name": "Pikachu", "level": 5 },
            "metadata": { "by": "test" }, "eventStoreId": "POKEMONS", "position": 1 })
    );
    assert_eq!(
        exported[2].get("payload"),
        Some(&serde_json::Value::Null),
        "a nil payload is written null"
    );

    import(&copy, &file, &[])
        .success()
        .stdout(contains("imported 5 events"));
    assert_eq!(
        export_lines(&copy),
        exported,
        "the same events at the same positions"
    );
    for store in ["POKEMONS", "TRAINERS"] {
        assert_eq!(json(&copy, &["ls", store]), json(&source, &["ls", store]));
    }
    assert_eq!(json(&copy, &["stores"]), json(&source, &["stores"]));
    assert_eq!(
        json(&copy, &["events", "POKEMONS", "pikachu"])
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Importing again is a no-op that skips every event: imports resume.
    let again = json(&copy, &["import", file.to_str().unwrap()]);
    assert_eq!(again["imported"], 0);
    assert_eq!(again["skipped"], 5);
    assert_eq!(export_lines(&copy), exported);
}

#[tokio::test]
async fn export_filters_by_store_and_start_position() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    let out = annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["export", "--store", "POKEMONS", "--from-position", "3"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let positions: Vec<_> = lines
        .iter()
        .map(|l| l["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [3, 5]);
}

#[test]
fn a_hand_written_castore_file_imports_into_the_store_given() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("castore.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"aggregateId":"pikachu","version":1,"timestamp":"2024-05-01T14:00:00.000+02:00","type":"POKEMON_APPEARED","payload":{"name":"Pikachu","level":5},"metadata":{"trigger":"random"}}"#,
            "\n\n",
            r#"{"aggregateId":"pikachu","version":2,"timestamp":"2024-05-01T12:05:00Z","type":"POKEMON_LEVELED_UP"}"#,
            "\n"
        ),
    )
    .unwrap();
    let dir = tmp.path().join("store");
    import(&dir, &file, &[])
        .code(4)
        .stderr(contains("castore.jsonl:1: the event has no eventStoreId"));
    assert!(!dir.exists(), "a refused file creates no store");

    import(&dir, &file, &["--store", "POKEMONS"]).success();
    let events = json(&dir, &["events", "POKEMONS", "pikachu"]);
    assert_eq!(
        events,
        json!([
            { "aggregateId": "pikachu", "version": 1, "timestamp": "2024-05-01T12:00:00.000Z",
              "type": "POKEMON_APPEARED", "payload": { "name": "Pikachu", "level": 5 },
              "metadata": { "trigger": "random" }, "eventStoreId": "POKEMONS", "position": 1 },
            { "aggregateId": "pikachu", "version": 2, "timestamp": "2024-05-01T12:05:00.000Z",
              "type": "POKEMON_LEVELED_UP", "eventStoreId": "POKEMONS", "position": 2 }
        ])
    );
}

/// Writes `lines` (one JSON object each) to a file in `dir`.
fn file_of(dir: &Path, name: &str, lines: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

const P1: &str = r#"{"eventStoreId":"P","aggregateId":"a","version":1,"timestamp":"2024-01-01T00:00:00Z","type":"T","payload":1}"#;
const P2: &str = r#"{"eventStoreId":"P","aggregateId":"a","version":2,"timestamp":"2024-01-01T00:00:00Z","type":"T","payload":2}"#;
const B1: &str = r#"{"eventStoreId":"P","aggregateId":"b","version":1,"timestamp":"2024-01-01T00:00:00Z","type":"T","payload":1}"#;

fn events_in(dir: &Path) -> u64 {
    json(dir, &["stats"])["events"].as_u64().unwrap()
}

#[test]
fn invalid_json_and_missing_fields_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let broken = file_of(tmp.path(), "broken.jsonl", &[P1, "{not json", P2]);
    import(&dir, &broken, &[])
        .code(4)
        .stderr(contains("broken.jsonl:2: invalid JSON"));
    let missing = file_of(
        tmp.path(),
        "missing.jsonl",
        &[
            P1,
            r#"{"eventStoreId":"P","aggregateId":"a","timestamp":"2024-01-01T00:00:00Z","type":"T"}"#,
        ],
    );
    import(&dir, &missing, &[]).code(4).stderr(contains(
        "missing.jsonl:2: not a Castore event detail: missing field `version`",
    ));
    let bad_time = file_of(
        tmp.path(),
        "time.jsonl",
        &[
            r#"{"eventStoreId":"P","aggregateId":"a","version":1,"timestamp":"yesterday","type":"T"}"#,
        ],
    );
    import(&dir, &bad_time, &[])
        .code(4)
        .stderr(contains("time.jsonl:1: invalid timestamp"));
    assert!(!dir.exists(), "nothing was written");
}

#[test]
fn version_gaps_are_refused_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // A gap inside the file is found before anything is written.
    let gap = file_of(
        tmp.path(),
        "gap.jsonl",
        &[P1, &P2.replace("\"version\":2", "\"version\":3")],
    );
    import(&dir, &gap, &[]).code(4).stderr(contains(
        "gap.jsonl:2: store \"P\", aggregate \"a\": version 3 does not follow version 1",
    ));
    assert!(!dir.exists());
    // A file that starts past the store's next version is a gap against the store.
    let later = file_of(tmp.path(), "later.jsonl", &[P2]);
    import(&dir, &later, &[])
        .code(4)
        .stderr(contains("later.jsonl:1: store \"P\", aggregate \"a\": version 2 leaves a gap; the store's next version is 1"));
    assert_eq!(events_in(&dir), 0);
}

#[test]
fn a_different_event_at_an_existing_version_fails_its_batch_and_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    import(&dir, &file_of(tmp.path(), "first.jsonl", &[P1]), &[]).success();
    // Batches of two: [B1, P1'] fails on P1' (payload differs), so B1 is not written either.
    let differing = P1.replace("\"payload\":1", "\"payload\":99");
    let file = file_of(tmp.path(), "second.jsonl", &[B1, &differing, P2]);
    import(&dir, &file, &["--batch", "2"])
        .code(4)
        .stderr(contains(
            "second.jsonl:2: store \"P\", aggregate \"a\", version 1 already exists (position 1) \
             with a different payload",
        ));
    assert_eq!(
        events_in(&dir),
        1,
        "nothing of the failed batch was written"
    );
    let b = annals()
        .arg("--dir")
        .arg(&dir)
        .args(["events", "P", "b"])
        .assert();
    b.code(5);
}

#[test]
fn a_failed_batch_keeps_the_batches_before_it_and_a_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    import(&dir, &file_of(tmp.path(), "seed.jsonl", &[B1]), &[]).success();
    // Batch 1 = [P1] goes in; batch 2 = [B1 differing] fails.
    let differing = B1.replace("\"type\":\"T\"", "\"type\":\"U\"");
    let file = file_of(tmp.path(), "mixed.jsonl", &[P1, &differing]);
    import(&dir, &file, &["--batch", "1"])
        .code(4)
        .stderr(contains("with a different type"));
    assert_eq!(events_in(&dir), 2, "the first batch stays");
    // Fixed file: the rerun skips what is there and adds the rest.
    let fixed = file_of(tmp.path(), "fixed.jsonl", &[P1, B1, P2]);
    let report = json(&dir, &["import", fixed.to_str().unwrap()]);
    assert_eq!(
        (report["imported"].as_u64(), report["skipped"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(events_in(&dir), 3);
}

/// A file in the export's own shape: payloads and metadata with unsorted keys and `null`
/// members, `null` and absent payloads and metadata, the ends of the 64-bit integer range,
/// floats, non-ASCII strings, a schema version, two stores.
const FAITHFUL: [&str; 8] = [
    r#"{"aggregateId":"m","version":1,"timestamp":"2024-05-01T12:00:00.000Z","type":"T","payload":{"zeta":1,"alpha":{"y":null,"b":[3,{"k":null,"a":true}]},"mid":null},"metadata":{"z":"é😀\n\"q\"","a":null},"eventStoreId":"S","position":1}"#,
    r#"{"aggregateId":"m","version":2,"timestamp":"2024-05-01T12:01:00.000Z","type":"T","payload":null,"metadata":null,"eventStoreId":"S","position":2}"#,
    r#"{"aggregateId":"m","version":3,"timestamp":"2024-05-01T12:02:00.000Z","type":"U","eventStoreId":"S","position":3}"#,
    r#"{"aggregateId":"m","version":4,"timestamp":"2024-05-01T12:03:00.000Z","type":"T","payload":{"max":18446744073709551615,"min":-9223372036854775808,"neg":-1,"zero":0,"f":1.5,"g":-0.25,"tiny":1e-7,"huge":1e+300,"arr":[2.0,-3.5e-12]},"eventStoreId":"S","position":4,"schemaVersion":2}"#,
    r#"{"aggregateId":"n","version":1,"timestamp":"2024-05-01T12:04:00.000Z","type":"T","metadata":{"b":2,"a":1},"eventStoreId":"S2","position":5}"#,
    r#"{"aggregateId":"n","version":2,"timestamp":"2024-05-01T12:05:00.000Z","type":"T","payload":"just a string","metadata":[],"eventStoreId":"S2","position":6}"#,
    r#"{"aggregateId":"n","version":3,"timestamp":"2024-05-01T12:06:00.000Z","type":"T","payload":{},"metadata":false,"eventStoreId":"S2","position":7}"#,
    r#"{"aggregateId":"m","version":5,"timestamp":"2024-05-01T12:07:00.000Z","type":"T","payload":{"b":null,"a":null},"metadata":{"trace":{"z":[],"a":{}}},"eventStoreId":"S","position":8}"#,
];

#[test]
fn an_export_gives_back_the_imported_file_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let file = file_of(tmp.path(), "faithful.jsonl", &FAITHFUL);
    import(&dir, &file, &[]).success();
    let exported = tmp.path().join("exported.jsonl");
    annals()
        .arg("--dir")
        .arg(&dir)
        .args(["export", "-o"])
        .arg(&exported)
        .assert()
        .success();
    let (written, read) = (
        std::fs::read(&file).unwrap(),
        std::fs::read(&exported).unwrap(),
    );
    assert_eq!(
        String::from_utf8_lossy(&read),
        String::from_utf8_lossy(&written),
        "export(import(file)) == file"
    );
    assert_eq!(read, written, "byte for byte");
    // The inspecting commands show the same order and nulls.
    let out = annals()
        .arg("--dir")
        .arg(&dir)
        .args(["--json", "get", "1"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<_> = shown["payload"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(
        String::from_utf8_lossy(&out.stdout).find("\"zeta\"")
            < String::from_utf8_lossy(&out.stdout).find("\"alpha\""),
        "members in their order"
    );
    // An import of the export is the same events: all skipped.
    let again = json(&dir, &["import", exported.to_str().unwrap()]);
    assert_eq!(
        (again["imported"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(8))
    );
    // A null payload is not an absent one: the store tells them apart.
    let absent = FAITHFUL[1].replace(r#""payload":null,"#, "");
    let file = file_of(tmp.path(), "absent.jsonl", &[&absent]);
    import(&dir, &file, &[]).code(4).stderr(contains(
        "absent.jsonl:1: store \"S\", aggregate \"m\", version 2 already exists (position 2) \
         with a different payload",
    ));
    // So does member order.
    let reordered = FAITHFUL[4].replace(r#"{"b":2,"a":1}"#, r#"{"a":1,"b":2}"#);
    let file = file_of(tmp.path(), "reordered.jsonl", &[&reordered]);
    import(&dir, &file, &[])
        .code(4)
        .stderr(contains("with a different metadata"));
}

#[test]
fn lines_an_import_could_not_keep_whole_are_refused_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let refused = [
        (
            P1.replace(
                r#""payload":1"#,
                r#""payload":{"big":18446744073709551616}"#,
            ),
            "invalid JSON: the integer 18446744073709551616 is outside the range",
        ),
        (
            P1.replace(r#""payload":1"#, r#""payload":-9223372036854775809"#),
            "invalid JSON: the integer -9223372036854775809 is outside the range",
        ),
        (
            P1.replace(r#""payload":1"#, r#""payload":1e999"#),
            "invalid JSON: the number 1e999 is too large for a 64-bit float",
        ),
        (
            P1.replace(r#""payload":1"#, r#""payload":{"a":1,"a":2}"#),
            "invalid JSON: duplicate key \"a\"",
        ),
        (
            P1.replace(r#""type":"T""#, r#""type":"T","type":"U""#),
            "invalid JSON: duplicate key \"type\"",
        ),
        (
            P1.replace(r#""type":"T""#, r#""type":"T","trigger":"random""#),
            "not a Castore event detail: unknown key \"trigger\"",
        ),
        (
            P1.replace(r#""version":1"#, r#""version":-1"#),
            "not a Castore event detail: invalid type: `version` must be a non-negative integer",
        ),
        (
            "[1]".to_owned(),
            "not a Castore event detail: a line must be a JSON object, not an array",
        ),
    ];
    for (n, (line, message)) in refused.iter().enumerate() {
        let name = format!("refused{n}.jsonl");
        let file = file_of(tmp.path(), &name, &[P1, B1, line]);
        import(&dir, &file, &[])
            .code(4)
            .stderr(contains(format!("{name}:3: {message}")));
    }
    let unknown = file_of(
        tmp.path(),
        "unknown.jsonl",
        &[&P1.replace(r#""type":"T""#, r#""type":"T","extra":null"#)],
    );
    import(&dir, &unknown, &[]).code(4).stderr(contains(
        "hint: an event line holds only aggregateId, version, timestamp, type, payload, \
         metadata, eventStoreId, position, schemaVersion",
    ));
    assert!(!dir.exists(), "nothing was written");
    // `null` stands for an absent eventStoreId, position or schemaVersion.
    let nulls = P1.replace(
        r#""type":"T""#,
        r#""type":"T","position":null,"schemaVersion":null"#,
    );
    let nulls = nulls.replace(r#""eventStoreId":"P""#, r#""eventStoreId":null"#);
    let file = file_of(tmp.path(), "nulls.jsonl", &[&nulls]);
    import(&dir, &file, &["--store", "P"]).success();
    assert_eq!(events_in(&dir), 1);
}

/// A typed store reads what an import of a Castore file wrote, payload and metadata absent
/// included: no bytes read as nil.
#[tokio::test]
async fn a_castore_event_without_payload_or_metadata_reads_in_a_typed_store() {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Appeared {
        pub name: String,
    }
    annals::events! {
        #[derive(PartialEq)]
        pub enum PokemonEvent {
            Appeared(Appeared) = "POKEMON_APPEARED",
            LeveledUp(()) = "POKEMON_LEVELED_UP",
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let file = file_of(
        tmp.path(),
        "castore.jsonl",
        &[
            r#"{"aggregateId":"pikachu","version":1,"timestamp":"2024-05-01T12:00:00.000Z","type":"POKEMON_APPEARED","payload":{"name":"Pikachu"}}"#,
            r#"{"aggregateId":"pikachu","version":2,"timestamp":"2024-05-01T12:05:00.000Z","type":"POKEMON_LEVELED_UP"}"#,
            r#"{"aggregateId":"pikachu","version":3,"timestamp":"2024-05-01T12:06:00.000Z","type":"POKEMON_LEVELED_UP","payload":null,"metadata":null}"#,
        ],
    );
    import(&dir, &file, &["--store", "POKEMONS"]).success();
    let adapter = annals::open(&dir).expect("opens");
    let store = annals::EventStore::builder(
        "POKEMONS",
        |n: Option<u32>, _: &annals::EventDetail<PokemonEvent>| n.unwrap_or(0) + 1,
    )
    .storage_adapter(adapter.clone())
    .build()
    .unwrap();
    let events = store
        .get_events("pikachu", Default::default())
        .await
        .expect("every imported event decodes");
    let kinds: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
    assert_eq!(
        kinds,
        [
            PokemonEvent::Appeared(Appeared {
                name: "Pikachu".into()
            }),
            PokemonEvent::LeveledUp(()),
            PokemonEvent::LeveledUp(()),
        ]
    );
    adapter.close();
}
