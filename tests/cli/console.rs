//! `annals --url`: the read commands against a running application's admin console, while the
//! application holds the store (which a local `--dir` could not open).

use std::sync::Arc;

use annals::admin::Console;
use annals::state::StateStore;
use annals::storage::LogAdapter;
use serde_json::{Value, json};

use crate::fixture::{annals, pokemon_store};

/// Runs `annals --url BASE ARGS` (on the blocking pool, so the console keeps serving) and
/// returns the exit status and stdout.
async fn remote(base: &str, args: &[&str]) -> (i32, String, String) {
    let mut command = annals();
    command
        .env_remove("ANNALS_URL")
        .env_remove("ANNALS_CONSOLE_TOKEN")
        .arg("--url")
        .arg(base)
        .args(args);
    let out = tokio::task::spawn_blocking(move || command.output().expect("runs"))
        .await
        .expect("joins");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn remote_json(base: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = remote(base, &all).await;
    assert_eq!(code, 0, "annals --url {base} {args:?}: {stderr}");
    serde_json::from_str(&stdout).expect("stdout is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_go_through_a_running_applications_console() {
    let dir = tempfile::tempdir().unwrap();
    pokemon_store(dir.path()).await;
    let log = Arc::new(LogAdapter::builder(dir.path()).open().unwrap());
    let state = Arc::new(StateStore::in_memory());
    state.set_checkpoint("mailer", 3).unwrap();
    let router = Console::for_log(log).state(state).router().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(annals::action::http::serve(listener, router));

    let stores = remote_json(&base, &["stores"]).await;
    assert_eq!(stores["stores"][0]["id"], "POKEMONS");
    assert_eq!(stores["stores"][0]["events"], 4);
    let stats = remote_json(&base, &["stats"]).await;
    assert_eq!(stats["head"], 5);

    let first = remote_json(&base, &["ls", "POKEMONS", "--limit", "1"]).await;
    assert_eq!(first["aggregates"][0]["aggregateId"], "pikachu");
    let token = first["nextPageToken"].as_str().expect("a next page");
    let second = remote_json(&base, &["ls", "POKEMONS", "--page-token", token]).await;
    assert_eq!(second["aggregates"][0]["aggregateId"], "bulbasaur");
    assert_eq!(second["nextPageToken"], Value::Null);

    let pikachu = remote_json(&base, &["events", "POKEMONS", "pikachu"]).await;
    assert_eq!(pikachu["events"].as_array().unwrap().len(), 3);
    assert_eq!(
        pikachu["events"][0]["payload"],
        json!({ "name": "Pikachu", "level": 5 })
    );
    let later = remote_json(&base, &["events", "POKEMONS", "pikachu", "--from", "3"]).await;
    assert_eq!(later["events"][0]["type"], "POKEMON_CAUGHT");

    let consumers = remote_json(&base, &["consumers"]).await;
    assert_eq!(consumers["consumers"][0]["name"], "mailer");
    assert_eq!(consumers["consumers"][0]["lag"], 3);

    // Tables for people.
    let (code, table, _) = remote(&base, &["stores"]).await;
    assert_eq!(code, 0);
    assert!(table.lines().any(|l| l.starts_with("POKEMONS")), "{table}");
    let (code, table, _) = remote(&base, &["events", "POKEMONS", "pikachu"]).await;
    assert_eq!(code, 0);
    assert!(table.contains("POKEMON_LEVELED_UP"), "{table}");

    // What does not exist is exit status 5; what cannot be reached, or asked, is 2.
    let (code, _, stderr) = remote(&base, &["events", "NOPE", "x"]).await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("NOPE"), "{stderr}");
    let (code, _, stderr) = remote("https://127.0.0.1:1", &["stores"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("SSH tunnel"), "{stderr}");
    let (code, _, _) = remote(&base, &["export"]).await;
    assert_eq!(code, 2);
    let (code, _, stderr) = remote(&base, &["dead-letters", "drop", "ocr", "1"]).await;
    assert_eq!(code, 2, "no token: {stderr}");
}
