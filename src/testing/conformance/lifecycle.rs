//! Lifecycle rules: deletes, restores, truncation, retention and compaction.

use std::sync::Arc;
use std::time::Duration;

use crate::storage::{
    DeleteMode, GetEventsOptions, LIFECYCLE_STORE, ListAggregateIdsOptions, Retention,
    StorageAdapter, StorageError, Timestamp,
};

use super::events::{OTHER_STORE, STORE, at, event, event_at, push, push_versions};

/// Asserts that `get_events` returns exactly `versions` of the aggregate, for every
/// combination of `min_version`, `max_version`, `limit` and `reverse`.
async fn expect_visible(
    check: &str,
    adapter: &dyn StorageAdapter,
    (store, aggregate): (&str, &str),
    versions: &[u64],
    last: u64,
) {
    let bounds: Vec<Option<u64>> = std::iter::once(None)
        .chain((1..=last + 1).map(Some))
        .collect();
    for &min_version in &bounds {
        for &max_version in &bounds {
            for limit in [None, Some(1), Some(2)] {
                for reverse in [false, true] {
                    let options = GetEventsOptions {
                        min_version,
                        max_version,
                        limit,
                        reverse,
                    };
                    let got: Vec<u64> = adapter
                        .get_events(store, aggregate, &options)
                        .await
                        .unwrap_or_else(|e| panic!("{check}: get_events({options:?}): {e}"))
                        .iter()
                        .map(|e| e.event.version)
                        .collect();
                    let mut want: Vec<u64> = versions
                        .iter()
                        .copied()
                        .filter(|v| options.contains(*v))
                        .collect();
                    if reverse {
                        want.reverse();
                    }
                    want.truncate(limit.unwrap_or(usize::MAX));
                    assert_eq!(got, want, "{check}: {store}/{aggregate} with {options:?}");
                }
            }
        }
    }
}

/// Aggregate ids of `store`, all pages of `limit`.
async fn listed(
    check: &str,
    adapter: &dyn StorageAdapter,
    store: &str,
    limit: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut options = ListAggregateIdsOptions {
        limit: Some(limit),
        ..Default::default()
    };
    loop {
        let page = adapter
            .list_aggregate_ids(store, &options)
            .await
            .unwrap_or_else(|e| panic!("{check}: list_aggregate_ids: {e}"));
        ids.extend(page.aggregate_ids.into_iter().map(|e| e.aggregate_id));
        match page.next_page_token {
            Some(token) => options.page_token = Some(token),
            None => return ids,
        }
    }
}

fn expect_deleted<T: std::fmt::Debug>(
    check: &str,
    result: Result<T, StorageError>,
    (store, aggregate): (&str, &str),
    hard: bool,
) {
    match result {
        Err(StorageError::AggregateDeleted {
            event_store_id,
            aggregate_id,
            hard: h,
        }) => assert_eq!(
            (event_store_id.as_str(), aggregate_id.as_str(), h),
            (store, aggregate, hard),
            "{check}: AggregateDeleted names the aggregate and the mode"
        ),
        other => panic!("{check}: expected AggregateDeleted on {store}/{aggregate}, got {other:?}"),
    }
}

/// A soft delete hides the aggregate from reads, listings and summaries and refuses pushes
/// (whole groups included) with `AggregateDeleted`; a restore brings everything back, and the
/// aggregate's versions continue.
pub async fn soft_delete_hides_refuses_pushes_and_restores(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "soft_delete_hides_refuses_pushes_and_restores";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "a", 3).await;
    push_versions(CHECK, adapter, STORE, "b", 1).await;
    push_versions(CHECK, adapter, OTHER_STORE, "a", 1).await;
    adapter
        .delete_aggregate(STORE, "a", DeleteMode::Soft)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: delete_aggregate: {e}"));
    expect_visible(CHECK, adapter, (STORE, "a"), &[], 4).await;
    expect_visible(CHECK, adapter, (OTHER_STORE, "a"), &[1], 1).await;
    assert_eq!(
        listed(CHECK, adapter, STORE, 1).await,
        ["b"],
        "{CHECK}: listing"
    );
    expect_deleted(
        CHECK,
        adapter.push_event(at(STORE, event("a", 4))).await,
        (STORE, "a"),
        false,
    );
    // A group touching it is refused whole.
    let group = vec![at(STORE, event("b", 2)), at(STORE, event("a", 4))];
    expect_deleted(
        CHECK,
        adapter.push_event_group(group).await,
        (STORE, "a"),
        false,
    );
    expect_visible(CHECK, adapter, (STORE, "b"), &[1], 2).await;
    let summaries = adapter
        .event_store_summaries()
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: event_store_summaries: {e}"));
    let store = summaries
        .iter()
        .find(|s| s.event_store_id == STORE)
        .unwrap_or_else(|| panic!("{CHECK}: {STORE} is summarised: {summaries:?}"));
    assert_eq!((store.aggregates, store.events), (1, 1), "{CHECK}: summary");

    adapter
        .restore_aggregate(STORE, "a")
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: restore_aggregate: {e}"));
    expect_visible(CHECK, adapter, (STORE, "a"), &[1, 2, 3], 4).await;
    push(CHECK, adapter, vec![at(STORE, event("a", 4))]).await;
    let mut ids = listed(CHECK, adapter, STORE, 10).await;
    ids.sort();
    assert_eq!(ids, ["a", "b"], "{CHECK}: listing after the restore");
}

/// A hard delete hides like a soft one, removes the aggregate's snapshots, and is final:
/// restoring or soft-deleting it again is refused with `AggregateDeleted { hard: true }`, and
/// so are pushes and truncation.
pub async fn hard_delete_is_final(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "hard_delete_is_final";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "a", 2).await;
    let snapshot = crate::storage::SnapshotRecord::new(2, 1, 2, 3, vec![1, 2, 3]);
    if let Some(snapshots) = adapter.snapshots() {
        snapshots
            .put(STORE, "a", &snapshot)
            .unwrap_or_else(|e| panic!("{CHECK}: put a snapshot: {e}"));
    }
    adapter
        .delete_aggregate(STORE, "a", DeleteMode::Soft)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: soft delete: {e}"));
    adapter
        .delete_aggregate(STORE, "a", DeleteMode::Hard)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: a soft-deleted aggregate can be hard-deleted: {e}"));
    if let Some(snapshots) = adapter.snapshots() {
        let left = snapshots
            .latest(STORE, "a", u64::MAX)
            .unwrap_or_else(|e| panic!("{CHECK}: read snapshots: {e}"));
        assert!(
            left.is_none(),
            "{CHECK}: the snapshots go with a hard delete"
        );
    }
    let key = (STORE, "a");
    expect_deleted(
        CHECK,
        adapter.restore_aggregate(STORE, "a").await,
        key,
        true,
    );
    expect_deleted(
        CHECK,
        adapter.delete_aggregate(STORE, "a", DeleteMode::Soft).await,
        key,
        true,
    );
    expect_deleted(
        CHECK,
        adapter.truncate_before(STORE, "a", 2).await,
        key,
        true,
    );
    expect_deleted(
        CHECK,
        adapter.push_event(at(STORE, event("a", 3))).await,
        key,
        true,
    );
    expect_visible(CHECK, adapter, key, &[], 3).await;
    // Deleting an aggregate that has no events yet reserves its id as deleted.
    adapter
        .delete_aggregate(STORE, "never", DeleteMode::Hard)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: delete of an unknown aggregate: {e}"));
    expect_deleted(
        CHECK,
        adapter.push_event(at(STORE, event("never", 1))).await,
        (STORE, "never"),
        true,
    );
}

/// `truncate_before(v)` hides versions below `v` at once, every read option still correct;
/// the aggregate keeps numbering; truncating past the last version hides what exists but
/// not later pushes; a lower truncation changes nothing.
pub async fn truncate_before_hides_a_prefix(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "truncate_before_hides_a_prefix";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "a", 5).await;
    push_versions(CHECK, adapter, STORE, "b", 2).await;
    let truncate = |aggregate, version| adapter.truncate_before(STORE, aggregate, version);
    truncate("a", 3)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: truncate_before: {e}"));
    expect_visible(CHECK, adapter, (STORE, "a"), &[3, 4, 5], 6).await;
    truncate("a", 2)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: a lower truncation: {e}"));
    expect_visible(CHECK, adapter, (STORE, "a"), &[3, 4, 5], 6).await;
    super::expect::expect_conflict(
        CHECK,
        adapter.push_event(at(STORE, event("a", 1))).await,
        (STORE, "a", 1),
    );
    push(CHECK, adapter, vec![at(STORE, event("a", 6))]).await;
    expect_visible(CHECK, adapter, (STORE, "a"), &[3, 4, 5, 6], 7).await;
    truncate("b", 100)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: truncation past the end: {e}"));
    expect_visible(CHECK, adapter, (STORE, "b"), &[], 3).await;
    push(CHECK, adapter, vec![at(STORE, event("b", 3))]).await;
    expect_visible(CHECK, adapter, (STORE, "b"), &[3], 4).await;
    // Truncated to nothing is not deleted: it stays listed.
    let mut ids = listed(CHECK, adapter, STORE, 10).await;
    ids.sort();
    assert_eq!(ids, ["a", "b"], "{CHECK}: truncated aggregates stay listed");
}

/// Retention: `max_count` keeps each aggregate's newest events; `max_age` hides an event once
/// it and every earlier version are older than the cutoff (a younger event protects those
/// after it); both read back with `retention`; `Retention::default()` removes the rule;
/// `max_count: 0` is refused.
pub async fn retention_hides_by_count_and_by_age(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "retention_hides_by_count_and_by_age";
    let adapter = &*adapter;
    let old = |v| Timestamp::from_unix_millis(1_000 + v as i64);
    let young = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 86_400_000);
    // a: old, old, young, old, young; b: old, old.
    for (v, t) in [
        (1, old(1)),
        (2, old(2)),
        (3, young),
        (4, old(4)),
        (5, young),
    ] {
        push(
            CHECK,
            adapter,
            vec![at(STORE, event_at("a", v, t.unix_millis()))],
        )
        .await;
    }
    for v in 1..=2 {
        push(
            CHECK,
            adapter,
            vec![at(STORE, event_at("b", v, old(v).unix_millis()))],
        )
        .await;
    }
    push_versions(CHECK, adapter, OTHER_STORE, "a", 3).await;
    let by_count = Retention {
        max_age: None,
        max_count: Some(2),
    };
    adapter
        .set_retention(STORE, by_count)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: set_retention: {e}"));
    let got = adapter.retention(STORE).await;
    assert!(
        matches!(got, Ok(r) if r == by_count),
        "{CHECK}: retention: {got:?}"
    );
    expect_visible(CHECK, adapter, (STORE, "a"), &[4, 5], 6).await;
    expect_visible(CHECK, adapter, (STORE, "b"), &[1, 2], 3).await;
    expect_visible(CHECK, adapter, (OTHER_STORE, "a"), &[1, 2, 3], 4).await;

    let by_age = Retention {
        max_age: Some(Duration::from_secs(3_600)),
        max_count: None,
    };
    adapter
        .set_retention(STORE, by_age)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: set_retention: {e}"));
    expect_visible(CHECK, adapter, (STORE, "a"), &[3, 4, 5], 6).await;
    expect_visible(CHECK, adapter, (STORE, "b"), &[], 3).await;

    adapter
        .set_retention(STORE, Retention::default())
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: removing the rule: {e}"));
    expect_visible(CHECK, adapter, (STORE, "a"), &[1, 2, 3, 4, 5], 6).await;
    let zero = Retention {
        max_age: None,
        max_count: Some(0),
    };
    let refused = adapter.set_retention(STORE, zero).await;
    assert!(
        matches!(refused, Err(StorageError::InvalidRetention { .. })),
        "{CHECK}: max_count 0: {refused:?}"
    );
}

/// `read_log` skips the events the rules hide, positions of the others unchanged, reading on
/// past hidden events whatever the limit, and delivers the `$lifecycle` events.
pub async fn read_log_skips_hidden_events_and_delivers_lifecycle_events(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "read_log_skips_hidden_events_and_delivers_lifecycle_events";
    let adapter = &*adapter;
    let before = adapter.read_log(1, usize::MAX).await;
    let before = before.unwrap_or_else(|e| panic!("{CHECK}: read_log: {e}"));
    assert!(before.is_empty(), "{CHECK}: a fresh log is empty");
    push_versions(CHECK, adapter, STORE, "a", 3).await;
    push_versions(CHECK, adapter, STORE, "gone", 4).await;
    push_versions(CHECK, adapter, STORE, "b", 1).await;
    let all = adapter
        .read_log(1, usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: read_log: {e}"));
    let deleted_at = adapter
        .delete_aggregate(STORE, "gone", DeleteMode::Hard)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: delete_aggregate: {e}"));
    let truncated_at = adapter
        .truncate_before(STORE, "a", 3)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: truncate_before: {e}"));
    let mut want: Vec<_> = all
        .into_iter()
        .filter(|e| {
            e.event.aggregate_id == "b" || (e.event.aggregate_id == "a" && e.event.version >= 3)
        })
        .map(|e| {
            (
                e.event_store_id,
                e.event.aggregate_id,
                e.event.version,
                e.position,
            )
        })
        .collect();
    want.push((LIFECYCLE_STORE.to_owned(), STORE.to_owned(), 1, deleted_at));
    want.push((
        LIFECYCLE_STORE.to_owned(),
        STORE.to_owned(),
        2,
        truncated_at,
    ));
    let summarise = |events: Vec<crate::storage::LoggedEvent>| -> Vec<(String, String, u64, u64)> {
        events
            .into_iter()
            .map(|e| {
                (
                    e.event_store_id,
                    e.event.aggregate_id,
                    e.event.version,
                    e.position,
                )
            })
            .collect()
    };
    let got = adapter
        .read_log(1, usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: read_log: {e}"));
    let types: Vec<&str> = got
        .iter()
        .filter(|e| e.event_store_id == LIFECYCLE_STORE)
        .map(|e| e.event.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        ["aggregate_deleted", "aggregate_truncated"],
        "{CHECK}: types"
    );
    assert_eq!(summarise(got), want, "{CHECK}: the whole log");
    // One event at a time: hidden events never end a read early.
    let mut stepped = Vec::new();
    let mut from = 1;
    loop {
        let got = adapter
            .read_log(from, 1)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: read_log({from}, 1): {e}"));
        let Some(last) = got.last() else { break };
        from = last.position + 1;
        stepped.extend(summarise(got));
    }
    assert_eq!(stepped, want, "{CHECK}: the log read one event at a time");
}

/// Listings leave deleted aggregates out, and pages stay full around them.
pub async fn listings_exclude_deleted_aggregates(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "listings_exclude_deleted_aggregates";
    let adapter = &*adapter;
    let ids = ["a", "b", "c", "d", "e", "f"];
    for (i, id) in ids.iter().enumerate() {
        let millis = 1_000 + i as i64;
        push(CHECK, adapter, vec![at(STORE, event_at(id, 1, millis))]).await;
    }
    for (id, mode) in [
        ("b", DeleteMode::Soft),
        ("c", DeleteMode::Hard),
        ("e", DeleteMode::Soft),
    ] {
        adapter
            .delete_aggregate(STORE, id, mode)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: delete {id}: {e}"));
    }
    for limit in 1..=4 {
        assert_eq!(
            listed(CHECK, adapter, STORE, limit).await,
            ["a", "d", "f"],
            "{CHECK}: pages of {limit}"
        );
        let first = adapter
            .list_aggregate_ids(
                STORE,
                &ListAggregateIdsOptions {
                    limit: Some(limit),
                    reverse: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: reverse listing: {e}"));
        let want: Vec<&str> = ["f", "d", "a"].into_iter().take(limit).collect();
        let got: Vec<&str> = first
            .aggregate_ids
            .iter()
            .map(|e| e.aggregate_id.as_str())
            .collect();
        assert_eq!(got, want, "{CHECK}: first reverse page of {limit}");
        assert_eq!(
            first.next_page_token.is_some(),
            limit < 3,
            "{CHECK}: next page of {limit}"
        );
    }
}

/// A push racing a delete of its aggregate either lands before the delete (and is then
/// hidden with the rest) or is refused: never accepted after it.
pub async fn a_push_racing_a_delete_lands_before_it_or_is_refused(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "a_push_racing_a_delete_lands_before_it_or_is_refused";
    for round in 0..20 {
        let aggregate = format!("race-{round}");
        push_versions(CHECK, &*adapter, STORE, &aggregate, 1).await;
        let pusher = {
            let adapter = Arc::clone(&adapter);
            let aggregate = aggregate.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for version in 2..=30 {
                    match adapter
                        .push_event(at(STORE, event(&aggregate, version)))
                        .await
                    {
                        Ok(position) => accepted.push(position),
                        Err(StorageError::AggregateDeleted { .. }) => break,
                        Err(e) => panic!("{CHECK}: push failed otherwise: {e}"),
                    }
                }
                accepted
            })
        };
        let deleted_at = adapter
            .delete_aggregate(STORE, &aggregate, DeleteMode::Soft)
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: delete_aggregate: {e}"));
        let accepted = pusher.await.expect("the pushing task does not panic");
        assert!(
            accepted.iter().all(|p| *p < deleted_at),
            "{CHECK}: round {round}: a push accepted after the delete at {deleted_at}: \
             {accepted:?}"
        );
        let events = adapter
            .get_events(STORE, &aggregate, &GetEventsOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: get_events: {e}"));
        assert!(
            events.is_empty(),
            "{CHECK}: round {round}: visible after delete"
        );
    }
}

/// `compact` removes what the rules hide and nothing else: every read gives the same answer
/// before and after, positions unchanged, soft-deleted aggregates restorable, `$lifecycle`
/// events kept, and a second compaction finds nothing more to remove.
pub async fn compaction_removes_hidden_events_and_keeps_the_rest(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "compaction_removes_hidden_events_and_keeps_the_rest";
    let adapter = &*adapter;
    for aggregate in ["hard", "soft", "cut", "kept"] {
        push_versions(CHECK, adapter, STORE, aggregate, 4).await;
    }
    push_versions(CHECK, adapter, OTHER_STORE, "counted", 5).await;
    let ok = |r: Result<u64, StorageError>| r.unwrap_or_else(|e| panic!("{CHECK}: {e}"));
    ok(adapter
        .delete_aggregate(STORE, "hard", DeleteMode::Hard)
        .await);
    ok(adapter
        .delete_aggregate(STORE, "soft", DeleteMode::Soft)
        .await);
    ok(adapter.truncate_before(STORE, "cut", 3).await);
    let retention = Retention {
        max_age: None,
        max_count: Some(2),
    };
    ok(adapter.set_retention(OTHER_STORE, retention).await);
    let log_before = adapter.read_log(1, usize::MAX).await;
    let log_before = log_before.unwrap_or_else(|e| panic!("{CHECK}: read_log: {e}"));
    let summaries_before = adapter.event_store_summaries().await;
    let summaries_before = summaries_before.unwrap_or_else(|e| panic!("{CHECK}: summaries: {e}"));
    let report = adapter
        .compact()
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: compact: {e}"));
    // Hidden: hard 4, cut 2, counted 3. Adapters whose compaction runs later may remove
    // fewer now, never more.
    assert!(
        report.events_removed <= 9,
        "{CHECK}: removed too much: {report:?}"
    );
    let log_after = adapter.read_log(1, usize::MAX).await;
    let log_after = log_after.unwrap_or_else(|e| panic!("{CHECK}: read_log: {e}"));
    assert_eq!(
        log_after, log_before,
        "{CHECK}: the visible log is unchanged"
    );
    let summaries_after = adapter.event_store_summaries().await;
    let summaries_after = summaries_after.unwrap_or_else(|e| panic!("{CHECK}: summaries: {e}"));
    assert_eq!(
        summaries_after, summaries_before,
        "{CHECK}: summaries are unchanged"
    );
    expect_visible(CHECK, adapter, (STORE, "cut"), &[3, 4], 5).await;
    expect_visible(CHECK, adapter, (STORE, "kept"), &[1, 2, 3, 4], 5).await;
    expect_visible(CHECK, adapter, (OTHER_STORE, "counted"), &[4, 5], 6).await;
    ok(adapter.restore_aggregate(STORE, "soft").await);
    expect_visible(CHECK, adapter, (STORE, "soft"), &[1, 2, 3, 4], 5).await;
    // Versions continue after compaction; removing the rule shows only what is left.
    push(CHECK, adapter, vec![at(STORE, event("cut", 5))]).await;
    super::expect::expect_conflict(
        CHECK,
        adapter
            .push_event(at(OTHER_STORE, event("counted", 5)))
            .await,
        (OTHER_STORE, "counted", 5),
    );
    ok(adapter
        .set_retention(OTHER_STORE, Retention::default())
        .await);
    let counted = adapter
        .get_events(OTHER_STORE, "counted", &GetEventsOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: get_events: {e}"));
    let counted: Vec<u64> = counted.iter().map(|e| e.event.version).collect();
    let removed = report.events_removed;
    if removed == 9 {
        assert_eq!(counted, [4, 5], "{CHECK}: compacted events stay gone");
    } else {
        assert!(
            counted.ends_with(&[4, 5]) && counted.first().is_some_and(|v| *v <= 4),
            "{CHECK}: a suffix remains: {counted:?}"
        );
    }
    let again = adapter
        .compact()
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: second compact: {e}"));
    if removed == 9 {
        assert_eq!(again.events_removed, 0, "{CHECK}: nothing left to remove");
    }
}
