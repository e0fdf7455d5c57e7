//! The state-store behaviour suite: one set of checks that a
//! [`StateStore`] passes on every backend (redb and PostgreSQL), so
//! that the runtime behaves the same on each.
//!
//! Each check is a public function that takes *fresh* (empty) stores and panics, naming what
//! broke, on the first broken rule:
//!
//! - [`checkpoints_commit_with_their_effects_or_not_at_all`]: a consumer's writes (a queued
//!   message, a dead letter) and its checkpoint commit in one transaction or not at all;
//! - [`key_value_views_apply_rebuild_and_activate`]: rows, byte-wise prefix scans, a rebuild
//!   that takes over and drops the older version;
//! - [`dead_letters_keep_their_retry_requests`]: action dead letters and their retry marks;
//! - [`queues_deliver_hide_expire_and_dead_letter`]: visibility, receive counts, release,
//!   dead letters, limits, and a waiting receiver woken by an enqueue;
//! - [`competing_receivers_never_share_a_message`]: receivers on two stores of one database
//!   (two handles of one store on redb) get every message once, none twice, none lost;
//! - [`calls_work_from_any_thread_or_runtime`]: the synchronous API from plain threads, a
//!   single-threaded and a multi-threaded runtime.
//!
//! The async checks run inside a multi-threaded Tokio runtime;
//! [`calls_work_from_any_thread_or_runtime`] outside any.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::action::dead_letter::{self, DeadLetter};
use crate::runtime::queue::{Queue, QueueOptions};
use crate::runtime::state::{StateStore, TxnError};
use crate::runtime::subscription::Filter;
use crate::runtime::view::{KvError, KvTables, KvView, ViewError};
use crate::storage::{
    AppendEvent, EncodedEvent, InMemoryAdapter, LoggedEvent, StorageAdapter, StorageError,
    Timestamp,
};

/// What a state or queue call that must succeed is expected to do.
const ANSWERS: &str = "the state store answers";

/// How long a check waits for what must happen soon.
const PATIENCE: Duration = Duration::from_secs(30);

fn letter(action: &str, position: u64, error: &str) -> DeadLetter {
    let event = LoggedEvent {
        event_store_id: "POKEMONS".into(),
        position,
        event: event("pikachu", position).event,
    };
    DeadLetter::new(action, &event, error.to_owned(), 3)
}

fn event(aggregate_id: &str, version: u64) -> AppendEvent {
    AppendEvent {
        event_store_id: "POKEMONS".into(),
        event: EncodedEvent {
            aggregate_id: aggregate_id.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000),
            event_type: "POKEMON_SEEN".into(),
            schema_version: 1,
            payload: Vec::new(),
            metadata: Vec::new(),
        },
    }
}

/// A consumer's writes and its checkpoint commit together, or not at all.
pub async fn checkpoints_commit_with_their_effects_or_not_at_all(state: Arc<StateStore>) {
    let outbox = Queue::open(Arc::clone(&state), "outbox");
    assert_eq!(state.checkpoint("mailer").expect(ANSWERS), None);
    state
        .commit_with_checkpoint("mailer", 4, |txn| {
            outbox.enqueue_in(txn, b"welcome")?;
            dead_letter::put_in(txn, &letter("mailer", 3, "boom"))
        })
        .expect("a commit with effects");
    assert_eq!(state.checkpoint("mailer").expect(ANSWERS), Some(4));
    assert_eq!(outbox.len().expect(ANSWERS), 1);
    assert_eq!(dead_letter::list(&state, "mailer").expect(ANSWERS).len(), 1);

    // An aborted transaction leaves nothing: not its message, dead letter, nor checkpoint.
    let aborted = state.commit_with_checkpoint("mailer", 9, |txn| {
        outbox.enqueue_in(txn, b"lost")?;
        dead_letter::put_in(txn, &letter("mailer", 8, "boom"))?;
        Err::<(), _>(TxnError::abort("a crash mid-transaction"))
    });
    assert!(
        matches!(aborted, Err(StorageError::Database { .. })),
        "{aborted:?}"
    );
    let declined = state
        .try_commit_with_checkpoint("mailer", 9, |txn| {
            outbox.enqueue_in(txn, b"declined")?;
            Ok(Err::<(), _>("the handler failed"))
        })
        .expect("a declined commit is no storage failure");
    assert_eq!(declined, Err("the handler failed"));
    assert_eq!(
        state.checkpoint("mailer").expect(ANSWERS),
        Some(4),
        "checkpoint"
    );
    assert_eq!(outbox.len().expect(ANSWERS), 1, "messages");
    assert_eq!(dead_letter::list(&state, "mailer").expect(ANSWERS).len(), 1);

    // A full queue refuses inside the transaction, which then commits nothing.
    let small = Queue::open(Arc::clone(&state), "small").with_options(QueueOptions {
        length_max: 1,
        ..QueueOptions::default()
    });
    let full = state.commit_with_checkpoint("mailer", 10, |txn| {
        small.enqueue_in(txn, b"1")?;
        small.enqueue_in(txn, b"2")?;
        Ok(())
    });
    assert!(full.is_err(), "{full:?}");
    assert_eq!(small.len().expect(ANSWERS), 0);
    assert_eq!(state.checkpoint("mailer").expect(ANSWERS), Some(4));

    state.set_checkpoint("auditor", 2).expect(ANSWERS);
    assert_eq!(
        state.checkpoints().expect(ANSWERS),
        [("auditor".to_owned(), 2), ("mailer".to_owned(), 4)]
    );
}

/// Counts events per aggregate in table `counts`, and remembers the last of each in `last`.
fn counter(name: &str, version: u64, state: &Arc<StateStore>) -> Result<KvView, ViewError> {
    KvView::builder(name, version)
        .on_logged(
            Filter::all(),
            move |tables: &mut KvTables<'_>, event: &LoggedEvent| {
                let id = &event.event.aggregate_id;
                let seen: u64 = tables.get("counts", id)?.unwrap_or(0);
                tables.put("counts", id, &(seen + version))?;
                if id == "gone" {
                    assert!(
                        tables.remove("counts", id)?,
                        "a row put just before is there"
                    );
                    assert!(!tables.remove("counts", id)?, "and then gone");
                }
                if id == "remover" {
                    assert!(tables.remove("counts", "B")?, "a committed row is there");
                }
                let before = tables.scan_prefix::<u64>("counts", "")?.len();
                tables.put("sizes", &event.position.to_string(), &before)?;
                Ok::<(), KvError>(())
            },
        )
        .build(Arc::clone(state))
}

/// Key-value views: rows applied with the checkpoint, byte-wise prefix scans, and a rebuild
/// that takes over once caught up and drops the older version.
pub async fn key_value_views_apply_rebuild_and_activate(state: Arc<StateStore>) {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    // Keys that order differently byte-wise and in most collations.
    let ids = ["a", "a/b", "B", "ab", "é", "a-", "gone"];
    let mut last = 0;
    for id in ids {
        last = adapter.push_event(event(id, 1)).await.expect(ANSWERS);
    }
    last = adapter
        .push_event(event("a", 2))
        .await
        .expect(ANSWERS)
        .max(last);

    let v1 = counter("counts", 1, &state).expect(ANSWERS);
    let runner = v1.run(Arc::clone(&adapter));
    v1.wait_for(last, PATIENCE).await.expect("v1 catches up");
    runner.stop().await.expect("v1 stops");
    assert_eq!(v1.active_version().expect(ANSWERS), Some(1));
    assert_eq!(v1.checkpoint().expect(ANSWERS), last + 1);
    assert_eq!(v1.get::<u64>("counts", "a").expect(ANSWERS), Some(2));
    assert_eq!(v1.get::<u64>("counts", "gone").expect(ANSWERS), None);
    assert_eq!(v1.get::<u64>("nothing", "a").expect(ANSWERS), None);
    let keys: Vec<String> = v1
        .scan::<u64>("counts")
        .expect(ANSWERS)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut sorted: Vec<String> = ids
        .iter()
        .filter(|id| **id != "gone")
        .map(|id| (*id).to_owned())
        .collect();
    sorted.sort();
    assert_eq!(keys, sorted, "keys in Rust's (byte-wise) order");
    let prefixed: Vec<String> = v1
        .scan_prefix::<u64>("counts", "a")
        .expect(ANSWERS)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(prefixed, ["a", "a-", "a/b", "ab"]);
    // The handler read its own uncommitted writes: table sizes grow within a batch.
    assert_eq!(v1.get::<u64>("sizes", "1").expect(ANSWERS), Some(1));

    // A later batch removes a row an earlier one committed.
    let removal = adapter
        .push_event(event("remover", 1))
        .await
        .expect(ANSWERS);
    let v1 = counter("counts", 1, &state).expect(ANSWERS);
    let runner = v1.run(Arc::clone(&adapter));
    v1.wait_for(removal, PATIENCE)
        .await
        .expect("v1 applies the removal");
    runner.stop().await.expect("v1 stops");
    assert_eq!(v1.get::<u64>("counts", "B").expect(ANSWERS), None);
    assert_eq!(v1.get::<u64>("counts", "remover").expect(ANSWERS), Some(1));

    // Version 2 is built beside it; reads go to version 1 until it has caught up.
    let v2 = counter("counts", 2, &state).expect(ANSWERS);
    assert_eq!(v2.get::<u64>("counts", "a").expect(ANSWERS), Some(2));
    let runner = v2.run(Arc::clone(&adapter));
    let live = adapter.push_event(event("a", 3)).await.expect(ANSWERS);
    v2.wait_for(live, PATIENCE).await.expect("v2 catches up");
    runner.stop().await.expect("v2 stops");
    assert_eq!(v2.active_version().expect(ANSWERS), Some(2));
    assert_eq!(v2.get::<u64>("counts", "a").expect(ANSWERS), Some(6));
    let checkpoints = state.checkpoints().expect(ANSWERS);
    assert_eq!(
        checkpoints,
        [("view:counts:v2".to_owned(), live + 1)],
        "version 1's checkpoint is dropped"
    );
    let stale = counter("counts", 1, &state);
    assert!(
        matches!(stale, Err(ViewError::Superseded { active: 2, .. })),
        "{stale:?}"
    );
    let listed = crate::runtime::view::kv::statuses(&state).expect(ANSWERS);
    assert_eq!(listed.len(), 1);
    assert!(listed[0].active && listed[0].version == 2);
}

/// Action dead letters: listed per action in position order, marked for retry, cleared only
/// by the request that was carried out, dropped with their mark.
pub async fn dead_letters_keep_their_retry_requests(state: Arc<StateStore>) {
    state
        .write(|txn| {
            dead_letter::put_in(txn, &letter("mailer", 9, "boom"))?;
            dead_letter::put_in(txn, &letter("mailer", 2, "boom"))?;
            dead_letter::put_in(txn, &letter("ocr", 5, "boom"))
        })
        .expect(ANSWERS);
    let positions = |action: &str| -> Vec<u64> {
        let letters = dead_letter::list(&state, action).expect(ANSWERS);
        letters.iter().map(|l| l.position).collect()
    };
    assert_eq!(positions("mailer"), [2, 9]);
    let all: Vec<(String, u64)> = dead_letter::list_all(&state)
        .expect(ANSWERS)
        .into_iter()
        .map(|l| (l.action, l.position))
        .collect();
    assert_eq!(
        all,
        [
            ("mailer".into(), 2),
            ("mailer".into(), 9),
            ("ocr".into(), 5)
        ]
    );
    let stored = dead_letter::get(&state, "mailer", 2)
        .expect(ANSWERS)
        .expect(ANSWERS);
    assert_eq!(stored, letter("mailer", 2, "boom").at(stored.failed_at));

    assert!(dead_letter::request_retry(&state, "mailer", 9).expect(ANSWERS));
    assert!(!dead_letter::request_retry(&state, "mailer", 3).expect(ANSWERS));
    let marked = dead_letter::get(&state, "mailer", 9)
        .expect(ANSWERS)
        .expect(ANSWERS);
    assert!(marked.retry_requested_at.is_some());
    let requests = dead_letter::retry_requests(&state, "mailer").expect(ANSWERS);
    assert_eq!(requests.iter().map(|r| r.0).collect::<Vec<_>>(), [9]);
    let requested_at = requests[0].1;

    // Writing the letter again (a failed retry) keeps the mark; an older request does not
    // clear a newer one.
    state
        .write(|txn| {
            dead_letter::put_in(txn, &letter("mailer", 9, "again"))?;
            dead_letter::clear_retry_request_in(txn, "mailer", 9, requested_at - 1)
        })
        .expect(ANSWERS);
    let again = dead_letter::get(&state, "mailer", 9)
        .expect(ANSWERS)
        .expect(ANSWERS);
    assert_eq!(
        (again.error.as_str(), again.retry_requested_at.is_some()),
        ("again", true)
    );
    state
        .write(|txn| dead_letter::clear_retry_request_in(txn, "mailer", 9, requested_at))
        .expect(ANSWERS);
    assert!(
        dead_letter::retry_requests(&state, "mailer")
            .expect(ANSWERS)
            .is_empty()
    );

    assert_eq!(
        dead_letter::request_retry_all(&state, "mailer").expect(ANSWERS),
        [2, 9]
    );
    assert!(
        dead_letter::request_retry_all(&state, "nobody")
            .expect(ANSWERS)
            .is_empty()
    );
    assert!(dead_letter::remove(&state, "mailer", 2).expect(ANSWERS));
    assert!(!dead_letter::remove(&state, "mailer", 2).expect(ANSWERS));
    assert_eq!(
        dead_letter::retry_requests(&state, "mailer")
            .expect(ANSWERS)
            .len(),
        1
    );
    assert_eq!(positions("ocr"), [5]);
}

/// Queues: oldest first, hidden while in flight, visible again after the timeout, dead
/// letters after `max_receives`, release with a delay and a reason, limits, and a waiting
/// receiver woken by an enqueue from elsewhere.
pub async fn queues_deliver_hide_expire_and_dead_letter(state: Arc<StateStore>) {
    let options = QueueOptions {
        visibility_timeout: Duration::from_millis(300),
        max_receives: 2,
        ..QueueOptions::default()
    };
    let queue = Queue::open(Arc::clone(&state), "emails").with_options(options);
    assert_eq!(queue.enqueue(b"one".to_vec()).expect(ANSWERS), 1);
    assert_eq!(queue.enqueue(b"two".to_vec()).expect(ANSWERS), 2);
    assert_eq!(queue.len().expect(ANSWERS), 2);

    let first = queue.receive().expect(ANSWERS).expect("a visible message");
    assert_eq!(
        (first.id, first.receive_count, &*first.body),
        (1, 1, &b"one"[..])
    );
    let second = queue.receive().expect(ANSWERS).expect("the next one");
    assert_eq!(second.id, 2);
    assert!(
        queue.receive().expect(ANSWERS).is_none(),
        "both are in flight"
    );
    assert_eq!(queue.in_flight().expect(ANSWERS), 2);
    assert!(queue.ack(2).expect(ANSWERS));
    assert!(!queue.ack(2).expect(ANSWERS));
    assert_eq!(queue.in_flight().expect(ANSWERS), 1);

    // Not acked in time: received again; then once too often: a dead letter.
    let again = tokio::time::timeout(PATIENCE, queue.next())
        .await
        .expect("in time")
        .expect(ANSWERS);
    assert_eq!((again.id, again.receive_count), (1, 2));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        queue.receive().expect(ANSWERS).is_none(),
        "received twice: dead-lettered"
    );
    assert_eq!(queue.len().expect(ANSWERS), 0);
    let dead = queue.dead_letters().expect(ANSWERS);
    assert_eq!(dead.iter().map(|m| m.id).collect::<Vec<_>>(), [1]);

    // A dead letter put back is visible at once with a fresh count.
    assert!(queue.retry_dead_letter(1).expect(ANSWERS));
    assert!(!queue.retry_dead_letter(1).expect(ANSWERS));
    let back = queue.receive().expect(ANSWERS).expect("retried");
    assert_eq!((back.id, back.receive_count), (1, 1));
    assert!(
        queue
            .release(1, Duration::from_millis(200), Some("smtp down"))
            .expect(ANSWERS)
    );
    assert!(
        queue.receive().expect(ANSWERS).is_none(),
        "released with a delay"
    );
    let later = tokio::time::timeout(PATIENCE, queue.next())
        .await
        .expect("in time")
        .expect(ANSWERS);
    assert_eq!(
        (later.id, later.receive_count, later.last_error.as_deref()),
        (1, 2, Some("smtp down"))
    );
    assert!(queue.dead_letter(1, "no such address").expect(ANSWERS));
    assert!(!queue.dead_letter(1, "no such address").expect(ANSWERS));
    let dead = queue.dead_letters().expect(ANSWERS);
    assert_eq!(dead[0].last_error.as_deref(), Some("no such address"));
    assert!(queue.drop_dead_letter(1).expect(ANSWERS));
    assert!(queue.dead_letters().expect(ANSWERS).is_empty());
    assert!(queue.is_empty().expect(ANSWERS));

    // Ids are never reused; limits are enforced.
    let small = Queue::open(Arc::clone(&state), "emails").with_options(QueueOptions {
        length_max: 1,
        body_bytes_max: 4,
        ..options
    });
    assert!(small.enqueue(b"12345".to_vec()).is_err());
    assert_eq!(small.enqueue(b"3".to_vec()).expect(ANSWERS), 3);
    assert!(small.enqueue(b"4".to_vec()).is_err());
    let third = small.receive().expect(ANSWERS).expect("a visible message");
    assert!(small.ack(third.id).expect(ANSWERS));

    // A receiver waiting on an empty queue is woken by an enqueue on another handle.
    let waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.next().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    Queue::open(Arc::clone(&state), "emails")
        .enqueue(b"woken".to_vec())
        .expect(ANSWERS);
    let woken = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("in time")
        .expect("the waiting task ends")
        .expect(ANSWERS);
    assert_eq!(&*woken.body, b"woken");
    // Other queues are separate.
    assert!(
        Queue::open(state, "other")
            .receive()
            .expect(ANSWERS)
            .is_none()
    );
}

/// Receivers on `a` and `b` (two stores on one database, or one store twice) take messages
/// of one queue concurrently: each message is delivered to one receiver, exactly once, and
/// none is lost.
pub async fn competing_receivers_never_share_a_message(a: Arc<StateStore>, b: Arc<StateStore>) {
    const MESSAGES: u64 = 200;
    let options = QueueOptions {
        visibility_timeout: Duration::from_secs(600),
        ..QueueOptions::default()
    };
    let producer = Queue::open(Arc::clone(&a), "jobs").with_options(options);
    for i in 0..MESSAGES {
        producer.enqueue(i.to_le_bytes().to_vec()).expect(ANSWERS);
    }
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let mut receivers = Vec::new();
    for (i, state) in [&a, &b, &a, &b].into_iter().enumerate() {
        let queue = Queue::open(Arc::clone(state), "jobs").with_options(options);
        let delivered = Arc::clone(&delivered);
        receivers.push(std::thread::spawn(move || {
            let mut mine = 0;
            while let Some(message) = queue.receive().expect("receive") {
                delivered.lock().expect("the lock").push((message.id, i));
                assert!(queue.ack(message.id).expect("ack"), "acked by its receiver");
                mine += 1;
            }
            mine
        }));
    }
    let counts: Vec<u64> = receivers
        .into_iter()
        .map(|r| r.join().expect("the thread ends"))
        .collect();
    let delivered = delivered.lock().expect("the lock");
    let ids: BTreeSet<u64> = delivered.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        delivered.len() as u64,
        MESSAGES,
        "no message twice: {counts:?}"
    );
    assert_eq!(ids, (1..=MESSAGES).collect(), "none lost");
    assert_eq!(producer.len().expect(ANSWERS), 0);
    assert_eq!(Queue::open(b, "jobs").len().expect(ANSWERS), 0);
}

/// The synchronous API from a plain thread, a single-threaded runtime (directly in a task)
/// and a multi-threaded one. Call it outside any runtime.
pub fn calls_work_from_any_thread_or_runtime(state: Arc<StateStore>) {
    let queue = Queue::open(Arc::clone(&state), "anywhere");
    let plain = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.enqueue(b"thread".to_vec()).expect(ANSWERS))
    };
    plain.join().expect("the thread ends");
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    current.block_on(async {
        queue.enqueue(b"current".to_vec()).expect(ANSWERS);
        let task = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.enqueue(b"task".to_vec()).expect(ANSWERS) })
        };
        task.await.expect("the task ends");
        state.set_checkpoint("current", 3).expect(ANSWERS);
    });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    multi.block_on(async {
        let blocking = {
            let queue = queue.clone();
            tokio::task::spawn_blocking(move || queue.enqueue(b"blocking".to_vec()).expect(ANSWERS))
        };
        blocking.await.expect("the task ends");
        queue.enqueue(b"multi".to_vec()).expect(ANSWERS);
    });
    // A waiting receiver on a single-threaded runtime, woken by a plain thread's enqueue.
    current.block_on(async {
        let mut bodies = Vec::new();
        for _ in 0..5 {
            let message = tokio::time::timeout(PATIENCE, queue.next())
                .await
                .expect("in time")
                .expect(ANSWERS);
            bodies.push(String::from_utf8(message.body).expect("UTF-8"));
            queue.ack(message.id).expect(ANSWERS);
        }
        assert_eq!(bodies, ["thread", "current", "task", "blocking", "multi"]);
        let waiting = queue.next();
        let late = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                queue.enqueue(b"late".to_vec()).expect(ANSWERS)
            })
        };
        let message = tokio::time::timeout(PATIENCE, waiting)
            .await
            .expect("in time")
            .expect(ANSWERS);
        assert_eq!(&*message.body, b"late");
        late.join().expect("the thread ends");
    });
    assert_eq!(state.checkpoint("current").expect(ANSWERS), Some(3));
}

impl DeadLetter {
    fn at(mut self, failed_at: Timestamp) -> Self {
        self.failed_at = failed_at;
        self
    }
}
