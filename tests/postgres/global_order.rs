//! The global order is gap-free under concurrency: positions follow commit order, so a reader
//! that moves on past the highest position it saw never skips an event whose transaction
//! commits later (the stale-sequence problem of event stores that number events before
//! commit). One test holds a transaction open in the middle of the log while other commits
//! queue; another races many writers against readers; a third shows commits of another
//! process reaching a subscription through LISTEN/NOTIFY.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use annals::storage::{LoggedEvent, Position, StorageAdapter};
use annals::subscription::{Filter, Subscription};
use tokio::sync::mpsc;

use crate::fixture::{self, STORE, event};
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 4;
        a_subscriber_misses_nothing_when_an_earlier_transaction_commits_last,
        readers_never_see_a_gap_while_many_writers_commit,
        commits_of_another_process_wake_a_subscription_through_notify,
    )
}

/// Follows a subscription from position 1 on its own task, sending every event it delivers.
fn follow(adapter: Arc<dyn StorageAdapter>) -> mpsc::UnboundedReceiver<LoggedEvent> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut subscription = Subscription::new(adapter, 1, Filter::all());
        loop {
            let event = subscription.next().await.expect("the subscription reads");
            if sender.send(event).is_err() {
                return;
            }
        }
    });
    receiver
}

async fn receive(events: &mut mpsc::UnboundedReceiver<LoggedEvent>, count: usize) -> Vec<Position> {
    let mut positions = Vec::new();
    while positions.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .unwrap_or_else(|_| panic!("only {positions:?} delivered, {count} expected"))
            .expect("the subscription task runs");
        positions.push(event.position);
    }
    positions
}

async fn a_subscriber_misses_nothing_when_an_earlier_transaction_commits_last() {
    let url = fixture::url();
    let (adapter, guard) = fixture::adapter(&url).await;
    let schema = guard.schema.clone();
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    for version in 1..=3 {
        adapter
            .push_event(event("pikachu", version))
            .await
            .expect("push");
    }
    let mut delivered = follow(Arc::clone(&adapter));
    assert_eq!(receive(&mut delivered, 3).await, [1, 2, 3]);

    // A writer takes position 4 and writes its event, but does not commit yet.
    let mut raw = fixture::connect(&url).await;
    let (held, position) = fixture::hold_head(&mut raw, &schema).await;
    assert_eq!(position, 4);
    held.execute(
        &format!(
            "INSERT INTO {schema}.events (position, event_store_id, aggregate_id, version, \
             timestamp_ms, event_type, schema_version, payload, metadata) \
             VALUES (4, '{STORE}', 'late', 1, 0, 'POKEMON_TRAINED', 1, '\\x00', '')"
        ),
        &[],
    )
    .await
    .expect("insert the late event");
    held.execute("SELECT pg_notify($1, '4')", &[&format!("{schema}_log")])
        .await
        .expect("notify");

    // Eight other writers push meanwhile.
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let adapter = Arc::clone(&adapter);
            tokio::spawn(async move { adapter.push_event(event(&format!("writer-{i}"), 1)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "a commit overtook the open transaction holding an earlier position"
    );
    assert!(
        adapter.read_log(4, 100).await.expect("read_log").is_empty(),
        "a reader saw past the open transaction"
    );
    assert!(
        delivered.try_recv().is_err(),
        "the subscriber was handed an event past the open transaction"
    );

    held.commit().await.expect("commit the held transaction");
    let mut pushed = BTreeSet::new();
    for writer in writers {
        pushed.insert(
            writer
                .await
                .expect("writer task")
                .expect("push after the held commit"),
        );
    }
    assert_eq!(
        pushed,
        (5..=12).collect(),
        "the writers took the positions after it"
    );
    assert_eq!(
        receive(&mut delivered, 9).await,
        (4..=12).collect::<Vec<_>>(),
        "every event, once, in position order"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(delivered.try_recv().is_err(), "nothing delivered twice");
}

async fn readers_never_see_a_gap_while_many_writers_commit() {
    const WRITERS: u64 = 8;
    const COMMITS: u64 = 20;
    let url = fixture::url();
    let (adapter, _guard) = fixture::adapter(&url).await;
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    let mut delivered = follow(Arc::clone(&adapter));
    // A reader that polls the log and moves past whatever it reads, as a naive consumer of a
    // store with stale sequences would: any gap it ever sees would be an event skipped.
    let poller = {
        let adapter = Arc::clone(&adapter);
        tokio::spawn(async move {
            let mut next: Position = 1;
            let total = WRITERS * COMMITS * 2;
            while next <= total {
                for event in adapter.read_log(next, 7).await.expect("read_log") {
                    assert_eq!(event.position, next, "a reader saw a gap in the log");
                    next += 1;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let adapter = Arc::clone(&adapter);
            tokio::spawn(async move {
                for version in 1..=COMMITS {
                    // Each commit is a group of two events of two aggregates.
                    let group = vec![
                        event(&format!("w{w}-a"), version),
                        event(&format!("w{w}-b"), version),
                    ];
                    adapter.push_event_group(group).await.expect("push");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    tokio::time::timeout(Duration::from_secs(30), poller)
        .await
        .expect("the poller reads the whole log")
        .expect("the poller saw no gap");
    let total = usize::try_from(WRITERS * COMMITS * 2).expect("small");
    assert_eq!(
        receive(&mut delivered, total).await,
        (1..=total as Position).collect::<Vec<_>>(),
        "the subscription delivers every event once, in position order"
    );
}

async fn commits_of_another_process_wake_a_subscription_through_notify() {
    let url = fixture::url();
    let (reader, guard) = fixture::adapter(&url).await;
    let reader: Arc<dyn StorageAdapter> = Arc::new(reader);
    // A second adapter on the same schema stands for another process: its commits reach the
    // first one only through the server.
    let writer = fixture::builder(&url, &guard.schema)
        .connect()
        .await
        .expect("a second adapter on the schema");
    let mut watch = reader.watch_log();
    let mut delivered = follow(Arc::clone(&reader));
    for version in 1..=5 {
        writer
            .push_event(event("eevee", version))
            .await
            .expect("push");
    }
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|p| *p == 5))
        .await
        .expect("the reader's watch_log hears the other adapter's commits")
        .expect("the watch is open");
    assert_eq!(receive(&mut delivered, 5).await, [1, 2, 3, 4, 5]);
}
