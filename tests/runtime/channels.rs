//! Message channels fed from the log, and pours of history into them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use annals::channel::{
    InMemoryBus, InMemoryQueue, ListenerFilter, Message, MessageChannel, MessageKind,
    MessageSource, Publisher,
};
use annals::dam::{PourOptions, pour_aggregate_events, pour_aggregate_ids, pour_events};
use annals::state::StateStore;
use annals::storage::{InMemoryAdapter, StorageAdapter};
use annals::{EventDetail, EventStore, GetAggregateOptions, NewEvent};
use serde::{Deserialize, Serialize};

use crate::log_store;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appeared {
    pub name: String,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeveledUp {}

annals::events! {
    pub enum PokemonEvent {
        Appeared(Appeared) = "POKEMON_APPEARED",
        LeveledUp(LeveledUp) = "POKEMON_LEVELED_UP",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pokemon {
    pub name: String,
    pub level: u32,
}

fn reduce(pokemon: Option<Pokemon>, event: &EventDetail<PokemonEvent>) -> Pokemon {
    match (pokemon, &event.event) {
        (_, PokemonEvent::Appeared(e)) => Pokemon {
            name: e.name.clone(),
            level: 1,
        },
        (Some(p), PokemonEvent::LeveledUp(_)) => Pokemon {
            level: p.level + 1,
            ..p
        },
        (None, PokemonEvent::LeveledUp(_)) => Pokemon {
            name: String::new(),
            level: 0,
        },
    }
}

type Pokemons = EventStore<PokemonEvent, Pokemon>;

fn store(name: &str, adapter: &Arc<dyn StorageAdapter>) -> Pokemons {
    EventStore::builder(name, reduce)
        .storage_adapter(Arc::clone(adapter))
        .build()
        .expect("event store")
}

/// Two pokemons: pikachu appears and levels up twice, bulbasaur appears in between.
async fn history(pokemons: &Pokemons) {
    let appeared = |name: &str| PokemonEvent::Appeared(Appeared { name: name.into() });
    let up = || PokemonEvent::LeveledUp(LeveledUp {});
    for (id, version, event) in [
        ("pikachu", 1, appeared("Pikachu")),
        ("pikachu", 2, up()),
        ("bulbasaur", 1, appeared("Bulbasaur")),
        ("pikachu", 3, up()),
    ] {
        pokemons
            .push_event(NewEvent::new(id, version, event), Default::default())
            .await
            .expect("push");
    }
}

fn ids_and_versions(messages: &[Message]) -> Vec<(String, u64)> {
    messages
        .iter()
        .map(|m| match m {
            Message::Notification(n) => {
                let e = n.event::<PokemonEvent>().expect("typed event");
                (e.aggregate_id, e.version)
            }
            Message::StateCarrying(s) => {
                let e = s.event::<PokemonEvent>().expect("typed event");
                (e.aggregate_id, e.version)
            }
            Message::AggregateExists(a) => (a.aggregate_id.clone(), 0),
        })
        .collect()
}

fn drain(listener: &mut annals::channel::BusListener) -> Vec<annals::channel::Delivery> {
    std::iter::from_fn(|| listener.try_recv()).collect()
}

#[tokio::test]
async fn a_publisher_sends_each_event_as_a_notification_in_global_order() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let pokemons = store("POKEMONS", &adapter);
    history(&pokemons).await;
    let bus = Arc::new(InMemoryBus::new("notifications"));
    let mut everything = bus.listen(ListenerFilter::all());
    let mut level_ups = bus.listen(ListenerFilter::all().event_types(["POKEMON_LEVELED_UP"]));
    let mut trainers = bus.listen(ListenerFilter::all().stores(["TRAINERS"]));
    let state = Arc::new(StateStore::in_memory());
    let publisher = Publisher::new(
        "notifier",
        Arc::clone(&adapter),
        state,
        MessageKind::Notification,
        bus.clone(),
    )
    .source(Arc::new(pokemons.clone()));
    assert_eq!(publisher.catch_up().await.expect("catch up"), 4);
    let all: Vec<Message> = drain(&mut everything)
        .into_iter()
        .map(|d| d.message)
        .collect();
    assert_eq!(
        ids_and_versions(&all),
        [
            ("pikachu".into(), 1),
            ("pikachu".into(), 2),
            ("bulbasaur".into(), 1),
            ("pikachu".into(), 3)
        ]
    );
    let typed = match &all[0] {
        Message::Notification(n) => n.event::<PokemonEvent>().expect("typed"),
        other => panic!("expected a notification, got {other:?}"),
    };
    assert!(
        matches!(&typed.event, PokemonEvent::Appeared(a) if a.name == "Pikachu"),
        "the typed event: {:?}",
        typed.event
    );
    let ups: Vec<Message> = drain(&mut level_ups)
        .into_iter()
        .map(|d| d.message)
        .collect();
    assert_eq!(
        ids_and_versions(&ups),
        [("pikachu".into(), 2), ("pikachu".into(), 3)]
    );
    assert!(drain(&mut trainers).is_empty());
    assert_eq!(
        publisher.catch_up().await.expect("again"),
        0,
        "a caught-up publisher publishes nothing twice"
    );
}

#[tokio::test]
async fn state_carrying_messages_carry_the_aggregate_at_the_events_version() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let pokemons = store("POKEMONS", &adapter);
    history(&pokemons).await;
    let queue = Arc::new(InMemoryQueue::new("states"));
    let mut receiver = queue.take_receiver().expect("the one consumer");
    assert!(queue.take_receiver().is_none(), "a queue has one consumer");
    let publisher = Publisher::new(
        "states",
        Arc::clone(&adapter),
        Arc::new(StateStore::in_memory()),
        MessageKind::StateCarrying,
        queue.clone(),
    )
    .source(Arc::new(pokemons.clone()));
    publisher.catch_up().await.expect("catch up");
    for _ in 0..4 {
        let delivery = receiver.try_recv().expect("a message");
        assert!(!delivery.replay);
        let Message::StateCarrying(m) = delivery.message else {
            panic!("expected a state-carrying message");
        };
        let event = m.event::<PokemonEvent>().expect("event");
        let aggregate = m.aggregate::<Pokemon>().expect("aggregate");
        let expected = pokemons
            .get_aggregate(
                &event.aggregate_id,
                GetAggregateOptions {
                    max_version: Some(event.version),
                },
            )
            .await
            .expect("get_aggregate")
            .aggregate
            .expect("exists");
        assert_eq!(aggregate, expected);
    }
    assert!(receiver.try_recv().is_none());
}

#[tokio::test]
async fn aggregate_exists_messages_are_sent_once_per_aggregate() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let pokemons = store("POKEMONS", &adapter);
    history(&pokemons).await;
    let bus = Arc::new(InMemoryBus::new("exists"));
    let mut listener = bus.listen(ListenerFilter::all());
    Publisher::new(
        "exists",
        Arc::clone(&adapter),
        Arc::new(StateStore::in_memory()),
        MessageKind::AggregateExists,
        bus.clone(),
    )
    .source(Arc::new(pokemons))
    .catch_up()
    .await
    .expect("catch up");
    let ids: Vec<_> = drain(&mut listener)
        .into_iter()
        .map(|d| match d.message {
            Message::AggregateExists(m) => m.aggregate_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, ["pikachu", "bulbasaur"]);
}

#[tokio::test]
async fn an_event_pushed_just_before_a_crash_is_published_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_path = dir.path().join("state.redb");
    {
        let adapter = log_store(&dir.path().join("log"));
        let pokemons = store("POKEMONS", &adapter);
        history(&pokemons).await;
        // The process stops here: nothing was published yet.
    }
    let adapter = log_store(&dir.path().join("log"));
    let pokemons = store("POKEMONS", &adapter);
    let bus = Arc::new(InMemoryBus::new("notifications"));
    let mut listener = bus.listen(ListenerFilter::all());
    let publisher = |state| {
        Publisher::new(
            "notifier",
            Arc::clone(&adapter),
            state,
            MessageKind::Notification,
            bus.clone(),
        )
        .source(Arc::new(pokemons.clone()))
    };
    let state = Arc::new(StateStore::open(&state_path).expect("state"));
    assert_eq!(
        publisher(Arc::clone(&state))
            .catch_up()
            .await
            .expect("catch up"),
        4
    );
    drop(state);
    assert_eq!(drain(&mut listener).len(), 4);
    // After a restart, only new events are published.
    let state = Arc::new(StateStore::open(&state_path).expect("state"));
    pokemons
        .push_event(
            NewEvent::new("bulbasaur", 2, PokemonEvent::LeveledUp(LeveledUp {})),
            Default::default(),
        )
        .await
        .expect("push");
    assert_eq!(publisher(state).catch_up().await.expect("catch up"), 1);
    let last = drain(&mut listener);
    assert_eq!(
        ids_and_versions(&[last[0].message.clone()]),
        [("bulbasaur".into(), 2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_publisher_publishes_commits_as_they_land() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let pokemons = store("POKEMONS", &adapter);
    let bus = Arc::new(InMemoryBus::new("live"));
    let mut listener = bus.listen(ListenerFilter::all());
    let handle = Publisher::new(
        "live",
        Arc::clone(&adapter),
        Arc::new(StateStore::in_memory()),
        MessageKind::Notification,
        bus.clone(),
    )
    .source(Arc::new(pokemons.clone()))
    .spawn();
    history(&pokemons).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
            .await
            .expect("a message arrives")
            .expect("bus alive");
        got.push(delivery.message);
    }
    assert_eq!(ids_and_versions(&got).len(), 4);
    assert!(!handle.is_finished());
    handle.stop().await.expect("a clean stop");
}

#[tokio::test(start_paused = true)]
async fn pours_publish_history_as_replays_in_global_order_at_the_rate_asked() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let pokemons = store("POKEMONS", &adapter);
    let trainers = store("TRAINERS", &adapter);
    history(&pokemons).await;
    trainers
        .push_event(
            NewEvent::new(
                "ash",
                1,
                PokemonEvent::Appeared(Appeared { name: "Ash".into() }),
            ),
            Default::default(),
        )
        .await
        .expect("push");
    history(&store("IGNORED", &adapter)).await;
    let bus = InMemoryBus::new("replays");
    let mut live_only = bus.listen(ListenerFilter::all());
    let mut replays = bus.listen(ListenerFilter::all().with_replays());
    let progress = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&progress);
    let options = PourOptions {
        rate_limit: Some(10.0),
        progress: Some(Arc::new(move |r| seen.store(r.poured, Ordering::SeqCst))),
    };
    let sources: Vec<Arc<dyn MessageSource>> = vec![Arc::new(pokemons.clone()), Arc::new(trainers)];
    let started = tokio::time::Instant::now();
    let report = pour_events(&*adapter, &sources, &bus, &options)
        .await
        .expect("pour");
    assert_eq!(report.poured, 5);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "5 messages at 10/s span at least 0.4 s of (virtual) time"
    );
    assert_eq!(progress.load(Ordering::SeqCst), 5);
    assert_eq!(
        (
            report.first.as_ref().map(|i| i.position),
            report.last.as_ref().map(|i| i.position)
        ),
        (Some(Some(1)), Some(Some(5)))
    );
    assert!(
        drain(&mut live_only).is_empty(),
        "replays go only to listeners that opt in"
    );
    let poured = drain(&mut replays);
    assert!(poured.iter().all(|d| d.replay));
    let stores: Vec<&str> = poured.iter().map(|d| d.message.event_store_id()).collect();
    assert_eq!(
        stores,
        ["POKEMONS", "POKEMONS", "POKEMONS", "POKEMONS", "TRAINERS"]
    );

    let report = pour_aggregate_events(
        &*adapter,
        &pokemons,
        "pikachu",
        &bus,
        &PourOptions::default(),
    )
    .await
    .expect("pour one aggregate");
    assert_eq!(report.poured, 3);
    let messages: Vec<Message> = drain(&mut replays).into_iter().map(|d| d.message).collect();
    assert_eq!(
        ids_and_versions(&messages),
        [
            ("pikachu".into(), 1),
            ("pikachu".into(), 2),
            ("pikachu".into(), 3)
        ]
    );

    let report = pour_aggregate_ids(&*adapter, &pokemons, &bus, &PourOptions::default())
        .await
        .expect("pour ids");
    assert_eq!(report.poured, 2);
    let messages: Vec<Message> = drain(&mut replays).into_iter().map(|d| d.message).collect();
    let listed: Vec<(String, u64)> = pokemons
        .list_aggregate_ids(Default::default())
        .await
        .expect("list")
        .aggregate_ids
        .into_iter()
        .map(|a| (a.aggregate_id, 0))
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        ids_and_versions(&messages),
        listed,
        "in the order of their first event"
    );
    assert_eq!(bus.name(), "replays");
}
