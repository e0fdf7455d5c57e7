//! Commands rerun their handler on version conflicts, and only on them.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use annals::{
    Command, CommandFailure, Error, EventAlreadyExists, NewEvent, PushEventOptions, RetryContext,
};

use crate::fixtures::*;

fn conflict() -> EventAlreadyExists {
    EventAlreadyExists {
        event_store_id: "POKEMONS".to_owned(),
        aggregate_id: "pikachu".to_owned(),
        version: 2,
    }
}

/// The retry contexts an `on_event_already_exists` hook saw, in call order.
type Contexts = Arc<Mutex<Vec<RetryContext>>>;

type ConflictingHandler =
    Box<dyn Fn((), (), ()) -> futures::future::Ready<Result<(), Error>> + Send + Sync>;

/// A command whose handler always conflicts, counting its attempts and the retry contexts.
fn always_conflicting() -> (Command<(), ConflictingHandler>, Arc<AtomicU32>, Contexts) {
    let attempts = Arc::new(AtomicU32::new(0));
    let contexts: Contexts = Arc::default();
    let counter = Arc::clone(&attempts);
    let handler: ConflictingHandler = Box::new(move |(), (), ()| {
        counter.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(Err::<(), _>(Error::from(conflict())))
    });
    let command = Command::new("ALWAYS_CONFLICTING", (), handler);
    let sink = Arc::clone(&contexts);
    let command = command.on_event_already_exists(move |seen, context| {
        assert_eq!(*seen, conflict(), "the hook receives the conflict");
        sink.lock().unwrap().push(context);
    });
    (command, attempts, contexts)
}

#[tokio::test]
async fn command_retries_twice_by_default_so_three_attempts() {
    let (command, attempts, _) = always_conflicting();
    assert_eq!(command.retries(), 2);
    let error = command.handle((), ()).await.unwrap_err();
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(
        error.event_already_exists(),
        Some(&conflict()),
        "the last conflict is returned"
    );
}

#[tokio::test]
async fn retry_callback_receives_attempt_number_and_retries_left() {
    let (command, _, contexts) = always_conflicting();
    command.handle((), ()).await.unwrap_err();
    let seen: Vec<(u32, u32)> = contexts
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.attempt_number, c.retries_left))
        .collect();
    assert_eq!(seen, [(1, 2), (2, 1), (3, 0)]);
}

#[tokio::test]
async fn configured_retries_bound_the_attempts() {
    for (retries, expected_attempts) in [(0, 1), (5, 6)] {
        let (command, attempts, contexts) = always_conflicting();
        let command = command.event_already_exists_retries(retries);
        command.handle((), ()).await.unwrap_err();
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            expected_attempts,
            "retries {retries}"
        );
        let last = *contexts.lock().unwrap().last().unwrap();
        assert_eq!(
            (last.attempt_number, last.retries_left),
            (expected_attempts, 0)
        );
    }
}

#[tokio::test]
async fn other_errors_propagate_untouched_without_retry() {
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&attempts);
    let hook_calls = Arc::new(AtomicU32::new(0));
    let hook_counter = Arc::clone(&hook_calls);
    let command = Command::new("NOT_FOUND", (), move |id: String, (), ()| {
        counter.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(Err::<(), _>(Error::AggregateNotFound {
            event_store_id: "POKEMONS".to_owned(),
            aggregate_id: id,
        }))
    })
    .on_event_already_exists(move |_, _| {
        hook_counter.fetch_add(1, Ordering::SeqCst);
    });
    let error = command
        .handle("missingno".to_owned(), ())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::AggregateNotFound { aggregate_id, .. } if aggregate_id == "missingno"
        ),
        "{error:?}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(hook_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn command_succeeding_on_a_retry_returns_that_output() {
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&attempts);
    let command = Command::new(
        "SECOND_TIME_LUCKY",
        (),
        move |input: u32, (), factor: u32| {
            let attempt = counter.fetch_add(1, Ordering::SeqCst) + 1;
            futures::future::ready(if attempt == 1 {
                Err(Error::from(conflict()))
            } else {
                Ok(input * factor + attempt)
            })
        },
    );
    assert_eq!(
        command.handle(10, 3).await.unwrap(),
        32,
        "input and context reach the retry"
    );
}

/// A failure type of the application's own: it retries on the conflicts it wraps.
#[derive(Debug)]
enum CatchError {
    Annals(Error),
    AlreadyCaught,
}

impl CommandFailure for CatchError {
    fn event_already_exists(&self) -> Option<&EventAlreadyExists> {
        match self {
            CatchError::Annals(e) => e.event_already_exists(),
            CatchError::AlreadyCaught => None,
        }
    }
}

impl From<Error> for CatchError {
    fn from(e: Error) -> Self {
        CatchError::Annals(e)
    }
}

/// Two catches race on one Pokémon: both read it wild, then both push. The loser's push
/// conflicts, the command reruns, reads the Pokémon caught, and refuses with its own error.
#[tokio::test]
async fn racing_catch_commands_retry_and_the_loser_sees_the_new_state() {
    let (_, pokemons) = pokemons_with_pikachu_wild().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let conflicts: Contexts = Arc::default();
    let sink = Arc::clone(&conflicts);
    let catch = Command::new(
        "CATCH_POKEMON",
        (pokemons.clone(),),
        move |trainer: String, (pokemons,): (Pokemons,), waited: Arc<AtomicBool>| {
            let barrier = Arc::clone(&barrier);
            async move {
                let pikachu = pokemons
                    .get_existing_aggregate("pikachu", Default::default())
                    .await?;
                if pikachu.aggregate.trainer_id.is_some() {
                    return Err(CatchError::AlreadyCaught);
                }
                // Both first attempts have read the wild Pokémon before either pushes.
                if !waited.swap(true, Ordering::SeqCst) {
                    barrier.wait().await;
                }
                let version = pikachu.aggregate.version + 1;
                let options = PushEventOptions {
                    prev_aggregate: Some(pikachu.aggregate),
                };
                let event = NewEvent::new("pikachu", version, caught_by(&trainer));
                pokemons.push_event(event, options).await?;
                Ok(trainer)
            }
        },
    )
    .on_event_already_exists(move |_, context| sink.lock().unwrap().push(context));
    let (ash, misty) = tokio::join!(
        catch.handle("ash".to_owned(), Arc::new(AtomicBool::new(false))),
        catch.handle("misty".to_owned(), Arc::new(AtomicBool::new(false))),
    );
    let (winner, loser) = match (ash, misty) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        other => panic!("exactly one catch must win: {other:?}"),
    };
    assert!(matches!(loser, CatchError::AlreadyCaught), "{loser:?}");
    let conflicts = conflicts.lock().unwrap().clone();
    assert_eq!(conflicts.len(), 1, "the loser conflicted once");
    assert_eq!(
        (conflicts[0].attempt_number, conflicts[0].retries_left),
        (1, 2)
    );
    let pikachu = pokemons
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!(pikachu.aggregate.trainer_id, Some(winner));
    assert_eq!(pikachu.aggregate.version, 2);
}

/// Two level-ups race on one Pokémon: the loser conflicts, reruns on the new version, and
/// both succeed.
#[tokio::test]
async fn racing_commands_on_one_aggregate_both_succeed_thanks_to_retry() {
    let (_, pokemons) = pokemons_with_pikachu_wild().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&attempts);
    let level_up = Command::new(
        "LEVEL_UP",
        (pokemons.clone(),),
        move |id: String, (pokemons,): (Pokemons,), waited: Arc<AtomicBool>| {
            let barrier = Arc::clone(&barrier);
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let current = pokemons
                    .get_existing_aggregate(&id, Default::default())
                    .await?;
                if !waited.swap(true, Ordering::SeqCst) {
                    barrier.wait().await;
                }
                let version = current.aggregate.version + 1;
                let event = NewEvent::new(id, version, leveled_up());
                pokemons.push_event(event, Default::default()).await?;
                Ok::<_, Error>(version)
            }
        },
    );
    let (first, second) = tokio::join!(
        level_up.handle("pikachu".to_owned(), Arc::new(AtomicBool::new(false))),
        level_up.handle("pikachu".to_owned(), Arc::new(AtomicBool::new(false))),
    );
    let mut versions = [first.unwrap(), second.unwrap()];
    versions.sort_unstable();
    assert_eq!(
        versions,
        [2, 3],
        "one pushed v2, the other retried and pushed v3"
    );
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "two first attempts and one retry"
    );
    let pikachu = pokemons
        .get_existing_aggregate("pikachu", Default::default())
        .await
        .unwrap();
    assert_eq!((pikachu.aggregate.version, pikachu.aggregate.level), (3, 7));
}

type Wild = (std::sync::Arc<annals::storage::InMemoryAdapter>, Pokemons);

async fn pokemons_with_pikachu_wild() -> Wild {
    let adapter = adapter();
    let pokemons = pokemons(adapter.clone());
    pokemons
        .push_event(
            NewEvent::new("pikachu", 1, appeared("Pikachu", 5)),
            Default::default(),
        )
        .await
        .unwrap();
    (adapter, pokemons)
}

#[tokio::test]
async fn command_on_a_deleted_aggregate_fails_with_the_typed_error_without_retrying() {
    let pokemons = pokemons(adapter());
    pokemons
        .push_events("pikachu", 0, [appeared("Pikachu", 1)], &Default::default())
        .await
        .unwrap();
    pokemons
        .delete_aggregate("pikachu", annals::storage::DeleteMode::Soft)
        .await
        .unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&attempts);
    // The handler decides from what it reads: a deleted aggregate reads as new, so it pushes
    // version 1, which exists; the push must be refused as deleted, not as a conflict.
    let level_up = Command::new(
        "LEVEL_UP",
        (pokemons.clone(),),
        move |id: String, (pokemons,): (Pokemons,), ()| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let read = pokemons.get_aggregate(&id, Default::default()).await?;
                let version = read.aggregate.map_or(0, |a| a.version);
                pokemons
                    .push_events(&id, version, [leveled_up()], &Default::default())
                    .await?;
                Ok::<(), Error>(())
            }
        },
    );
    let error = level_up.handle("pikachu".to_owned(), ()).await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::AggregateDeleted { aggregate_id, hard: false, .. } if aggregate_id == "pikachu"
        ),
        "{error:?}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "no retry");
}
