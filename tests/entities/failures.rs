//! A failed commit fails every reply that depended on it, records nothing of it, and the
//! instance reloads before deciding again.

use annals::entity::{EntityError, EntityOptions};

use crate::{CounterCommand, Gated, adapters, counters, stored, within};

fn count(seq: u64) -> CounterCommand {
    CounterCommand::Count { tag: (0, seq) }
}

#[tokio::test]
async fn a_failed_commit_fails_its_reply_and_the_next_command_reloads() {
    for (name, adapter, _dir) in adapters() {
        let gated = Gated::new(adapter);
        let entities = counters(gated.clone(), EntityOptions::default());
        let handle = entities.get("fragile");
        assert_eq!(handle.send(count(0)).await.expect("counted").version, 1);
        gated.fail_next_append();
        match handle.send(count(1)).await {
            Err(EntityError::Store { aggregate_id, .. }) => assert_eq!(aggregate_id, "fragile"),
            other => panic!("{name}: expected a store error, got {other:?}"),
        }
        let after = handle
            .send(count(2))
            .await
            .expect("counted after reloading");
        assert_eq!(after.version, 2, "{name}: the failed command left no event");
        assert_eq!(stored(entities.store(), "fragile").await.len(), 2, "{name}");
    }
}

#[tokio::test]
async fn commands_decided_behind_a_failed_commit_fail_with_it() {
    for (name, adapter, _dir) in adapters() {
        let gated = Gated::new(adapter);
        let entities = counters(gated.clone(), EntityOptions::default());
        let handle = entities.get("fragile");
        gated.close();
        gated.fail_next_append();
        let mut first = Box::pin(handle.send(count(0)));
        tokio::select! {
            _ = &mut first => panic!("{name}: the gated commit cannot finish"),
            () = gated.entered.notified() => {}
        }
        // The instance is waiting on its commit; these are decided behind it, on the state
        // the failing commit would have made.
        let mut behind: Vec<_> = (1..4)
            .map(|seq| Box::pin(handle.send(count(seq))))
            .collect();
        for reply in &mut behind {
            assert!(futures::poll!(reply).is_pending(), "{name}");
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gated.open();
        assert!(
            matches!(within(first).await, Err(EntityError::Store { .. })),
            "{name}"
        );
        for reply in behind {
            assert!(
                matches!(within(reply).await, Err(EntityError::Store { .. })),
                "{name}: a reply that depended on the failed commit fails"
            );
        }
        assert!(
            stored(entities.store(), "fragile").await.is_empty(),
            "{name}"
        );
        let after = handle
            .send(count(9))
            .await
            .expect("counted after reloading");
        assert_eq!(after.version, 1, "{name}");
    }
}
