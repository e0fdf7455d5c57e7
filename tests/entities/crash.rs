//! A crash in the middle of a hot entity's batches, on the simulated disk: every command that
//! was answered `Ok` is in the reopened log, and nothing in it was decided on stale state.

use std::collections::BTreeSet;
use std::sync::Arc;

use annals::engine::sim::{Damage, Fault, SimFs};
use annals::entity::EntityOptions;
use annals::storage::LogAdapter;
use annals::{Durability, StorageAdapter};

use crate::{CounterCommand, CounterEvent, counters, store, stored};

fn open(fs: &SimFs) -> Arc<dyn StorageAdapter> {
    let log = LogAdapter::builder("/store")
        .file_system(Arc::new(fs.clone()))
        .durability(Durability::Immediate)
        .open()
        .expect("open the simulated log");
    Arc::new(log)
}

/// Runs 20 senders of 10 commands each against one id until the disk fails; the tags of the
/// commands answered `Ok`.
async fn run_until_the_disk_fails(fs: &SimFs, fail_after_ops: u64) -> BTreeSet<(u64, u64)> {
    let adapter = open(fs);
    let entities = counters(adapter, EntityOptions::default());
    fs.inject(Fault::FailFrom(fs.ops() + fail_after_ops));
    let mut senders = Vec::new();
    for sender in 0..20u64 {
        let handle = entities.get("hot");
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for seq in 0..10 {
                let tag = (sender, seq);
                match handle.send(CounterCommand::Count { tag }).await {
                    Ok(_) => acknowledged.push(tag),
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for sender in senders {
        acknowledged.extend(sender.await.expect("the sender finishes"));
    }
    acknowledged
}

#[tokio::test]
async fn only_acknowledged_commands_are_guaranteed_to_survive_a_crash_mid_batch() {
    let mut acknowledged_total = 0;
    for fail_after_ops in [1, 2, 3, 4, 5, 7, 9, 11, 13, 17] {
        let fs = SimFs::new();
        let acknowledged = run_until_the_disk_fails(&fs, fail_after_ops).await;
        acknowledged_total += acknowledged.len();
        for damage in [
            Damage::DropUnsynced,
            Damage::TornLast {
                sector: 512,
                seed: 7,
            },
        ] {
            let context = format!("failure after {fail_after_ops} ops, {damage:?}");
            let image = fs.crash_image(damage);
            let reopened = store(open(&image));
            let events = stored(&reopened, "hot").await;
            let mut recorded = BTreeSet::new();
            for (expected, event) in (1..).zip(&events) {
                let CounterEvent::Counted(counted) = &event.event;
                assert_eq!(
                    counted.total, expected,
                    "{context}: decided on the latest state"
                );
                assert!(recorded.insert(counted.tag), "{context}: recorded once");
            }
            let lost: Vec<_> = acknowledged.difference(&recorded).collect();
            assert!(
                lost.is_empty(),
                "{context}: acknowledged but lost: {lost:?}"
            );
        }
    }
    assert!(
        acknowledged_total > 0,
        "some commands were acknowledged before the failures"
    );
}
