//! `consumers`, `views` and `dead-letters`, on a state file written by a real consumer, a
//! key-value view and an event action that gives up.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use annals::action::{ActionContext, ActionError, EventAction};
use annals::state::StateStore;
use annals::storage::{LoggedEvent, StorageAdapter};
use annals::subscription::Filter;
use annals::view::{KvTables, KvView};
use predicates::str::contains;
use serde_json::json;

use crate::fixture::{annals, json, pokemon_store};

/// Runs a consumer, a view and a failing action over the Pokémon store, then closes it all.
async fn runtime_state(dir: &Path) {
    pokemon_store(dir).await;
    let adapter: Arc<dyn StorageAdapter> = annals::open(dir).unwrap();
    let state = Arc::new(StateStore::open(dir.join("state.redb")).unwrap());
    state.set_checkpoint("mailer", 3).unwrap();
    let view = KvView::builder("levels", 1)
        .on_logged(
            Filter::all().stores(["POKEMONS"]),
            |t: &mut KvTables<'_>, e: &LoggedEvent| {
                t.put("seen", &e.event.aggregate_id, &e.event.version)
            },
        )
        .build(state.clone())
        .unwrap();
    let runner = view.run(adapter.clone());
    view.wait_for(5, Duration::from_secs(10)).await.unwrap();
    runner.stop().await.unwrap();
    let action = EventAction::new("notify", |_: LoggedEvent, _: ActionContext| async {
        Err::<(), _>(ActionError::permanent("the mail server refused"))
    })
    .filter(Filter::all().event_types(["POKEMON_CAUGHT"]));
    let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
    for _ in 0..500 {
        if !action.dead_letters(&state).unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn consumers_show_position_and_lag() {
    let tmp = tempfile::tempdir().unwrap();
    runtime_state(tmp.path()).await;
    let consumers = json(tmp.path(), &["consumers"]);
    assert_eq!(consumers["lastPosition"], 5);
    let rows = consumers["consumers"].as_array().unwrap();
    assert!(
        rows.contains(&json!({ "name": "mailer", "nextPosition": 3, "lag": 3 })),
        "{rows:?}"
    );
    assert!(rows.contains(&json!({ "name": "view:levels:v1", "nextPosition": 6, "lag": 0 })));
}

#[tokio::test]
async fn views_show_position_lag_and_state() {
    let tmp = tempfile::tempdir().unwrap();
    runtime_state(tmp.path()).await;
    let views = json(tmp.path(), &["views"]);
    assert_eq!(
        views["views"],
        json!([{ "name": "levels", "version": 1, "kind": "kv", "nextPosition": 6, "lag": 0,
            "active": true }])
    );
}

#[tokio::test]
async fn dead_letters_are_listed_dropped_and_retry_explains_itself() {
    let tmp = tempfile::tempdir().unwrap();
    runtime_state(tmp.path()).await;
    let letters = json(tmp.path(), &["dead-letters", "list"]);
    let letter = &letters[0];
    assert_eq!(letters.as_array().unwrap().len(), 1);
    assert_eq!(letter["action"], "notify");
    assert_eq!(letter["position"], 5);
    assert_eq!(letter["aggregate_id"], "pikachu");
    assert_eq!(letter["error"], "the mail server refused");
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["dead-letters", "retry", "notify", "5"])
        .assert()
        .code(2)
        .stderr(contains("EventAction::retry_dead_letter"));
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["dead-letters", "drop", "notify", "5"])
        .assert()
        .success()
        .stdout("dropped the dead letter of \"notify\" at position 5\n");
    assert_eq!(json(tmp.path(), &["dead-letters", "list"]), json!([]));
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .args(["dead-letters", "drop", "notify", "5"])
        .assert()
        .code(5);
}

#[tokio::test]
async fn a_missing_state_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    pokemon_store(tmp.path()).await;
    annals()
        .arg("--dir")
        .arg(tmp.path())
        .arg("consumers")
        .assert()
        .code(5)
        .stderr(contains(format!(
            "there is no state file at {}",
            tmp.path().join("state.redb").display()
        )));
}
