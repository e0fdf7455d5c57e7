//! Passivation: idle instances stop, the least recently used is evicted beyond the cap, and a
//! stopped entity reloads its state on its next command.

use std::time::Duration;

use annals::entity::EntityOptions;
use annals::storage::InMemoryAdapter;

use crate::{CounterCommand, adapters, counters, within};

fn count(seq: u64) -> CounterCommand {
    CounterCommand::Count { tag: (0, seq) }
}

#[tokio::test(start_paused = true)]
async fn an_idle_instance_stops_and_reloads_on_its_next_command() {
    let options = EntityOptions {
        idle_timeout: Duration::from_secs(10),
        ..EntityOptions::default()
    };
    let entities = counters(std::sync::Arc::new(InMemoryAdapter::new()), options);
    let handle = entities.get("sleepy");
    assert_eq!(handle.send(count(0)).await.expect("counted").version, 1);
    assert!(entities.is_live("sleepy"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(entities.is_live("sleepy"), "not idle long enough yet");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !entities.is_live("sleepy"),
        "stopped after the idle timeout"
    );
    assert_eq!(entities.live_instances(), 0);
    assert_eq!(handle.send(count(1)).await.expect("counted").version, 2);
    assert!(entities.is_live("sleepy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_on_the_log_stops_and_reloads() {
    let (_, adapter, _dir) = adapters().pop().expect("the log adapter");
    let options = EntityOptions {
        idle_timeout: Duration::from_millis(20),
        ..EntityOptions::default()
    };
    let entities = counters(adapter, options);
    let handle = entities.get("sleepy");
    assert_eq!(handle.send(count(0)).await.expect("counted").version, 1);
    within(async {
        while entities.is_live("sleepy") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(handle.send(count(1)).await.expect("counted").version, 2);
}

#[tokio::test]
async fn beyond_the_cap_the_least_recently_used_instance_is_evicted() {
    for (name, adapter, _dir) in adapters() {
        let options = EntityOptions {
            live_instances_max: 2,
            ..EntityOptions::default()
        };
        let entities = counters(adapter, options);
        for id in ["a", "b", "a"] {
            entities.get(id).send(count(0)).await.expect("counted");
        }
        entities.get("c").send(count(0)).await.expect("counted");
        assert!(
            !entities.is_live("b"),
            "{name}: b was the least recently used"
        );
        assert!(entities.is_live("a") && entities.is_live("c"), "{name}");
        assert_eq!(entities.live_instances(), 2, "{name}");
        let b = entities.get("b").send(count(1)).await.expect("counted");
        assert_eq!(b.version, 2, "{name}: b reloaded its state");
        assert!(
            !entities.is_live("a"),
            "{name}: a is now the least recently used"
        );
        let a = entities.get("a").send(count(2)).await.expect("counted");
        assert_eq!(a.version, 3, "{name}: a reloaded its state");
    }
}
