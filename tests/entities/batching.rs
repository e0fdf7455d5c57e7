//! A hot entity under many concurrent senders: commands decided while a commit is in flight
//! are committed together, and every reply is still right.

use std::collections::BTreeSet;

use annals::entity::EntityOptions;

use crate::{CounterCommand, CounterEvent, adapters, counters, stored, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_senders_each_get_their_own_version() {
    for (name, adapter, _dir) in adapters() {
        let entities = counters(adapter, EntityOptions::default());
        let mut senders = Vec::new();
        for sender in 0..1_000u64 {
            let handle = entities.get("hot");
            senders.push(tokio::spawn(async move {
                let reply = handle
                    .send(CounterCommand::Count { tag: (sender, 0) })
                    .await;
                (sender, reply.expect("counted"))
            }));
        }
        let mut versions = BTreeSet::new();
        for sender in senders {
            let (sender, reply) = within(sender).await.expect("the sender finishes");
            assert_eq!(reply.events.len(), 1, "{name}");
            let CounterEvent::Counted(counted) = &reply.events[0].event;
            assert_eq!(
                counted.tag,
                (sender, 0),
                "{name}: the reply is the sender's own event"
            );
            assert_eq!(
                counted.total, reply.version,
                "{name}: decided on the state before it"
            );
            versions.insert(reply.version);
        }
        assert_eq!(
            versions,
            (1..=1_000).collect(),
            "{name}: one version per command"
        );
        let events = stored(entities.store(), "hot").await;
        assert_eq!(events.len(), 1_000, "{name}");
        let state = entities
            .store()
            .get_existing_aggregate("hot", Default::default())
            .await;
        assert_eq!(state.expect("exists").aggregate.total, 1_000, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_batches_still_commit_every_command_once() {
    for (name, adapter, _dir) in adapters() {
        let options = EntityOptions {
            batch_commands_max: 3,
            batch_events_max: 4,
            ..EntityOptions::default()
        };
        let entities = counters(adapter, options);
        let mut senders = Vec::new();
        for sender in 0..50u64 {
            let handle = entities.get("hot");
            senders.push(tokio::spawn(async move {
                let mut replies = Vec::new();
                for seq in 0..4 {
                    let tag = (sender, seq);
                    let command = if seq % 2 == 0 {
                        CounterCommand::CountTwice { tag }
                    } else {
                        CounterCommand::Count { tag }
                    };
                    replies.push(handle.send(command).await.expect("counted"));
                }
                replies
            }));
        }
        let mut answered = 0;
        for sender in senders {
            for reply in within(sender).await.expect("the sender finishes") {
                answered += reply.events.len();
                let last = reply.events.last().expect("events");
                assert_eq!(last.version, reply.version, "{name}");
            }
        }
        let events = stored(entities.store(), "hot").await;
        assert_eq!((answered, events.len()), (300, 300), "{name}");
        for (expected, event) in (1..).zip(&events) {
            let CounterEvent::Counted(counted) = &event.event;
            assert_eq!(
                counted.total, expected,
                "{name}: no event decided on stale state"
            );
        }
    }
}
