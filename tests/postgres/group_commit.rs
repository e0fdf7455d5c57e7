//! Group commit: concurrent appends share one transaction, yet each is decided and reported on
//! its own. A conflicting append in a batch is refused alone and takes no position; appends of
//! one batch to one aggregate see each other's versions; a batch whose connection is lost fails
//! as a whole, for every append in it, and writes nothing.
//!
//! To put known appends in one batch, a test holds the head row lock in a transaction of its
//! own: the adapter's next transaction waits for it, and once it has the lock, takes every
//! append queued meanwhile, in queue order. To stop a batch after that, in the middle, a test
//! locks the events table against inserts instead.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use annals::StorageError;
use annals::storage::{AppendEvent, Position, StorageAdapter};

use crate::fixture::{self, STORE, SchemaGuard, event};
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 4;
        a_conflicting_append_in_a_batch_is_refused_alone_and_the_others_commit,
        concurrent_appends_to_one_aggregate_keep_versions_gap_free_and_report_their_positions,
        a_connection_terminated_mid_batch_fails_every_append_of_it_and_writes_nothing,
    )
}

/// A fresh schema, its guard, and an adapter on it whose backends are named `name`.
async fn named(url: &str, name: &str) -> (Arc<dyn StorageAdapter>, SchemaGuard) {
    let schema = fixture::fresh_schema();
    let guard = SchemaGuard {
        url: url.to_owned(),
        schema: schema.clone(),
    };
    let adapter = fixture::named_builder(url, &schema, name)
        .statement_timeout(Some(Duration::from_secs(20)))
        .connect()
        .await
        .expect("the adapter connects");
    (Arc::new(adapter), guard)
}

/// The process id of a backend named `name`, other than `except`, that waits on a lock (a
/// batch queued on the head row).
async fn waiting_on_lock(client: &tokio_postgres::Client, name: &str, except: i32) -> i32 {
    for _ in 0..400 {
        let waiting = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
                 AND wait_event_type = 'Lock' AND pid <> $2 LIMIT 1",
                &[&name, &except],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(row) = waiting {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no batch queued on the head lock");
}

async fn terminate(admin: &tokio_postgres::Client, name: &str, pid: i32) -> i64 {
    fixture::terminate(admin, name, &format!("pid = {pid}")).await
}

type Push = Pin<Box<dyn Future<Output = Result<Vec<Position>, StorageError>> + Send>>;

/// Starts one push per group, in order, each polled once: that runs it up to its wait for a
/// batch, so it is queued behind the ones before it. They complete when awaited.
async fn queue(adapter: &Arc<dyn StorageAdapter>, groups: Vec<Vec<AppendEvent>>) -> Vec<Push> {
    let mut pushes = Vec::new();
    for group in groups {
        let adapter = Arc::clone(adapter);
        let mut push: Push = Box::pin(async move { adapter.push_event_group(group).await });
        let polled = poll_fn(|cx| Poll::Ready(push.as_mut().poll(cx))).await;
        assert!(
            polled.is_pending(),
            "a push completed while the head lock was held: {polled:?}"
        );
        pushes.push(push);
    }
    pushes
}

fn is_taken(outcome: &Result<Vec<Position>, StorageError>, aggregate: &str, version: u64) -> bool {
    matches!(outcome, Err(StorageError::EventAlreadyExists(e))
        if e.event_store_id == STORE && e.aggregate_id == aggregate && e.version == version)
}

async fn a_conflicting_append_in_a_batch_is_refused_alone_and_the_others_commit() {
    let url = fixture::url();
    let name = fixture::fresh_schema();
    let (adapter, guard) = named(&url, &name).await;
    let schema = guard.schema.clone();
    assert_eq!(
        adapter.push_event(event("ditto", 1)).await.expect("push"),
        1
    );

    let mut raw = fixture::connect(&url).await;
    let (held, _) = fixture::hold_head(&mut raw, &schema).await;
    let pushes = queue(
        &adapter,
        vec![
            vec![event("onix", 1)],
            vec![event("mew", 1)],
            vec![event("ditto", 1)], // taken before the batch
            vec![event("pichu", 1)],
            vec![event("pichu", 2)], // follows the append before it in the batch
            vec![event("eevee", 3)], // a gap
            vec![event("ditto", 2), event("snorlax", 1)],
            vec![event("jolteon", 1), event("ditto", 2)], // ditto 2 taken in the batch
            vec![event("jolteon", 1)],                    // the refused group wrote nothing
        ],
    )
    .await;
    let admin = fixture::connect(&url).await;
    waiting_on_lock(&admin, &name, 0).await;
    held.rollback().await.expect("release the head lock");
    let mut outcomes = futures::future::join_all(pushes).await;

    assert_eq!(outcomes.remove(0).ok(), Some(vec![2]), "{outcomes:?}");
    assert_eq!(outcomes[0].as_ref().ok(), Some(&vec![3]), "{outcomes:?}");
    assert!(is_taken(&outcomes[1], "ditto", 1), "{:?}", outcomes[1]);
    assert_eq!(outcomes[2].as_ref().ok(), Some(&vec![4]), "{outcomes:?}");
    assert_eq!(outcomes[3].as_ref().ok(), Some(&vec![5]), "{outcomes:?}");
    assert!(
        matches!(&outcomes[4], Err(StorageError::UnexpectedVersion {
            aggregate_id, version: 3, expected: Some(1), ..
        }) if aggregate_id == "eevee"),
        "{:?}",
        outcomes[4]
    );
    assert_eq!(outcomes[5].as_ref().ok(), Some(&vec![6, 7]), "{outcomes:?}");
    assert!(is_taken(&outcomes[6], "ditto", 2), "{:?}", outcomes[6]);
    assert_eq!(outcomes[7].as_ref().ok(), Some(&vec![8]), "{outcomes:?}");

    let log: Vec<(Position, String, u64)> = adapter
        .read_log(1, 100)
        .await
        .expect("read_log")
        .into_iter()
        .map(|e| (e.position, e.event.aggregate_id, e.event.version))
        .collect();
    let expected = [
        (1, "ditto", 1),
        (2, "onix", 1),
        (3, "mew", 1),
        (4, "pichu", 1),
        (5, "pichu", 2),
        (6, "ditto", 2),
        (7, "snorlax", 1),
        (8, "jolteon", 1),
    ];
    let expected: Vec<(Position, String, u64)> = expected
        .iter()
        .map(|&(p, a, v)| (p, a.to_owned(), v))
        .collect();
    assert_eq!(
        log, expected,
        "the accepted appends only, gap-free, in queue order"
    );

    let transactions: i64 = admin
        .query_one(
            &format!("SELECT count(DISTINCT xmin::text) FROM {schema}.events WHERE position >= 2"),
            &[],
        )
        .await
        .expect("the writing transaction of each event")
        .get(0);
    assert_eq!(
        transactions, 1,
        "positions 2 to 8 were written by one transaction"
    );
    let head: i64 = admin
        .query_one(&format!("SELECT position FROM {schema}.head"), &[])
        .await
        .expect("head")
        .get(0);
    assert_eq!(head, 8, "refused appends took no position");
}

async fn concurrent_appends_to_one_aggregate_keep_versions_gap_free_and_report_their_positions() {
    const WRITERS: u64 = 16;
    const SUCCESSES: u64 = 8;
    let url = fixture::url();
    let (adapter, _guard) = fixture::adapter(&url).await;
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    // Every writer appends the next version of one hot aggregate, half the time together with
    // an event of its own aggregate, and learns the next version from its refusals only.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let adapter = Arc::clone(&adapter);
            tokio::spawn(async move {
                let own = format!("writer-{w}");
                let (mut next, mut own_next, mut committed) = (1, 1, Vec::new());
                while (committed.len() as u64) < SUCCESSES {
                    let mut group = vec![event("hot", next)];
                    let with_own = (w + committed.len() as u64).is_multiple_of(2);
                    if with_own {
                        group.push(event(&own, own_next));
                    }
                    match adapter.push_event_group(group).await {
                        Ok(positions) => {
                            committed.push((next, positions));
                            next += 1;
                            own_next += u64::from(with_own);
                        }
                        Err(StorageError::EventAlreadyExists(e)) => {
                            assert_eq!((e.aggregate_id.as_str(), e.version), ("hot", next));
                            next += 1;
                        }
                        Err(StorageError::UnexpectedVersion {
                            expected: Some(expected),
                            ..
                        }) => next = expected,
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
                (own, committed)
            })
        })
        .collect();
    let mut reported = Vec::new();
    for writer in writers {
        let (own, committed) = writer.await.expect("writer");
        let mut own_version = 0;
        for (version, positions) in committed {
            reported.push((positions[0], "hot".to_owned(), version));
            if let Some(&position) = positions.get(1) {
                assert_eq!(position, positions[0] + 1, "consecutive within a commit");
                own_version += 1;
                reported.push((position, own.clone(), own_version));
            }
        }
    }
    reported.sort();
    let stored: Vec<(Position, String, u64)> = adapter
        .read_log(1, 10_000)
        .await
        .expect("read_log")
        .into_iter()
        .map(|e| (e.position, e.event.aggregate_id, e.event.version))
        .collect();
    assert_eq!(
        stored, reported,
        "every success is stored at the positions it was given, and nothing else is"
    );
    let positions: Vec<Position> = stored.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(
        positions,
        (1..=stored.len() as Position).collect::<Vec<_>>(),
        "gap-free"
    );
    let hot: Vec<u64> = adapter
        .get_events(STORE, "hot", &Default::default())
        .await
        .expect("get_events")
        .iter()
        .map(|e| e.event.version)
        .collect();
    assert_eq!(
        hot,
        (1..=WRITERS * SUCCESSES).collect::<Vec<_>>(),
        "the hot aggregate's versions are 1..=n"
    );
}

async fn a_connection_terminated_mid_batch_fails_every_append_of_it_and_writes_nothing() {
    let url = fixture::url();
    let name = fixture::fresh_schema();
    let (adapter, guard) = named(&url, &name).await;
    // Inserts wait for this lock: a batch stops in the middle, between its version check and
    // its commit.
    let mut raw = fixture::connect(&url).await;
    let held = raw.transaction().await.expect("begin");
    held.batch_execute(&format!("LOCK TABLE {}.events IN SHARE MODE", guard.schema))
        .await
        .expect("lock the events table");
    let admin = fixture::connect(&url).await;

    // A batch of one stops at its insert while three appends queue behind it.
    let first = tokio::spawn({
        let adapter = Arc::clone(&adapter);
        async move { adapter.push_event(event("ditto", 1)).await }
    });
    let first_backend = waiting_on_lock(&admin, &name, 0).await;
    let groups = || {
        vec![
            vec![event("mew", 1), event("mew", 2)],
            vec![event("pichu", 1)],
            vec![event("eevee", 1)],
        ]
    };
    let pushes = queue(&adapter, groups()).await;
    assert_eq!(terminate(&admin, &name, first_backend).await, 1);
    let failed = first.await.expect("task");
    assert!(
        matches!(failed, Err(StorageError::Unavailable { .. })),
        "{failed:?}"
    );

    // The three queued appends are the next batch, stopped at its insert in turn.
    let batch_backend = waiting_on_lock(&admin, &name, first_backend).await;
    assert_eq!(terminate(&admin, &name, batch_backend).await, 1);
    for outcome in futures::future::join_all(pushes).await {
        assert!(
            matches!(outcome, Err(StorageError::Unavailable { .. })),
            "every append of the batch has an unknown outcome: {outcome:?}"
        );
    }
    held.rollback().await.expect("rollback");
    let log = adapter.read_log(1, 100).await.expect("read_log");
    assert!(log.is_empty(), "part of a failed batch is visible: {log:?}");

    // Pushed again, they commit.
    let mut positions = Vec::new();
    for group in groups() {
        positions.push(
            adapter
                .push_event_group(group)
                .await
                .expect("the retry commits"),
        );
    }
    assert_eq!(positions, [vec![1, 2], vec![3], vec![4]]);
}
