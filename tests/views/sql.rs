//! SQL views in SQLite: handlers write rows, queries join tables, and a batch commits with the
//! checkpoint row in one SQLite transaction.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annals::view::{SqlView, ViewError};
use annals::{EventDetail, NewEvent};
use rusqlite::Connection;

use crate::{
    Caught, Log, PATIENCE, PokemonEvent, Pokemons, Registered, TrainerEvent, Trainers, adapter,
    grow, on_both_logs, pokemons, trainers,
};

/// The Pokédex per trainer: trainers and Pokémon in two tables, joined by queries.
pub fn pokedex(
    pokemons: &Pokemons,
    trainers: &Trainers,
    version: u64,
) -> annals::view::SqlViewBuilder {
    SqlView::builder("pokedex", version)
        .schema("CREATE TABLE trainers (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
        .schema(
            "CREATE TABLE pokemons (id TEXT PRIMARY KEY, name TEXT NOT NULL, \
             level INTEGER NOT NULL, trainer_id TEXT REFERENCES trainers (id))",
        )
        .on(
            trainers,
            |db: &Connection, event: &EventDetail<TrainerEvent>| {
                let TrainerEvent::Registered(registered) = &event.event;
                db.execute(
                    "INSERT INTO trainers (id, name) VALUES (?1, ?2)",
                    (&event.aggregate_id, &registered.name),
                )
                .map(|_| ())
            },
        )
        .on(
            pokemons,
            |db: &Connection, event: &EventDetail<PokemonEvent>| {
                let id = &event.aggregate_id;
                let changed = match &event.event {
                    PokemonEvent::Appeared(e) => db.execute(
                        "INSERT INTO pokemons (id, name, level) VALUES (?1, ?2, 1)",
                        (id, &e.name),
                    ),
                    PokemonEvent::LeveledUp(_) => {
                        db.execute("UPDATE pokemons SET level = level + 1 WHERE id = ?1", [id])
                    }
                    PokemonEvent::Caught(e) => db.execute(
                        "UPDATE pokemons SET trainer_id = ?2 WHERE id = ?1",
                        (id, &e.trainer_id),
                    ),
                };
                changed.map(|_| ())
            },
        )
}

/// `(trainer, pokemon, level)` rows of the Pokédex, by trainer then Pokémon.
pub fn pokedex_rows(view: &SqlView) -> Vec<(String, String, i64)> {
    view.query(|db| {
        let mut rows = db.prepare(
            "SELECT t.name, p.name, p.level FROM pokemons p \
             JOIN trainers t ON t.id = p.trainer_id ORDER BY t.name, p.name",
        )?;
        rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
    })
    .expect("query the pokedex")
}

pub async fn register(trainers: &Trainers, id: &str, name: &str) -> u64 {
    let registered = TrainerEvent::Registered(Registered { name: name.into() });
    trainers
        .push_event(NewEvent::new(id, 1, registered), Default::default())
        .await
        .expect("register")
        .position
}

pub async fn catch(pokemons: &Pokemons, id: &str, version: u64, trainer: &str) -> u64 {
    let caught = PokemonEvent::Caught(Caught {
        trainer_id: trainer.into(),
    });
    pokemons
        .push_event(NewEvent::new(id, version, caught), Default::default())
        .await
        .expect("catch")
        .position
}

async fn a_sql_view_joins_pokemons_with_their_trainers(log: Log) {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&log, dir.path());
    let (pokemons, trainers) = (pokemons(&adapter), trainers(&adapter));
    register(&trainers, "ash", "Ash").await;
    register(&trainers, "misty", "Misty").await;
    grow(&pokemons, "pikachu", 4).await;
    grow(&pokemons, "staryu", 0).await;
    grow(&pokemons, "wild-mew", 0).await; // never caught: not in anyone's Pokédex
    catch(&pokemons, "pikachu", 6, "ash").await;
    let view = pokedex(&pokemons, &trainers, 1)
        .open(dir.path().join("views"))
        .expect("open");
    let runner = view.run(adapter.clone());
    let last = catch(&pokemons, "staryu", 2, "misty").await; // live
    view.wait_for(last, PATIENCE).await.expect("applied");
    assert_eq!(
        pokedex_rows(&view),
        [
            ("Ash".to_owned(), "pikachu-name".to_owned(), 5),
            ("Misty".to_owned(), "staryu-name".to_owned(), 1),
        ]
    );
    runner.stop().await.expect("stop");
}
on_both_logs!(a_sql_view_joins_pokemons_with_their_trainers);

async fn a_sql_view_removes_the_rows_of_a_deleted_pokemon_in_its_batch(log: Log) {
    use annals::storage::DeleteMode;
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&log, dir.path());
    let (pokemons, trainers) = (pokemons(&adapter), trainers(&adapter));
    register(&trainers, "ash", "Ash").await;
    register(&trainers, "brock", "Brock").await;
    grow(&pokemons, "pikachu", 1).await;
    grow(&pokemons, "eevee", 0).await;
    catch(&pokemons, "pikachu", 3, "ash").await;
    catch(&pokemons, "eevee", 2, "ash").await;
    let view = pokedex(&pokemons, &trainers, 1)
        .on_deleted(&pokemons, |db: &Connection, id: &str, mode: DeleteMode| {
            assert_eq!(mode, DeleteMode::Hard);
            db.execute("DELETE FROM pokemons WHERE id = ?1", [id])
                .map(|_| ())
        })
        // A delete in another store (the trainers) is not a Pokémon's.
        .open(dir.path().join("views"))
        .expect("open");
    let runner = view.run(adapter.clone());
    trainers
        .delete_aggregate("brock", DeleteMode::Soft)
        .await
        .expect("delete a trainer");
    let deleted = pokemons
        .delete_aggregate("eevee", DeleteMode::Hard)
        .await
        .expect("delete");
    view.wait_for(deleted, PATIENCE).await.expect("applied");
    assert_eq!(
        pokedex_rows(&view),
        [("Ash".to_owned(), "pikachu-name".to_owned(), 2)],
        "eevee's row is gone, the trainer's delete changed nothing"
    );
    runner.stop().await.expect("stop");
}
on_both_logs!(a_sql_view_removes_the_rows_of_a_deleted_pokemon_in_its_batch);

/// Counts events per Pokémon in SQL, failing on eevee's third event while `broken` is set.
fn fragile_counts(pokemons: &Pokemons, broken: Arc<AtomicBool>, dir: &Path) -> SqlView {
    SqlView::builder("event-counts", 1)
        .schema("CREATE TABLE counts (id TEXT PRIMARY KEY, events INTEGER NOT NULL)")
        .on(
            pokemons,
            move |db: &Connection, event: &EventDetail<PokemonEvent>| {
                db.execute(
                    "INSERT INTO counts VALUES (?1, 1) \
                 ON CONFLICT (id) DO UPDATE SET events = events + 1",
                    [&event.aggregate_id],
                )?;
                if event.aggregate_id == "eevee"
                    && event.version == 3
                    && broken.load(Ordering::SeqCst)
                {
                    return Err("the pokedex service is down".into());
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            },
        )
        .open(dir)
        .expect("open")
}

fn count(view: &SqlView, id: &str) -> Option<i64> {
    view.query(|db| {
        use rusqlite::OptionalExtension;
        db.query_row("SELECT events FROM counts WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
    })
    .expect("query")
}

#[tokio::test]
async fn a_sql_view_applies_each_event_once_across_a_failure_mid_batch_and_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let views = dir.path().join("views");
    let adapter = adapter(&Log::Disk, dir.path());
    let pokemons = pokemons(&adapter);
    grow(&pokemons, "pikachu", 9).await; // positions 1..=10
    grow(&pokemons, "eevee", 4).await; // positions 11..=15; its third event is 13
    let last = grow(&pokemons, "mew", 2).await;
    let broken = Arc::new(AtomicBool::new(true));
    {
        let view = fragile_counts(&pokemons, broken.clone(), &views);
        let failed = view.run(adapter.clone()).join().await;
        assert!(
            matches!(failed, Err(ViewError::Handler { position: 13, .. })),
            "{failed:?}"
        );
        assert_eq!(view.checkpoint().expect("checkpoint"), 13);
        assert_eq!(count(&view, "eevee"), Some(2));
        assert_eq!(count(&view, "mew"), None);
    }
    broken.store(false, Ordering::SeqCst);
    let view = fragile_counts(&pokemons, broken, &views); // the file is reopened
    let runner = view.run(adapter.clone());
    view.wait_for(last, PATIENCE).await.expect("caught up");
    assert_eq!(
        [
            count(&view, "pikachu"),
            count(&view, "eevee"),
            count(&view, "mew")
        ],
        [Some(10), Some(5), Some(3)]
    );
    runner.stop().await.expect("stop");
}

#[tokio::test]
async fn a_sql_view_file_is_in_wal_mode_with_full_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&Log::Memory, dir.path());
    let (pokemons, trainers) = (pokemons(&adapter), trainers(&adapter));
    let view = pokedex(&pokemons, &trainers, 1)
        .open(dir.path())
        .expect("open");
    assert_eq!(view.path(), dir.path().join("pokedex.v1.sqlite3"));
    let (mode, synchronous): (String, i64) = view
        .query(|db| {
            let mode = db.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync = db.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            Ok((mode, sync))
        })
        .expect("query");
    assert_eq!((mode.as_str(), synchronous), ("wal", 2)); // 2 is FULL
}
