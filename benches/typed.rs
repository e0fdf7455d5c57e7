//! Micro-benchmarks of the typed layer on `InMemoryAdapter`: what the typed API costs on top
//! of storage (encoding, validation, decoding, folding), with storage itself nearly free.
//!
//! - `push_event`: one typed event pushed through `EventStore::push_event`;
//! - `push_events/1000`: 1,000 typed events pushed in one commit through
//!   `EventStore::push_events` (payloads encoded into a reused buffer);
//! - `get_aggregate/1000`: an aggregate of 1,000 events read, decoded and folded;
//! - `get_aggregate_state/1000`: the same fold without keeping the events;
//! - `decode/1000`: 1,000 stored events turned into typed `EventDetail`s;
//! - `decode_payload/1000`: the MessagePack payloads alone, for comparison.
//!
//! Run with `cargo bench --bench typed`; it takes well under a minute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::storage::{GetEventsOptions, InMemoryAdapter, StorageAdapter, StoredEvent};
use annals::{EventDetail, EventStore, NewEvent, Timestamp, codec};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

/// The same ~200-byte payload as the comparison benchmark's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credited {
    account_id: String,
    amount_cents: i64,
    currency: String,
    reference: String,
    memo: String,
    tags: Vec<String>,
    booked_at_ms: i64,
    sequence: u64,
}

annals::events! {
    pub enum AccountEvent {
        Credited(Credited) = "ACCOUNT_CREDITED",
    }
}

#[derive(Clone, Debug, Default)]
struct Account {
    balance_cents: i64,
    credits: u64,
}

fn reduce(state: Option<Account>, event: &EventDetail<AccountEvent>) -> Account {
    let mut account = state.unwrap_or_default();
    match &event.event {
        AccountEvent::Credited(c) => {
            account.balance_cents += c.amount_cents;
            account.credits += 1;
        }
    }
    account
}

const AGGREGATE: &str = "acct-1";
const EVENTS: u64 = 1_000;

fn credited(sequence: u64) -> AccountEvent {
    AccountEvent::Credited(Credited {
        account_id: format!("acct-{:08}", sequence % 64 * 7919),
        amount_cents: 1_000 + (sequence % 64) as i64 * 37,
        currency: "EUR".to_owned(),
        reference: format!("INV-2024-{:06}", sequence % 64 * 104_729),
        memo: format!(
            "monthly subscription renewal, plan professional, seat {:03}",
            sequence % 64
        ),
        tags: vec!["billing".into(), "renewal".into(), "eu-west".into()],
        booked_at_ms: 1_714_566_896_789 + sequence as i64,
        sequence,
    })
}

fn new_event(version: u64) -> NewEvent<AccountEvent> {
    NewEvent::new(AGGREGATE, version, credited(version)).with_timestamp(
        Timestamp::from_unix_millis(1_714_566_896_789 + version as i64),
    )
}

fn store() -> (EventStore<AccountEvent, Account>, Arc<InMemoryAdapter>) {
    let adapter = Arc::new(InMemoryAdapter::new());
    let store = EventStore::builder("BENCH", reduce)
        .storage_adapter(adapter.clone())
        .build()
        .expect("BENCH is a valid event store id");
    (store, adapter)
}

/// A store holding one aggregate of `EVENTS` events.
fn filled_store(rt: &Runtime) -> (EventStore<AccountEvent, Account>, Arc<InMemoryAdapter>) {
    let (store, adapter) = store();
    rt.block_on(async {
        for version in 1..=EVENTS {
            store
                .push_event(new_event(version), Default::default())
                .await
                .expect("pushing the next version to an in-memory store succeeds");
        }
    });
    (store, adapter)
}

fn push_event(c: &mut Criterion, rt: &Runtime) {
    c.bench_function("push_event", |b| {
        // A fresh store per sample keeps memory bounded however many iterations run.
        b.iter_custom(|iters| {
            let (store, _) = store();
            rt.block_on(async {
                let start = Instant::now();
                for version in 1..=iters {
                    store
                        .push_event(new_event(version), Default::default())
                        .await
                        .expect("pushing the next version to an in-memory store succeeds");
                }
                start.elapsed()
            })
        });
    });
}

fn push_events(c: &mut Criterion, rt: &Runtime) {
    let events: Vec<AccountEvent> = (1..=EVENTS).map(credited).collect();
    let mut group = c.benchmark_group("push_events");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("1000", |b| {
        b.iter_custom(|iters| {
            let (store, _) = store();
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    store
                        .push_events(AGGREGATE, i * EVENTS, &events, &())
                        .await
                        .expect("pushing the next versions to an in-memory store succeeds");
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn get_aggregate(c: &mut Criterion, rt: &Runtime) {
    let (store, _) = filled_store(rt);
    let mut group = c.benchmark_group("get_aggregate");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("1000", |b| {
        b.to_async(rt).iter(|| async {
            let aggregate = store
                .get_existing_aggregate(AGGREGATE, Default::default())
                .await
                .expect("the aggregate exists");
            assert_eq!(aggregate.aggregate.version, EVENTS);
            aggregate
        });
    });
    group.finish();
    let mut group = c.benchmark_group("get_aggregate_state");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("1000", |b| {
        b.to_async(rt).iter(|| async {
            let folded = store
                .get_aggregate_state(AGGREGATE, Default::default())
                .await
                .expect("the aggregate reads");
            assert_eq!(folded.aggregate.as_ref().map(|a| a.version), Some(EVENTS));
            folded
        });
    });
    group.finish();
}

fn decode(c: &mut Criterion, rt: &Runtime) {
    let (store, adapter) = filled_store(rt);
    let stored: Vec<StoredEvent> = rt
        .block_on(adapter.get_events("BENCH", AGGREGATE, &GetEventsOptions::default()))
        .expect("reading an in-memory store succeeds");
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("1000", |b| {
        b.iter_batched(
            || stored.clone(),
            |events| {
                events
                    .into_iter()
                    .map(|s| store.decode(s))
                    .collect::<Result<Vec<_>, _>>()
                    .expect("stored events decode")
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();

    let mut group = c.benchmark_group("decode_payload");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("1000", |b| {
        b.iter(|| {
            stored
                .iter()
                .map(|s| codec::decode::<Credited>(&s.event.payload))
                .collect::<Result<Vec<_>, _>>()
                .expect("stored payloads decode")
        });
    });
    group.finish();
}

fn typed_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime starts");
    push_event(c, &rt);
    push_events(c, &rt);
    get_aggregate(c, &rt);
    decode(c, &rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = typed_layer
}
criterion_main!(benches);
