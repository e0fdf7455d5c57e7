//! Durable timers: set by a command in the same commit as its events, delivered when due with
//! their attempt count, replaced by name, cancelled, kept across a restart of the store, kept
//! (with the attempt counted) when a delivery fails, and never delivered again once their
//! command recorded its events. Their store `<id>.timers` cannot be confused with an
//! application's store (the suffix is reserved), and entities on a store id too long to take
//! the suffix are refused with a typed error when they are built.

use std::sync::Arc;

use annals::entity::{
    ENTITY_STORE_ID_BYTES_MAX, Entities, EntityError, EntityOptions, Timers, timer_store_id,
};
use annals::event_store::RESERVED_EVENT_STORE_ID_SUFFIX;
use annals::storage::{InMemoryAdapter, LimitError, Limits, StorageError};
use annals::{
    Error, EventDetail, EventStore, GetEventsOptions, NewEvent, StorageAdapter, Timestamp,
};

use crate::{
    Counted, Counter, CounterCommand, CounterEvent, Gated, Tally, adapters, counters, store,
    stored, within,
};

fn at(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(millis)
}

fn count(seq: u64) -> CounterCommand {
    CounterCommand::Count { tag: (7, seq) }
}

fn arm(name: &str, at_ms: i64, later: (u64, u64)) -> CounterCommand {
    CounterCommand::Arm {
        tag: (1, 0),
        name: name.to_owned(),
        at_ms,
        later,
    }
}

async fn tags(adapter: Arc<dyn StorageAdapter>, id: &str) -> Vec<(u64, u64)> {
    stored(&store(adapter), id)
        .await
        .into_iter()
        .map(|e| {
            let CounterEvent::Counted(c) = e.event;
            c.tag
        })
        .collect()
}

#[tokio::test]
async fn a_due_timer_delivers_its_command_once_answered() {
    for (name, adapter, _dir) in adapters() {
        let entities = counters(adapter, EntityOptions::default());
        let timers = Timers::new(entities.clone());
        timers
            .schedule("alarm", "ring", at(2_000), &count(1))
            .await
            .expect("scheduled");
        assert_eq!(
            timers.fire_due(at(1_999)).await.expect("fired"),
            0,
            "{name}: not due"
        );
        assert!(stored(entities.store(), "alarm").await.is_empty(), "{name}");
        assert_eq!(
            timers.fire_due(at(2_000)).await.expect("fired"),
            1,
            "{name}"
        );
        assert_eq!(stored(entities.store(), "alarm").await.len(), 1, "{name}");
        assert!(
            timers.pending().await.expect("listed").is_empty(),
            "{name}: removed once answered"
        );
        assert_eq!(
            timers.fire_due(at(9_000)).await.expect("fired"),
            0,
            "{name}"
        );
    }
}

#[tokio::test]
async fn scheduling_a_name_again_replaces_the_timer() {
    let entities = counters(Arc::new(InMemoryAdapter::new()), EntityOptions::default());
    let timers = Timers::new(entities.clone());
    for (name, millis, seq) in [("ring", 1_000, 1), ("ring", 3_000, 2), ("other", 1_000, 3)] {
        timers
            .schedule("alarm", name, at(millis), &count(seq))
            .await
            .expect("scheduled");
    }
    let pending = timers.pending().await.expect("listed");
    assert_eq!(pending.len(), 2);
    assert_eq!(
        (pending[1].name.as_str(), pending[1].at),
        ("ring", at(3_000))
    );
    assert_eq!(
        timers.fire_due(at(2_000)).await.expect("fired"),
        1,
        "only `other` is due"
    );
    assert_eq!(timers.fire_due(at(3_000)).await.expect("fired"), 1);
    assert_eq!(
        tags(
            entities.store().storage_adapter().expect("adapter"),
            "alarm"
        )
        .await,
        vec![(7, 3), (7, 2)],
        "the replaced command never runs"
    );
    assert!(!timers.cancel("alarm", "ring").await.expect("cancelled"));
}

#[tokio::test]
async fn a_timer_set_by_a_command_commits_with_its_events_or_not_at_all() {
    let gated = Gated::new(Arc::new(InMemoryAdapter::new()));
    let entities = counters(gated.clone(), EntityOptions::default());
    let timers = Timers::new(entities.clone());
    let handle = entities.get("alarm");

    gated.fail_next_append();
    let failed = handle.send(arm("ring", 1_000, (2, 0))).await;
    assert!(
        matches!(failed, Err(EntityError::Store { .. })),
        "{failed:?}"
    );
    assert!(stored(entities.store(), "alarm").await.is_empty());
    assert!(
        timers.pending().await.expect("listed").is_empty(),
        "no timer without the command's events"
    );

    let reply = handle
        .send(arm("ring", 1_000, (2, 0)))
        .await
        .expect("armed");
    assert_eq!(reply.version, 1);
    let pending = timers.pending().await.expect("listed");
    assert_eq!(pending.len(), 1, "the timer committed with the event");
    assert_eq!(pending[0].command, CounterCommand::Count { tag: (2, 0) });
    // Both went in one commit: consecutive positions.
    let adapter = entities.store().storage_adapter().expect("adapter");
    let log = adapter.read_log(1, 10).await.expect("read the log");
    let stores: Vec<_> = log.iter().map(|e| e.event_store_id.as_str()).collect();
    assert_eq!(
        stores,
        vec!["COUNTERS", timer_store_id("COUNTERS").as_str()]
    );

    assert_eq!(timers.fire_due(at(1_000)).await.expect("fired"), 1);
    assert_eq!(tags(adapter, "alarm").await, vec![(1, 0), (2, 0)]);
}

#[tokio::test]
async fn a_rejected_or_invalid_command_sets_no_timer() {
    let entities = counters(Arc::new(InMemoryAdapter::new()), EntityOptions::default());
    let timers = Timers::new(entities.clone());
    let invalid = entities.get("alarm").send(CounterCommand::ArmInvalid).await;
    match invalid {
        Err(EntityError::InvalidTimer { name, reason, .. }) => {
            assert_eq!(name, "");
            assert!(reason.contains("empty"), "{reason}");
        }
        other => panic!("expected an invalid timer, got {other:?}"),
    }
    assert!(stored(entities.store(), "alarm").await.is_empty());
    assert!(timers.pending().await.expect("listed").is_empty());
}

#[tokio::test]
async fn a_command_can_cancel_a_timer_it_set_earlier() {
    let entities = counters(Arc::new(InMemoryAdapter::new()), EntityOptions::default());
    let timers = Timers::new(entities.clone());
    let handle = entities.get("alarm");
    handle
        .send(arm("ring", 1_000, (2, 0)))
        .await
        .expect("armed");
    let disarmed = handle
        .send(CounterCommand::Disarm {
            name: "ring".into(),
        })
        .await
        .expect("disarmed");
    assert!(disarmed.events.is_empty());
    assert!(timers.pending().await.expect("listed").is_empty());
    assert_eq!(timers.fire_due(at(5_000)).await.expect("fired"), 0);
    assert_eq!(stored(entities.store(), "alarm").await.len(), 1);
}

#[tokio::test]
async fn timers_survive_a_restart_of_the_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    {
        let adapter: Arc<dyn StorageAdapter> = annals::open(dir.path()).expect("open the log");
        let entities = counters(adapter, EntityOptions::default());
        let reply = entities.get("alarm").send(arm("ring", 5_000, (2, 0))).await;
        reply.expect("armed");
    }
    // The instance lets the store go once it has stopped, right after the entities are dropped.
    let adapter: Arc<dyn StorageAdapter> = within(async {
        loop {
            match annals::open(dir.path()) {
                Ok(adapter) => break adapter,
                Err(annals::StorageError::Locked { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(error) => panic!("reopen the log: {error}"),
            }
        }
    })
    .await;
    let entities = counters(adapter.clone(), EntityOptions::default());
    let timers = Timers::new(entities.clone());
    let pending = timers.pending().await.expect("listed");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].command, CounterCommand::Count { tag: (2, 0) });
    assert_eq!(pending[0].at, at(5_000));
    assert_eq!(timers.fire_due(at(5_000)).await.expect("fired"), 1);
    assert_eq!(tags(adapter, "alarm").await, vec![(1, 0), (2, 0)]);
}

#[tokio::test]
async fn a_failed_delivery_keeps_the_timer_and_the_next_one_carries_its_attempt() {
    let gated = Gated::new(Arc::new(InMemoryAdapter::new()));
    let entities = counters(gated.clone(), EntityOptions::default());
    let timers = Timers::new(entities.clone());
    timers
        .schedule("alarm", "ring", at(1_000), &CounterCommand::Stamp)
        .await
        .expect("scheduled");
    // The attempt is recorded, then the delivery's commit fails.
    gated.fail_append_after(1);
    assert_eq!(timers.fire_due(at(1_000)).await.expect("fired"), 0);
    let pending = timers.pending().await.expect("listed");
    assert_eq!(pending.len(), 1, "the timer stays after a failed delivery");
    assert_eq!(pending[0].attempts, 1);
    assert!(stored(entities.store(), "alarm").await.is_empty());

    assert_eq!(timers.fire_due(at(1_000)).await.expect("fired"), 1);
    assert_eq!(
        tags(gated.clone(), "alarm").await,
        vec![(2, 1)],
        "delivered once it worked, as the second attempt, decided once"
    );
    assert!(timers.pending().await.expect("listed").is_empty());
}

#[tokio::test]
async fn a_delivered_timer_is_never_delivered_again() {
    for (name, adapter, _dir) in adapters() {
        let entities = counters(adapter.clone(), EntityOptions::default());
        let timers = Timers::new(entities.clone());
        timers
            .schedule("alarm", "ring", at(1_000), &count(1))
            .await
            .expect("scheduled");
        assert_eq!(timers.fire_due(at(1_000)).await.expect("fired"), 1);
        // A second runtime reading the log from its start finds nothing to deliver.
        let again = Timers::new(counters(adapter.clone(), EntityOptions::default()));
        assert!(again.pending().await.expect("listed").is_empty(), "{name}");
        assert_eq!(again.fire_due(at(9_000)).await.expect("fired"), 0);
        assert_eq!(tags(adapter, "alarm").await, vec![(7, 1)], "{name}");
    }
}

#[tokio::test]
async fn two_runtimes_firing_the_same_timer_deliver_it_once() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let first = Timers::new(counters(adapter.clone(), EntityOptions::default()));
    let second = Timers::new(counters(adapter.clone(), EntityOptions::default()));
    first
        .schedule("alarm", "ring", at(1_000), &count(1))
        .await
        .expect("scheduled");
    // Both see the timer before either fires it.
    assert_eq!(first.pending().await.expect("listed").len(), 1);
    assert_eq!(second.pending().await.expect("listed").len(), 1);
    let (a, b) =
        within(async { tokio::join!(first.fire_due(at(1_000)), second.fire_due(at(1_000))) }).await;
    assert_eq!(
        a.expect("fired") + b.expect("fired"),
        1,
        "one delivery wins"
    );
    assert_eq!(tags(adapter, "alarm").await, vec![(7, 1)]);
}

#[tokio::test]
async fn a_decision_redone_after_a_conflict_sees_its_attempt() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let entities = counters(adapter.clone(), EntityOptions::default());
    let handle = entities.get("alarm");
    handle.send(count(0)).await.expect("loaded at version 1");
    // Someone else appends version 2 behind the instance's back.
    let plain = CounterEvent::Counted(Counted {
        total: 2,
        tag: (9, 9),
    });
    store(adapter.clone())
        .push_event(NewEvent::new("alarm", 2, plain), Default::default())
        .await
        .expect("pushed");
    let reply = handle.send(CounterCommand::Stamp).await.expect("stamped");
    assert_eq!(reply.version, 3);
    let CounterEvent::Counted(counted) = &reply.events[0].event;
    assert_eq!(counted.tag, (0, 2), "no timer; decided a second time");
    let events = store(adapter)
        .get_events("alarm", GetEventsOptions::default())
        .await
        .expect("read");
    assert_eq!(events.len(), 3);
}

fn tally(state: Option<Tally>, event: &EventDetail<CounterEvent>) -> Tally {
    let mut tally = state.unwrap_or_default();
    let CounterEvent::Counted(counted) = &event.event;
    tally.total = counted.total;
    tally.tags.push(counted.tag);
    tally
}

fn counters_named(
    id: &str,
    adapter: Arc<dyn StorageAdapter>,
) -> Result<EventStore<CounterEvent, Tally>, Error> {
    EventStore::builder(id, tally)
        .storage_adapter(adapter)
        .build()
}

/// The store id an `InvalidEventStoreId` error names, if the error is one.
fn refused_store_id(error: &Error) -> Option<&str> {
    match error {
        Error::Storage(StorageError::Limit(LimitError::InvalidEventStoreId {
            event_store_id,
            ..
        })) => Some(event_store_id),
        _ => None,
    }
}

#[tokio::test]
async fn entities_on_a_store_id_too_long_for_its_timer_store_are_refused_with_a_typed_error() {
    assert_eq!(ENTITY_STORE_ID_BYTES_MAX, 121);
    for len in 122..=128 {
        let id = "C".repeat(len);
        let store = counters_named(&id, Arc::new(InMemoryAdapter::new()))
            .expect("a valid store id of up to 128 bytes builds");
        let error = Entities::<Counter>::new(store, EntityOptions::default())
            .expect_err("the timer store id would pass 128 bytes");
        assert_eq!(
            refused_store_id(&error),
            Some(id.as_str()),
            "{len}: {error}"
        );
        assert!(error.to_string().contains(".timers"), "{error}");
    }
    // An adapter with a lower limit lowers the longest id entities take.
    let limits = Limits {
        event_store_id_bytes_max: 64,
        ..Limits::default()
    };
    let adapter = Arc::new(InMemoryAdapter::with_limits(limits));
    let id = "C".repeat(58);
    let store = counters_named(&id, adapter.clone()).expect("builds");
    let error = Entities::<Counter>::new(store, EntityOptions::default()).unwrap_err();
    assert_eq!(refused_store_id(&error), Some(id.as_str()));
    let store = counters_named(&"C".repeat(57), adapter).expect("builds");
    assert!(Entities::<Counter>::new(store, EntityOptions::default()).is_ok());
}

#[tokio::test]
async fn the_longest_store_id_entities_take_keeps_its_timers_in_its_timer_store() {
    for (name, adapter, _dir) in adapters() {
        let id = "C".repeat(ENTITY_STORE_ID_BYTES_MAX);
        let store = counters_named(&id, adapter.clone()).expect("builds");
        let entities = Entities::<Counter>::new(store, EntityOptions::default()).expect(name);
        let timers = Timers::new(entities.clone());
        timers
            .schedule("alarm", "ring", at(1_000), &count(1))
            .await
            .expect("scheduled");
        assert_eq!(
            timers.fire_due(at(1_000)).await.expect("fired"),
            1,
            "{name}"
        );
        assert_eq!(stored(entities.store(), "alarm").await.len(), 1, "{name}");
        // Where timers have always been: existing stores' timers are found where they are.
        let timer_store = timer_store_id(&id);
        assert_eq!(timer_store, format!("{id}.timers"));
        assert_eq!(timer_store.len(), 128);
        let timer_events = adapter
            .get_events(&timer_store, "alarm", &GetEventsOptions::default())
            .await
            .expect("read");
        let types: Vec<_> = timer_events
            .iter()
            .map(|e| e.event.event_type.as_str())
            .collect();
        assert_eq!(
            types,
            ["TIMER_SCHEDULED", "TIMER_ATTEMPTED", "TIMER_DELIVERED"],
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_application_store_cannot_take_the_name_of_a_timer_store() {
    assert_eq!(RESERVED_EVENT_STORE_ID_SUFFIX, ".timers");
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    for id in ["COUNTERS.timers", "X.timers", ".timers", "a.timers.timers"] {
        let error =
            counters_named(id, adapter.clone()).expect_err("the suffix .timers is reserved");
        assert_eq!(refused_store_id(&error), Some(id), "{error}");
        assert!(error.to_string().contains("reserved"), "{error}");
    }
    // Only the exact suffix is reserved.
    for id in [
        "timers",
        "COUNTERS.timers2",
        "COUNTERS-timers",
        "COUNTERS.timer",
        "a.timersx",
    ] {
        counters_named(id, adapter.clone()).expect("an ordinary id builds");
    }
    // So the timers of COUNTERS are the only events of `COUNTERS.timers`.
    let entities = counters(adapter.clone(), EntityOptions::default());
    let timers = Timers::new(entities.clone());
    timers
        .schedule("alarm", "ring", at(1_000), &count(1))
        .await
        .expect("scheduled");
    assert_eq!(timers.pending().await.expect("listed").len(), 1);
    assert_eq!(timers.fire_due(at(1_000)).await.expect("fired"), 1);
}
