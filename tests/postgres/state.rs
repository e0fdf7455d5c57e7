//! The runtime's state store on PostgreSQL: the behaviour suite the redb store passes
//! (tests/runtime/state.rs), then what only a shared database shows: two stores (as two
//! processes would have) competing for one queue and waking each other's receivers, a
//! rebuilt view's old rows gone from the table, and a schema from a newer annals refused.

use std::sync::Arc;
use std::time::Duration;

use annals::StorageError;
use annals::queue::{Queue, QueueError};
use annals::state::StateStore;
use annals::storage::PostgresAdapter;
use annals::testing::state_conformance as suite;

use crate::fixture::{self, SchemaGuard};
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 2;
        checkpoints_commit_with_their_effects_or_not_at_all,
        key_value_views_apply_rebuild_and_activate,
        dead_letters_keep_their_retry_requests,
        queues_deliver_hide_expire_and_dead_letter,
        competing_receivers_on_two_stores_never_share_a_message,
        calls_work_from_any_thread_or_runtime,
        a_receiver_is_woken_by_an_enqueue_on_another_store,
        state_tables_of_a_newer_annals_are_refused,
        the_state_store_carries_on_after_its_connections_are_terminated,
    )
}

/// An adapter on a fresh schema, and a state store on it.
async fn state() -> (Arc<StateStore>, PostgresAdapter, SchemaGuard) {
    let (adapter, guard) = fixture::adapter(&fixture::url()).await;
    let state = StateStore::postgres(&adapter)
        .await
        .expect("the state store connects");
    (Arc::new(state), adapter, guard)
}

async fn checkpoints_commit_with_their_effects_or_not_at_all() {
    let (state, _adapter, _guard) = state().await;
    suite::checkpoints_commit_with_their_effects_or_not_at_all(state).await;
}

async fn key_value_views_apply_rebuild_and_activate() {
    let (state, adapter, _guard) = state().await;
    suite::key_value_views_apply_rebuild_and_activate(state).await;
    // The rows of version 1 are deleted with its activation's transaction.
    let client = fixture::connect(&fixture::url()).await;
    let rows: Vec<(i64, i64)> = client
        .query(
            &format!(
                "SELECT version, count(*) FROM {}.view_rows GROUP BY version ORDER BY version",
                adapter.schema()
            ),
            &[],
        )
        .await
        .expect("count view rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, 2, "{rows:?}");
}

async fn dead_letters_keep_their_retry_requests() {
    let (state, _adapter, _guard) = state().await;
    suite::dead_letters_keep_their_retry_requests(state).await;
}

async fn queues_deliver_hide_expire_and_dead_letter() {
    let (state, _adapter, _guard) = state().await;
    suite::queues_deliver_hide_expire_and_dead_letter(state).await;
}

async fn competing_receivers_on_two_stores_never_share_a_message() {
    let (a, adapter, _guard) = state().await;
    let b = StateStore::postgres(&adapter)
        .await
        .expect("a second store");
    suite::competing_receivers_never_share_a_message(a, Arc::new(b)).await;
}

async fn calls_work_from_any_thread_or_runtime() {
    let (state, _adapter, _guard) = state().await;
    // Outside any runtime, as the check requires.
    let checked = std::thread::spawn(move || suite::calls_work_from_any_thread_or_runtime(state));
    tokio::task::spawn_blocking(move || checked.join())
        .await
        .expect("the thread is joined")
        .expect("the check passes");
}

async fn a_receiver_is_woken_by_an_enqueue_on_another_store() {
    let (a, adapter, _guard) = state().await;
    let b = Arc::new(
        StateStore::postgres(&adapter)
            .await
            .expect("a second store"),
    );
    let receiver = Queue::open(Arc::clone(&b), "wake");
    let waiting = tokio::spawn(async move { receiver.next().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    Queue::open(Arc::clone(&a), "wake")
        .enqueue(b"hello".to_vec())
        .expect("enqueue");
    let message = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("in time")
        .expect("the task ends")
        .expect("a message");
    assert_eq!(&*message.body, b"hello");
    // The checkpoint one store commits is the other's.
    a.set_checkpoint("shared", 7).expect("commit");
    assert_eq!(b.checkpoint("shared").expect("read"), Some(7));
}

async fn state_tables_of_a_newer_annals_are_refused() {
    let (state, adapter, _guard) = state().await;
    drop(state);
    let client = fixture::connect(&fixture::url()).await;
    client
        .execute(
            &format!(
                "INSERT INTO {}.state_migrations (version, name) VALUES (999, 'future')",
                adapter.schema()
            ),
            &[],
        )
        .await
        .expect("record a future migration");
    let refused = StateStore::postgres(&adapter).await;
    assert!(
        matches!(refused, Err(StorageError::InvalidConfiguration { ref reason })
            if reason.contains("999")),
        "{refused:?}"
    );
}

async fn the_state_store_carries_on_after_its_connections_are_terminated() {
    let url = fixture::url();
    let schema = fixture::fresh_schema();
    let _guard = SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let name = format!("state_{schema}");
    let adapter = fixture::named_builder(&url, &schema, &name)
        .connect()
        .await
        .expect("connect");
    let a = Arc::new(StateStore::postgres(&adapter).await.expect("a store"));
    let b = Arc::new(StateStore::postgres(&adapter).await.expect("another store"));
    a.set_checkpoint("mailer", 5).expect("commit");
    let receiver = Queue::open(Arc::clone(&b), "after");
    // A receive in flight when its connection is terminated fails with `Unavailable`; the
    // receiver calls again, as with a subscription.
    let waiting = tokio::spawn(async move {
        loop {
            match receiver.next().await {
                Err(QueueError::Storage(StorageError::Unavailable { .. })) => continue,
                other => return other,
            }
        }
    });

    let admin = fixture::connect(&url).await;
    assert!(fixture::terminate(&admin, &name, "true").await > 0);
    // Lost idle connections are replaced before a transaction begins on them.
    assert_eq!(
        b.checkpoint("mailer").expect("read after the loss"),
        Some(5)
    );
    let enqueued = Queue::open(Arc::clone(&a), "after").enqueue(b"again".to_vec());
    assert_eq!(enqueued.expect("an enqueue after the loss"), 1);
    // The receiver's store lost its listener too: it still gets the message.
    let message = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("in time")
        .expect("the task ends")
        .expect("a message");
    assert_eq!(&*message.body, b"again");
}
