//! Actions, queues and dead letters over events kept in PostgreSQL: with the runtime's own
//! state (checkpoint, queue, dead letters) in a local state file, and in the PostgreSQL state
//! store, where another process (and `annals dead-letters --postgres`) sees it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::action::{ActionContext, ActionError, EventAction, RetryPolicy};
use annals::queue::Queue;
use annals::state::StateStore;
use annals::storage::{LoggedEvent, StorageAdapter};
use annals::subscription::Filter;

use crate::fixture::{self, STORE, event};
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 2;
        an_event_action_on_postgres_queues_work_dead_letters_and_resumes_after_its_checkpoint,
        an_event_action_on_the_postgres_state_shares_its_checkpoint_queue_and_dead_letters,
    )
}

/// Enqueues a message per event of `STORE`, and fails for good on `missingno`.
fn notifier(name: &str, handled: Arc<Mutex<Vec<String>>>) -> EventAction {
    EventAction::new(name, move |event: LoggedEvent, mut ctx: ActionContext| {
        let handled = handled.clone();
        async move {
            let id = event.event.aggregate_id;
            if id == "missingno" {
                return Err(ActionError::permanent("no such pokemon"));
            }
            ctx.enqueue("notifications", id.clone().into_bytes())
                .map_err(ActionError::retryable)?;
            handled.lock().expect("not poisoned").push(id);
            Ok(())
        }
    })
    .filter(Filter::all().stores([STORE]))
    .retry_policy(RetryPolicy {
        base: Duration::from_millis(1),
        max: Duration::from_millis(4),
        attempts: 3,
    })
}

async fn an_event_action_on_postgres_queues_work_dead_letters_and_resumes_after_its_checkpoint() {
    let url = fixture::url();
    let (adapter, _guard) = fixture::adapter(&url).await;
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");

    adapter.push_event(event("pikachu", 1)).await.expect("push");
    let poison = adapter
        .push_event(event("missingno", 1))
        .await
        .expect("push");
    let handled = Arc::new(Mutex::new(Vec::new()));
    {
        let state = Arc::new(StateStore::open(&path).expect("state"));
        let action = notifier("notify", handled.clone());
        let runner = action
            .spawn(Arc::clone(&adapter), Arc::clone(&state))
            .expect("spawn");
        // A live commit, after the runner caught up.
        let live = adapter.push_event(event("eevee", 1)).await.expect("push");
        tokio::time::timeout(Duration::from_secs(30), runner.wait_past(live))
            .await
            .expect("in time")
            .expect("the runner passes the live event");
        runner.stop().await.expect("stop");
        let letters = action.dead_letters(&state).expect("dead letters");
        assert_eq!(letters.len(), 1);
        assert_eq!(
            (letters[0].position, letters[0].aggregate_id.as_str()),
            (poison, "missingno")
        );
        let queue = Queue::open(Arc::clone(&state), "notifications");
        assert_eq!(queue.len().expect("length"), 2);
        assert_eq!(
            state.checkpoint("notify").expect("checkpoint"),
            Some(live + 1)
        );
    }
    assert_eq!(*handled.lock().unwrap(), ["pikachu", "eevee"]);

    // Restarted on the same local state: only what is new is handled.
    let next = adapter.push_event(event("snorlax", 1)).await.expect("push");
    let state = Arc::new(StateStore::open(&path).expect("reopen the state"));
    let runner = notifier("notify", handled.clone())
        .spawn(Arc::clone(&adapter), Arc::clone(&state))
        .expect("spawn");
    tokio::time::timeout(Duration::from_secs(30), runner.wait_past(next))
        .await
        .expect("in time")
        .expect("the runner passes the new event");
    runner.stop().await.expect("stop");
    assert_eq!(*handled.lock().unwrap(), ["pikachu", "eevee", "snorlax"]);
    let queue = Queue::open(state, "notifications");
    assert_eq!(
        queue.len().expect("length"),
        3,
        "one message per event, none twice"
    );
}

async fn an_event_action_on_the_postgres_state_shares_its_checkpoint_queue_and_dead_letters() {
    let url = fixture::url();
    let (adapter, _guard) = fixture::adapter(&url).await;
    let schema = adapter.schema().to_owned();
    let first = Arc::new(StateStore::postgres(&adapter).await.expect("state"));
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);

    adapter.push_event(event("pikachu", 1)).await.expect("push");
    let poison = adapter
        .push_event(event("missingno", 1))
        .await
        .expect("push");
    let handled = Arc::new(Mutex::new(Vec::new()));
    let runner = notifier("notify", handled.clone())
        .spawn(Arc::clone(&adapter), Arc::clone(&first))
        .expect("spawn");
    let live = adapter.push_event(event("eevee", 1)).await.expect("push");
    tokio::time::timeout(Duration::from_secs(30), runner.wait_past(live))
        .await
        .expect("in time")
        .expect("the runner passes the live event");
    runner.stop().await.expect("stop");
    drop(first);

    // Another store on the schema, as another process would open: the same state.
    let second = Arc::new(
        StateStore::postgres_with_config(url.parse().expect("a URL"), &schema)
            .await
            .expect("a second state store"),
    );
    let letters = annals::action::dead_letter::list_all(&second).expect("dead letters");
    assert_eq!(
        letters
            .iter()
            .map(|l| (l.position, l.aggregate_id.as_str()))
            .collect::<Vec<_>>(),
        [(poison, "missingno")]
    );
    assert_eq!(
        second.checkpoint("notify").expect("checkpoint"),
        Some(live + 1)
    );
    let queue = Queue::open(Arc::clone(&second), "notifications");
    assert_eq!(
        queue.len().expect("length"),
        2,
        "one message per handled event"
    );

    // Restarted on the shared state: only what is new is handled.
    let next = adapter.push_event(event("snorlax", 1)).await.expect("push");
    let runner = notifier("notify", handled.clone())
        .spawn(Arc::clone(&adapter), Arc::clone(&second))
        .expect("spawn");
    tokio::time::timeout(Duration::from_secs(30), runner.wait_past(next))
        .await
        .expect("in time")
        .expect("the runner passes the new event");
    runner.stop().await.expect("stop");
    assert_eq!(*handled.lock().unwrap(), ["pikachu", "eevee", "snorlax"]);
    assert_eq!(queue.len().expect("length"), 3, "none twice");

    #[cfg(feature = "cli")]
    the_command_line_tool_sees_the_shared_state(&url, &schema, poison).await;
}

/// `annals dead-letters` and `annals consumers` with `--postgres` read and mark the shared
/// state, from a process of their own.
#[cfg(feature = "cli")]
async fn the_command_line_tool_sees_the_shared_state(url: &str, schema: &str, poison: u64) {
    let annals = |args: &[&str]| {
        let url = url.to_owned();
        let schema = schema.to_owned();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        std::thread::spawn(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_annals"))
                .env_remove("ANNALS_DIR")
                .args(["--postgres", &url, "--postgres-schema", &schema, "--json"])
                .args(&args)
                .output()
                .expect("the annals binary runs");
            assert!(
                out.status.success(),
                "annals {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
        })
        .join()
        .expect("the command ends")
    };
    let listed = annals(&["dead-letters", "list"]);
    assert_eq!(listed[0]["position"], poison, "{listed}");
    assert_eq!(
        listed[0]["retry_requested_at"],
        serde_json::Value::Null,
        "{listed}"
    );
    let marked = annals(&["dead-letters", "retry", "notify", &poison.to_string()]);
    assert_eq!(marked["positions"][0], poison, "{marked}");
    let listed = annals(&["dead-letters", "list", "--action", "notify"]);
    assert!(listed[0]["retry_requested_at"].is_string(), "{listed}");
    let consumers = annals(&["consumers"]);
    assert_eq!(consumers["consumers"][0]["name"], "notify", "{consumers}");
}
