//! Fencing: when something else appends to an entity's aggregate, the instance's next commit
//! conflicts, and it reloads and decides again instead of losing or overwriting an update.

use std::sync::Arc;

use annals::entity::EntityOptions;
use annals::{NewEvent, StorageAdapter};

use crate::{Counted, CounterCommand, CounterEvent, adapters, counters, store, stored, within};

/// A plain writer: read, add one, push; retried on conflict like a `Command`.
async fn plain_count(adapter: Arc<dyn StorageAdapter>, tag: (u64, u64)) {
    let store = store(adapter);
    loop {
        let current = store.get_aggregate("shared", Default::default()).await;
        let current = current.expect("read").aggregate;
        let (version, total) = current.map_or((0, 0), |a| (a.version, a.total));
        let event = CounterEvent::Counted(Counted {
            total: total + 1,
            tag,
        });
        match store
            .push_event(
                NewEvent::new("shared", version + 1, event),
                Default::default(),
            )
            .await
        {
            Ok(_) => return,
            Err(error) if error.event_already_exists().is_some() => continue,
            Err(error) => panic!("plain push failed: {error}"),
        }
    }
}

#[tokio::test]
async fn a_plain_push_behind_the_instance_is_seen_before_the_next_decision() {
    for (name, adapter, _dir) in adapters() {
        let entities = counters(adapter.clone(), EntityOptions::default());
        let handle = entities.get("shared");
        let first = handle.send(CounterCommand::Count { tag: (0, 0) }).await;
        assert_eq!(first.expect("counted").version, 1, "{name}");
        plain_count(adapter.clone(), (1, 0)).await;
        // The instance still holds version 1; its commit of version 2 conflicts.
        let next = handle.send(CounterCommand::Count { tag: (0, 1) }).await;
        let next = next.expect("counted after reloading");
        assert_eq!(next.version, 3, "{name}");
        let CounterEvent::Counted(counted) = &next.events[0].event;
        assert_eq!(counted.total, 3, "{name}: decided on the reloaded state");
        assert_eq!(stored(entities.store(), "shared").await.len(), 3, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_plain_pushes_lose_no_update() {
    for (name, adapter, _dir) in adapters() {
        let options = EntityOptions {
            conflict_retries: u32::MAX,
            ..EntityOptions::default()
        };
        let entities = counters(adapter.clone(), options);
        let mut tasks = Vec::new();
        for sender in 0..20u64 {
            let handle = entities.get("shared");
            tasks.push(tokio::spawn(async move {
                for seq in 0..10 {
                    let reply = handle.send(CounterCommand::Count { tag: (sender, seq) });
                    reply.await.expect("counted");
                }
            }));
        }
        for writer in 100..105u64 {
            let adapter = adapter.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0..10 {
                    plain_count(adapter.clone(), (writer, seq)).await;
                }
            }));
        }
        for task in tasks {
            within(task).await.expect("the task finishes");
        }
        let events = stored(entities.store(), "shared").await;
        assert_eq!(events.len(), 250, "{name}: every update is recorded");
        let mut tags = Vec::new();
        for (expected, event) in (1..).zip(&events) {
            let CounterEvent::Counted(counted) = &event.event;
            assert_eq!(
                counted.total, expected,
                "{name}: each decided on the latest state"
            );
            tags.push(counted.tag);
        }
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), 250, "{name}: no update applied twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_over_one_store_take_turns_without_losing_updates() {
    for (name, adapter, _dir) in adapters() {
        let options = EntityOptions {
            conflict_retries: u32::MAX,
            ..EntityOptions::default()
        };
        // Like two processes, each with its own instance of the same id.
        let left = counters(adapter.clone(), options.clone());
        let right = counters(adapter, options);
        let mut tasks = Vec::new();
        for (side, entities) in [(0u64, &left), (1, &right)] {
            for sender in 0..10u64 {
                let handle = entities.get("shared");
                tasks.push(tokio::spawn(async move {
                    for seq in 0..10 {
                        let tag = (side * 100 + sender, seq);
                        handle
                            .send(CounterCommand::Count { tag })
                            .await
                            .expect("counted");
                    }
                }));
            }
        }
        for task in tasks {
            within(task).await.expect("the task finishes");
        }
        let events = stored(left.store(), "shared").await;
        assert_eq!(events.len(), 200, "{name}: every update is recorded");
        for (expected, event) in (1..).zip(&events) {
            let CounterEvent::Counted(counted) = &event.event;
            assert_eq!(
                counted.total, expected,
                "{name}: each decided on the latest state"
            );
        }
    }
}
