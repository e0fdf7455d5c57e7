//! Event-triggered actions: retries, dead letters, crashes and the action context.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::action::dead_letter::{self, RetryDeadLetterError};
use annals::action::{
    ActionContext, ActionError, ActionRunError, EventAction, RetryPolicy, Trigger,
};
use annals::queue::Queue;
use annals::state::StateStore;
use annals::storage::{LoggedEvent, StorageAdapter};
use annals::subscription::Filter;
use annals::{Command, NewEvent};

use super::{PokemonEvent, appear, in_memory, log_store, pokemons, within};

/// Three attempts, a millisecond apart: retries are real but the tests stay fast.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(1),
        max: Duration::from_millis(4),
        attempts: 3,
    }
}

/// An action that records the aggregates it handled and fails on `missingno` while `broken`
/// is set, counting the attempts on it.
struct Recorder {
    handled: Arc<Mutex<Vec<String>>>,
    poison_attempts: Arc<AtomicU32>,
    /// The attempt numbers the action context gave for `missingno`, in order.
    poison_attempt_numbers: Arc<Mutex<Vec<u32>>>,
    broken: Arc<AtomicBool>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            handled: Arc::default(),
            poison_attempts: Arc::default(),
            poison_attempt_numbers: Arc::default(),
            broken: Arc::new(AtomicBool::new(true)),
        }
    }

    fn action(&self, name: &str) -> EventAction {
        let handled = self.handled.clone();
        let attempts = self.poison_attempts.clone();
        let numbers = self.poison_attempt_numbers.clone();
        let broken = self.broken.clone();
        EventAction::new(name, move |event: LoggedEvent, ctx: ActionContext| {
            let handled = handled.clone();
            let attempts = attempts.clone();
            let numbers = numbers.clone();
            let broken = broken.clone();
            async move {
                let id = event.event.aggregate_id;
                if id == "missingno" {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    numbers.lock().unwrap().push(ctx.attempt());
                    if broken.load(Ordering::SeqCst) {
                        return Err(ActionError::retryable("the sprite service is down"));
                    }
                }
                handled.lock().unwrap().push(id);
                Ok(())
            }
        })
        .filter(Filter::all().stores(["POKEMONS"]))
        .retry_policy(quick_retries())
    }

    fn handled(&self) -> Vec<String> {
        self.handled.lock().unwrap().clone()
    }
}

async fn poison_is_dead_lettered_and_later_events_flow(adapter: Arc<dyn StorageAdapter>) {
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    appear(&store, "pikachu", "Pikachu").await;
    let poison = appear(&store, "missingno", "MissingNo.").await;
    let last = appear(&store, "bulbasaur", "Bulbasaur").await;

    let recorder = Recorder::new();
    let action = recorder.action("sprites");
    let runner = action.spawn(adapter, state.clone()).unwrap();
    within("the runner passing the last event", runner.wait_past(last))
        .await
        .unwrap();

    assert_eq!(recorder.handled(), ["pikachu", "bulbasaur"]);
    assert_eq!(recorder.poison_attempts.load(Ordering::SeqCst), 3);
    let letters = action.dead_letters(&state).unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        (
            letter.position,
            letter.aggregate_id.as_str(),
            letter.attempts
        ),
        (poison, "missingno", 3)
    );
    assert_eq!(letter.event_type, "POKEMON_APPEARED");
    assert_eq!(letter.error, "the sprite service is down");
    assert_eq!(state.checkpoint("sprites").unwrap(), Some(last + 1));
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn poison_event_is_dead_lettered_after_its_attempts_and_later_events_flow_in_memory() {
    poison_is_dead_lettered_and_later_events_flow(in_memory()).await;
}

#[tokio::test]
async fn poison_event_is_dead_lettered_after_its_attempts_and_later_events_flow_on_the_log() {
    let dir = tempfile::tempdir().unwrap();
    poison_is_dead_lettered_and_later_events_flow(log_store(dir.path())).await;
}

#[tokio::test]
async fn events_pushed_after_a_dead_letter_are_delivered_live() {
    let adapter = in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    let recorder = Recorder::new();
    let runner = recorder
        .action("sprites")
        .spawn(adapter.clone(), state.clone())
        .unwrap();
    let poison = appear(&store, "missingno", "MissingNo.").await;
    within("the poison event", runner.wait_past(poison))
        .await
        .unwrap();
    let live = appear(&store, "eevee", "Eevee").await;
    within("the live event", runner.wait_past(live))
        .await
        .unwrap();
    assert_eq!(recorder.handled(), ["eevee"]);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn permanent_failure_is_dead_lettered_without_retries() {
    let adapter = in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let action = EventAction::new("ocr", move |_: LoggedEvent, _: ActionContext| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err(ActionError::permanent("not a document")) }
    })
    .retry_policy(quick_retries());
    let position = appear(&store, "pikachu", "Pikachu").await;
    let runner = action.spawn(adapter, state.clone()).unwrap();
    within("the event", runner.wait_past(position))
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let letters = action.dead_letters(&state).unwrap();
    assert_eq!((letters.len(), letters[0].attempts), (1, 1));
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn panicking_action_is_retried_and_the_runner_survives() {
    let adapter = in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let action = EventAction::new("fragile", move |_: LoggedEvent, ctx: ActionContext| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            assert!(ctx.attempt() > 1, "the first attempt panics");
            Ok(())
        }
    })
    .retry_policy(quick_retries());
    let position = appear(&store, "pikachu", "Pikachu").await;
    let runner = action.spawn(adapter, state.clone()).unwrap();
    within("the event", runner.wait_past(position))
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(action.dead_letters(&state).unwrap().is_empty());
    assert!(!runner.is_finished());
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn retried_dead_letter_succeeds_once_the_fault_is_fixed_and_is_removed() {
    let adapter = in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    let poison = appear(&store, "missingno", "MissingNo.").await;
    let recorder = Recorder::new();
    let action = recorder.action("sprites");
    let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
    within("the poison event", runner.wait_past(poison))
        .await
        .unwrap();
    runner.stop().await.unwrap();

    // Still broken: the retry fails, the dead letter stays with one more attempt.
    let failed = action.retry_dead_letter(&adapter, &state, poison).await;
    assert!(matches!(failed, Err(RetryDeadLetterError::Failed(_))));
    assert_eq!(action.dead_letters(&state).unwrap()[0].attempts, 4);

    recorder.broken.store(false, Ordering::SeqCst);
    action
        .retry_dead_letter(&adapter, &state, poison)
        .await
        .unwrap();
    assert_eq!(recorder.handled(), ["missingno"]);
    assert!(action.dead_letters(&state).unwrap().is_empty());
    let again = action.retry_dead_letter(&adapter, &state, poison).await;
    assert!(matches!(again, Err(RetryDeadLetterError::NotFound { .. })));
}

#[tokio::test]
async fn dropped_dead_letter_is_gone_and_cannot_be_retried() {
    let adapter = in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    let poison = appear(&store, "missingno", "MissingNo.").await;
    let recorder = Recorder::new();
    let action = recorder.action("sprites");
    let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
    within("the poison event", runner.wait_past(poison))
        .await
        .unwrap();
    runner.stop().await.unwrap();

    assert!(action.drop_dead_letter(&state, poison).unwrap());
    assert!(!action.drop_dead_letter(&state, poison).unwrap());
    assert!(action.dead_letters(&state).unwrap().is_empty());
    let retried = action.retry_dead_letter(&adapter, &state, poison).await;
    assert!(matches!(
        retried,
        Err(RetryDeadLetterError::NotFound { .. })
    ));
    assert!(recorder.handled().is_empty());
}

/// Polls `condition` until it holds (bounded by the safety net).
async fn until(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn retry_requested_while_running_is_carried_out_and_success_removes_the_letter() {
    let adapter = in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    let poison = appear(&store, "missingno", "MissingNo.").await;
    let recorder = Recorder::new();
    let action = recorder
        .action("sprites")
        .retry_requests_interval(Duration::from_millis(5));
    let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
    within("the poison event", runner.wait_past(poison))
        .await
        .unwrap();
    assert_eq!(action.dead_letters(&state).unwrap().len(), 1);

    // The fault is fixed; someone holding the state store asks for a retry.
    recorder.broken.store(false, Ordering::SeqCst);
    assert!(dead_letter::request_retry(&state, "sprites", poison).unwrap());
    until("the requested retry", || {
        action.dead_letters(&state).unwrap().is_empty()
    })
    .await;
    assert_eq!(recorder.handled(), ["missingno"]);
    assert_eq!(recorder.poison_attempts.load(Ordering::SeqCst), 4);
    assert!(!dead_letter::request_retry(&state, "sprites", poison).unwrap());
    // The runner keeps handling new events after the retry.
    let later = appear(&store, "pikachu", "Pikachu").await;
    within("a later event", runner.wait_past(later))
        .await
        .unwrap();
    assert_eq!(recorder.handled(), ["missingno", "pikachu"]);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn retry_requested_while_stopped_runs_on_start_and_failure_keeps_the_letter_unmarked() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = log_store(&dir.path().join("log"));
    let state_path = dir.path().join("state.redb");
    let store = pokemons(&adapter);
    let poison = appear(&store, "missingno", "MissingNo.").await;
    let recorder = Recorder::new();
    let action = recorder
        .action("sprites")
        .retry_requests_interval(Duration::from_millis(1));
    {
        let state = Arc::new(StateStore::open(&state_path).unwrap());
        let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
        within("the poison event", runner.wait_past(poison))
            .await
            .unwrap();
        runner.stop().await.unwrap();
    }

    // The application is stopped; the retry is requested on its state file.
    {
        let state = StateStore::open(&state_path).unwrap();
        assert_eq!(
            dead_letter::request_retry_all(&state, "sprites").unwrap(),
            [poison]
        );
        let letter = dead_letter::get(&state, "sprites", poison)
            .unwrap()
            .unwrap();
        assert!(letter.retry_requested_at.is_some());
    }

    // Restarted, still broken: the letter is retried with the policy (3 more attempts), kept
    // with the new count, and unmarked.
    let state = Arc::new(StateStore::open(&state_path).unwrap());
    let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
    until("the requested retry", || {
        dead_letter::get(&state, "sprites", poison)
            .unwrap()
            .is_some_and(|l| l.retry_requested_at.is_none())
    })
    .await;
    let letter = dead_letter::get(&state, "sprites", poison)
        .unwrap()
        .unwrap();
    assert_eq!(letter.attempts, 6);
    assert_eq!(letter.error, "the sprite service is down");
    assert_eq!(
        *recorder.poison_attempt_numbers.lock().unwrap(),
        [1, 2, 3, 4, 5, 6]
    );
    // Unmarked, it is not retried again: later events pass while the count stays.
    let later = appear(&store, "pikachu", "Pikachu").await;
    within("a later event", runner.wait_past(later))
        .await
        .unwrap();
    // Twenty look intervals: a mark left in place would have been retried by now.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(recorder.poison_attempts.load(Ordering::SeqCst), 6);
    assert_eq!(action.dead_letters(&state).unwrap().len(), 1);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn crash_in_the_middle_of_an_action_delivers_the_event_again_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let state_path = dir.path().join("state.redb");
    let position = {
        let adapter = log_store(&log_dir);
        appear(&pokemons(&adapter), "pikachu", "Pikachu").await
    };

    // First life: the action starts on the event, then the process "crashes" mid-run.
    let runs = Arc::new(AtomicU32::new(0));
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let counted = runs.clone();
    let action = EventAction::new("welcome", move |event: LoggedEvent, _: ActionContext| {
        let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
        let started = started_tx.clone();
        async move {
            if first {
                started.send(event.position).unwrap();
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    });
    {
        let adapter = log_store(&log_dir);
        let state = Arc::new(StateStore::open(&state_path).unwrap());
        let runner = action.spawn(adapter, state).unwrap();
        let delivered = within("the first delivery", started.recv()).await;
        assert_eq!(delivered, Some(position));
        runner.abort().await;
    }

    // Second life: both stores reopened; the event was never committed, so it comes again.
    let adapter = log_store(&log_dir);
    let state = Arc::new(StateStore::open(&state_path).unwrap());
    assert_eq!(state.checkpoint("welcome").unwrap(), None);
    let runner = action.spawn(adapter, state.clone()).unwrap();
    within("the redelivery", runner.wait_past(position))
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(state.checkpoint("welcome").unwrap(), Some(position + 1));
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn restarted_runner_continues_after_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = log_store(&dir.path().join("log"));
    let state = Arc::new(StateStore::open(dir.path().join("state.redb")).unwrap());
    let store = pokemons(&adapter);
    let recorder = Recorder::new();
    let action = recorder.action("sprites");
    let first = appear(&store, "pikachu", "Pikachu").await;
    let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
    within("the first event", runner.wait_past(first))
        .await
        .unwrap();
    runner.stop().await.unwrap();

    let second = appear(&store, "eevee", "Eevee").await;
    let runner = action.spawn(adapter, state).unwrap();
    within("the second event", runner.wait_past(second))
        .await
        .unwrap();
    assert_eq!(recorder.handled(), ["pikachu", "eevee"]);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn typed_action_decodes_events_runs_commands_and_enqueues() {
    let adapter = in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    // On every appearance, a command marks the Pokémon as caught by professor Oak, and a
    // notification is enqueued.
    let catch = Arc::new(Command::new(
        "CATCH",
        (store.clone(),),
        |(id, version): (String, u64), (pokemons,), trainer: String| async move {
            let caught = PokemonEvent::Caught(super::Caught { trainer });
            pokemons
                .push_event(NewEvent::new(&id, version + 1, caught), Default::default())
                .await?;
            Ok::<_, annals::Error>(())
        },
    ));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_action = seen.clone();
    let action = EventAction::typed("oak", &store, move |event, mut ctx: ActionContext| {
        let catch = catch.clone();
        let seen = seen_by_action.clone();
        async move {
            if let PokemonEvent::Appeared(appeared) = &event.event {
                seen.lock().unwrap().push(appeared.name.clone());
                let input = (event.aggregate_id.clone(), event.version);
                ctx.run(&catch, input, "oak".to_owned()).await?;
                ctx.enqueue_json("notifications", &format!("{} caught", appeared.name))?;
            }
            assert!(matches!(ctx.trigger(), Trigger::Event { .. }));
            Ok(())
        }
    })
    .filter(
        Filter::all()
            .stores(["POKEMONS"])
            .event_types(["POKEMON_APPEARED"]),
    );
    let position = appear(&store, "pikachu", "Pikachu").await;
    let runner = action.spawn(adapter, state.clone()).unwrap();
    within("the event", runner.wait_past(position))
        .await
        .unwrap();
    runner.stop().await.unwrap();

    assert_eq!(*seen.lock().unwrap(), ["Pikachu"]);
    let pikachu = store
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(pikachu.aggregate.caught_by.as_deref(), Some("oak"));
    let notification = Queue::open(state, "notifications")
        .receive()
        .unwrap()
        .unwrap();
    assert_eq!(notification.json::<String>().unwrap(), "Pikachu caught");
}

#[tokio::test]
async fn undecodable_event_is_dead_lettered_by_a_typed_action() {
    let adapter = in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    // A POKEMONS event of a type the store does not declare.
    let foreign = annals::storage::AppendEvent {
        event_store_id: "POKEMONS".into(),
        event: annals::storage::EncodedEvent {
            aggregate_id: "mew".into(),
            version: 1,
            timestamp: annals::Timestamp::now(),
            event_type: "POKEMON_GLITCHED".into(),
            schema_version: 1,
            payload: vec![0x80],
            metadata: vec![0x80],
        },
    };
    let position = adapter.push_event(foreign).await.unwrap();
    let action = EventAction::typed("oak", &store, |_, _: ActionContext| async { Ok(()) })
        .retry_policy(quick_retries());
    let runner = action.spawn(adapter, state.clone()).unwrap();
    within("the event", runner.wait_past(position))
        .await
        .unwrap();
    let letters = action.dead_letters(&state).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1);
    assert!(
        letters[0].error.contains("POKEMON_GLITCHED"),
        "{}",
        letters[0].error
    );
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn runner_that_cannot_commit_a_dead_letter_stops_reports_why_and_skips_nothing() {
    let adapter = in_memory();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    drop(StateStore::open(&path).unwrap());
    // A table of another type under the dead letters' name: writing a dead letter fails.
    let squatter: redb::TableDefinition<&str, &str> =
        redb::TableDefinition::new("action_dead_letters");
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(squatter).unwrap();
    txn.commit().unwrap();
    drop(db);
    let state = Arc::new(StateStore::open(&path).unwrap());
    let store = pokemons(&adapter);
    appear(&store, "pikachu", "Pikachu").await;
    let poison = appear(&store, "missingno", "MissingNo.").await;

    let recorder = Recorder::new();
    let runner = recorder
        .action("sprites")
        .spawn(adapter, state.clone())
        .unwrap();
    let waited = within("the runner ending", runner.wait_past(poison)).await;
    assert!(
        matches!(waited, Err(ActionRunError::Aborted { .. })),
        "{waited:?}"
    );
    assert!(runner.is_finished());
    let stopped = runner.stop().await;
    assert!(
        matches!(stopped, Err(ActionRunError::Storage { ref action, .. }) if action == "sprites"),
        "{stopped:?}"
    );
    // The checkpoint stays on the poison event: it is neither lost nor half dead-lettered.
    assert_eq!(state.checkpoint("sprites").unwrap(), Some(poison));
    assert_eq!(recorder.handled(), ["pikachu"]);
}
