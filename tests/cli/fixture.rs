//! Stores for the tests, written through the library, and helpers to run the binary.

use std::path::Path;

use annals::Timestamp;
use annals::codec;
use annals::storage::{AppendEvent, EncodedEvent, StorageAdapter};
use assert_cmd::Command;
use serde_json::{Value, json};

/// The binary, with no store from the environment.
pub fn annals() -> Command {
    let mut cmd = Command::cargo_bin("annals").expect("the annals binary is built");
    cmd.env_remove("ANNALS_DIR").env_remove("ANNALS_POSTGRES");
    cmd
}

/// Runs `annals --json ARGS` on `dir`, expects success, and parses stdout.
pub fn json(dir: &Path, args: &[&str]) -> Value {
    let out = annals()
        .arg("--dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "annals {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// One event with a JSON payload.
pub fn event(
    store: &str,
    id: &str,
    version: u64,
    minute: i64,
    kind: &str,
    payload: Value,
) -> AppendEvent {
    AppendEvent {
        event_store_id: store.to_owned(),
        event: EncodedEvent {
            aggregate_id: id.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_714_564_800_000 + minute * 60_000),
            event_type: kind.to_owned(),
            schema_version: 1,
            payload: codec::encode(&payload).expect("encodes"),
            metadata: codec::encode(&json!({ "by": "test" })).expect("encodes"),
        },
    }
}

/// A store of two event stores, five events at positions 1 to 5: POKEMONS (pikachu v1 to v3,
/// bulbasaur v1) and TRAINERS (ash v1).
pub async fn pokemon_store(dir: &Path) {
    let adapter = annals::open(dir).expect("opens");
    let appeared = |name: &str, level: u32| json!({ "name": name, "level": level });
    let commits = vec![
        vec![event(
            "POKEMONS",
            "pikachu",
            1,
            0,
            "POKEMON_APPEARED",
            appeared("Pikachu", 5),
        )],
        vec![event(
            "POKEMONS",
            "bulbasaur",
            1,
            1,
            "POKEMON_APPEARED",
            appeared("Bulbasaur", 3),
        )],
        vec![
            event(
                "POKEMONS",
                "pikachu",
                2,
                2,
                "POKEMON_LEVELED_UP",
                Value::Null,
            ),
            event(
                "TRAINERS",
                "ash",
                1,
                2,
                "TRAINER_CREATED",
                json!({ "name": "Ash" }),
            ),
        ],
        vec![event(
            "POKEMONS",
            "pikachu",
            3,
            3,
            "POKEMON_CAUGHT",
            json!({ "trainer": "ash" }),
        )],
    ];
    for commit in commits {
        adapter.push_event_group(commit).await.expect("pushes");
    }
    adapter.close();
}

/// The lines `annals export` prints for `dir`.
pub fn export_lines(dir: &Path) -> Vec<Value> {
    let out = annals()
        .arg("--dir")
        .arg(dir)
        .arg("export")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}
