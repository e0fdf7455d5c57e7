//! Actions, queues and dead letters over events kept in PostgreSQL: the runtime's own state
//! (checkpoint, queue, dead letters) stays in the process's local state store, as
//! `docs/postgres.md` describes, and is exactly as reliable as on the embedded log.

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
