//! One instance per id decides commands in arrival order; different ids proceed independently;
//! replies come only once the events are durable; a full mailbox answers `Overloaded`.

use annals::entity::{EntityError, EntityOptions};

use crate::{CounterCommand, Gated, adapters, counters, stored, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_of_one_sender_are_applied_in_the_order_sent() {
    for (name, adapter, _dir) in adapters() {
        let entities = counters(adapter, EntityOptions::default());
        let mut senders = Vec::new();
        for sender in 0..8u64 {
            let handle = entities.get("hot");
            senders.push(tokio::spawn(async move {
                for seq in 0..50u64 {
                    let tag = (sender, seq);
                    handle
                        .send(CounterCommand::Count { tag })
                        .await
                        .expect("counted");
                }
            }));
        }
        for sender in senders {
            within(sender).await.expect("the sender finishes");
        }
        let events = stored(entities.store(), "hot").await;
        assert_eq!(events.len(), 400, "{name}");
        for sender in 0..8u64 {
            let seqs: Vec<u64> = events
                .iter()
                .map(|e| {
                    let crate::CounterEvent::Counted(c) = &e.event;
                    c.tag
                })
                .filter(|tag| tag.0 == sender)
                .map(|tag| tag.1)
                .collect();
            assert_eq!(seqs, (0..50).collect::<Vec<_>>(), "{name}: sender {sender}");
        }
    }
}

#[tokio::test]
async fn a_blocked_entity_does_not_hold_up_another_id() {
    for (name, adapter, _dir) in adapters() {
        let gated = Gated::new(adapter);
        let entities = counters(gated.clone(), EntityOptions::default());
        let blocked = entities.get("blocked");
        gated.close();
        let mut stuck = Box::pin(blocked.send(CounterCommand::Count { tag: (0, 0) }));
        tokio::select! {
            _ = &mut stuck => panic!("{name}: the gated commit cannot finish"),
            () = gated.entered.notified() => {}
        }
        // The gate holds every append, so let the other id's commit through alone.
        let free = entities.get("free");
        let free_answer = tokio::spawn(async move { free.send(CounterCommand::Peek).await });
        let reply = within(free_answer).await.expect("the task finishes");
        assert_eq!(reply.expect("peeked").version, 0, "{name}");
        gated.open();
        assert_eq!(within(stuck).await.expect("counted").version, 1, "{name}");
    }
}

#[tokio::test]
async fn the_reply_waits_until_the_events_are_durable() {
    for (name, adapter, _dir) in adapters() {
        let gated = Gated::new(adapter.clone());
        let entities = counters(gated.clone(), EntityOptions::default());
        gated.close();
        let handle = entities.get("careful");
        let mut reply = Box::pin(handle.send(CounterCommand::Count { tag: (1, 1) }));
        tokio::select! {
            _ = &mut reply => panic!("{name}: answered before the commit"),
            () = gated.entered.notified() => {}
        }
        assert!(
            futures::poll!(&mut reply).is_pending(),
            "{name}: no reply before the commit"
        );
        gated.open();
        let reply = within(reply).await.expect("counted");
        // A reader that bypasses the entity already sees the event.
        let reader = crate::store(adapter);
        let events = stored(&reader, "careful").await;
        assert_eq!(events.len(), 1, "{name}");
        assert_eq!(reply.version, 1, "{name}");
        let (replied, read) = (&reply.events[0], &events[0]);
        assert_eq!(
            (replied.version, replied.timestamp),
            (read.version, read.timestamp),
            "{name}: the reply carries the stored event"
        );
    }
}

#[tokio::test]
async fn a_full_mailbox_answers_overloaded_instead_of_queueing() {
    for (name, adapter, _dir) in adapters() {
        let options = EntityOptions {
            mailbox_capacity: 1,
            ..EntityOptions::default()
        };
        let entities = counters(adapter, options);
        let handle = entities.get("busy");
        // On this single-threaded runtime the instance cannot run between these polls, so the
        // first command fills the mailbox and the rest find it full.
        let mut first = Box::pin(handle.send(CounterCommand::Count { tag: (0, 0) }));
        assert!(futures::poll!(&mut first).is_pending(), "{name}");
        for seq in 1..5 {
            let refused = handle.send(CounterCommand::Count { tag: (0, seq) }).await;
            match refused {
                Err(EntityError::Overloaded {
                    aggregate_id,
                    capacity,
                }) => assert_eq!((aggregate_id.as_str(), capacity), ("busy", 1), "{name}"),
                other => panic!("{name}: expected Overloaded, got {other:?}"),
            }
        }
        assert_eq!(within(first).await.expect("counted").version, 1, "{name}");
        assert_eq!(stored(entities.store(), "busy").await.len(), 1, "{name}");
        let after = handle.send(CounterCommand::Count { tag: (0, 9) }).await;
        assert_eq!(after.expect("room again").version, 2, "{name}");
    }
}

#[tokio::test]
async fn a_rejection_is_typed_and_records_nothing() {
    for (name, adapter, _dir) in adapters() {
        let entities = counters(adapter, EntityOptions::default());
        let handle = entities.get("limited");
        let below = |seq| CounterCommand::CountBelow {
            limit: 2,
            tag: (0, seq),
        };
        assert_eq!(handle.send(below(0)).await.expect("1").version, 1);
        assert_eq!(handle.send(below(1)).await.expect("2").version, 2);
        match handle.send(below(2)).await {
            Err(EntityError::Rejected(rejection)) => assert_eq!(rejection.total, 2, "{name}"),
            other => panic!("{name}: expected a rejection, got {other:?}"),
        }
        let twice = handle
            .send(CounterCommand::CountTwice { tag: (0, 3) })
            .await;
        let twice = twice.expect("counted twice");
        assert_eq!(twice.version, 4, "{name}");
        assert_eq!(twice.events.len(), 2, "{name}");
        assert_eq!(stored(entities.store(), "limited").await.len(), 4, "{name}");
    }
}
