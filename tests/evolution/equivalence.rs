//! The property snapshots rest on: for any events, any policy and any mix of pushes and reads
//! (at any `max_version`), a store reading through snapshots returns exactly the aggregate and
//! last event a full replay returns — on the in-memory adapter and on the log adapter.

use std::sync::Arc;

use annals::storage::StorageAdapter;
use annals::{EventDetail, GetAggregateOptions, SnapshotPolicy};
use proptest::prelude::*;

use crate::fixtures::*;

#[derive(Clone, Debug)]
enum Op {
    /// Push this many more events.
    Push(u64),
    /// Read at a fraction (in thousandths) of the current version, or at the latest.
    Read(Option<u16>),
}

#[derive(Clone, Debug)]
enum Policy {
    Every(u64),
    /// Snapshot after events whose version is a multiple of this and that are credits.
    WhenCredited(u64),
}

fn policy(policy: &Policy, keep: usize) -> SnapshotPolicy<LedgerEvent, Ledger> {
    match *policy {
        Policy::Every(n) => SnapshotPolicy::every(n).keep(keep),
        Policy::WhenCredited(n) => SnapshotPolicy::when(move |_, e: &EventDetail<LedgerEvent>| {
            e.version.is_multiple_of(n) && matches!(e.event, LedgerEvent::Credited(_))
        })
        .keep(keep),
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (1u64..120).prop_map(Op::Push),
        proptest::option::of(0u16..=1000).prop_map(Op::Read),
    ];
    proptest::collection::vec(op, 1..24)
}

fn policies() -> impl Strategy<Value = (Policy, usize)> {
    (
        prop_oneof![
            (1u64..60).prop_map(Policy::Every),
            (1u64..8).prop_map(Policy::WhenCredited),
        ],
        1usize..4,
    )
}

/// Runs `ops` against a store with snapshots and compares every read with a full replay.
async fn check(adapter: Arc<dyn StorageAdapter>, (p, keep): (Policy, usize), ops: Vec<Op>) {
    let with = ledgers_with(adapter.clone(), policy(&p, keep));
    let without = ledgers_without(adapter);
    let mut version = 0;
    for op in ops {
        match op {
            Op::Push(count) => {
                let events = (version + 1..=version + count).map(nth_event).collect();
                push_all(&with, "acct", version + 1, events).await;
                version += count;
            }
            Op::Read(fraction) => {
                let options = GetAggregateOptions {
                    max_version: fraction.map(|f| version * u64::from(f) / 1000),
                };
                let read = with.get_aggregate("acct", options).await.unwrap();
                let full = without.get_aggregate("acct", options).await.unwrap();
                assert_eq!(
                    read.aggregate, full.aggregate,
                    "{options:?} at version {version}"
                );
                assert_eq!(
                    read.last_event, full.last_event,
                    "{options:?} at version {version}"
                );
                let folded: Vec<u64> = read.events.iter().map(|e| e.version).collect();
                let tail: Vec<u64> = full.events[full.events.len() - folded.len()..]
                    .iter()
                    .map(|e| e.version)
                    .collect();
                assert_eq!(folded, tail, "the folded events are the newest ones");
                // Let the snapshot of this read land before the next one, so later reads use it.
                with.flush_snapshots().await;
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn snapshot_reads_equal_full_replays_in_memory(policy in policies(), ops in ops()) {
        runtime().block_on(check(memory(), policy, ops));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn snapshot_reads_equal_full_replays_on_the_log_adapter(policy in policies(), ops in ops()) {
        let dir = tempfile::tempdir().unwrap();
        let adapter = open_log(dir.path());
        runtime().block_on(check(adapter.clone(), policy, ops));
        adapter.close();
    }
}
