//! Operations, their strategies, and running them against an adapter and the model at once.

use std::collections::HashMap;
use std::sync::Arc;

use annals::Durability;
use annals::engine::sim::{Damage, SimFs};
use annals::storage::{
    AppendEvent, EncodedEvent, GetEventsOptions, Limits, ListAggregateIdsOptions, LogAdapter,
    StorageAdapter, StorageError, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::model::{Model, Refusal};

/// Stores written to; reads and lists also ask a store that never gets an event.
pub const STORES: [&str; 2] = ["POKEMONS", "TRAINERS"];
const EMPTY_STORE: &str = "NOBODY";
/// Aggregates written to; reads also ask one that never gets an event.
const AGGREGATES: [&str; 4] = ["a", "b", "c", "d"];
const GHOST: &str = "ghost";
const BASE_MILLIS: i64 = 1_700_000_000_000;
/// Initial-event timestamps fall in a few milliseconds, so listing order often ties on time.
const TIMESTAMPS: u8 = 4;

/// Large enough for any generated commit (the model knows no limits), small enough for a
/// commit to fit the smallest segment.
pub fn limits() -> Limits {
    Limits {
        event_bytes_max: 16 << 10,
        group_events_max: 4,
        group_bytes_max: 56 << 10,
        ..Limits::default()
    }
}

/// Tiny segments and checkpoints, so a few operations roll segments over and checkpoint.
pub fn open_log(fs: &SimFs) -> Result<LogAdapter, StorageError> {
    LogAdapter::builder("/store")
        .file_system(Arc::new(fs.clone()))
        .durability(Durability::Immediate)
        .segment_bytes(64 << 10)
        .checkpoint_events(4)
        .limits(limits())
        .open()
}

/// The version an event asks for, relative to the aggregate's latest (counting earlier events
/// of the same group).
#[derive(Clone, Copy, Debug)]
pub enum Version {
    /// The next one: accepted unless another member conflicts.
    Next,
    /// One already taken (`EventAlreadyExists`); version 0 when none is taken yet.
    Taken(u8),
    /// Past the next one (`UnexpectedVersion`, a gap).
    Ahead(u8),
}

#[derive(Clone, Debug)]
pub struct Member {
    store: usize,
    aggregate: usize,
    version: Version,
    timestamp: u8,
    payload_bytes: usize,
}

#[derive(Clone, Debug)]
pub enum Op {
    Push(Member),
    Group(Vec<Member>),
    Read {
        store: usize,
        aggregate: usize,
        options: GetEventsOptions,
    },
    List {
        store: usize,
        limit: Option<usize>,
        after: Option<u8>,
        before: Option<u8>,
        reverse: Option<bool>,
    },
    /// Drop the adapter and open the store again.
    Reopen,
    /// Power loss: reopen from a crash image with this damage to unsynced writes.
    Crash(Damage),
}

fn version(conflicts: u32) -> impl Strategy<Value = Version> {
    prop_oneof![
        16 => Just(Version::Next),
        conflicts => any::<u8>().prop_map(Version::Taken),
        conflicts => (0u8..3).prop_map(Version::Ahead),
    ]
}

fn member(conflicts: u32) -> impl Strategy<Value = Member> {
    (
        0..STORES.len(),
        0..AGGREGATES.len(),
        version(conflicts),
        0..TIMESTAMPS,
        prop_oneof![1 => 0usize..64, 1 => 2000usize..12_000],
    )
        .prop_map(
            |(store, aggregate, version, timestamp, payload_bytes)| Member {
                store,
                aggregate,
                version,
                timestamp,
                payload_bytes,
            },
        )
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::DropUnsynced),
        Just(Damage::KeepUnsynced),
        any::<u64>().prop_map(|seed| Damage::RandomSubset { seed }),
        (prop_oneof![Just(512usize), Just(4096)], any::<u64>())
            .prop_map(|(sector, seed)| Damage::TornLast { sector, seed }),
        (prop_oneof![Just(512usize), Just(4096)], any::<u64>())
            .prop_map(|(sector, seed)| Damage::TornSectors { sector, seed }),
    ]
}

fn read() -> impl Strategy<Value = Op> {
    (
        0..=STORES.len(),
        0..=AGGREGATES.len(),
        proptest::option::of(0u64..8),
        proptest::option::of(0u64..8),
        proptest::option::of(0usize..5),
        any::<bool>(),
    )
        .prop_map(
            |(store, aggregate, min_version, max_version, limit, reverse)| Op::Read {
                store,
                aggregate,
                options: GetEventsOptions {
                    min_version,
                    max_version,
                    limit,
                    reverse,
                },
            },
        )
}

fn list() -> impl Strategy<Value = Op> {
    (
        0..=STORES.len(),
        proptest::option::of(0usize..4),
        proptest::option::of(0..TIMESTAMPS + 1),
        proptest::option::of(0..TIMESTAMPS + 1),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(store, limit, after, before, reverse)| Op::List {
            store,
            limit,
            after,
            before,
            reverse,
        })
}

/// One operation; `durable` adds reopen and crash, which only a durable adapter survives.
pub fn op(durable: bool) -> BoxedStrategy<Op> {
    let common = prop_oneof![
        6 => member(2).prop_map(Op::Push),
        3 => proptest::collection::vec(member(1), 2..=4).prop_map(Op::Group),
        3 => read(),
        2 => list(),
    ];
    if durable {
        prop_oneof![
            14 => common,
            1 => Just(Op::Reopen),
            1 => damage().prop_map(Op::Crash),
        ]
        .boxed()
    } else {
        common.boxed()
    }
}

fn store_name(i: usize) -> &'static str {
    STORES.get(i).copied().unwrap_or(EMPTY_STORE)
}

fn aggregate_name(i: usize) -> &'static str {
    AGGREGATES.get(i).copied().unwrap_or(GHOST)
}

fn timestamp(t: u8) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MILLIS + i64::from(t))
}

/// Turns members into events, resolving each version against the model as it stands (plus
/// earlier members of the same group). `op` numbers the operation, so payloads differ.
fn events(model: &Model, members: &[Member], op: usize) -> Vec<AppendEvent> {
    let mut pending: HashMap<(usize, usize), u64> = HashMap::new();
    members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (store, aggregate) = (store_name(m.store), aggregate_name(m.aggregate));
            let last = pending
                .get(&(m.store, m.aggregate))
                .copied()
                .unwrap_or_else(|| model.last_version(store, aggregate));
            let version = match m.version {
                Version::Next => last + 1,
                Version::Taken(_) if last == 0 => 0,
                Version::Taken(k) => last - u64::from(k) % last,
                Version::Ahead(k) => last + 2 + u64::from(k),
            };
            pending.insert((m.store, m.aggregate), version.max(last));
            let mut payload = format!("op {op} member {i};").into_bytes();
            payload.resize(m.payload_bytes.max(payload.len()), (op + i) as u8);
            AppendEvent {
                event_store_id: store.to_owned(),
                event: EncodedEvent {
                    aggregate_id: aggregate.to_owned(),
                    version,
                    timestamp: timestamp(m.timestamp),
                    event_type: format!("TYPE_{}", i % 3),
                    schema_version: 1 + (op % 2) as u32,
                    payload,
                    metadata: vec![0x80 | (i as u8 & 0x0f)],
                },
            }
        })
        .collect()
}

/// Whether an adapter's refusal is exactly the model's.
fn same_refusal(got: &StorageError, want: &Refusal) -> bool {
    match (got, want) {
        (
            StorageError::EventAlreadyExists(e),
            Refusal::Exists {
                store,
                aggregate,
                version,
            },
        ) => (&e.event_store_id, &e.aggregate_id, e.version) == (store, aggregate, *version),
        (
            StorageError::UnexpectedVersion {
                event_store_id,
                aggregate_id,
                version,
                expected,
            },
            Refusal::Unexpected {
                store,
                aggregate,
                version: v,
                expected: x,
            },
        ) => (event_store_id, aggregate_id, version, expected) == (store, aggregate, v, x),
        _ => false,
    }
}

async fn push(
    adapter: &dyn StorageAdapter,
    model: &mut Model,
    events: Vec<AppendEvent>,
) -> Result<(), TestCaseError> {
    let want = model.append(&events);
    let got = adapter.push_event_group(events).await;
    match (&got, &want) {
        (Ok(got), Ok(want)) => prop_assert_eq!(got, want, "positions"),
        (Err(got), Err(want)) => prop_assert!(
            same_refusal(got, want),
            "refused with {got:?}, expected {want:?}"
        ),
        _ => prop_assert!(false, "push returned {got:?}, the model says {want:?}"),
    }
    Ok(())
}

async fn list_pages(
    adapter: &dyn StorageAdapter,
    model: &Model,
    store: &str,
    first: ListAggregateIdsOptions,
) -> Result<(), TestCaseError> {
    let reverse = first.reverse.unwrap_or(false);
    let want = model.list(
        store,
        first.initial_event_after,
        first.initial_event_before,
        reverse,
    );
    let mut options = first.clone();
    let mut seen = 0;
    // Each page after the first passes only the token, which carries the first's options.
    loop {
        let page = adapter.list_aggregate_ids(store, &options).await;
        let page = page.map_err(|e| TestCaseError::fail(format!("listing failed: {e}")))?;
        let expected: Vec<_> = match first.limit {
            Some(l) => want.iter().skip(seen).take(l).cloned().collect(),
            None => want.clone(),
        };
        prop_assert_eq!(
            &page.aggregate_ids,
            &expected,
            "page after {} ids, {:?}",
            seen,
            first
        );
        seen += expected.len();
        let more = first.limit.is_some_and(|l| l > 0) && want.len() > seen;
        prop_assert_eq!(
            page.next_page_token.is_some(),
            more,
            "token after {} ids",
            seen
        );
        match page.next_page_token {
            Some(token) => {
                options = ListAggregateIdsOptions {
                    page_token: Some(token),
                    ..Default::default()
                }
            }
            None => return Ok(()),
        }
    }
}

/// Runs one read-only or writing operation on `adapter` and the model and compares results.
pub async fn apply(
    adapter: &dyn StorageAdapter,
    model: &mut Model,
    op: &Op,
    n: usize,
) -> Result<(), TestCaseError> {
    match op {
        Op::Push(m) => {
            let events = events(model, std::slice::from_ref(m), n);
            push(adapter, model, events).await
        }
        Op::Group(members) => {
            let events = events(model, members, n);
            push(adapter, model, events).await
        }
        Op::Read {
            store,
            aggregate,
            options,
        } => {
            let (store, aggregate) = (store_name(*store), aggregate_name(*aggregate));
            let got = adapter.get_events(store, aggregate, options).await;
            let got = got.map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
            prop_assert_eq!(got, model.read(store, aggregate, options), "{:?}", options);
            Ok(())
        }
        Op::List {
            store,
            limit,
            after,
            before,
            reverse,
        } => {
            let options = ListAggregateIdsOptions {
                limit: *limit,
                initial_event_after: after.map(timestamp),
                initial_event_before: before.map(timestamp),
                reverse: *reverse,
                page_token: None,
            };
            list_pages(adapter, model, store_name(*store), options).await
        }
        Op::Reopen | Op::Crash(_) => unreachable!("the runner handles reopen and crash"),
    }
}

/// Reads every stream and lists every store, comparing everything with the model.
pub async fn check_all(adapter: &dyn StorageAdapter, model: &Model) -> Result<(), TestCaseError> {
    let options = GetEventsOptions::default();
    for (store, aggregate) in model.streams() {
        let got = adapter.get_events(store, aggregate, &options).await;
        let got = got.map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
        prop_assert_eq!(got, model.read(store, aggregate, &options));
    }
    for store in STORES {
        list_pages(adapter, model, store, ListAggregateIdsOptions::default()).await?;
    }
    Ok(())
}
