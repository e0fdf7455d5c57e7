//! Key-value views in redb: catch-up then live, typed and raw handlers.

use std::sync::Arc;

use annals::state::StateStore;
use annals::storage::LoggedEvent;
use annals::subscription::Filter;
use annals::view::{KvError, KvTables, KvView};
use annals::{EventDetail, NewEvent};

use crate::{Log, PATIENCE, PokemonEvent, Pokemons, adapter, grow, on_both_logs, pokemons};

/// A view counting, per Pokémon, the events applied to it (`events` table) and keeping its
/// name (`names` table): a double application shows as a count too high.
pub fn event_counts(pokemons: &Pokemons, version: u64) -> annals::view::KvViewBuilder {
    KvView::builder("event-counts", version).on(
        pokemons,
        |tables: &mut KvTables<'_>, event: &EventDetail<PokemonEvent>| {
            let id = &event.aggregate_id;
            let count: u64 = tables.get("events", id)?.unwrap_or(0);
            tables.put("events", id, &(count + 1))?;
            if let PokemonEvent::Appeared(appeared) = &event.event {
                tables.put("names", id, &appeared.name)?;
            }
            Ok::<(), KvError>(())
        },
    )
}

async fn kv_view_catches_up_then_follows_live_appends(log: Log) {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&log, dir.path());
    let pokemons = pokemons(&adapter);
    // More than one batch of history before the view starts.
    grow(&pokemons, "pikachu", 299).await;
    grow(&pokemons, "eevee", 9).await;
    let state = Arc::new(StateStore::open(dir.path().join("state.redb")).expect("state"));
    let view = event_counts(&pokemons, 1).build(state).expect("build");
    let runner = view.run(adapter.clone());
    let history_end = grow(&pokemons, "mew", 0).await;
    view.wait_for(history_end, PATIENCE)
        .await
        .expect("caught up");
    assert_eq!(
        view.get::<u64>("events", "pikachu").expect("get"),
        Some(300)
    );
    assert_eq!(view.get::<u64>("events", "eevee").expect("get"), Some(10));

    // Live: appended while the runner waits.
    let live = grow(&pokemons, "snorlax", 2).await;
    view.wait_for(live, PATIENCE)
        .await
        .expect("live event applied");
    assert_eq!(view.get::<u64>("events", "snorlax").expect("get"), Some(3));
    assert_eq!(
        view.get::<String>("names", "snorlax")
            .expect("get")
            .as_deref(),
        Some("snorlax-name")
    );
    let names: Vec<(String, String)> = view.scan("names").expect("scan");
    let ids: Vec<&str> = names.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["eevee", "mew", "pikachu", "snorlax"]);
    assert_eq!(view.active_version().expect("active"), Some(1));
    runner.stop().await.expect("stop cleanly");
}
on_both_logs!(kv_view_catches_up_then_follows_live_appends);

async fn a_stopped_view_resumes_from_its_checkpoint_without_reapplying(log: Log) {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&log, dir.path());
    let pokemons = pokemons(&adapter);
    let state = Arc::new(StateStore::open(dir.path().join("state.redb")).expect("state"));
    let first = grow(&pokemons, "pikachu", 4).await;
    {
        let view = event_counts(&pokemons, 1)
            .build(state.clone())
            .expect("build");
        let runner = view.run(adapter.clone());
        view.wait_for(first, PATIENCE).await.expect("applied");
        runner.stop().await.expect("stop");
        assert_eq!(view.checkpoint().expect("checkpoint"), first + 1);
    }
    let second = grow(&pokemons, "eevee", 1).await;
    let view = event_counts(&pokemons, 1)
        .build(state)
        .expect("rebuild handle");
    let runner = view.run(adapter.clone());
    view.wait_for(second, PATIENCE).await.expect("applied");
    assert_eq!(view.get::<u64>("events", "pikachu").expect("get"), Some(5));
    assert_eq!(view.get::<u64>("events", "eevee").expect("get"), Some(2));
    runner.stop().await.expect("stop");
}
on_both_logs!(a_stopped_view_resumes_from_its_checkpoint_without_reapplying);

#[tokio::test]
async fn raw_handlers_receive_the_logged_events_their_filter_admits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&Log::Memory, dir.path());
    let pokemons = pokemons(&adapter);
    let trainers = crate::trainers(&adapter);
    let view = KvView::builder("caught-positions", 1)
        .on_logged(
            Filter::all().event_types(["POKEMON_CAUGHT", "TRAINER_REGISTERED"]),
            |tables: &mut KvTables<'_>, event: &LoggedEvent| {
                let key = format!("{:08}", event.position);
                tables.put("log", &key, &event.event.event_type)
            },
        )
        .build(Arc::new(StateStore::in_memory()))
        .expect("build");
    let runner = view.run(adapter.clone());
    grow(&pokemons, "pikachu", 1).await;
    let registered = crate::TrainerEvent::Registered(crate::Registered { name: "Ash".into() });
    trainers
        .push_event(NewEvent::new("ash", 1, registered), Default::default())
        .await
        .expect("register");
    let caught = PokemonEvent::Caught(crate::Caught {
        trainer_id: "ash".into(),
    });
    let last = pokemons
        .push_event(NewEvent::new("pikachu", 3, caught), Default::default())
        .await
        .expect("catch")
        .position;
    view.wait_for(last, PATIENCE).await.expect("applied");
    let rows: Vec<(String, String)> = view.scan("log").expect("scan");
    assert_eq!(
        rows,
        [
            ("00000003".to_owned(), "TRAINER_REGISTERED".to_owned()),
            ("00000004".to_owned(), "POKEMON_CAUGHT".to_owned()),
        ]
    );
    runner.stop().await.expect("stop");
}

async fn kv_view_removes_the_rows_of_deleted_aggregates_of_its_store_only(log: Log) {
    use annals::storage::DeleteMode;
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = adapter(&log, dir.path());
    let pokemons = pokemons(&adapter);
    // A store of the same event types under another id: its deletes are not this view's.
    let others: Pokemons =
        annals::EventStore::builder("OTHERS", |_, _: &EventDetail<PokemonEvent>| ())
            .storage_adapter(adapter.clone())
            .build()
            .expect("build");
    grow(&pokemons, "pikachu", 1).await;
    grow(&pokemons, "eevee", 0).await;
    grow(&others, "pikachu", 0).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let state = Arc::new(StateStore::open(dir.path().join("state.redb")).expect("state"));
    let view = event_counts(&pokemons, 1)
        .on_deleted(
            &pokemons,
            move |tables: &mut KvTables<'_>, id: &str, mode: DeleteMode| {
                sink.lock().unwrap().push((id.to_owned(), mode));
                tables.remove("events", id)?;
                tables.remove("names", id).map(drop)
            },
        )
        .build(state)
        .expect("build");
    let runner = view.run(adapter.clone());
    others
        .delete_aggregate("pikachu", DeleteMode::Hard)
        .await
        .expect("delete in the other store");
    let deleted = pokemons
        .delete_aggregate("pikachu", DeleteMode::Soft)
        .await
        .expect("delete");
    view.wait_for(deleted, PATIENCE)
        .await
        .expect("delete applied");
    assert_eq!(view.get::<u64>("events", "pikachu").expect("get"), None);
    assert_eq!(view.get::<u64>("events", "eevee").expect("get"), Some(1));
    assert_eq!(
        *seen.lock().unwrap(),
        [("pikachu".to_owned(), DeleteMode::Soft)],
        "only this store's delete, once"
    );
    // Restored: the view does not rebuild the rows by itself, but new events count again.
    pokemons
        .restore_aggregate("pikachu")
        .await
        .expect("restore");
    let live = grow_more(&pokemons, "pikachu", 3).await;
    view.wait_for(live, PATIENCE).await.expect("applied");
    assert_eq!(view.get::<u64>("events", "pikachu").expect("get"), Some(1));
    runner.stop().await.expect("stop cleanly");
}
on_both_logs!(kv_view_removes_the_rows_of_deleted_aggregates_of_its_store_only);

/// Pushes one level-up of `id` at `version`; returns its position.
async fn grow_more(pokemons: &Pokemons, id: &str, version: u64) -> annals::storage::Position {
    pokemons
        .push_event(
            NewEvent::new(id, version, PokemonEvent::LeveledUp(crate::LeveledUp {})),
            Default::default(),
        )
        .await
        .expect("push")
        .position
}
