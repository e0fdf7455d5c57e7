//! Read-your-writes: a push returns its global position, and a view query waits until the
//! view has applied it, or fails with a typed timeout.

use std::sync::Arc;
use std::time::Duration;

use annals::state::StateStore;
use annals::view::ViewError;

use crate::kv::event_counts;
use crate::sql::{catch, pokedex, pokedex_rows, register};
use crate::{Log, PATIENCE, adapter, grow, on_both_logs, pokemons, trainers};

async fn a_query_after_wait_for_sees_the_pushed_event(log: Log) {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&log, dir.path());
    let (pokemons, trainers) = (pokemons(&adapter), trainers(&adapter));
    let counts = event_counts(&pokemons, 1)
        .build(Arc::new(StateStore::in_memory()))
        .expect("build");
    let pokedex = pokedex(&pokemons, &trainers, 1)
        .open(dir.path().join("views"))
        .expect("open");
    let runners = [counts.run(adapter.clone()), pokedex.run(adapter.clone())];
    register(&trainers, "ash", "Ash").await;
    for version in 1..=20 {
        let position = grow(&pokemons, &format!("p{version}"), 0).await;
        counts
            .wait_for(position, PATIENCE)
            .await
            .expect("kv applied");
        let got: Option<u64> = counts.get("events", &format!("p{version}")).expect("get");
        assert_eq!(got, Some(1));
        let position = catch(&pokemons, &format!("p{version}"), 2, "ash").await;
        pokedex
            .wait_for(position, PATIENCE)
            .await
            .expect("sql applied");
        assert_eq!(pokedex_rows(&pokedex).len(), version as usize);
    }
    for runner in runners {
        runner.stop().await.expect("stop");
    }
}
on_both_logs!(a_query_after_wait_for_sees_the_pushed_event);

#[tokio::test]
async fn wait_for_fails_with_a_typed_timeout_when_the_view_is_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&Log::Memory, dir.path());
    let pokemons = pokemons(&adapter);
    let counts = event_counts(&pokemons, 1)
        .build(Arc::new(StateStore::in_memory()))
        .expect("build");
    let position = grow(&pokemons, "pikachu", 0).await;
    // No runner applies the event, so the wait can only time out.
    let timeout = Duration::from_millis(20);
    let waited = counts.wait_for(position, timeout).await;
    match waited {
        Err(ViewError::Timeout {
            position: p,
            applied,
            timeout: t,
            ..
        }) => assert_eq!((p, applied, t), (position, 0, timeout)),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn wait_for_returns_for_positions_of_events_the_view_does_not_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&Log::Memory, dir.path());
    let (pokemons, trainers) = (pokemons(&adapter), trainers(&adapter));
    let counts = event_counts(&pokemons, 1)
        .build(Arc::new(StateStore::in_memory()))
        .expect("build");
    let runner = counts.run(adapter.clone());
    // A trainers event: the view reads only POKEMONS, yet it has "applied" this position.
    let position = register(&trainers, "ash", "Ash").await;
    counts
        .wait_for(position, PATIENCE)
        .await
        .expect("passed over");
    runner.stop().await.expect("stop");
}

#[tokio::test]
async fn wait_for_after_the_runner_stopped_reports_it_is_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&Log::Memory, dir.path());
    let pokemons = pokemons(&adapter);
    let counts = event_counts(&pokemons, 1)
        .build(Arc::new(StateStore::in_memory()))
        .expect("build");
    counts.run(adapter.clone()).stop().await.expect("stop");
    let position = grow(&pokemons, "pikachu", 0).await;
    let waited = counts.wait_for(position, PATIENCE).await;
    assert!(
        matches!(waited, Err(ViewError::NotRunning { .. })),
        "{waited:?}"
    );
}
