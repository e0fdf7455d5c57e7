//! The global log: `read_log` and `watch_log`.

use std::sync::Arc;

use crate::storage::{LoggedEvent, StorageAdapter};

use super::events::{OTHER_STORE, STORE, at, event, push};

/// `read_log` returns every committed event of every store in position order — singles and
/// groups, never a refused commit — from any starting position and with any limit, and nothing
/// past the last position.
pub async fn read_log_returns_every_committed_event_in_position_order(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "read_log_returns_every_committed_event_in_position_order";
    let adapter = &*adapter;
    let empty = adapter.read_log(1, 10).await;
    assert!(
        matches!(&empty, Ok(e) if e.is_empty()),
        "{CHECK}: a fresh adapter's log is empty: {empty:?}"
    );
    let commits = vec![
        vec![at(STORE, event("a", 1))],
        vec![at(OTHER_STORE, event("a", 1)), at(STORE, event("b", 1))],
        vec![at(STORE, event("a", 2))],
        vec![
            at(STORE, event("c", 1)),
            at(OTHER_STORE, event("a", 2)),
            at(STORE, event("c", 2)),
        ],
    ];
    let mut expected: Vec<LoggedEvent> = Vec::new();
    for (i, commit) in commits.into_iter().enumerate() {
        let positions = push(CHECK, adapter, commit.clone()).await;
        for (position, e) in positions.into_iter().zip(commit) {
            expected.push(LoggedEvent {
                event_store_id: e.event_store_id,
                position,
                event: e.event,
            });
        }
        if i == 1 {
            // A refused group leaves nothing in the log.
            let refused = vec![at(STORE, event("d", 1)), at(STORE, event("a", 1))];
            assert!(
                adapter.push_event_group(refused).await.is_err(),
                "{CHECK}: a conflicting group was accepted"
            );
        }
    }
    let all = adapter
        .read_log(1, usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: read_log: {e}"));
    assert_eq!(all, expected, "{CHECK}: the whole log, in position order");
    let first = expected[0].position;
    let last = expected[expected.len() - 1].position;
    for from in first..=last + 1 {
        for limit in [1, 2, 3, expected.len()] {
            let got = adapter
                .read_log(from, limit)
                .await
                .unwrap_or_else(|e| panic!("{CHECK}: read_log({from}, {limit}): {e}"));
            let want: Vec<LoggedEvent> = expected
                .iter()
                .filter(|e| e.position >= from)
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(got, want, "{CHECK}: read_log({from}, {limit})");
        }
    }
    // Reading on from where a read stopped, one event at a time, gives the log again.
    let mut from = 0;
    let mut stepped = Vec::new();
    loop {
        let got = adapter
            .read_log(from, 1)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: read_log({from}, 1): {e}"));
        let Some(e) = got.into_iter().next() else {
            break;
        };
        from = e.position + 1;
        stepped.push(e);
    }
    assert_eq!(
        stepped, expected,
        "{CHECK}: the log read one event at a time"
    );
}

/// `watch_log` holds the last committed position, and a receiver waiting on it wakes when a
/// commit is made.
pub async fn watch_log_follows_commits(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "watch_log_follows_commits";
    let mut watch = adapter.watch_log();
    assert_eq!(*watch.borrow_and_update(), 0, "{CHECK}: a fresh adapter");
    let positions = push(CHECK, &*adapter, vec![at(STORE, event("a", 1))]).await;
    assert_eq!(
        *watch.borrow_and_update(),
        positions[0],
        "{CHECK}: after a push"
    );
    let pusher = Arc::clone(&adapter);
    let task = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let group = vec![at(STORE, event("a", 2)), at(OTHER_STORE, event("a", 1))];
        pusher.push_event_group(group).await
    });
    let woke = tokio::time::timeout(std::time::Duration::from_secs(10), watch.changed()).await;
    assert!(
        matches!(woke, Ok(Ok(()))),
        "{CHECK}: a receiver waiting on the log did not wake on a commit"
    );
    let pushed = task
        .await
        .expect("the pushing task")
        .unwrap_or_else(|e| panic!("{CHECK}: a valid group was refused: {e}"));
    assert_eq!(
        *watch.borrow_and_update(),
        pushed[1],
        "{CHECK}: the last position of the group"
    );
    assert_eq!(
        *adapter.watch_log().borrow(),
        pushed[1],
        "{CHECK}: a new receiver starts at the last position"
    );
}
