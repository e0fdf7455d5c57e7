//! Durable timers: delivered when due, replaced by name, kept across a restart of the state
//! store, and kept (with their attempt count) when a delivery fails.

use std::sync::Arc;

use annals::entity::{EntityOptions, Timers};
use annals::state::StateStore;
use annals::storage::InMemoryAdapter;
use annals::{StorageAdapter, Timestamp};

use crate::{CounterCommand, CounterEvent, Gated, adapters, counters, stored};

fn at(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(millis)
}

fn count(seq: u64) -> CounterCommand {
    CounterCommand::Count { tag: (7, seq) }
}

#[tokio::test]
async fn a_due_timer_delivers_its_command_once_answered() {
    for (name, adapter, _dir) in adapters() {
        let entities = counters(adapter, EntityOptions::default());
        let timers = Timers::new(entities.clone(), Arc::new(StateStore::in_memory()));
        timers
            .schedule("alarm", "ring", at(2_000), &count(1))
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
            timers.pending().expect("listed").is_empty(),
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
    let timers = Timers::new(entities.clone(), Arc::new(StateStore::in_memory()));
    timers
        .schedule("alarm", "ring", at(1_000), &count(1))
        .expect("scheduled");
    timers
        .schedule("alarm", "ring", at(3_000), &count(2))
        .expect("rescheduled");
    timers
        .schedule("alarm", "other", at(1_000), &count(3))
        .expect("scheduled");
    let pending = timers.pending().expect("listed");
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
    let tags: Vec<_> = stored(entities.store(), "alarm")
        .await
        .into_iter()
        .map(|e| {
            let CounterEvent::Counted(c) = e.event;
            c.tag
        })
        .collect();
    assert_eq!(
        tags,
        vec![(7, 3), (7, 2)],
        "the replaced command never runs"
    );
    assert!(timers.cancel("alarm", "ring").is_ok_and(|removed| !removed));
}

#[tokio::test]
async fn timers_survive_a_restart_of_the_state_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.redb");
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    {
        let entities = counters(adapter.clone(), EntityOptions::default());
        let state = Arc::new(StateStore::open(&path).expect("open the state"));
        let timers = Timers::new(entities, state);
        timers
            .schedule("alarm", "ring", at(5_000), &count(1))
            .expect("scheduled");
    }
    let entities = counters(adapter, EntityOptions::default());
    let state = Arc::new(StateStore::open(&path).expect("reopen the state"));
    let timers = Timers::new(entities.clone(), state);
    let pending = timers.pending().expect("listed");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].command, count(1));
    assert_eq!(timers.fire_due(at(5_000)).await.expect("fired"), 1);
    assert_eq!(stored(entities.store(), "alarm").await.len(), 1);
}

#[tokio::test]
async fn a_failed_delivery_keeps_the_timer_and_counts_the_attempt() {
    let gated = Gated::new(Arc::new(InMemoryAdapter::new()));
    let entities = counters(gated.clone(), EntityOptions::default());
    let timers = Timers::new(entities.clone(), Arc::new(StateStore::in_memory()));
    timers
        .schedule("alarm", "ring", at(1_000), &count(1))
        .expect("scheduled");
    gated.fail_next_append();
    assert_eq!(timers.fire_due(at(1_000)).await.expect("fired"), 0);
    let pending = timers.pending().expect("listed");
    assert_eq!(pending.len(), 1, "the timer stays after a failed delivery");
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(timers.fire_due(at(1_000)).await.expect("fired"), 1);
    assert_eq!(
        stored(entities.store(), "alarm").await.len(),
        1,
        "delivered once it worked"
    );
    assert!(timers.pending().expect("listed").is_empty());
}
