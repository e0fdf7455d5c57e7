//! Subscriptions deliver every committed event in global order, caught up then live.

use std::sync::Arc;
use std::time::Duration;

use annals::storage::{InMemoryAdapter, StorageAdapter};
use annals::subscription::{Filter, Subscription};

use crate::{event, log_store};

/// Pushes `count` commits over a few aggregates of two stores (every third a group of two),
/// and returns (store, aggregate, version, type) in commit order.
async fn fill(adapter: &dyn StorageAdapter, count: u64) -> Vec<(String, String, u64, String)> {
    let mut pushed = Vec::new();
    let mut versions = std::collections::HashMap::new();
    for i in 0..count {
        let targets: Vec<(&str, String)> = if i % 3 == 2 {
            vec![
                ("POKEMONS", format!("p{}", i % 5)),
                ("TRAINERS", format!("t{}", i % 4)),
            ]
        } else {
            vec![("POKEMONS", format!("p{}", i % 5))]
        };
        let commit: Vec<_> = targets
            .into_iter()
            .map(|(store, aggregate)| {
                let v = versions.entry((store, aggregate.clone())).or_insert(0u64);
                *v += 1;
                let event_type = if *v == 1 { "CREATED" } else { "CHANGED" };
                pushed.push((
                    store.to_owned(),
                    aggregate.clone(),
                    *v,
                    event_type.to_owned(),
                ));
                event(store, &aggregate, *v, event_type)
            })
            .collect();
        adapter.push_event_group(commit).await.expect("push");
    }
    pushed
}

async fn check_catch_up(adapter: Arc<dyn StorageAdapter>) {
    let pushed = fill(&*adapter, 400).await;
    let total = pushed.len() as u64;
    for from in [1, 2, total / 2, total] {
        let mut subscription = Subscription::new(Arc::clone(&adapter), from, Filter::all());
        for (i, expected) in pushed.iter().enumerate().skip(from as usize - 1) {
            let got = subscription.next().await.expect("next");
            assert_eq!(got.position, i as u64 + 1, "from {from}");
            let key = (
                got.event_store_id.clone(),
                got.event.aggregate_id.clone(),
                got.event.version,
                got.event.event_type.clone(),
            );
            assert_eq!(&key, expected, "from {from}, position {}", got.position);
        }
        assert_eq!(subscription.try_next().await.expect("try_next"), None);
        assert_eq!(subscription.position(), total + 1);
    }
    // Filters keep order and skip the rest; the position still moves past skipped events.
    let mut trainers = Subscription::new(
        Arc::clone(&adapter),
        1,
        Filter::all().stores(["TRAINERS"]).event_types(["CHANGED"]),
    );
    let expected: Vec<_> = pushed
        .iter()
        .filter(|(s, _, _, t)| s == "TRAINERS" && t == "CHANGED")
        .collect();
    assert!(!expected.is_empty());
    for e in expected {
        let got = trainers.next().await.expect("next");
        assert_eq!(
            (
                &got.event_store_id,
                &got.event.aggregate_id,
                got.event.version
            ),
            (&e.0, &e.1, e.2)
        );
    }
    assert_eq!(trainers.try_next().await.expect("try_next"), None);
    assert_eq!(trainers.position(), total + 1);
}

#[tokio::test]
async fn a_subscription_catches_up_in_global_order_from_any_position_in_memory() {
    check_catch_up(Arc::new(InMemoryAdapter::new())).await;
}

#[tokio::test]
async fn a_subscription_catches_up_in_global_order_from_any_position_on_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_catch_up(log_store(dir.path())).await;
}

/// A subscriber that started before the writes sees every one of them, live, in order, while
/// segments roll over beneath it.
async fn check_live(adapter: Arc<dyn StorageAdapter>) {
    const COMMITS: u64 = 600;
    let events = COMMITS + COMMITS / 3; // every third commit is a group of two
    let mut subscription = Subscription::new(Arc::clone(&adapter), 1, Filter::all());
    let writer = {
        let adapter = Arc::clone(&adapter);
        tokio::spawn(async move { fill(&*adapter, COMMITS).await })
    };
    let mut seen = Vec::new();
    for _ in 0..events {
        let next = tokio::time::timeout(Duration::from_secs(20), subscription.next()).await;
        seen.push(next.expect("an event arrives").expect("next"));
    }
    let pushed = writer.await.expect("writer");
    assert_eq!(pushed.len() as u64, events);
    assert_eq!(subscription.try_next().await.expect("drained"), None);
    for (i, (got, expected)) in seen.iter().zip(&pushed).enumerate() {
        assert_eq!(got.position, i as u64 + 1);
        assert_eq!(
            (
                &got.event_store_id,
                &got.event.aggregate_id,
                got.event.version
            ),
            (&expected.0, &expected.1, expected.2)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_subscription_delivers_concurrent_commits_in_order_in_memory() {
    check_live(Arc::new(InMemoryAdapter::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_subscription_delivers_concurrent_commits_in_order_on_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    check_live(log_store(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_subscription_wakes_on_the_next_commit() {
    let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
    let mut subscription = Subscription::new(Arc::clone(&adapter), 1, Filter::all());
    let waiter = tokio::spawn(async move { subscription.next().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "nothing to deliver yet");
    adapter
        .push_event(event("POKEMONS", "pikachu", 1, "CREATED"))
        .await
        .expect("push");
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken by the commit")
        .expect("task")
        .expect("next");
    assert_eq!(got.event.aggregate_id, "pikachu");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_subscription_ends_with_closed_when_the_log_store_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(
        annals::storage::LogAdapter::builder(dir.path())
            .open()
            .expect("open"),
    );
    let adapter: Arc<dyn StorageAdapter> = log.clone();
    let mut subscription = Subscription::new(adapter, 1, Filter::all());
    let waiter = tokio::spawn(async move { subscription.next().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.close();
    let ended = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter wakes when the store closes")
        .expect("task");
    assert!(
        matches!(ended, Err(annals::StorageError::Closed)),
        "{ended:?}"
    );
}

/// Events hidden by a lifecycle rule at the end of the log are passed, not waited on: a
/// subscription that caught up waits for the next commit instead of reading the hidden tail
/// again and again.
#[tokio::test]
async fn a_subscription_passes_hidden_events_at_the_end_of_the_log() {
    use annals::storage::Retention;
    let adapter = Arc::new(InMemoryAdapter::new());
    let rule = Retention {
        max_age: Some(Duration::from_secs(3_600)),
        max_count: None,
    };
    let set = adapter.set_retention("POKEMONS", rule).await.expect("rule");
    // Events from 2023: expired as soon as they are committed.
    adapter
        .push_event_group(vec![event("POKEMONS", "p", 1, "CREATED")])
        .await
        .expect("push");
    let last = adapter
        .push_event_group(vec![event("POKEMONS", "p", 2, "CHANGED")])
        .await
        .expect("push")[0];
    let mut subscription = Subscription::new(adapter.clone(), 1, Filter::all());
    let lifecycle = subscription.next().await.expect("the rule's event");
    assert_eq!(lifecycle.position, set);
    assert!(subscription.try_next().await.expect("read").is_none());
    assert_eq!(
        subscription.position(),
        last + 1,
        "the hidden tail is passed"
    );
    // Waiting now waits for a new commit.
    let waited = tokio::time::timeout(Duration::from_millis(50), subscription.next()).await;
    assert!(waited.is_err(), "nothing new was delivered: {waited:?}");
    let young = annals::storage::AppendEvent {
        event: annals::storage::EncodedEvent {
            timestamp: annals::storage::Timestamp::now(),
            ..event("POKEMONS", "p", 3, "CHANGED").event
        },
        ..event("POKEMONS", "p", 3, "CHANGED")
    };
    let young_at = adapter.push_event(young).await.expect("push");
    let delivered = subscription.next().await.expect("the young event");
    assert_eq!(delivered.position, young_at);
}
