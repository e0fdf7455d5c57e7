//! `list_aggregate_ids`: order, time bounds and paging by token.

use std::sync::Arc;

use crate::storage::{
    AggregateIdEntry, AggregateIdsPage, ListAggregateIdsOptions, StorageAdapter, StorageError,
    StoredEvent, Timestamp,
};

use super::events::{OTHER_STORE, STORE, at, event_at, ids, list, list_all, push, read_all};

/// Aggregates of the listing fixture and the timestamps of their first events: ties, mixed case
/// and non-ASCII ids (ordered by bytes, not by a collation), pushed out of order.
const LISTED: &[(&str, i64)] = &[
    ("m", 300),
    ("é", 200),
    ("B", 200),
    ("a", 200),
    ("z", 100),
    ("k", 400),
    ("Z", 400),
    ("c", 500),
    ("b", 600),
    ("y", 700),
    ("x", 700),
    ("d", 800),
];

/// Pushes the listing fixture to `STORE` (and a decoy aggregate to `OTHER_STORE`), then gives
/// some aggregates later events with *earlier* timestamps, which must not move them. Returns
/// the expected ascending order.
async fn push_listing_fixture(check: &str, adapter: &dyn StorageAdapter) -> Vec<AggregateIdEntry> {
    for &(aggregate_id, millis) in LISTED {
        push(
            check,
            adapter,
            vec![at(STORE, event_at(aggregate_id, 1, millis))],
        )
        .await;
    }
    push(
        check,
        adapter,
        vec![at(OTHER_STORE, event_at("decoy", 1, 250))],
    )
    .await;
    for &(aggregate_id, _) in LISTED.iter().step_by(3) {
        push(
            check,
            adapter,
            vec![at(STORE, event_at(aggregate_id, 2, 1))],
        )
        .await;
    }
    let mut expected: Vec<AggregateIdEntry> = LISTED
        .iter()
        .map(|&(aggregate_id, millis)| AggregateIdEntry {
            initial_event_timestamp: Timestamp::from_unix_millis(millis),
            aggregate_id: aggregate_id.to_owned(),
        })
        .collect();
    expected.sort();
    expected
}

/// Aggregate ids are listed by the timestamp of their first event, ties broken by id (byte
/// order), each with that timestamp; later events do not move an aggregate.
pub async fn list_aggregate_ids_orders_by_initial_timestamp_then_id(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "list_aggregate_ids_orders_by_initial_timestamp_then_id";
    let adapter = &*adapter;
    let expected = push_listing_fixture(CHECK, adapter).await;
    assert_eq!(
        ids(&expected),
        ["z", "B", "a", "é", "m", "Z", "k", "c", "b", "x", "y", "d"],
        "{CHECK}: the fixture's expected order"
    );
    let got = list_all(CHECK, adapter, STORE).await;
    assert_eq!(
        got, expected,
        "{CHECK}: ids in (initial timestamp, id) order"
    );
    let options = ListAggregateIdsOptions {
        reverse: Some(false),
        ..Default::default()
    };
    let got = list(CHECK, adapter, STORE, &options).await;
    assert_eq!(
        got.aggregate_ids, expected,
        "{CHECK}: reverse: Some(false) is ascending"
    );
}

/// `reverse` lists the same ids in exactly the opposite order.
pub async fn list_aggregate_ids_reverse_is_the_exact_mirror(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "list_aggregate_ids_reverse_is_the_exact_mirror";
    let adapter = &*adapter;
    let mut expected = push_listing_fixture(CHECK, adapter).await;
    expected.reverse();
    let options = ListAggregateIdsOptions {
        reverse: Some(true),
        ..Default::default()
    };
    let page = list(CHECK, adapter, STORE, &options).await;
    assert_eq!(page.aggregate_ids, expected, "{CHECK}: ids newest first");
    assert_eq!(
        page.next_page_token, None,
        "{CHECK}: no page token without a limit"
    );
}

/// `initial_event_after` and `initial_event_before` are inclusive bounds on the first event's
/// timestamp, alone, together and reversed.
pub async fn list_aggregate_ids_time_bounds_are_inclusive(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "list_aggregate_ids_time_bounds_are_inclusive";
    let adapter = &*adapter;
    push_listing_fixture(CHECK, adapter).await;
    let t = Timestamp::from_unix_millis;
    // (initial_event_after, initial_event_before, reverse) and the ids expected.
    type Case = (Option<i64>, Option<i64>, bool, &'static [&'static str]);
    let cases: [Case; 7] = [
        (Some(200), Some(400), false, &["B", "a", "é", "m", "Z", "k"]),
        (Some(200), Some(400), true, &["k", "Z", "m", "é", "a", "B"]),
        (Some(700), None, false, &["x", "y", "d"]),
        (None, Some(100), false, &["z"]),
        (Some(300), Some(300), false, &["m"]),
        (Some(201), Some(299), false, &[]),
        // Later events at t = 1 must not make their aggregates appear here.
        (None, Some(99), false, &[]),
    ];
    for (after, before, reverse, expected) in cases {
        let options = ListAggregateIdsOptions {
            initial_event_after: after.map(t),
            initial_event_before: before.map(t),
            reverse: Some(reverse),
            ..Default::default()
        };
        let page = list(CHECK, adapter, STORE, &options).await;
        assert_eq!(
            ids(&page.aggregate_ids),
            expected,
            "{CHECK}: ids for {options:?}"
        );
    }
}

/// Paging through every combination of `limit`, `initial_event_after`, `initial_event_before`
/// and `reverse`, following only the page tokens, collects exactly the model's sequence: full
/// pages of `limit` ids, and a token exactly when more ids follow.
pub async fn list_aggregate_ids_paginates_every_option_combination(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "list_aggregate_ids_paginates_every_option_combination";
    let adapter = &*adapter;
    let all = push_listing_fixture(CHECK, adapter).await;
    let t = Timestamp::from_unix_millis;
    let afters = [None, Some(t(200)), Some(t(250)), Some(t(900))];
    let befores = [None, Some(t(400)), Some(t(350)), Some(t(50))];
    let limits = [None, Some(1), Some(2), Some(3), Some(5), Some(12), Some(13)];
    for after in afters {
        for before in befores {
            for reverse in [None, Some(false), Some(true)] {
                let mut expected: Vec<&AggregateIdEntry> = all
                    .iter()
                    .filter(|e| after.is_none_or(|a| e.initial_event_timestamp >= a))
                    .filter(|e| before.is_none_or(|b| e.initial_event_timestamp <= b))
                    .collect();
                if reverse == Some(true) {
                    expected.reverse();
                }
                for limit in limits {
                    let options = ListAggregateIdsOptions {
                        limit,
                        initial_event_after: after,
                        initial_event_before: before,
                        reverse,
                        page_token: None,
                    };
                    check_pages(CHECK, adapter, &options, &expected).await;
                }
            }
        }
    }
}

/// Follows the page tokens from `first` and checks every page against `expected`.
async fn check_pages(
    check: &str,
    adapter: &dyn StorageAdapter,
    first: &ListAggregateIdsOptions,
    expected: &[&AggregateIdEntry],
) {
    let page_size = first.limit.unwrap_or(usize::MAX);
    let mut options = first.clone();
    let mut seen = 0;
    for page_number in 1.. {
        let page = list(check, adapter, STORE, &options).await;
        let rest = &expected[seen..];
        let want = &rest[..rest.len().min(page_size)];
        assert_eq!(
            page.aggregate_ids.iter().collect::<Vec<_>>(),
            want,
            "{check}: page {page_number} of {first:?}"
        );
        seen += want.len();
        let more = seen < expected.len();
        assert_eq!(
            page.next_page_token.is_some(),
            more,
            "{check}: page {page_number} of {first:?} has a token exactly when ids follow"
        );
        match page.next_page_token {
            Some(token) => {
                options = ListAggregateIdsOptions {
                    page_token: Some(token),
                    ..Default::default()
                };
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        expected.len(),
        "{check}: every id of {first:?} was listed"
    );
}

/// Options given together with a page token override the token's: `limit`, the time bounds
/// and even `reverse` (which continues from the cursor the other way).
pub async fn list_aggregate_ids_explicit_options_override_the_page_token(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "list_aggregate_ids_explicit_options_override_the_page_token";
    let adapter = &*adapter;
    let all = push_listing_fixture(CHECK, adapter).await;
    let first = ListAggregateIdsOptions {
        limit: Some(2),
        ..Default::default()
    };
    let page = list(CHECK, adapter, STORE, &first).await;
    assert_eq!(page.aggregate_ids, all[..2], "{CHECK}: first page");
    let token = page
        .next_page_token
        .expect("the first page of 12 ids by 2 has a next page token");
    let with_token = |options: ListAggregateIdsOptions| ListAggregateIdsOptions {
        page_token: Some(token.clone()),
        ..options
    };

    let page = list(CHECK, adapter, STORE, &with_token(Default::default())).await;
    assert_eq!(
        page.aggregate_ids,
        all[2..4],
        "{CHECK}: the token carries limit 2"
    );

    let options = with_token(ListAggregateIdsOptions {
        limit: Some(5),
        ..Default::default()
    });
    let page = list(CHECK, adapter, STORE, &options).await;
    assert_eq!(
        page.aggregate_ids,
        all[2..7],
        "{CHECK}: an explicit limit wins"
    );
    let next = page
        .next_page_token
        .expect("7 of 12 ids listed, more follow");
    let options = ListAggregateIdsOptions {
        page_token: Some(next),
        ..Default::default()
    };
    let page = list(CHECK, adapter, STORE, &options).await;
    assert_eq!(
        page.aggregate_ids,
        all[7..12],
        "{CHECK}: the overridden limit is carried on"
    );
    assert_eq!(
        page.next_page_token, None,
        "{CHECK}: the last page has no token"
    );

    // After the cursor (B at 200), only a and é start at or before 200.
    let options = with_token(ListAggregateIdsOptions {
        initial_event_before: Some(Timestamp::from_unix_millis(200)),
        limit: Some(10),
        ..Default::default()
    });
    let page = list(CHECK, adapter, STORE, &options).await;
    assert_eq!(
        ids(&page.aggregate_ids),
        ["a", "é"],
        "{CHECK}: an explicit upper bound wins"
    );

    let options = with_token(ListAggregateIdsOptions {
        initial_event_after: Some(Timestamp::from_unix_millis(700)),
        ..Default::default()
    });
    let page = list(CHECK, adapter, STORE, &options).await;
    assert_eq!(
        ids(&page.aggregate_ids),
        ["x", "y"],
        "{CHECK}: an explicit lower bound wins"
    );

    let options = with_token(ListAggregateIdsOptions {
        reverse: Some(true),
        ..Default::default()
    });
    let page = list(CHECK, adapter, STORE, &options).await;
    assert_eq!(
        ids(&page.aggregate_ids),
        [all[0].aggregate_id.as_str()],
        "{CHECK}: an explicit reverse continues from the cursor backwards"
    );
    assert_eq!(
        page.next_page_token, None,
        "{CHECK}: nothing precedes the first id"
    );
}

/// A page token of another store, a damaged token or something that never was a token is
/// refused with `InvalidPageToken`.
pub async fn list_aggregate_ids_rejects_foreign_and_garbage_tokens(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "list_aggregate_ids_rejects_foreign_and_garbage_tokens";
    let adapter = &*adapter;
    push_listing_fixture(CHECK, adapter).await;
    push(
        CHECK,
        adapter,
        vec![at(OTHER_STORE, event_at("decoy-2", 1, 260))],
    )
    .await;
    let first = ListAggregateIdsOptions {
        limit: Some(1),
        ..Default::default()
    };
    let foreign = list(CHECK, adapter, OTHER_STORE, &first)
        .await
        .next_page_token
        .expect("the other store has two aggregates, so one by one has a next page");
    let own = list(CHECK, adapter, STORE, &first)
        .await
        .next_page_token
        .expect("the store has twelve aggregates, so one by one has a next page");
    let truncated = own[..own.len() / 2].to_owned();
    let tokens = [
        ("a token of another store", foreign),
        ("a truncated token", truncated),
        ("garbage", "garbage".to_owned()),
        ("an empty token", String::new()),
        ("an empty object", "{}".to_owned()),
        ("null", "null".to_owned()),
    ];
    for (what, token) in tokens {
        let options = ListAggregateIdsOptions {
            page_token: Some(token),
            ..Default::default()
        };
        match adapter.list_aggregate_ids(STORE, &options).await {
            Err(StorageError::InvalidPageToken { .. }) => {}
            other => panic!("{CHECK}: {what} gave {other:?}, not InvalidPageToken"),
        }
    }
    // The store's own token still works.
    let options = ListAggregateIdsOptions {
        page_token: Some(own),
        ..Default::default()
    };
    let page = list(CHECK, adapter, STORE, &options).await;
    assert_eq!(
        ids(&page.aggregate_ids),
        ["B"],
        "{CHECK}: the store's own token works"
    );
}

/// `limit: 0` lists nothing and gives no token, with or without a page token.
pub async fn list_aggregate_ids_limit_zero_is_empty(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "list_aggregate_ids_limit_zero_is_empty";
    let adapter = &*adapter;
    push_listing_fixture(CHECK, adapter).await;
    for reverse in [None, Some(true)] {
        let options = ListAggregateIdsOptions {
            limit: Some(0),
            reverse,
            ..Default::default()
        };
        let page = list(CHECK, adapter, STORE, &options).await;
        assert_eq!(page, AggregateIdsPage::default(), "{CHECK}: {options:?}");
    }
    let first = ListAggregateIdsOptions {
        limit: Some(3),
        ..Default::default()
    };
    let token = list(CHECK, adapter, STORE, &first).await.next_page_token;
    assert!(token.is_some(), "{CHECK}: 12 ids by 3 have a next page");
    let options = ListAggregateIdsOptions {
        limit: Some(0),
        page_token: token,
        ..Default::default()
    };
    let page = list(CHECK, adapter, STORE, &options).await;
    assert_eq!(
        page,
        AggregateIdsPage::default(),
        "{CHECK}: limit 0 with a page token"
    );
}

/// Timestamps are stored exactly over the whole range of [`Timestamp`] (signed 64-bit
/// milliseconds, far beyond the four-digit years of ISO 8601), and aggregate ids page through
/// them: a page token must carry any timestamp it stops at.
pub async fn extreme_timestamps_round_trip_and_page(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "extreme_timestamps_round_trip_and_page";
    let adapter = &*adapter;
    // Year 10000 is the first instant ISO 8601's four-digit years cannot write.
    let year_10000 = 253_402_300_800_000;
    let extremes = [i64::MIN, -year_10000, -1, 0, year_10000, i64::MAX];
    for (i, millis) in extremes.into_iter().enumerate() {
        let aggregate_id = format!("t{i}");
        let e = event_at(&aggregate_id, 1, millis);
        let position = push(CHECK, adapter, vec![at(STORE, e.clone())]).await[0];
        let got = read_all(CHECK, adapter, STORE, &aggregate_id).await;
        assert_eq!(
            got,
            vec![StoredEvent { position, event: e }],
            "{CHECK}: an event at {millis} ms reads back"
        );
    }
    let expected: Vec<String> = (0..extremes.len()).map(|i| format!("t{i}")).collect();
    for reverse in [false, true] {
        let mut want = expected.clone();
        if reverse {
            want.reverse();
        }
        let mut options = ListAggregateIdsOptions {
            limit: Some(1),
            reverse: Some(reverse),
            ..Default::default()
        };
        let mut got = Vec::new();
        for _ in 0..=extremes.len() {
            let page = list(CHECK, adapter, STORE, &options).await;
            got.extend(page.aggregate_ids.into_iter().map(|e| e.aggregate_id));
            match page.next_page_token {
                Some(token) => options.page_token = Some(token),
                None => break,
            }
        }
        assert_eq!(got, want, "{CHECK}: paging one by one, reverse {reverse}");
        let bounded = ListAggregateIdsOptions {
            limit: Some(1),
            initial_event_after: Some(Timestamp::from_unix_millis(i64::MIN)),
            initial_event_before: Some(Timestamp::from_unix_millis(i64::MAX)),
            reverse: Some(reverse),
            page_token: None,
        };
        let refs: Vec<AggregateIdEntry> = list_all(CHECK, adapter, STORE).await;
        let mut model: Vec<&AggregateIdEntry> = refs.iter().collect();
        if reverse {
            model.reverse();
        }
        check_pages(CHECK, adapter, &bounded, &model).await;
    }
}
