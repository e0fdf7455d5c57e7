//! The runtime floor on PostgreSQL, unchanged: a durable consumer catches up on the log in
//! batches, follows live commits (of this adapter and of another one on the same schema), and
//! resumes after its last checkpoint.

use std::sync::Arc;
use std::time::Duration;

use annals::consumer::Consumer;
use annals::state::StateStore;
use annals::storage::StorageAdapter;
use annals::subscription::Filter;

use crate::fixture::{self, event};
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 2;
        a_consumer_catches_up_follows_live_commits_and_resumes_after_its_checkpoint,
    )
}

async fn a_consumer_catches_up_follows_live_commits_and_resumes_after_its_checkpoint() {
    let url = fixture::url();
    let (adapter, guard) = fixture::adapter(&url).await;
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    let other = fixture::builder(&url, &guard.schema)
        .connect()
        .await
        .expect("a second adapter on the schema");
    // More than one read batch of history.
    let history = 600;
    for chunk in (1..=history).collect::<Vec<u64>>().chunks(100) {
        let group = chunk.iter().map(|&v| event("snorlax", v)).collect();
        adapter.push_event_group(group).await.expect("push history");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = Arc::new(StateStore::open(dir.path().join("state.redb")).expect("state"));
    let mut consumer = Consumer::open(
        "trainer",
        Arc::clone(&adapter),
        Arc::clone(&state),
        Filter::all(),
    )
    .expect("open the consumer");
    for position in 1..=history {
        let e = consumer.next().await.expect("catch up");
        assert_eq!((e.position, e.event.version), (position, position));
    }
    consumer.commit().expect("commit the checkpoint");

    // Live: one commit by this adapter, one by the other (heard through NOTIFY).
    let live = tokio::spawn({
        let adapter = Arc::clone(&adapter);
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            adapter
                .push_event(event("snorlax", history + 1))
                .await
                .expect("push");
            tokio::time::sleep(Duration::from_millis(100)).await;
            other
                .push_event(event("snorlax", history + 2))
                .await
                .expect("push");
        }
    });
    for position in history + 1..=history + 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a live commit is delivered")
            .expect("next");
        assert_eq!(e.position, position);
    }
    live.await.expect("live pushes");
    drop(consumer);

    // Reopened, the consumer resumes just after its checkpoint.
    let mut consumer = Consumer::open("trainer", Arc::clone(&adapter), state, Filter::all())
        .expect("reopen the consumer");
    assert_eq!(consumer.position(), history + 1);
    let again = consumer.next().await.expect("next");
    assert_eq!(
        again.position,
        history + 1,
        "at least once: the uncommitted event again"
    );
}
