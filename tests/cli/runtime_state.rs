//! `consumers`, `views` and `dead-letters`, on a state file written by a real consumer, a
//! key-value view and an event action that gives up; and a retry requested with the tool,
//! carried out by the action when the application (here, the test) runs it again.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::action::{ActionContext, ActionError, EventAction, dead_letter};
use annals::state::StateStore;
use annals::storage::{LoggedEvent, Position, StorageAdapter};
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

/// Runs the application's `notify` action again on the store at `dir` until its dead letter at
/// position 5 has been retried (removed, or kept without its mark), then stops and closes
/// everything. The action fails permanently unless `fixed`. Returns the positions it ran on.
async fn run_notify_again(dir: &Path, fixed: bool) -> Vec<Position> {
    let adapter: Arc<dyn StorageAdapter> = annals::open(dir).unwrap();
    let state = Arc::new(StateStore::open(dir.join("state.redb")).unwrap());
    let ran = Arc::new(Mutex::new(Vec::new()));
    let seen = ran.clone();
    let action = EventAction::new("notify", move |event: LoggedEvent, _: ActionContext| {
        seen.lock().unwrap().push(event.position);
        async move {
            if fixed {
                Ok(())
            } else {
                Err(ActionError::permanent("the mail server refused again"))
            }
        }
    })
    .filter(Filter::all().event_types(["POKEMON_CAUGHT"]));
    let runner = action.spawn(adapter, state.clone()).unwrap();
    let retried = || {
        dead_letter::get(&state, "notify", 5)
            .unwrap()
            .is_none_or(|letter| letter.retry_requested_at.is_none())
    };
    for _ in 0..1000 {
        if retried() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        retried(),
        "safety net: the runner did not retry the marked letter"
    );
    runner.stop().await.unwrap();
    ran.lock().unwrap().clone()
}

#[tokio::test]
async fn retry_marks_the_letter_and_the_restarted_action_retries_it() {
    let tmp = tempfile::tempdir().unwrap();
    runtime_state(tmp.path()).await;
    let retry = |args: &[&str]| {
        let mut cmd = annals();
        cmd.arg("--dir")
            .arg(tmp.path())
            .args(["dead-letters", "retry"])
            .args(args);
        cmd
    };
    retry(&["notify", "5"]).assert().success().stdout(
        "marked the dead letter of \"notify\" at position 5 for retry: the action retries it \
         when the application next starts it\n",
    );
    let letters = json(tmp.path(), &["dead-letters", "list"]);
    assert_eq!(letters.as_array().unwrap().len(), 1);
    let requested = letters[0]["retry_requested_at"].as_str().unwrap();
    assert!(
        requested.parse::<annals::Timestamp>().is_ok(),
        "{requested}"
    );
    assert_eq!(letters[0]["attempts"], 1);

    // Nothing to mark: exit 5, and nothing changes. Without a position or --all: usage error.
    retry(&["notify", "4"]).assert().code(5).stderr(contains(
        "action \"notify\" has no dead letter at position 4",
    ));
    retry(&["mailer", "--all"])
        .assert()
        .code(5)
        .stderr(contains("action \"mailer\" has no dead letters"));
    retry(&["notify"]).assert().code(2);
    retry(&["notify", "5", "--all"]).assert().code(2);

    // The application runs the action again, still failing: the letter stays, unmarked, with
    // the attempt counted, and is not retried again until asked.
    assert_eq!(run_notify_again(tmp.path(), false).await, [5]);
    let letters = json(tmp.path(), &["dead-letters", "list"]);
    assert_eq!(letters[0]["retry_requested_at"], json!(null));
    assert_eq!(letters[0]["attempts"], 2);
    assert_eq!(letters[0]["error"], "the mail server refused again");

    // Marked again (all of the action's letters), with the fault fixed: retried and removed.
    assert_eq!(
        json(tmp.path(), &["dead-letters", "retry", "notify", "--all"]),
        json!({ "action": "notify", "positions": [5], "retryRequested": true })
    );
    assert_eq!(run_notify_again(tmp.path(), true).await, [5]);
    assert_eq!(json(tmp.path(), &["dead-letters", "list"]), json!([]));
}

#[tokio::test]
async fn dead_letters_are_listed_and_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    runtime_state(tmp.path()).await;
    let letters = json(tmp.path(), &["dead-letters", "list"]);
    let letter = &letters[0];
    assert_eq!(letters.as_array().unwrap().len(), 1);
    assert_eq!(letter["action"], "notify");
    assert_eq!(letter["position"], 5);
    assert_eq!(letter["aggregate_id"], "pikachu");
    assert_eq!(letter["error"], "the mail server refused");
    assert_eq!(letter["retry_requested_at"], json!(null));
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
