//! The state-store behaviour suite on redb, in memory and in a file (the PostgreSQL run is in
//! tests/postgres/state.rs). Needs the `testing` feature, which has the suite.

use std::sync::Arc;

use annals::state::StateStore;
use annals::testing::state_conformance as suite;

fn file() -> (Arc<StateStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateStore::open(dir.path().join("state.redb")).expect("open");
    (Arc::new(state), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_commit_with_their_effects_or_not_at_all() {
    suite::checkpoints_commit_with_their_effects_or_not_at_all(Arc::new(StateStore::in_memory()))
        .await;
    let (state, _dir) = file();
    suite::checkpoints_commit_with_their_effects_or_not_at_all(state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_views_apply_rebuild_and_activate() {
    let (state, _dir) = file();
    suite::key_value_views_apply_rebuild_and_activate(state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_their_retry_requests() {
    let (state, _dir) = file();
    suite::dead_letters_keep_their_retry_requests(state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_deliver_hide_expire_and_dead_letter() {
    let (state, _dir) = file();
    suite::queues_deliver_hide_expire_and_dead_letter(state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_receivers_never_share_a_message() {
    let (state, _dir) = file();
    suite::competing_receivers_never_share_a_message(Arc::clone(&state), state).await;
}

#[test]
fn calls_work_from_any_thread_or_runtime() {
    let (state, _dir) = file();
    suite::calls_work_from_any_thread_or_runtime(state);
}
