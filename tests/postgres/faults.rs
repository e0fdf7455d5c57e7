//! Faults: a connection lost in the middle of a commit, a statement timeout, a subscription
//! whose connections are terminated, and a server restarted under a subscription. Each ends in
//! a typed error or a transparent recovery, never in half a commit, a lost event or a
//! duplicate delivery.

use std::sync::Arc;
use std::time::Duration;

use annals::StorageError;
use annals::storage::{AppendEvent, LoggedEvent, Position, StorageAdapter};
use annals::subscription::{Filter, Subscription};
use tokio::sync::mpsc;

use crate::fixture::{self, STORE, SchemaGuard, event};
use crate::harness::{Needs, trials};
use crate::server::Server;

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    [
        trials!(Needs::Server, threads = 2;
            a_push_whose_connection_drops_mid_commit_writes_nothing_and_is_safe_to_retry,
            a_statement_timeout_is_a_typed_error_and_writes_nothing,
            a_subscription_resumes_when_its_connections_are_terminated,
        ),
        trials!(Needs::OwnServer, threads = 2; a_subscription_resumes_across_a_server_restart),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A fresh schema, its guard, and an adapter on it whose backends are named `name`.
async fn named(
    url: &str,
    name: &str,
    statement_timeout: Option<Duration>,
) -> (Arc<dyn StorageAdapter>, SchemaGuard) {
    let schema = fixture::fresh_schema();
    let guard = SchemaGuard {
        url: url.to_owned(),
        schema: schema.clone(),
    };
    let adapter = fixture::named_builder(url, &schema, name)
        .statement_timeout(statement_timeout)
        .connect()
        .await
        .expect("the adapter connects");
    (Arc::new(adapter), guard)
}

fn group() -> Vec<AppendEvent> {
    vec![event("ditto", 1), event("ditto", 2), event("mew", 1)]
}

async fn assert_nothing_written(adapter: &dyn StorageAdapter, what: &str) {
    let log = adapter.read_log(1, 100).await.expect("read_log");
    assert!(
        log.is_empty(),
        "{what}: part of a failed commit is visible: {log:?}"
    );
    let ditto = adapter
        .get_events(STORE, "ditto", &Default::default())
        .await
        .expect("get_events");
    assert!(
        ditto.is_empty(),
        "{what}: part of a failed commit is visible"
    );
}

/// Waits until a backend named `name` waits on a lock (an append queued on the head row).
async fn until_waiting_on_lock(client: &tokio_postgres::Client, name: &str) {
    for _ in 0..200 {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&name],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the append never queued on the head lock");
}

async fn a_push_whose_connection_drops_mid_commit_writes_nothing_and_is_safe_to_retry() {
    let url = fixture::url();
    let name = fixture::fresh_schema();
    let (adapter, guard) = named(&url, &name, Some(Duration::from_secs(20))).await;
    // The push begins its transaction, then queues on the head lock a test transaction holds.
    let mut raw = fixture::connect(&url).await;
    let (held, _) = fixture::hold_head(&mut raw, &guard.schema).await;
    let push = tokio::spawn({
        let adapter = Arc::clone(&adapter);
        async move { adapter.push_event_group(group()).await }
    });
    let admin = fixture::connect(&url).await;
    until_waiting_on_lock(&admin, &name).await;
    assert_eq!(
        fixture::terminate(&admin, &name, "wait_event_type = 'Lock'").await,
        1
    );
    let failed = push.await.expect("the push task");
    assert!(
        matches!(failed, Err(StorageError::Unavailable { .. })),
        "a lost connection is a typed error: {failed:?}"
    );
    held.rollback().await.expect("rollback");
    assert_nothing_written(&*adapter, "a dropped connection").await;

    // Retrying is safe: the retry commits, and a retry of a commit that did go through is a
    // conflict rather than a duplicate.
    let positions = adapter
        .push_event_group(group())
        .await
        .expect("the retry commits");
    assert_eq!(positions, [1, 2, 3]);
    let again = adapter.push_event_group(group()).await;
    assert!(
        matches!(&again, Err(StorageError::EventAlreadyExists(e)) if e.aggregate_id == "ditto"
            && e.version == 1),
        "a repeated commit is refused as a conflict: {again:?}"
    );
    assert_eq!(adapter.read_log(1, 100).await.expect("read_log").len(), 3);
}

async fn a_statement_timeout_is_a_typed_error_and_writes_nothing() {
    let url = fixture::url();
    let name = fixture::fresh_schema();
    let (adapter, guard) = named(&url, &name, Some(Duration::from_millis(300))).await;
    let mut raw = fixture::connect(&url).await;
    let (held, _) = fixture::hold_head(&mut raw, &guard.schema).await;
    let timed_out =
        tokio::time::timeout(Duration::from_secs(10), adapter.push_event_group(group()))
            .await
            .expect("the statement timeout fires");
    assert!(
        matches!(
            &timed_out,
            Err(StorageError::Timeout {
                operation: "append events",
                ..
            })
        ),
        "a statement timeout is a typed error: {timed_out:?}"
    );
    held.rollback().await.expect("rollback");
    assert_nothing_written(&*adapter, "a timed-out commit").await;
    let positions = adapter
        .push_event_group(group())
        .await
        .expect("then it commits");
    assert_eq!(positions, [1, 2, 3]);
}

/// Follows a subscription from position 1, retrying reads that fail (as an application that
/// keeps a subscription across outages does); the subscription's position does not move on an
/// error, so nothing is skipped.
fn follow_retrying(adapter: Arc<dyn StorageAdapter>) -> mpsc::UnboundedReceiver<LoggedEvent> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut subscription = Subscription::new(adapter, 1, Filter::all());
        loop {
            match subscription.next().await {
                Ok(event) => {
                    if sender.send(event).is_err() {
                        return;
                    }
                }
                Err(StorageError::Unavailable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the subscription failed: {e}"),
            }
        }
    });
    receiver
}

async fn receive(events: &mut mpsc::UnboundedReceiver<LoggedEvent>, count: usize) -> Vec<Position> {
    let mut positions = Vec::new();
    while positions.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap_or_else(|_| panic!("only {positions:?} delivered, {count} expected"))
            .expect("the subscription task runs");
        positions.push(event.position);
    }
    positions
}

/// Pushes event `version` of `aggregate`, retrying while the server is unreachable; a retry
/// that finds the event already there means an earlier attempt committed.
async fn push_retrying(adapter: &dyn StorageAdapter, aggregate: &str, version: u64) {
    for _ in 0..200 {
        match adapter.push_event(event(aggregate, version)).await {
            Ok(_) => return,
            Err(StorageError::EventAlreadyExists(_)) => return,
            Err(StorageError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("push {aggregate} v{version}: {e}"),
        }
    }
    panic!("the server stayed unreachable");
}

async fn assert_quiet(events: &mut mpsc::UnboundedReceiver<LoggedEvent>) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Ok(extra) = events.try_recv() {
        panic!("delivered twice or out of nowhere: {extra:?}");
    }
}

async fn a_subscription_resumes_when_its_connections_are_terminated() {
    let url = fixture::url();
    let name = fixture::fresh_schema();
    let (reader, guard) = named(&url, &name, Some(Duration::from_secs(20))).await;
    // The writer stands for another process: its commits reach the reader only by NOTIFY.
    let writer = fixture::builder(&url, &guard.schema)
        .connect()
        .await
        .expect("the writer connects");
    let mut delivered = follow_retrying(Arc::clone(&reader));
    for version in 1..=5 {
        writer
            .push_event(event("porygon", version))
            .await
            .expect("push");
    }
    assert_eq!(receive(&mut delivered, 5).await, [1, 2, 3, 4, 5]);

    // Every connection of the reader goes: its pool, its listener, its snapshots.
    let admin = fixture::connect(&url).await;
    assert!(fixture::terminate(&admin, &name, "true").await >= 2);
    for version in 6..=10 {
        writer
            .push_event(event("porygon", version))
            .await
            .expect("push");
    }
    assert_eq!(receive(&mut delivered, 5).await, [6, 7, 8, 9, 10]);
    assert_quiet(&mut delivered).await;
}

async fn a_subscription_resumes_across_a_server_restart() {
    // Restarting the shared server would break the other tests: this one starts its own, from
    // the PostgreSQL binaries (the harness ignores it without them).
    let mut server = tokio::task::spawn_blocking(Server::start)
        .await
        .expect("start")
        .unwrap_or_else(|e| panic!("a private PostgreSQL server starts: {e}"));
    let reader: Arc<dyn StorageAdapter> = Arc::new(
        fixture::builder(server.url(), "annals")
            .connect()
            .await
            .expect("the reader connects"),
    );
    let writer = fixture::builder(server.url(), "annals")
        .connect()
        .await
        .expect("the writer connects");
    let mut delivered = follow_retrying(Arc::clone(&reader));
    for version in 1..=5 {
        push_retrying(&writer, "magnemite", version).await;
    }
    assert_eq!(receive(&mut delivered, 5).await, [1, 2, 3, 4, 5]);

    let server = tokio::task::spawn_blocking(move || {
        server
            .restart()
            .unwrap_or_else(|e| panic!("the server restarts: {e}"));
        server
    })
    .await
    .expect("restart");
    for version in 6..=10 {
        push_retrying(&writer, "magnemite", version).await;
    }
    assert_eq!(
        receive(&mut delivered, 5).await,
        [6, 7, 8, 9, 10],
        "after the restart, the subscription goes on without loss or duplicate"
    );
    assert_quiet(&mut delivered).await;
    drop((reader, writer));
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("stop");
}
