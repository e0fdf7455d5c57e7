//! Bulk pushes (`push_events`, `push_batch`, `EventGroup::push_event_group`), streamed reads
//! (`stream_events`) and state-only folds (`get_aggregate_state`), on the in-memory adapter and
//! on the log adapter (whose reads decode from its read buffer), with a metadata type that has
//! no `Default`.

use std::sync::Arc;

use annals::storage::{GetEventsOptions, InMemoryAdapter, LogAdapter, StorageAdapter};
use annals::{
    Error, EventDetail, EventGroup, EventStore, NewEvent, StorageError, push_event_group,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Money {
    pub cents: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credited {
    pub amount: Money,
    pub memo: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closed {}

/// Metadata without `Default`: every push names who made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub actor: String,
}

annals::events! {
    #[derive(PartialEq)]
    pub enum AccountEvent {
        type Metadata = Trace;
        Credited(Credited) = "CREDITED",
        Closed(Closed) = "CLOSED",
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    pub cents: i64,
    pub memos: usize,
    pub closed: bool,
}

fn reduce(state: Option<Account>, event: &EventDetail<AccountEvent>) -> Account {
    let mut account = state.unwrap_or_default();
    match &event.event {
        AccountEvent::Credited(c) => {
            account.cents += c.amount.cents;
            account.memos += c.memo.len();
        }
        AccountEvent::Closed(_) => account.closed = true,
    }
    account
}

type Accounts = EventStore<AccountEvent, Account>;

fn accounts(adapter: Arc<dyn StorageAdapter>) -> Accounts {
    EventStore::builder("ACCOUNTS", reduce)
        .storage_adapter(adapter)
        .build()
        .unwrap()
}

fn credit(i: u64) -> AccountEvent {
    AccountEvent::Credited(Credited {
        amount: Money {
            cents: i as i64 * 7 - 100,
            currency: "EUR".into(),
        },
        memo: format!("credit number {i}"),
    })
}

fn trace(actor: &str) -> Trace {
    Trace {
        actor: actor.into(),
    }
}

/// Both adapters, the log one in a directory kept alive by the returned guard.
fn adapters() -> Vec<(Arc<dyn StorageAdapter>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let log = LogAdapter::builder(dir.path()).open().unwrap();
    vec![
        (Arc::new(InMemoryAdapter::new()), None),
        (Arc::new(log), Some(dir)),
    ]
}

#[tokio::test]
async fn streamed_events_equal_get_events_across_pages_and_options() {
    for (adapter, _dir) in adapters() {
        let store = accounts(adapter);
        let events: Vec<_> = (1..=2_500).map(credit).collect();
        for (i, chunk) in events.chunks(1_000).enumerate() {
            store
                .push_events("acct", i as u64 * 1_000, chunk, &trace("loader"))
                .await
                .unwrap();
        }
        let options = [
            GetEventsOptions::default(),
            GetEventsOptions {
                min_version: Some(1_000),
                max_version: Some(2_100),
                ..Default::default()
            },
            GetEventsOptions {
                limit: Some(1_500),
                ..Default::default()
            },
            GetEventsOptions {
                reverse: true,
                limit: Some(2_049),
                ..Default::default()
            },
            GetEventsOptions {
                reverse: true,
                max_version: Some(1_030),
                ..Default::default()
            },
        ];
        for options in options {
            let read = store.get_events("acct", options).await.unwrap();
            let streamed: Vec<_> = store
                .stream_events("acct", options)
                .try_collect()
                .await
                .unwrap();
            assert!(!read.is_empty(), "{options:?}");
            assert_eq!(streamed, read, "{options:?}");
        }
        let full = store.get_events("acct", Default::default()).await.unwrap();
        assert_eq!(full.len(), 2_500);
        assert!(full.iter().all(|e| e.metadata == trace("loader")));
        let none: Vec<_> = store
            .stream_events("nobody", Default::default())
            .try_collect()
            .await
            .unwrap();
        assert!(none.is_empty());
    }
}

#[tokio::test]
async fn the_state_only_fold_equals_get_aggregate() {
    for (adapter, _dir) in adapters() {
        let store = accounts(adapter);
        store
            .push_events("acct", 0, (1..=300).map(credit), &trace("a"))
            .await
            .unwrap();
        store
            .push_events("acct", 300, [AccountEvent::Closed(Closed {})], &trace("b"))
            .await
            .unwrap();
        for max_version in [None, Some(1), Some(150), Some(301), Some(1_000)] {
            let options = annals::GetAggregateOptions { max_version };
            let full = store.get_aggregate("acct", options).await.unwrap();
            let state = store.get_aggregate_state("acct", options).await.unwrap();
            assert_eq!(state.aggregate, full.aggregate, "{max_version:?}");
            assert_eq!(state.last_event, full.last_event, "{max_version:?}");
            assert_eq!(
                full.events.len() as u64,
                max_version.unwrap_or(301).min(301)
            );
        }
        let missing = store
            .get_aggregate_state("nobody", Default::default())
            .await
            .unwrap();
        assert!(missing.aggregate.is_none() && missing.last_event.is_none());
    }
}

#[tokio::test]
async fn push_events_is_atomic_and_refuses_a_taken_version_with_nothing_written() {
    for (adapter, _dir) in adapters() {
        let store = accounts(adapter.clone());
        let pushed = store
            .push_events("acct", 0, (1..=3).map(credit), &trace("a"))
            .await
            .unwrap();
        assert_eq!(pushed.count, 3);
        assert_eq!(pushed.positions(), 1..4);
        assert_eq!(pushed.last_position(), 3);

        // After version 2 is not the aggregate's last version (3): refused, nothing written.
        let err = store
            .push_events("acct", 2, (4..=9).map(credit), &trace("b"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::EventAlreadyExists(ref e) if e.version == 3),
            "{err:?}"
        );
        // A gap: refused too.
        let err = store
            .push_events("acct", 4, [credit(5)], &trace("b"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Storage(StorageError::UnexpectedVersion { .. })),
            "{err:?}"
        );
        assert_eq!(*adapter.watch_log().borrow(), 3);
        let events = store.get_events("acct", Default::default()).await.unwrap();
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.metadata == trace("a")));
        assert!(events.iter().all(|e| e.timestamp == pushed.timestamp));

        let empty: [AccountEvent; 0] = [];
        assert!(
            store
                .push_events("acct", 3, empty, &trace("c"))
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn push_batch_spans_aggregates_all_or_nothing() {
    for (adapter, _dir) in adapters() {
        let store = accounts(adapter.clone());
        let new =
            |id: &str, version, i| NewEvent::with_metadata_of(id, version, credit(i), trace(id));
        let pushed = store
            .push_batch([new("a", 1, 1), new("b", 1, 2), new("a", 2, 3)])
            .await
            .unwrap();
        assert_eq!(pushed.positions(), 1..4);

        // The last member conflicts (b's version 1 is taken): none of the batch is written.
        let err = store
            .push_batch(vec![new("a", 3, 4), new("c", 1, 5), new("b", 1, 6)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::EventAlreadyExists(_)), "{err:?}");
        assert_eq!(*adapter.watch_log().borrow(), 3);
        for (id, versions) in [("a", 2), ("b", 1), ("c", 0)] {
            let events = store.get_events(id, Default::default()).await.unwrap();
            assert_eq!(events.len(), versions, "{id}");
        }
        let a = store.get_events("a", Default::default()).await.unwrap();
        assert_eq!(a[1].event, credit(3));
        assert_eq!(a[1].metadata, trace("a"));
    }
}

#[tokio::test]
async fn bulk_pushes_run_the_push_hook_for_each_event() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hooked = {
        let seen = seen.clone();
        EventStore::builder("ACCOUNTS", reduce)
            .storage_adapter(Arc::new(InMemoryAdapter::new()))
            .on_event_pushed(move |response| {
                let seen = seen.clone();
                async move {
                    let state = response.next_aggregate.map(|a| a.state.cents);
                    seen.lock()
                        .unwrap()
                        .push((response.event.version, response.position, state));
                }
            })
            .build()
            .unwrap()
    };
    hooked
        .push_events("acct", 0, [credit(20), credit(30)], &trace("a"))
        .await
        .unwrap();
    // The first event of an aggregate carries the aggregate it starts, as `push_event` does.
    assert_eq!(*seen.lock().unwrap(), vec![(1, 1, Some(40)), (2, 2, None)]);
}

#[tokio::test]
async fn an_event_group_pushes_as_a_method() {
    let adapter = Arc::new(InMemoryAdapter::new());
    let store = accounts(adapter);
    let grouped = |id: &str| {
        store
            .group_event(
                NewEvent::with_metadata_of(id, 1, credit(1), trace(id)),
                Default::default(),
            )
            .unwrap()
    };
    let (a, b) = (grouped("a"), grouped("b"))
        .push_event_group()
        .await
        .unwrap();
    assert_eq!((a.position, b.position), (1, 2));
    let again = push_event_group(vec![grouped("a")]).await.unwrap_err();
    assert!(matches!(again, Error::EventAlreadyExists(_)), "{again:?}");
}

/// The log adapter and the typed layer need no Tokio runtime: any executor drives them.
#[test]
fn the_store_runs_on_any_executor() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = Arc::new(LogAdapter::builder(dir.path()).open().unwrap());
    let store = accounts(adapter.clone());
    futures::executor::block_on(async {
        store
            .push_events("acct", 0, (1..=10).map(credit), &trace("cli"))
            .await
            .unwrap();
        store
            .push_event(
                NewEvent::with_metadata_of("acct", 11, credit(11), trace("cli")),
                Default::default(),
            )
            .await
            .unwrap();
        let state = store
            .get_aggregate_state("acct", Default::default())
            .await
            .unwrap();
        assert_eq!(state.aggregate.unwrap().version, 11);
        let streamed: Vec<_> = store
            .stream_events("acct", Default::default())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(streamed.len(), 11);
    });
    adapter.close();
}
