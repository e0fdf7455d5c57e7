//! Handler failures and crashes mid-batch: the view stops at the failing event with a typed
//! error, commits nothing of it, and applies it exactly once when run again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annals::state::StateStore;
use annals::storage::{AppendEvent, EncodedEvent};
use annals::view::{KvTables, KvView, ViewError};
use annals::{EventDetail, Timestamp};

use crate::{Log, PATIENCE, PokemonEvent, Pokemons, adapter, grow, pokemons};

/// How the test handler misbehaves on eevee's third event while `broken` is set.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Error,
    Panic,
}

/// Counts events per Pokémon (like `kv::event_counts`), failing on eevee's third event while
/// `broken` is set.
fn fragile_counts(
    pokemons: &Pokemons,
    broken: Arc<AtomicBool>,
    fault: Fault,
    state: Arc<StateStore>,
) -> KvView {
    KvView::builder("event-counts", 1)
        .on(
            pokemons,
            move |tables: &mut KvTables<'_>, event: &EventDetail<PokemonEvent>| {
                let id = &event.aggregate_id;
                let count: u64 = tables.get("events", id)?.unwrap_or(0);
                tables.put("events", id, &(count + 1))?;
                if id == "eevee" && event.version == 3 && broken.load(Ordering::SeqCst) {
                    match fault {
                        Fault::Error => return Err("the pokedex service is down".into()),
                        Fault::Panic => panic!("the handler crashed"),
                    }
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            },
        )
        .build(state)
        .expect("build")
}

async fn each_event_is_applied_once_across_a_crash_mid_batch(log: Log, fault: Fault) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_path = dir.path().join("state.redb");
    let adapter = adapter(&log, dir.path());
    let pokemons = pokemons(&adapter);
    grow(&pokemons, "pikachu", 9).await; // positions 1..=10
    grow(&pokemons, "eevee", 4).await; // positions 11..=15; its third event is 13
    let last = grow(&pokemons, "mew", 2).await;
    let broken = Arc::new(AtomicBool::new(true));
    {
        let state = Arc::new(StateStore::open(&state_path).expect("state"));
        let view = fragile_counts(&pokemons, broken.clone(), fault, state);
        let failed = view.run(adapter.clone()).join().await;
        match (fault, failed) {
            (
                Fault::Error,
                Err(ViewError::Handler {
                    position,
                    aggregate_id,
                    event_version,
                    ..
                }),
            ) => {
                assert_eq!(
                    (position, aggregate_id.as_str(), event_version),
                    (13, "eevee", 3)
                );
            }
            (
                Fault::Panic,
                Err(ViewError::HandlerPanicked {
                    position, message, ..
                }),
            ) => {
                assert_eq!((position, message.as_str()), (13, "the handler crashed"));
            }
            (_, other) => panic!("expected the handler's {fault:?}, got {other:?}"),
        }
        // Everything before the failing event is committed; nothing of it or after it.
        assert_eq!(view.checkpoint().expect("checkpoint"), 13);
        assert_eq!(view.get::<u64>("events", "eevee").expect("get"), Some(2));
        assert_eq!(view.get::<u64>("events", "mew").expect("get"), None);
    }
    // The process restarts: the state file is reopened, and the handler works again.
    broken.store(false, Ordering::SeqCst);
    let state = Arc::new(StateStore::open(&state_path).expect("reopen state"));
    let view = fragile_counts(&pokemons, broken, fault, state);
    let runner = view.run(adapter.clone());
    view.wait_for(last, PATIENCE).await.expect("caught up");
    assert_eq!(view.get::<u64>("events", "pikachu").expect("get"), Some(10));
    assert_eq!(view.get::<u64>("events", "eevee").expect("get"), Some(5));
    assert_eq!(view.get::<u64>("events", "mew").expect("get"), Some(3));
    runner.stop().await.expect("stop");
}

#[tokio::test]
async fn a_handler_error_mid_batch_is_applied_once_after_restart_in_memory() {
    each_event_is_applied_once_across_a_crash_mid_batch(Log::Memory, Fault::Error).await;
}

#[tokio::test]
async fn a_handler_error_mid_batch_is_applied_once_after_restart_on_the_log() {
    each_event_is_applied_once_across_a_crash_mid_batch(Log::Disk, Fault::Error).await;
}

#[tokio::test]
async fn a_handler_panic_mid_batch_is_applied_once_after_restart_on_the_log() {
    each_event_is_applied_once_across_a_crash_mid_batch(Log::Disk, Fault::Panic).await;
}

#[tokio::test]
async fn a_failing_handler_is_not_skipped_when_the_view_runs_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&Log::Memory, dir.path());
    let pokemons = pokemons(&adapter);
    grow(&pokemons, "eevee", 4).await; // eevee's third event is at position 3
    let state = Arc::new(StateStore::in_memory());
    let broken = Arc::new(AtomicBool::new(true));
    let view = fragile_counts(&pokemons, broken, Fault::Error, state);
    for _ in 0..2 {
        let runner = view.run(adapter.clone());
        let failed = runner.join().await;
        assert!(
            matches!(failed, Err(ViewError::Handler { position: 3, .. })),
            "{failed:?}"
        );
        assert_eq!(view.checkpoint().expect("checkpoint"), 3);
    }
    // Waiting on a view whose runner failed reports why instead of waiting out the timeout.
    let waited = view.wait_for(3, PATIENCE).await;
    match waited {
        Err(ViewError::NotRunning { reason, .. }) => {
            assert!(reason.contains("the pokedex service is down"), "{reason}");
        }
        other => panic!("expected NotRunning, got {other:?}"),
    }
}

#[tokio::test]
async fn an_event_that_does_not_decode_stops_the_view_with_a_decode_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&Log::Memory, dir.path());
    let pokemons = pokemons(&adapter);
    grow(&pokemons, "pikachu", 0).await;
    let garbage = AppendEvent {
        event_store_id: "POKEMONS".into(),
        event: EncodedEvent {
            aggregate_id: "missingno".into(),
            version: 1,
            timestamp: Timestamp::now(),
            event_type: "POKEMON_APPEARED".into(),
            schema_version: 1,
            payload: vec![0xc1], // a byte MessagePack never uses
            metadata: vec![0x80],
        },
    };
    let position = adapter.push_event(garbage).await.expect("push raw");
    let state = Arc::new(StateStore::in_memory());
    let view = fragile_counts(
        &pokemons,
        Arc::new(AtomicBool::new(false)),
        Fault::Error,
        state,
    );
    let failed = view.run(adapter.clone()).join().await;
    assert!(
        matches!(failed, Err(ViewError::Decode { position: p, .. }) if p == position),
        "{failed:?}"
    );
    assert_eq!(view.get::<u64>("events", "pikachu").expect("get"), Some(1));
    assert_eq!(view.checkpoint().expect("checkpoint"), position);
}
