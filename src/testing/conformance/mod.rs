//! The storage-adapter conformance suite: one set of checks that every [`StorageAdapter`] must
//! pass, so that the typed layer behaves identically on each of them.
//!
//! The suite guards the contract written on [`StorageAdapter`]: versions of an aggregate are
//! exactly `1..=n`, and a conflicting or skipped version is refused with a typed error that names
//! the event; a commit (one push or one event group, across aggregates and stores) is all or
//! nothing, also under concurrency; positions are gap-free, increasing and consecutive within a
//! commit; `get_events` and `list_aggregate_ids` honour every option and the paging rules of
//! [`page`](crate::storage::page); every [`Limits`] bound is enforced before anything is
//! written; an adapter that keeps snapshots stores them byte for byte under their key and
//! answers newest-at-or-below and prune queries by version. Each check is a public async function that takes a *fresh* (empty) adapter, writes
//! its own fixture through the adapter's public methods and panics, with a message that names
//! the check, on the first broken rule. Where a rule is about a space of inputs (read ranges,
//! paging options), the check walks every combination and compares against a model.
//!
//! Adapter crates run the whole suite with [`conformance_tests!`](crate::conformance_tests),
//! which expands into one `#[test]` per check, so every check is a separately named test:
//!
//! ```
//! mod in_memory {
//!     use std::sync::Arc;
//!     use annals::storage::InMemoryAdapter;
//!
//!     annals::conformance_tests!(|| async { Arc::new(InMemoryAdapter::new()) });
//! }
//! ```
//!
//! The factory is called once per check, inside the check's runtime, and returns anything
//! that converts into a [`Fixture`]: an `Arc` of the adapter, or a [`Fixture`] built with
//! [`Fixture::with_guard`] when the adapter needs something kept alive for the length of the
//! check (a temporary directory, a database schema). Checks run on a multi-threaded runtime,
//! so the concurrency checks really race.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::storage::{
    AggregateIdEntry, AggregateIdsPage, AppendEvent, EncodedEvent, EventAlreadyExists,
    GetEventsOptions, LimitError, Limits, ListAggregateIdsOptions, LoggedEvent, Position,
    RESERVED_EVENT_TYPES, SnapshotRecord, StorageAdapter, StorageError, StoredEvent, Timestamp,
};

/// The store most checks write to.
const STORE: &str = "CONFORMANCE";
/// A second store, to check isolation and cross-store groups.
const OTHER_STORE: &str = "CONFORMANCE_OTHER";
/// The event type of fixture events.
const EVENT_TYPE: &str = "CONFORMANCE_EVENT";
/// Fixture timestamps start here (2023-11-14T22:13:20.000Z).
const BASE_MILLIS: i64 = 1_700_000_000_000;

/// A fresh adapter under test, and whatever must outlive it (a temporary directory, …).
///
/// [`run`] drops the adapter, then shuts its runtime down, and only then drops the guard, so
/// an adapter (and its background tasks) can close its files before their directory goes:
///
/// ```
/// mod in_memory_in_a_temp_dir {
///     use std::sync::Arc;
///     use annals::storage::InMemoryAdapter;
///     use annals::testing::conformance::Fixture;
///
///     annals::conformance_tests!(|| async {
///         let dir = tempfile::tempdir().expect("a temporary directory");
///         // An on-disk adapter would open its files in `dir.path()` here.
///         Fixture::with_guard(Arc::new(InMemoryAdapter::new()), dir)
///     });
/// }
/// ```
pub struct Fixture {
    adapter: Arc<dyn StorageAdapter>,
    guard: Option<Box<dyn Any + Send>>,
    skipped: Option<String>,
}

impl Fixture {
    /// A fixture whose adapter needs nothing else kept alive.
    pub fn new(adapter: Arc<dyn StorageAdapter>) -> Self {
        Fixture {
            adapter,
            guard: None,
            skipped: None,
        }
    }

    /// A fixture that skips the check, for an adapter whose server is not available (say,
    /// no PostgreSQL server configured on a developer's machine). [`run`] returns at once
    /// without running the check; the caller reports `reason` where the developer sees it.
    /// Its [`adapter`](Self::adapter) is an empty in-memory placeholder.
    pub fn skip(reason: impl Into<String>) -> Self {
        Fixture {
            adapter: Arc::new(crate::storage::InMemoryAdapter::new()),
            guard: None,
            skipped: Some(reason.into()),
        }
    }

    /// Why the check is skipped, for a fixture made by [`skip`](Self::skip).
    pub fn skipped(&self) -> Option<&str> {
        self.skipped.as_deref()
    }

    /// A fixture that keeps `guard` alive until the check is over and the adapter dropped.
    pub fn with_guard(adapter: Arc<dyn StorageAdapter>, guard: impl Any + Send) -> Self {
        Fixture {
            adapter,
            guard: Some(Box::new(guard)),
            skipped: None,
        }
    }

    /// The adapter under test.
    pub fn adapter(&self) -> Arc<dyn StorageAdapter> {
        Arc::clone(&self.adapter)
    }
}

impl From<Arc<dyn StorageAdapter>> for Fixture {
    fn from(adapter: Arc<dyn StorageAdapter>) -> Self {
        Fixture::new(adapter)
    }
}

impl<A: StorageAdapter> From<Arc<A>> for Fixture {
    fn from(adapter: Arc<A>) -> Self {
        Fixture::new(adapter)
    }
}

/// Runs one check on a fresh adapter made by `factory`, on a multi-threaded runtime. This is
/// what each test generated by [`conformance_tests!`](crate::conformance_tests) calls.
pub fn run<F, Fut, X, C, CheckFut>(factory: F, check: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = X>,
    X: Into<Fixture>,
    C: FnOnce(Arc<dyn StorageAdapter>) -> CheckFut,
    CheckFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance check starts");
    let guard = runtime.block_on(async move {
        let Fixture {
            adapter,
            guard,
            skipped,
        } = factory().await.into();
        if skipped.is_none() {
            check(Arc::clone(&adapter)).await;
        }
        drop(adapter);
        guard
    });
    // Background tasks of the adapter may still hold it until the runtime shuts down; only
    // then can what it lives in (a temporary directory) go.
    drop(runtime);
    drop(guard);
}

/// Expands into one `#[test]` per conformance check, each running on a fresh adapter made by
/// the given factory: an expression callable as `factory()` that returns a future of something
/// convertible into a [`Fixture`](crate::testing::conformance::Fixture) (for instance
/// `Arc<MyAdapter>`). Invoke it inside a module named after the adapter.
///
/// ```
/// mod in_memory {
///     use std::sync::Arc;
///     use annals::storage::InMemoryAdapter;
///
///     annals::conformance_tests!(|| async { Arc::new(InMemoryAdapter::new()) });
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!(@checks ($factory)
            push_round_trips_events_byte_for_byte,
            positions_are_gap_free_and_follow_commit_order,
            existing_version_is_event_already_exists,
            version_gap_is_unexpected_version,
            version_zero_is_unexpected_version,
            get_events_bounds_are_inclusive,
            get_events_reverse_with_limit_returns_the_newest,
            get_events_matches_the_model_for_every_option_combination,
            get_events_of_unknown_aggregate_is_empty,
            same_aggregate_id_in_two_stores_is_independent,
            list_aggregate_ids_orders_by_initial_timestamp_then_id,
            list_aggregate_ids_reverse_is_the_exact_mirror,
            list_aggregate_ids_time_bounds_are_inclusive,
            list_aggregate_ids_paginates_every_option_combination,
            list_aggregate_ids_explicit_options_override_the_page_token,
            list_aggregate_ids_rejects_foreign_and_garbage_tokens,
            list_aggregate_ids_limit_zero_is_empty,
            extreme_timestamps_round_trip_and_page,
            event_group_commits_across_stores_and_aggregates,
            event_group_conflict_names_the_event_and_writes_nothing,
            event_group_orders_events_of_one_aggregate,
            concurrent_event_groups_are_all_or_nothing,
            concurrent_pushes_have_one_winner_per_version,
            oversized_event_is_refused,
            oversized_group_is_refused,
            invalid_ids_and_types_are_refused,
            invalid_ids_are_refused_on_reads,
            empty_group_is_refused,
            snapshots_round_trip_and_latest_is_at_or_below,
            snapshots_prune_keeps_the_newest_and_delete_removes_one,
            read_log_returns_every_committed_event_in_position_order,
            watch_log_follows_commits,
        );
    };
    (@checks ($factory:expr) $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::testing::conformance::run(
                    $factory,
                    $crate::testing::conformance::$check,
                );
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------
// Fixture helpers.

/// The fixture event `version` of `aggregate_id`: its payload names it, its timestamp grows
/// with the version.
fn event(aggregate_id: &str, version: u64) -> EncodedEvent {
    let offset = i64::try_from(version % 1_000_000).expect("a remainder below 10^6 fits i64");
    EncodedEvent {
        aggregate_id: aggregate_id.to_owned(),
        version,
        timestamp: Timestamp::from_unix_millis(BASE_MILLIS + offset),
        event_type: EVENT_TYPE.to_owned(),
        schema_version: 1,
        payload: format!("{aggregate_id}@{version}").into_bytes(),
        metadata: Vec::new(),
    }
}

/// `event` as part of a commit to `event_store_id`.
fn at(event_store_id: &str, event: EncodedEvent) -> AppendEvent {
    AppendEvent {
        event_store_id: event_store_id.to_owned(),
        event,
    }
}

/// An event whose first event happened at `millis`.
fn event_at(aggregate_id: &str, version: u64, millis: i64) -> EncodedEvent {
    EncodedEvent {
        timestamp: Timestamp::from_unix_millis(millis),
        ..event(aggregate_id, version)
    }
}

async fn push(
    check: &str,
    adapter: &dyn StorageAdapter,
    events: Vec<AppendEvent>,
) -> Vec<Position> {
    let count = events.len();
    match adapter.push_event_group(events).await {
        Ok(positions) => {
            assert_eq!(
                positions.len(),
                count,
                "{check}: one position per pushed event"
            );
            positions
        }
        Err(e) => panic!("{check}: a valid commit of {count} events was refused: {e}"),
    }
}

/// Pushes versions `1..=count` of `aggregate_id` one at a time.
async fn push_versions(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
    aggregate_id: &str,
    count: u64,
) -> Vec<Position> {
    let mut positions = Vec::new();
    for version in 1..=count {
        let commit = vec![at(event_store_id, event(aggregate_id, version))];
        positions.extend(push(check, adapter, commit).await);
    }
    positions
}

async fn read(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
    aggregate_id: &str,
    options: GetEventsOptions,
) -> Vec<StoredEvent> {
    match adapter
        .get_events(event_store_id, aggregate_id, &options)
        .await
    {
        Ok(events) => events,
        Err(e) => panic!("{check}: get_events({event_store_id}, {aggregate_id}, {options:?}): {e}"),
    }
}

async fn read_all(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
    aggregate_id: &str,
) -> Vec<StoredEvent> {
    read(
        check,
        adapter,
        event_store_id,
        aggregate_id,
        GetEventsOptions::default(),
    )
    .await
}

async fn list(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
    options: &ListAggregateIdsOptions,
) -> AggregateIdsPage {
    match adapter.list_aggregate_ids(event_store_id, options).await {
        Ok(page) => page,
        Err(e) => panic!("{check}: list_aggregate_ids({event_store_id}, {options:?}): {e}"),
    }
}

/// Every aggregate id of a store, without paging.
async fn list_all(
    check: &str,
    adapter: &dyn StorageAdapter,
    event_store_id: &str,
) -> Vec<AggregateIdEntry> {
    let page = list(check, adapter, event_store_id, &Default::default()).await;
    assert_eq!(
        page.next_page_token, None,
        "{check}: no page token without a limit"
    );
    page.aggregate_ids
}

fn versions(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.event.version).collect()
}

fn ids(entries: &[AggregateIdEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.aggregate_id.as_str()).collect()
}

/// What the checks can observe of an adapter: the events of some aggregates and the aggregate
/// ids of their stores. Equal snapshots before and after a refused commit mean nothing was
/// written.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    events: Vec<Vec<StoredEvent>>,
    aggregate_ids: Vec<Vec<AggregateIdEntry>>,
}

async fn snapshot(check: &str, adapter: &dyn StorageAdapter, slots: &[(&str, &str)]) -> Snapshot {
    let mut events = Vec::new();
    for (store, aggregate_id) in slots {
        events.push(read_all(check, adapter, store, aggregate_id).await);
    }
    let stores: BTreeSet<&str> = slots.iter().map(|(store, _)| *store).collect();
    let mut aggregate_ids = Vec::new();
    for store in stores {
        aggregate_ids.push(list_all(check, adapter, store).await);
    }
    Snapshot {
        events,
        aggregate_ids,
    }
}

/// Asserts that `result` is a conflict on exactly `(store, aggregate, version)`.
fn expect_conflict<T: std::fmt::Debug>(
    check: &str,
    result: Result<T, StorageError>,
    (event_store_id, aggregate_id, version): (&str, &str, u64),
) {
    match result {
        Err(StorageError::EventAlreadyExists(conflict)) => assert_eq!(
            conflict,
            EventAlreadyExists {
                event_store_id: event_store_id.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                version,
            },
            "{check}: the conflict names the event that conflicted"
        ),
        other => panic!(
            "{check}: expected EventAlreadyExists on {event_store_id}/{aggregate_id} \
             v{version}, got {other:?}"
        ),
    }
}

/// Asserts that `result` is `UnexpectedVersion` with exactly these fields.
fn expect_unexpected_version<T: std::fmt::Debug>(
    check: &str,
    result: Result<T, StorageError>,
    (event_store_id, aggregate_id, version): (&str, &str, u64),
    expected: Option<u64>,
) {
    match result {
        Err(StorageError::UnexpectedVersion {
            event_store_id: s,
            aggregate_id: a,
            version: v,
            expected: e,
        }) => assert_eq!(
            (s.as_str(), a.as_str(), v, e),
            (event_store_id, aggregate_id, version, expected),
            "{check}: UnexpectedVersion names the refused event and the accepted version"
        ),
        other => panic!(
            "{check}: expected UnexpectedVersion on {event_store_id}/{aggregate_id} \
             v{version}, got {other:?}"
        ),
    }
}

/// Asserts that `result` is a limit error accepted by `is_expected`.
fn expect_limit<T: std::fmt::Debug>(
    check: &str,
    what: &str,
    result: Result<T, StorageError>,
    is_expected: impl FnOnce(&LimitError) -> bool,
) {
    match result {
        Err(StorageError::Limit(limit)) => assert!(
            is_expected(&limit),
            "{check}: {what} was refused with the wrong limit error: {limit:?}"
        ),
        other => panic!("{check}: {what} was not refused with a limit error: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips and positions.

/// Pushed events read back byte for byte: payload, metadata, timestamp, type and schema
/// version, at the boundaries of every id and size limit, with the positions the push returned.
pub async fn push_round_trips_events_byte_for_byte(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "push_round_trips_events_byte_for_byte";
    let adapter = &*adapter;
    let limits = *adapter.limits();
    let all_bytes: Vec<u8> = (0..=255).collect();
    let long_type = "T".repeat(limits.event_type_bytes_max);
    // A large payload, but within the adapter's event limit next to the other fields.
    let room = limits
        .event_bytes_max
        .saturating_sub("round trip é".len() + long_type.len() + all_bytes.len());
    let pseudo_random: Vec<u8> = (0u32..65_536)
        .take(room)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let events = [
        EncodedEvent {
            aggregate_id: "round trip é".to_owned(),
            version: 1,
            timestamp: Timestamp::from_unix_millis(0),
            event_type: "A".to_owned(),
            schema_version: 1,
            payload: Vec::new(),
            metadata: Vec::new(),
        },
        EncodedEvent {
            aggregate_id: "round trip é".to_owned(),
            version: 2,
            timestamp: Timestamp::from_unix_millis(-1),
            event_type: "ÉVÉNEMENT_ÜNICODE".to_owned(),
            schema_version: 7,
            payload: all_bytes.clone(),
            metadata: vec![0xc0],
        },
        EncodedEvent {
            aggregate_id: "round trip é".to_owned(),
            version: 3,
            // 9999-12-31T23:59:59.999Z, the last instant of ISO 8601's four-digit years.
            timestamp: Timestamp::from_unix_millis(253_402_300_799_999),
            event_type: long_type,
            schema_version: u32::MAX,
            payload: pseudo_random,
            metadata: all_bytes.iter().rev().copied().collect(),
        },
        EncodedEvent {
            aggregate_id: "round trip é".to_owned(),
            version: 4,
            // 0001-01-01T00:00:00.000Z
            timestamp: Timestamp::from_unix_millis(-62_135_596_800_000),
            event_type: EVENT_TYPE.to_owned(),
            schema_version: 0,
            payload: b"\0\0\0".to_vec(),
            metadata: b"{\"trigger\":\"random\"}".to_vec(),
        },
    ];
    let mut pushed = Vec::new();
    for e in &events {
        let positions = push(CHECK, adapter, vec![at(STORE, e.clone())]).await;
        pushed.push(positions[0]);
    }
    let stored = read_all(CHECK, adapter, STORE, "round trip é").await;
    let read_back: Vec<&EncodedEvent> = stored.iter().map(|s| &s.event).collect();
    assert_eq!(
        read_back,
        events.iter().collect::<Vec<_>>(),
        "{CHECK}: events read back"
    );
    let positions: Vec<Position> = stored.iter().map(|s| s.position).collect();
    assert_eq!(
        positions, pushed,
        "{CHECK}: stored positions are the pushed ones"
    );

    // Ids at their maximum length, with multi-byte characters in the aggregate id.
    let long_store = "S".repeat(limits.event_store_id_bytes_max);
    let mut long_aggregate = "é".repeat(limits.aggregate_id_bytes_max / 2);
    long_aggregate.push_str(&"a".repeat(limits.aggregate_id_bytes_max % 2));
    assert_eq!(long_aggregate.len(), limits.aggregate_id_bytes_max);
    let long = event(&long_aggregate, 1);
    let position = push(CHECK, adapter, vec![at(&long_store, long.clone())]).await[0];
    let stored = read_all(CHECK, adapter, &long_store, &long_aggregate).await;
    assert_eq!(
        stored,
        vec![StoredEvent {
            position,
            event: long
        }],
        "{CHECK}: an event with ids at their maximum length reads back"
    );
    let listed = list_all(CHECK, adapter, &long_store).await;
    assert_eq!(
        ids(&listed),
        [long_aggregate.as_str()],
        "{CHECK}: long ids are listed"
    );
}

/// Positions start at 1 on a fresh adapter, grow by exactly 1 per committed event across
/// stores, aggregates and groups (consecutive and in input order within a group), and refused
/// commits consume none.
pub async fn positions_are_gap_free_and_follow_commit_order(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "positions_are_gap_free_and_follow_commit_order";
    let adapter = &*adapter;
    let mut next: Position = 1;
    let mut expect_next = |positions: Vec<Position>, what: &str| {
        let expected: Vec<Position> = (next..next + positions.len() as u64).collect();
        assert_eq!(positions, expected, "{CHECK}: positions of {what}");
        next += positions.len() as u64;
    };
    let p = push(CHECK, adapter, vec![at(STORE, event("a", 1))]).await;
    expect_next(p, "the first push on a fresh adapter");
    let p = push(CHECK, adapter, vec![at(OTHER_STORE, event("a", 1))]).await;
    expect_next(p, "a push to another store");
    let group = vec![
        at(STORE, event("b", 1)),
        at(OTHER_STORE, event("b", 1)),
        at(STORE, event("a", 2)),
        at(STORE, event("b", 2)),
    ];
    let p = push(CHECK, adapter, group).await;
    expect_next(p.clone(), "a group");
    for (store, aggregate_id, version, position) in [
        (STORE, "b", 1, p[0]),
        (OTHER_STORE, "b", 1, p[1]),
        (STORE, "a", 2, p[2]),
        (STORE, "b", 2, p[3]),
    ] {
        let stored = read_all(CHECK, adapter, store, aggregate_id).await;
        let found = stored.iter().find(|s| s.event.version == version);
        assert_eq!(
            found.map(|s| s.position),
            Some(position),
            "{CHECK}: {store}/{aggregate_id} v{version} is stored at the position returned"
        );
    }

    // Refusals of every kind, each followed by a push that must take the very next position.
    let refused: Vec<(&str, Vec<AppendEvent>)> = vec![
        ("a conflict", vec![at(STORE, event("a", 1))]),
        ("a gap", vec![at(STORE, event("a", 9))]),
        ("version 0", vec![at(STORE, event("c", 0))]),
        (
            "an invalid type",
            vec![at(
                STORE,
                EncodedEvent {
                    event_type: String::new(),
                    ..event("c", 1)
                },
            )],
        ),
        (
            "a group with a late conflict",
            vec![
                at(STORE, event("c", 1)),
                at(OTHER_STORE, event("c", 1)),
                at(STORE, event("b", 1)),
            ],
        ),
    ];
    for (i, (what, commit)) in refused.into_iter().enumerate() {
        let result = adapter.push_event_group(commit).await;
        assert!(result.is_err(), "{CHECK}: {what} was accepted: {result:?}");
        let probe = format!("probe-{i}");
        let p = push(CHECK, adapter, vec![at(STORE, event(&probe, 1))]).await;
        expect_next(p, &format!("the push after {what}"));
    }

    // Positions read back increase with versions.
    for (store, aggregate_id) in [(STORE, "a"), (STORE, "b"), (OTHER_STORE, "b")] {
        let stored = read_all(CHECK, adapter, store, aggregate_id).await;
        assert!(
            stored.windows(2).all(|w| w[0].position < w[1].position),
            "{CHECK}: positions of {store}/{aggregate_id} increase with versions: {stored:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Versions.

/// Pushing a version that exists fails with `EventAlreadyExists` naming the store, aggregate
/// and version, and writes nothing.
pub async fn existing_version_is_event_already_exists(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "existing_version_is_event_already_exists";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 3).await;
    let slots = [(STORE, "pikachu"), (OTHER_STORE, "pikachu")];
    let before = snapshot(CHECK, adapter, &slots).await;
    for version in 1..=3 {
        let replaced = EncodedEvent {
            payload: b"replacement".to_vec(),
            ..event("pikachu", version)
        };
        let result = adapter.push_event(at(STORE, replaced)).await;
        expect_conflict(CHECK, result, (STORE, "pikachu", version));
    }
    // The same conflict through a group that also touches another store.
    let group = vec![
        at(OTHER_STORE, event("pikachu", 1)),
        at(STORE, event("pikachu", 2)),
    ];
    let result = adapter.push_event_group(group).await;
    expect_conflict(CHECK, result, (STORE, "pikachu", 2));
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(
        after, before,
        "{CHECK}: nothing is written after a conflict"
    );
    // The aggregate still accepts its next version.
    push(CHECK, adapter, vec![at(STORE, event("pikachu", 4))]).await;
}

/// Skipping a version fails with `UnexpectedVersion` carrying the version that would have been
/// accepted, and writes nothing.
pub async fn version_gap_is_unexpected_version(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "version_gap_is_unexpected_version";
    let adapter = &*adapter;
    let slots = [(STORE, "pikachu"), (STORE, "new")];
    // A gap on a new aggregate: versions start at 1.
    let result = adapter.push_event(at(STORE, event("new", 2))).await;
    expect_unexpected_version(CHECK, result, (STORE, "new", 2), Some(1));
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    let before = snapshot(CHECK, adapter, &slots).await;
    for version in [4, 5, 1_000, u64::MAX] {
        let result = adapter
            .push_event(at(STORE, event("pikachu", version)))
            .await;
        expect_unexpected_version(CHECK, result, (STORE, "pikachu", version), Some(3));
    }
    let group = vec![at(STORE, event("new", 1)), at(STORE, event("pikachu", 4))];
    let result = adapter.push_event_group(group).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 4), Some(3));
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: nothing is written after a gap");
    push(CHECK, adapter, vec![at(STORE, event("pikachu", 3))]).await;
}

/// Version 0 fails with `UnexpectedVersion` whose `expected` is `None` ("versions start at
/// 1"), on new and existing aggregates alike, and writes nothing.
pub async fn version_zero_is_unexpected_version(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "version_zero_is_unexpected_version";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    let slots = [(STORE, "pikachu"), (STORE, "new")];
    let before = snapshot(CHECK, adapter, &slots).await;
    for aggregate_id in ["new", "pikachu"] {
        let result = adapter.push_event(at(STORE, event(aggregate_id, 0))).await;
        expect_unexpected_version(CHECK, result, (STORE, aggregate_id, 0), None);
    }
    let group = vec![at(STORE, event("new", 1)), at(STORE, event("pikachu", 0))];
    let result = adapter.push_event_group(group).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 0), None);
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: nothing is written after version 0");
}

// ---------------------------------------------------------------------------------------------
// get_events.

/// `min_version` and `max_version` are inclusive, alone or together.
pub async fn get_events_bounds_are_inclusive(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "get_events_bounds_are_inclusive";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 6).await;
    let cases: [(Option<u64>, Option<u64>, &[u64]); 6] = [
        (Some(2), Some(5), &[2, 3, 4, 5]),
        (Some(3), None, &[3, 4, 5, 6]),
        (None, Some(3), &[1, 2, 3]),
        (Some(4), Some(4), &[4]),
        (Some(6), Some(6), &[6]),
        (Some(5), Some(4), &[]),
    ];
    for (min_version, max_version, expected) in cases {
        let options = GetEventsOptions {
            min_version,
            max_version,
            ..Default::default()
        };
        let got = read(CHECK, adapter, STORE, "pikachu", options).await;
        assert_eq!(
            versions(&got),
            expected,
            "{CHECK}: versions for {options:?}"
        );
    }
}

/// `reverse` with `limit` returns the newest events, newest first, also within bounds; `limit`
/// alone returns the oldest; `limit: 0` returns nothing.
pub async fn get_events_reverse_with_limit_returns_the_newest(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "get_events_reverse_with_limit_returns_the_newest";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 8).await;
    let cases: [(GetEventsOptions, &[u64]); 6] = [
        (
            GetEventsOptions {
                limit: Some(1),
                reverse: true,
                ..Default::default()
            },
            &[8],
        ),
        (
            GetEventsOptions {
                limit: Some(3),
                reverse: true,
                ..Default::default()
            },
            &[8, 7, 6],
        ),
        (
            GetEventsOptions {
                limit: Some(3),
                ..Default::default()
            },
            &[1, 2, 3],
        ),
        (
            GetEventsOptions {
                reverse: true,
                ..Default::default()
            },
            &[8, 7, 6, 5, 4, 3, 2, 1],
        ),
        (
            GetEventsOptions {
                min_version: Some(2),
                max_version: Some(6),
                limit: Some(2),
                reverse: true,
            },
            &[6, 5],
        ),
        (
            GetEventsOptions {
                limit: Some(0),
                reverse: true,
                ..Default::default()
            },
            &[],
        ),
    ];
    for (options, expected) in cases {
        let got = read(CHECK, adapter, STORE, "pikachu", options).await;
        assert_eq!(
            versions(&got),
            expected,
            "{CHECK}: versions for {options:?}"
        );
    }
}

/// Every combination of `min_version`, `max_version`, `limit` and `reverse` (including empty
/// ranges, bounds outside the aggregate and `limit: 0`) returns exactly the model's events.
pub async fn get_events_matches_the_model_for_every_option_combination(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "get_events_matches_the_model_for_every_option_combination";
    let adapter = &*adapter;
    const COUNT: u64 = 10;
    push_versions(CHECK, adapter, STORE, "pikachu", COUNT).await;
    // Another aggregate, so an adapter that ignores the aggregate id fails.
    push_versions(CHECK, adapter, STORE, "raichu", 3).await;
    let all = read_all(CHECK, adapter, STORE, "pikachu").await;
    assert_eq!(
        versions(&all),
        (1..=COUNT).collect::<Vec<_>>(),
        "{CHECK}: all versions"
    );
    let bounds = [
        None,
        Some(0),
        Some(1),
        Some(4),
        Some(COUNT),
        Some(COUNT + 1),
    ];
    let limits = [None, Some(0), Some(1), Some(3), Some(10), Some(50)];
    for min_version in bounds {
        for max_version in bounds {
            for limit in limits {
                for reverse in [false, true] {
                    let options = GetEventsOptions {
                        min_version,
                        max_version,
                        limit,
                        reverse,
                    };
                    let mut expected: Vec<&StoredEvent> = all
                        .iter()
                        .filter(|e| options.contains(e.event.version))
                        .collect();
                    if reverse {
                        expected.reverse();
                    }
                    expected.truncate(limit.unwrap_or(usize::MAX));
                    let got = read(CHECK, adapter, STORE, "pikachu", options).await;
                    assert_eq!(
                        got.iter().collect::<Vec<_>>(),
                        expected,
                        "{CHECK}: events for {options:?}"
                    );
                }
            }
        }
    }
}

/// Reading an aggregate that has no event, in a store that has none or in one that has
/// others, returns no event and no error.
pub async fn get_events_of_unknown_aggregate_is_empty(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "get_events_of_unknown_aggregate_is_empty";
    let adapter = &*adapter;
    let got = read_all(CHECK, adapter, STORE, "missingno").await;
    assert!(
        got.is_empty(),
        "{CHECK}: unknown store and aggregate: {got:?}"
    );
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    for aggregate_id in ["missingno", "pikachu ", "PIKACHU", "pikach"] {
        let options = GetEventsOptions {
            reverse: true,
            limit: Some(5),
            ..Default::default()
        };
        let got = read(CHECK, adapter, STORE, aggregate_id, options).await;
        assert!(
            got.is_empty(),
            "{CHECK}: unknown aggregate {aggregate_id:?}: {got:?}"
        );
    }
    let page = list(CHECK, adapter, OTHER_STORE, &Default::default()).await;
    assert_eq!(
        page,
        AggregateIdsPage::default(),
        "{CHECK}: a store without events lists none"
    );
}

/// The same aggregate id in two stores names two aggregates: their versions, events and
/// listings are independent.
pub async fn same_aggregate_id_in_two_stores_is_independent(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "same_aggregate_id_in_two_stores_is_independent";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 3).await;
    // Version 1 is free in the other store, and version 4 is not its next version.
    let result = adapter
        .push_event(at(OTHER_STORE, event("pikachu", 4)))
        .await;
    expect_unexpected_version(CHECK, result, (OTHER_STORE, "pikachu", 4), Some(1));
    let other = EncodedEvent {
        payload: b"other store".to_vec(),
        timestamp: Timestamp::from_unix_millis(BASE_MILLIS - 1_000),
        ..event("pikachu", 1)
    };
    let position = push(CHECK, adapter, vec![at(OTHER_STORE, other.clone())]).await[0];
    let result = adapter
        .push_event(at(OTHER_STORE, event("pikachu", 1)))
        .await;
    expect_conflict(CHECK, result, (OTHER_STORE, "pikachu", 1));

    let mine = read_all(CHECK, adapter, STORE, "pikachu").await;
    assert_eq!(
        versions(&mine),
        [1, 2, 3],
        "{CHECK}: the first store keeps its events"
    );
    assert!(
        mine.iter()
            .all(|e| e.event == event("pikachu", e.event.version)),
        "{CHECK}: the first store's events are untouched: {mine:?}"
    );
    let theirs = read_all(CHECK, adapter, OTHER_STORE, "pikachu").await;
    assert_eq!(
        theirs,
        vec![StoredEvent {
            position,
            event: other.clone()
        }],
        "{CHECK}: the other store has only its own event"
    );
    let listed_mine = list_all(CHECK, adapter, STORE).await;
    let listed_theirs = list_all(CHECK, adapter, OTHER_STORE).await;
    assert_eq!(
        listed_mine,
        [AggregateIdEntry {
            initial_event_timestamp: event("pikachu", 1).timestamp,
            aggregate_id: "pikachu".to_owned(),
        }],
        "{CHECK}: the first store lists its aggregate with its own initial timestamp"
    );
    assert_eq!(
        listed_theirs,
        [AggregateIdEntry {
            initial_event_timestamp: other.timestamp,
            aggregate_id: "pikachu".to_owned(),
        }],
        "{CHECK}: the other store lists its aggregate with its own initial timestamp"
    );
}

// ---------------------------------------------------------------------------------------------
// list_aggregate_ids.

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

// ---------------------------------------------------------------------------------------------
// Event groups.

/// A group of events of several aggregates in several stores is committed whole: every event
/// reads back, at consecutive positions in input order, and new aggregates are listed.
pub async fn event_group_commits_across_stores_and_aggregates(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "event_group_commits_across_stores_and_aggregates";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    let group = vec![
        at(STORE, event("pikachu", 3)),
        at(OTHER_STORE, event("ash", 1)),
        at(STORE, event("eevee", 1)),
        at(OTHER_STORE, event("misty", 1)),
    ];
    let positions = push(CHECK, adapter, group.clone()).await;
    assert!(
        positions.windows(2).all(|w| w[1] == w[0] + 1),
        "{CHECK}: a group's positions are consecutive in input order: {positions:?}"
    );
    for (append, position) in group.into_iter().zip(positions) {
        let AppendEvent {
            event_store_id,
            event,
        } = append;
        let options = GetEventsOptions {
            min_version: Some(event.version),
            max_version: Some(event.version),
            ..Default::default()
        };
        let got = read(
            CHECK,
            adapter,
            &event_store_id,
            &event.aggregate_id,
            options,
        )
        .await;
        assert_eq!(
            got,
            vec![StoredEvent { position, event }],
            "{CHECK}: a grouped event reads back in store {event_store_id}"
        );
    }
    let listed = list_all(CHECK, adapter, OTHER_STORE).await;
    let mut listed_ids = ids(&listed);
    listed_ids.sort_unstable();
    assert_eq!(
        listed_ids,
        ["ash", "misty"],
        "{CHECK}: new aggregates of a group are listed"
    );
}

/// A conflict anywhere in a group (first, middle or last event) fails the whole group with
/// `EventAlreadyExists` naming the conflicting event, and writes nothing.
pub async fn event_group_conflict_names_the_event_and_writes_nothing(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "event_group_conflict_names_the_event_and_writes_nothing";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "pikachu", 2).await;
    push_versions(CHECK, adapter, OTHER_STORE, "ash", 1).await;
    let slots = [
        (STORE, "pikachu"),
        (STORE, "eevee"),
        (OTHER_STORE, "ash"),
        (OTHER_STORE, "misty"),
    ];
    let before = snapshot(CHECK, adapter, &slots).await;
    let fresh = [
        at(STORE, event("pikachu", 3)),
        at(STORE, event("eevee", 1)),
        at(OTHER_STORE, event("misty", 1)),
        at(OTHER_STORE, event("ash", 2)),
    ];
    let conflicting = at(OTHER_STORE, event("ash", 1));
    for index in 0..=fresh.len() {
        let mut group = fresh.to_vec();
        group.insert(index, conflicting.clone());
        let result = adapter.push_event_group(group).await;
        expect_conflict(CHECK, result, (OTHER_STORE, "ash", 1));
        let after = snapshot(CHECK, adapter, &slots).await;
        assert_eq!(
            after, before,
            "{CHECK}: nothing written (conflict at index {index})"
        );
    }
    // The same group without the conflicting event commits.
    push(CHECK, adapter, fresh.to_vec()).await;
}

/// Two events of one aggregate in one group commit when in version order; out of order or
/// duplicated, the group fails and writes nothing.
pub async fn event_group_orders_events_of_one_aggregate(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "event_group_orders_events_of_one_aggregate";
    let adapter = &*adapter;
    let slots = [(STORE, "pikachu"), (STORE, "eevee")];
    let before = snapshot(CHECK, adapter, &slots).await;

    let out_of_order = vec![
        at(STORE, event("pikachu", 2)),
        at(STORE, event("pikachu", 1)),
    ];
    let result = adapter.push_event_group(out_of_order).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 2), Some(1));

    let duplicated = vec![
        at(STORE, event("eevee", 1)),
        at(STORE, event("pikachu", 1)),
        at(STORE, event("pikachu", 1)),
    ];
    let result = adapter.push_event_group(duplicated).await;
    expect_conflict(CHECK, result, (STORE, "pikachu", 1));

    let skipping = vec![
        at(STORE, event("pikachu", 1)),
        at(STORE, event("pikachu", 3)),
    ];
    let result = adapter.push_event_group(skipping).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 3), Some(2));
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: refused groups wrote nothing");

    let in_order = vec![
        at(STORE, event("pikachu", 1)),
        at(STORE, event("eevee", 1)),
        at(STORE, event("pikachu", 2)),
        at(STORE, event("pikachu", 3)),
    ];
    let positions = push(CHECK, adapter, in_order).await;
    let got = read_all(CHECK, adapter, STORE, "pikachu").await;
    assert_eq!(
        versions(&got),
        [1, 2, 3],
        "{CHECK}: versions of an in-order group"
    );
    let got_positions: Vec<Position> = got.iter().map(|e| e.position).collect();
    assert_eq!(
        got_positions,
        [positions[0], positions[2], positions[3]],
        "{CHECK}: positions of an in-order group"
    );

    // Out of order on an existing aggregate: v5 before v4.
    let out_of_order = vec![
        at(STORE, event("pikachu", 5)),
        at(STORE, event("pikachu", 4)),
    ];
    let result = adapter.push_event_group(out_of_order).await;
    expect_unexpected_version(CHECK, result, (STORE, "pikachu", 5), Some(4));
    let got = read_all(CHECK, adapter, STORE, "pikachu").await;
    assert_eq!(
        versions(&got),
        [1, 2, 3],
        "{CHECK}: nothing written by a refused group"
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

/// Writer tasks of the group race.
const RACING_TASKS: usize = 32;
/// Groups each writer task pushes.
const RACING_ROUNDS: usize = 12;
/// Reader tasks checking atomic visibility while the writers race.
const RACING_READERS: usize = 4;
/// The aggregates the racing groups write to.
const RACING_SLOTS: [(&str, &str); 3] = [(STORE, "x"), (STORE, "y"), (OTHER_STORE, "x")];

/// The slots a racing group writes to, by its (task, round); a slot listed twice gets two
/// consecutive versions.
fn racing_plan(task: usize, round: usize) -> &'static [usize] {
    const PLANS: [&[usize]; 5] = [&[0, 1, 2], &[0, 1], &[1, 2], &[2, 0], &[0, 0, 2]];
    PLANS[(task + round) % PLANS.len()]
}

/// The payload of event `index` of racing group (task, round).
fn racing_payload(task: usize, round: usize, index: usize) -> Vec<u8> {
    format!("{task}:{round}:{index}").into_bytes()
}

/// Parses a racing payload back to (task, round, index).
fn parse_racing_payload(payload: &[u8]) -> Option<(usize, usize, usize)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(':').map(str::parse::<usize>);
    let parsed = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    parts.next().is_none().then_some(parsed)
}

/// What happened to one racing group.
struct RacingOutcome {
    task: usize,
    round: usize,
    /// (slot, version) of each event, in input order.
    events: Vec<(usize, u64)>,
    result: Result<Vec<Position>, EventAlreadyExists>,
}

async fn racing_writer(
    adapter: Arc<dyn StorageAdapter>,
    task: usize,
    barrier: Arc<tokio::sync::Barrier>,
) -> Vec<RacingOutcome> {
    const CHECK: &str = "concurrent_event_groups_are_all_or_nothing";
    barrier.wait().await;
    let mut outcomes = Vec::new();
    for round in 0..RACING_ROUNDS {
        let plan = racing_plan(task, round);
        let mut next_version: HashMap<usize, u64> = HashMap::new();
        let mut commit = Vec::new();
        let mut events = Vec::new();
        for (index, &slot) in plan.iter().enumerate() {
            let (store, aggregate_id) = RACING_SLOTS[slot];
            let version = match next_version.get(&slot) {
                Some(&v) => v + 1,
                None => {
                    let newest = GetEventsOptions {
                        reverse: true,
                        limit: Some(1),
                        ..Default::default()
                    };
                    let last = read(CHECK, &*adapter, store, aggregate_id, newest).await;
                    last.first().map_or(0, |e| e.event.version) + 1
                }
            };
            next_version.insert(slot, version);
            let encoded = EncodedEvent {
                payload: racing_payload(task, round, index),
                ..event(aggregate_id, version)
            };
            commit.push(at(store, encoded));
            events.push((slot, version));
        }
        let result = match adapter.push_event_group(commit).await {
            Ok(positions) => Ok(positions),
            Err(StorageError::EventAlreadyExists(conflict)) => Err(conflict),
            // Versions only grow, so a group built from a stale read can only conflict.
            Err(e) => panic!("{CHECK}: group ({task}, {round}) failed with {e}, not a conflict"),
        };
        outcomes.push(RacingOutcome {
            task,
            round,
            events,
            result,
        });
        tokio::task::yield_now().await;
    }
    outcomes
}

/// The racing groups (task, round) whose events a read of one slot shows.
fn racing_groups_seen(events: &[StoredEvent]) -> HashSet<(usize, usize)> {
    events
        .iter()
        .filter_map(|e| parse_racing_payload(&e.event.payload))
        .map(|(task, round, _)| (task, round))
        .collect()
}

/// Reads two slots one after the other until told to stop: a group seen in the first read
/// was committed before it, so if it also wrote the second slot, the second read must show it.
async fn racing_reader(
    adapter: Arc<dyn StorageAdapter>,
    reader: usize,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
    barrier: Arc<tokio::sync::Barrier>,
) {
    const CHECK: &str = "concurrent_event_groups_are_all_or_nothing";
    const PAIRS: [(usize, usize); 6] = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)];
    barrier.wait().await;
    let mut iteration = reader;
    loop {
        let (first, second) = PAIRS[iteration % PAIRS.len()];
        {
            let (store_a, aggregate_a) = RACING_SLOTS[first];
            let (store_b, aggregate_b) = RACING_SLOTS[second];
            let seen_a =
                racing_groups_seen(&read_all(CHECK, &*adapter, store_a, aggregate_a).await);
            let seen_b =
                racing_groups_seen(&read_all(CHECK, &*adapter, store_b, aggregate_b).await);
            for &(task, round) in &seen_a {
                if racing_plan(task, round).contains(&second) {
                    assert!(
                        seen_b.contains(&(task, round)),
                        "{CHECK}: group ({task}, {round}) was visible in slot {first} but not \
                         afterwards in slot {second}: a reader saw part of a commit"
                    );
                }
            }
            reads.fetch_add(1, Ordering::Relaxed);
        }
        iteration += 1;
        if stop.load(Ordering::Acquire) {
            break;
        }
        tokio::task::yield_now().await;
    }
}

async fn join<T>(handle: tokio::task::JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a conformance task was cancelled: {e}"),
    }
}

/// Many tasks race event groups over the same few aggregates of two stores while readers
/// watch. Every group is wholly visible or wholly absent (to the readers during the race and
/// when read back), each (aggregate, version) has exactly one winning group, losers fail only
/// with a conflict naming one of their events, and the versions of every aggregate are exactly
/// `1..=n`.
pub async fn concurrent_event_groups_are_all_or_nothing(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "concurrent_event_groups_are_all_or_nothing";
    let barrier = Arc::new(tokio::sync::Barrier::new(RACING_TASKS + RACING_READERS));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..RACING_READERS)
        .map(|reader| {
            let task = racing_reader(
                Arc::clone(&adapter),
                reader,
                Arc::clone(&stop),
                Arc::clone(&reads),
                Arc::clone(&barrier),
            );
            tokio::spawn(task)
        })
        .collect();
    let writers: Vec<_> = (0..RACING_TASKS)
        .map(|task| {
            tokio::spawn(racing_writer(
                Arc::clone(&adapter),
                task,
                Arc::clone(&barrier),
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.extend(join(writer).await);
    }
    stop.store(true, Ordering::Release);
    for reader in readers {
        join(reader).await;
    }
    assert!(
        reads.load(Ordering::Relaxed) > 0,
        "{CHECK}: the readers read"
    );

    // Read everything back.
    let mut stored: Vec<BTreeMap<u64, StoredEvent>> = Vec::new();
    for (slot, (store, aggregate_id)) in RACING_SLOTS.iter().enumerate() {
        let events = read_all(CHECK, &*adapter, store, aggregate_id).await;
        let count = events.len() as u64;
        assert_eq!(
            versions(&events),
            (1..=count).collect::<Vec<_>>(),
            "{CHECK}: versions of slot {slot} are exactly 1..=n"
        );
        assert!(
            events.windows(2).all(|w| w[0].position < w[1].position),
            "{CHECK}: positions of slot {slot} increase with versions"
        );
        stored.push(events.into_iter().map(|e| (e.event.version, e)).collect());
    }

    let mut winners: HashMap<(usize, u64), (usize, usize)> = HashMap::new();
    let mut committed_events = 0;
    let mut committed_groups = 0;
    for outcome in &outcomes {
        let RacingOutcome {
            task,
            round,
            events,
            result,
        } = outcome;
        match result {
            Ok(positions) => {
                committed_groups += 1;
                committed_events += events.len();
                assert_eq!(
                    positions.len(),
                    events.len(),
                    "{CHECK}: one position per event"
                );
                for (index, (&(slot, version), &position)) in
                    events.iter().zip(positions).enumerate()
                {
                    if let Some(other) = winners.insert((slot, version), (*task, *round)) {
                        panic!(
                            "{CHECK}: groups {other:?} and ({task}, {round}) both won slot \
                             {slot} v{version}"
                        );
                    }
                    let found = stored[slot].get(&version);
                    assert_eq!(
                        found.map(|e| (e.position, e.event.payload.clone())),
                        Some((position, racing_payload(*task, *round, index))),
                        "{CHECK}: committed group ({task}, {round}) is wholly visible: slot \
                         {slot} v{version}"
                    );
                    assert_eq!(
                        positions[index],
                        positions[0] + index as u64,
                        "{CHECK}: positions of group ({task}, {round}) are consecutive"
                    );
                }
            }
            Err(conflict) => {
                let named = events.iter().any(|&(slot, version)| {
                    let (store, aggregate_id) = RACING_SLOTS[slot];
                    conflict.event_store_id == store
                        && conflict.aggregate_id == aggregate_id
                        && conflict.version == version
                });
                assert!(
                    named,
                    "{CHECK}: the conflict of group ({task}, {round}) names one of its events: \
                     {conflict:?}"
                );
            }
        }
    }
    assert!(
        committed_groups > 0,
        "{CHECK}: some racing groups committed"
    );

    // Every stored event belongs to a committed group: refused groups left nothing behind.
    let stored_events: usize = stored.iter().map(BTreeMap::len).sum();
    assert_eq!(
        stored_events, committed_events,
        "{CHECK}: stored events = committed events"
    );
    for (slot, events) in stored.iter().enumerate() {
        for (version, stored_event) in events {
            let owner = parse_racing_payload(&stored_event.event.payload)
                .map(|(task, round, _)| (task, round));
            assert_eq!(
                owner,
                winners.get(&(slot, *version)).copied(),
                "{CHECK}: slot {slot} v{version} was written by the group that won it"
            );
        }
    }
}

/// Many tasks push the same versions of one aggregate: each version has exactly one winner,
/// every loser gets `EventAlreadyExists` naming that version, and the winners' events are the
/// ones stored.
pub async fn concurrent_pushes_have_one_winner_per_version(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "concurrent_pushes_have_one_winner_per_version";
    const TASKS: usize = 16;
    const VERSIONS: u64 = 24;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let adapter = Arc::clone(&adapter);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let mut wins = Vec::new();
                // Each version is tried only once the previous one exists (won or lost), so a
                // push can only win or conflict.
                for version in 1..=VERSIONS {
                    let encoded = EncodedEvent {
                        payload: format!("task {task}").into_bytes(),
                        ..event("contested", version)
                    };
                    match adapter.push_event(at(STORE, encoded)).await {
                        Ok(position) => wins.push((version, position)),
                        Err(e) => {
                            expect_conflict(CHECK, Err::<(), _>(e), (STORE, "contested", version))
                        }
                    }
                    tokio::task::yield_now().await;
                }
                (task, wins)
            })
        })
        .collect();
    let mut winners: BTreeMap<u64, (usize, Position)> = BTreeMap::new();
    for task in tasks {
        let (task, wins) = join(task).await;
        for (version, position) in wins {
            if let Some(other) = winners.insert(version, (task, position)) {
                panic!(
                    "{CHECK}: tasks {} and {task} both won version {version}",
                    other.0
                );
            }
        }
    }
    let stored = read_all(CHECK, &*adapter, STORE, "contested").await;
    assert_eq!(
        versions(&stored),
        (1..=VERSIONS).collect::<Vec<_>>(),
        "{CHECK}: versions are exactly 1..=n"
    );
    assert_eq!(
        winners.len() as u64,
        VERSIONS,
        "{CHECK}: every version has a winner"
    );
    for stored_event in &stored {
        let version = stored_event.event.version;
        let (task, position) = winners[&version];
        assert_eq!(
            (stored_event.position, stored_event.event.payload.clone()),
            (position, format!("task {task}").into_bytes()),
            "{CHECK}: version {version} holds the winner's event"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Limits.

/// An event of exactly `event_bytes_max` bytes is accepted; one byte more is refused with
/// `EventTooLarge` naming it, alone or inside a group, and nothing is written.
pub async fn oversized_event_is_refused(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "oversized_event_is_refused";
    let adapter = &*adapter;
    let limits = *adapter.limits();
    let sized = |aggregate_id: &str, bytes: usize| {
        let mut e = event(aggregate_id, 1);
        e.metadata = vec![0x90];
        let overhead = e.data_len() - e.payload.len();
        e.payload = vec![0xab; bytes - overhead];
        assert_eq!(
            e.data_len(),
            bytes,
            "{CHECK}: the fixture has the intended size"
        );
        e
    };
    let slots = [(STORE, "big"), (STORE, "small")];
    let before = snapshot(CHECK, adapter, &slots).await;
    let too_big = sized("big", limits.event_bytes_max + 1);
    let is_too_big = |l: &LimitError| {
        matches!(l, LimitError::EventTooLarge { aggregate_id, version: 1, bytes, limit }
            if aggregate_id == "big"
                && *bytes == limits.event_bytes_max + 1
                && *limit == limits.event_bytes_max)
    };
    let result = adapter.push_event(at(STORE, too_big.clone())).await;
    expect_limit(CHECK, "an oversized event", result, is_too_big);
    let group = vec![at(STORE, event("small", 1)), at(STORE, too_big)];
    let result = adapter.push_event_group(group).await;
    expect_limit(CHECK, "a group with an oversized event", result, is_too_big);
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: nothing written");

    let largest = sized("big", limits.event_bytes_max);
    let position = push(CHECK, adapter, vec![at(STORE, largest.clone())]).await[0];
    let got = read_all(CHECK, adapter, STORE, "big").await;
    assert_eq!(
        got,
        vec![StoredEvent {
            position,
            event: largest
        }],
        "{CHECK}: an event of exactly event_bytes_max reads back"
    );
}

/// A commit of more than `group_events_max` events, or of more than `group_bytes_max` bytes,
/// is refused with `TooManyEvents` / `GroupTooLarge` and writes nothing; a commit of exactly
/// `group_events_max` events is accepted.
pub async fn oversized_group_is_refused(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "oversized_group_is_refused";
    let adapter = &*adapter;
    let Limits {
        group_events_max,
        group_bytes_max,
        event_bytes_max,
        ..
    } = *adapter.limits();
    let many = |count: usize| -> Vec<AppendEvent> {
        (0..count)
            .map(|i| at(STORE, event(&format!("many-{i}"), 1)))
            .collect()
    };
    let result = adapter.push_event_group(many(group_events_max + 1)).await;
    expect_limit(CHECK, "too many events", result, |l| {
        *l == LimitError::TooManyEvents {
            events: group_events_max + 1,
            limit: group_events_max,
        }
    });
    let listed = list_all(CHECK, adapter, STORE).await;
    assert!(
        listed.is_empty(),
        "{CHECK}: nothing written by a refused group: {listed:?}"
    );

    // Events as large as allowed, enough of them to exceed the group's byte limit.
    let count = group_bytes_max / event_bytes_max + 1;
    if count <= group_events_max {
        let big = |i: usize| {
            let mut e = event(&format!("heavy-{i}"), 1);
            let overhead = e.data_len() - e.payload.len();
            e.payload = vec![0x5a; event_bytes_max - overhead];
            at(STORE, e)
        };
        let group: Vec<AppendEvent> = (0..count).map(big).collect();
        let bytes: usize = group.iter().map(|a| a.event.data_len()).sum();
        let result = adapter.push_event_group(group).await;
        expect_limit(CHECK, "a group over group_bytes_max", result, |l| {
            *l == LimitError::GroupTooLarge {
                bytes,
                limit: group_bytes_max,
            }
        });
        let listed = list_all(CHECK, adapter, STORE).await;
        assert!(
            listed.is_empty(),
            "{CHECK}: nothing written by a refused group: {listed:?}"
        );
    }

    let positions = push(CHECK, adapter, many(group_events_max)).await;
    assert_eq!(
        positions.len(),
        group_events_max,
        "{CHECK}: a full group commits"
    );
    let listed = list_all(CHECK, adapter, STORE).await;
    assert_eq!(
        listed.len(),
        group_events_max,
        "{CHECK}: every event of a full group is listed"
    );
}

/// Invalid store ids, aggregate ids and event types (empty, too long, control characters,
/// reserved types) are refused with the matching limit error naming the value, and a group
/// holding one writes nothing.
pub async fn invalid_ids_and_types_are_refused(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "invalid_ids_and_types_are_refused";
    let adapter = &*adapter;
    let limits = *adapter.limits();
    let slots = [(STORE, "valid")];
    let before = snapshot(CHECK, adapter, &slots).await;

    let long_aggregate = "a".repeat(limits.aggregate_id_bytes_max + 1);
    for bad in [
        "",
        "a\nb",
        "\0",
        "tab\there",
        "\u{7f}",
        "\u{85}",
        long_aggregate.as_str(),
    ] {
        for position in [0, 1] {
            let mut group = vec![at(STORE, event("valid", 1))];
            group.insert(position, at(STORE, event(bad, 1)));
            let result = adapter.push_event_group(group).await;
            expect_limit(CHECK, &format!("aggregate id {bad:?}"), result, |l| {
                matches!(l, LimitError::InvalidAggregateId { aggregate_id, .. }
                    if aggregate_id == bad)
            });
        }
    }

    let long_type = "T".repeat(limits.event_type_bytes_max + 1);
    let mut bad_types = vec!["", "A\nB", "\0", long_type.as_str()];
    bad_types.extend(RESERVED_EVENT_TYPES);
    assert!(
        bad_types.contains(&"__REPLAYED__"),
        "{CHECK}: __REPLAYED__ is reserved"
    );
    for bad in bad_types {
        let invalid = EncodedEvent {
            event_type: bad.to_owned(),
            ..event("valid", 1)
        };
        let group = vec![at(STORE, invalid)];
        let result = adapter.push_event_group(group).await;
        expect_limit(
            CHECK,
            &format!("event type {bad:?}"),
            result,
            |l| matches!(l, LimitError::InvalidEventType { event_type, .. } if event_type == bad),
        );
    }

    let long_store = "S".repeat(limits.event_store_id_bytes_max + 1);
    for bad in ["", "with space", "slash/", "é", "a\nb", long_store.as_str()] {
        let group = vec![at(STORE, event("valid", 1)), at(bad, event("valid", 1))];
        let result = adapter.push_event_group(group).await;
        expect_limit(CHECK, &format!("store id {bad:?}"), result, |l| {
            matches!(l, LimitError::InvalidEventStoreId { event_store_id, .. }
                if event_store_id == bad)
        });
    }
    let after = snapshot(CHECK, adapter, &slots).await;
    assert_eq!(after, before, "{CHECK}: nothing written by refused commits");
}

/// Reads with an invalid store or aggregate id are refused with the matching limit error.
pub async fn invalid_ids_are_refused_on_reads(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "invalid_ids_are_refused_on_reads";
    let adapter = &*adapter;
    push_versions(CHECK, adapter, STORE, "valid", 1).await;
    let options = GetEventsOptions::default();
    for bad in ["", "a\nb"] {
        let result = adapter.get_events(STORE, bad, &options).await;
        expect_limit(CHECK, &format!("reading aggregate {bad:?}"), result, |l| {
            matches!(l, LimitError::InvalidAggregateId { .. })
        });
    }
    for bad in ["", "with space", "../etc"] {
        let result = adapter.get_events(bad, "valid", &options).await;
        expect_limit(CHECK, &format!("reading store {bad:?}"), result, |l| {
            matches!(l, LimitError::InvalidEventStoreId { .. })
        });
        let result = adapter.list_aggregate_ids(bad, &Default::default()).await;
        expect_limit(CHECK, &format!("listing store {bad:?}"), result, |l| {
            matches!(l, LimitError::InvalidEventStoreId { .. })
        });
    }
}

/// A commit without events is refused with `EmptyGroup` and consumes no position.
pub async fn empty_group_is_refused(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "empty_group_is_refused";
    let adapter = &*adapter;
    let result = adapter.push_event_group(Vec::new()).await;
    expect_limit(CHECK, "an empty group", result, |l| {
        *l == LimitError::EmptyGroup
    });
    let positions = push(CHECK, adapter, vec![at(STORE, event("first", 1))]).await;
    assert_eq!(
        positions,
        [1],
        "{CHECK}: the first event after an empty group is at 1"
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshot storage (only for adapters that keep snapshots).

/// A snapshot record whose fields all derive from `seed`, with a state of `len` bytes.
fn snapshot_record(version: u64, seed: u64, len: usize) -> SnapshotRecord {
    let state = (0..len).map(|i| (seed as usize + i) as u8).collect();
    SnapshotRecord::new(version, seed % 7, seed * 10, seed as u32 ^ 0xa5a5, state)
}

/// Snapshot records read back byte for byte; `latest` returns the record with the highest
/// version at or below its bound, of exactly the asked store and aggregate; a put at an
/// existing version replaces the record.
pub async fn snapshots_round_trip_and_latest_is_at_or_below(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "snapshots_round_trip_and_latest_is_at_or_below";
    let Some(snapshots) = adapter.snapshots() else {
        return;
    };
    let records: Vec<SnapshotRecord> = [10, 20, 30]
        .into_iter()
        .map(|v| snapshot_record(v, v + 1, 64 * v as usize))
        .collect();
    for record in &records {
        snapshots
            .put(STORE, "agg", record)
            .expect("a snapshot is stored");
    }
    // Neighbours that must never be returned for `agg` of `STORE`.
    let other = snapshot_record(15, 99, 8);
    snapshots
        .put(OTHER_STORE, "agg", &other)
        .expect("a snapshot is stored");
    snapshots
        .put(STORE, "agg-2", &other)
        .expect("a snapshot is stored");
    snapshots
        .put(STORE, "ag", &other)
        .expect("a snapshot is stored");
    let latest = |bound: u64| {
        snapshots
            .latest(STORE, "agg", bound)
            .expect("snapshots are read")
    };
    for (bound, expected) in [
        (0, None),
        (9, None),
        (10, Some(&records[0])),
        (19, Some(&records[0])),
        (20, Some(&records[1])),
        (29, Some(&records[1])),
        (30, Some(&records[2])),
        (u64::MAX, Some(&records[2])),
    ] {
        assert_eq!(
            latest(bound).as_ref(),
            expected,
            "{CHECK}: latest at or below {bound}"
        );
    }
    assert_eq!(
        snapshots
            .latest(STORE, "nobody", u64::MAX)
            .expect("snapshots are read"),
        None,
        "{CHECK}: an aggregate without snapshots has none"
    );
    let replacement = snapshot_record(20, 1_000, 3);
    snapshots
        .put(STORE, "agg", &replacement)
        .expect("a snapshot is replaced");
    assert_eq!(
        latest(25),
        Some(replacement),
        "{CHECK}: a put replaces the record at its version"
    );
}

/// `prune` keeps exactly the newest records of one aggregate and reports how many it removed;
/// `delete` removes one record and nothing else; both are no-ops where there is nothing.
pub async fn snapshots_prune_keeps_the_newest_and_delete_removes_one(
    adapter: Arc<dyn StorageAdapter>,
) {
    const CHECK: &str = "snapshots_prune_keeps_the_newest_and_delete_removes_one";
    let Some(snapshots) = adapter.snapshots() else {
        return;
    };
    for version in 1..=6 {
        for aggregate in ["agg", "other"] {
            let record = snapshot_record(version * 10, version, 16);
            snapshots
                .put(STORE, aggregate, &record)
                .expect("a snapshot is stored");
        }
    }
    let versions = |aggregate: &str| {
        let mut found = Vec::new();
        let mut bound = u64::MAX;
        while let Some(record) = snapshots
            .latest(STORE, aggregate, bound)
            .expect("snapshots are read")
        {
            found.push(record.version);
            bound = record.version - 1;
        }
        found.reverse();
        found
    };
    assert_eq!(
        snapshots.prune(STORE, "agg", 2).expect("pruned"),
        4,
        "{CHECK}: removed count"
    );
    assert_eq!(versions("agg"), [50, 60], "{CHECK}: the newest are kept");
    assert_eq!(
        versions("other"),
        [10, 20, 30, 40, 50, 60],
        "{CHECK}: other aggregates untouched"
    );
    assert_eq!(
        snapshots.prune(STORE, "agg", 2).expect("pruned"),
        0,
        "{CHECK}: nothing more to prune"
    );
    assert_eq!(
        snapshots.prune(STORE, "nobody", 1).expect("pruned"),
        0,
        "{CHECK}: no records"
    );
    snapshots
        .delete(STORE, "other", 30)
        .expect("a snapshot is deleted");
    snapshots
        .delete(STORE, "other", 35)
        .expect("deleting a missing snapshot is fine");
    assert_eq!(
        versions("other"),
        [10, 20, 40, 50, 60],
        "{CHECK}: delete removes one record"
    );
}

// ---------------------------------------------------------------------------------------------
// The global log.

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
