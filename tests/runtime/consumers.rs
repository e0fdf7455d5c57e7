//! Durable consumers resume from their checkpoint; work committed with the checkpoint happens
//! exactly once.

use std::sync::Arc;

use annals::StorageError;
use annals::consumer::Consumer;
use annals::queue::Queue;
use annals::state::{StateStore, TxnError};
use annals::storage::Corruption;
use annals::storage::StorageAdapter;
use annals::subscription::Filter;

use crate::{event, log_store};

async fn push(
    adapter: &dyn StorageAdapter,
    aggregate: &str,
    versions: std::ops::RangeInclusive<u64>,
) {
    for v in versions {
        adapter
            .push_event(event("POKEMONS", aggregate, v, "CHANGED"))
            .await
            .expect("push");
    }
}

#[tokio::test]
async fn a_consumer_resumes_after_its_last_commit_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_path = dir.path().join("state.redb");
    {
        let adapter = log_store(&dir.path().join("log"));
        push(&*adapter, "pikachu", 1..=10).await;
        let state = Arc::new(StateStore::open(&state_path).expect("state"));
        let mut consumer =
            Consumer::open("mailer", Arc::clone(&adapter), state, Filter::all()).expect("open");
        for _ in 0..5 {
            consumer.next().await.expect("next");
        }
        consumer.commit().expect("commit");
        // Two more are delivered but never committed: the process "crashes" here.
        consumer.next().await.expect("next");
        consumer.next().await.expect("next");
    }
    let adapter = log_store(&dir.path().join("log"));
    let state = Arc::new(StateStore::open(&state_path).expect("reopen state"));
    assert_eq!(state.checkpoint("mailer").expect("checkpoint"), Some(6));
    let mut consumer = Consumer::open(
        "mailer",
        Arc::clone(&adapter),
        Arc::clone(&state),
        Filter::all(),
    )
    .expect("reopen");
    let again = consumer.next().await.expect("next");
    assert_eq!(
        (again.position, again.event.version),
        (6, 6),
        "delivery is at-least-once: uncommitted events come again"
    );
    let other = Consumer::open("auditor", adapter, state, Filter::all()).expect("open");
    assert_eq!(other.position(), 1, "each consumer has its own checkpoint");
}

#[tokio::test]
async fn events_pushed_just_before_a_crash_are_delivered_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_path = dir.path().join("state.redb");
    {
        let adapter = log_store(&dir.path().join("log"));
        let state = Arc::new(StateStore::open(&state_path).expect("state"));
        let mut consumer =
            Consumer::open("mailer", Arc::clone(&adapter), state, Filter::all()).expect("open");
        push(&*adapter, "pikachu", 1..=3).await;
        for _ in 0..3 {
            consumer.next().await.expect("next");
        }
        consumer.commit().expect("commit");
        // Acknowledged pushes, then the process stops before the consumer sees them.
        push(&*adapter, "pikachu", 4..=6).await;
    }
    let adapter = log_store(&dir.path().join("log"));
    let state = Arc::new(StateStore::open(&state_path).expect("state"));
    let mut consumer = Consumer::open("mailer", adapter, state, Filter::all()).expect("open");
    let mut delivered = Vec::new();
    for _ in 0..3 {
        delivered.push(consumer.next().await.expect("next").event.version);
    }
    assert_eq!(delivered, [4, 5, 6]);
}

#[tokio::test]
async fn writes_committed_with_the_checkpoint_apply_each_event_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = log_store(&dir.path().join("log"));
    push(&*adapter, "pikachu", 1..=20).await;
    let state_path = dir.path().join("state.redb");
    // Each event's effect is a message in the queue `seen`, enqueued with the checkpoint.
    let apply = |consumer: &Consumer, seen: &Queue, position: u64, fail: bool| {
        consumer.commit_with(|txn| {
            seen.enqueue_in(txn, position.to_le_bytes())?;
            if fail {
                // A crash mid-transaction: nothing of it may land.
                return Err(TxnError::abort("simulated crash"));
            }
            Ok(())
        })
    };
    for round in 0..4 {
        let state = Arc::new(StateStore::open(&state_path).expect("state"));
        let seen = Queue::open(Arc::clone(&state), "seen");
        let mut consumer =
            Consumer::open("view", Arc::clone(&adapter), state, Filter::all()).expect("open");
        // Each round applies some events, then "crashes" on one.
        for i in 0..6 {
            let Some(e) = consumer.try_next().await.expect("next") else {
                break;
            };
            let crash = i == 5 && round < 3;
            let result = apply(&consumer, &seen, e.position, crash);
            if crash {
                assert!(matches!(result, Err(StorageError::Database { .. })));
                break;
            }
            result.expect("applied");
        }
    }
    let state = Arc::new(StateStore::open(&state_path).expect("state"));
    let queue = Queue::open(Arc::clone(&state), "seen");
    let mut seen = Vec::new();
    while let Some(message) = queue.receive().expect("receive") {
        seen.push(u64::from_le_bytes(
            message.body.try_into().expect("8 bytes"),
        ));
    }
    assert_eq!(
        seen,
        (1..=20).collect::<Vec<_>>(),
        "every event once, none twice"
    );
    assert_eq!(state.checkpoint("view").expect("checkpoint"), Some(21));
}

#[test]
fn a_state_store_open_twice_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let _first = StateStore::open(&path).expect("open");
    assert!(matches!(
        StateStore::open(&path),
        Err(StorageError::Locked { .. })
    ));
}

#[test]
fn a_garbage_state_file_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    std::fs::write(&path, vec![0xA5; 64 << 10]).expect("write garbage");
    match StateStore::open(&path) {
        Err(StorageError::Corruption(Corruption { file, .. })) => assert_eq!(file, path),
        other => panic!("expected Corruption, got {other:?}"),
    }
}
