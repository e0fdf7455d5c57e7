//! Rebuilds: a new view version is built side by side from position 1 while reads go to the
//! version serving; once caught up it becomes active in one transaction and the old version's
//! tables are dropped.

use std::sync::Arc;

use annals::state::StateStore;
use annals::view::{KvError, KvTables, KvView, ViewError};
use annals::{EventDetail, Position};
use redb::{ReadableDatabase, TableHandle};

use crate::kv::event_counts;
use crate::sql::{catch, pokedex, pokedex_rows, register};
use crate::{Log, PATIENCE, PokemonEvent, Pokemons, adapter, grow, pokemons, trainers};

/// Version 2 of `event-counts`: counts level-ups only, in a new table.
fn level_counts(pokemons: &Pokemons, state: Arc<StateStore>) -> KvView {
    KvView::builder("event-counts", 2)
        .on(
            pokemons,
            |tables: &mut KvTables<'_>, event: &EventDetail<PokemonEvent>| {
                if let PokemonEvent::LeveledUp(_) = event.event {
                    let id = &event.aggregate_id;
                    let levels: u64 = tables.get("levels", id)?.unwrap_or(0);
                    tables.put("levels", id, &(levels + 1))?;
                }
                Ok::<(), KvError>(())
            },
        )
        .build(state)
        .expect("build v2")
}

/// The tables of the redb state file at `path`, which no handle holds open any more.
fn table_names(path: &std::path::Path) -> Vec<String> {
    let db = redb::Database::open(path).expect("open the state file");
    let txn = db.begin_read().expect("read");
    let tables = txn.list_tables().expect("list tables");
    tables.map(|t| t.name().to_owned()).collect()
}

async fn build_v1(pokemons: &Pokemons, state: &Arc<StateStore>, last: Position) {
    let adapter = pokemons.storage_adapter().expect("adapter");
    let v1 = event_counts(pokemons, 1)
        .build(state.clone())
        .expect("build v1");
    let runner = v1.run(adapter);
    v1.wait_for(last, PATIENCE).await.expect("v1 caught up");
    runner.stop().await.expect("stop v1");
}

#[tokio::test]
async fn a_kv_rebuild_serves_the_old_version_until_the_new_one_has_caught_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&Log::Disk, dir.path());
    let pokemons = pokemons(&adapter);
    let state_path = dir.path().join("state.redb");
    let state = Arc::new(StateStore::open(&state_path).expect("state"));
    let last = grow(&pokemons, "pikachu", 2).await;
    build_v1(&pokemons, &state, last).await;

    let v2 = level_counts(&pokemons, state.clone());
    // Before v2 has caught up, reads go to v1's tables.
    assert_eq!(v2.active_version().expect("active"), Some(1));
    assert_eq!(v2.get::<u64>("events", "pikachu").expect("get"), Some(3));

    let runner = v2.run(adapter.clone());
    let live = grow(&pokemons, "eevee", 1).await;
    v2.wait_for(live, PATIENCE).await.expect("v2 caught up");
    assert_eq!(v2.active_version().expect("active"), Some(2));
    assert_eq!(v2.get::<u64>("levels", "pikachu").expect("get"), Some(2));
    assert_eq!(v2.get::<u64>("levels", "eevee").expect("get"), Some(1));
    assert_eq!(v2.get::<u64>("events", "pikachu").expect("get"), None);
    runner.stop().await.expect("stop v2");

    // v1's checkpoint is gone; v1 can no longer be built.
    let checkpoints = state.checkpoints().expect("checkpoints");
    assert_eq!(checkpoints, [("view:event-counts:v2".to_owned(), live + 1)]);
    let stale = event_counts(&pokemons, 1).build(state.clone());
    assert!(
        matches!(
            stale,
            Err(ViewError::Superseded {
                version: 1,
                active: 2,
                ..
            })
        ),
        "{stale:?}"
    );
    // v1's tables are dropped from the state file.
    drop((v2, state));
    let names = table_names(&state_path);
    assert!(
        !names.iter().any(|n| n.starts_with("view:event-counts:v1:")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "view:event-counts:v2:levels"),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_runner_of_the_old_version_stops_once_the_new_version_is_active() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&Log::Memory, dir.path());
    let pokemons = pokemons(&adapter);
    let state_path = dir.path().join("state.redb");
    let state = Arc::new(StateStore::open(&state_path).expect("state"));
    let first = grow(&pokemons, "pikachu", 2).await;
    let v1 = event_counts(&pokemons, 1)
        .build(state.clone())
        .expect("build v1");
    let old = v1.run(adapter.clone());
    v1.wait_for(first, PATIENCE).await.expect("v1 caught up");

    let v2 = level_counts(&pokemons, state.clone());
    let new = v2.run(adapter.clone());
    v2.wait_for(first, PATIENCE).await.expect("v2 caught up");
    // The next event reaches both runners: v1 finds itself replaced and stops.
    let next = grow(&pokemons, "eevee", 0).await;
    let ended = old.join().await;
    assert!(
        matches!(
            ended,
            Err(ViewError::Superseded {
                version: 1,
                active: 2,
                ..
            })
        ),
        "{ended:?}"
    );
    v2.wait_for(next, PATIENCE).await.expect("v2 applied");
    new.stop().await.expect("stop v2");
    drop((v1, v2, state));
    assert!(
        !table_names(&state_path)
            .iter()
            .any(|n| n.starts_with("view:event-counts:v1:"))
    );
}

#[tokio::test]
async fn a_sql_rebuild_switches_to_the_new_file_and_removes_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let views = dir.path().join("views");
    let adapter = adapter(&Log::Disk, dir.path());
    let (pokemons, trainers) = (pokemons(&adapter), trainers(&adapter));
    register(&trainers, "ash", "Ash").await;
    grow(&pokemons, "pikachu", 1).await;
    let caught = catch(&pokemons, "pikachu", 3, "ash").await;
    {
        let v1 = pokedex(&pokemons, &trainers, 1)
            .open(&views)
            .expect("open v1");
        let runner = v1.run(adapter.clone());
        v1.wait_for(caught, PATIENCE).await.expect("v1 caught up");
        runner.stop().await.expect("stop v1");
    }
    let expected = [("Ash".to_owned(), "pikachu-name".to_owned(), 2)];
    let v2 = pokedex(&pokemons, &trainers, 2)
        .open(&views)
        .expect("open v2");
    assert_eq!(v2.active_version(), Some(1));
    assert_eq!(pokedex_rows(&v2), expected); // served by v1 while v2 is built

    let runner = v2.run(adapter.clone());
    v2.wait_for(caught, PATIENCE).await.expect("v2 caught up");
    assert_eq!(v2.active_version(), Some(2));
    assert_eq!(pokedex_rows(&v2), expected);
    assert!(!views.join("pokedex.v1.sqlite3").exists());
    assert!(views.join("pokedex.v2.sqlite3").exists());
    runner.stop().await.expect("stop v2");
    let stale = pokedex(&pokemons, &trainers, 1).open(&views);
    assert!(
        matches!(
            stale,
            Err(ViewError::Superseded {
                version: 1,
                active: 2,
                ..
            })
        ),
        "{stale:?}"
    );
}
