//! What crypto-shredding costs per event (feature `personal`): the same registration event
//! pushed and replayed with its name and email as `Personal<String>` (encrypted with the
//! subject's key, XChaCha20-Poly1305) and as plain `String`s, on `InMemoryAdapter`, so that
//! storage is nearly free and the difference is the encryption and the key lookups.
//!
//! - `personal/push_events/{plain,encrypted}`: 1,000 events pushed in one commit, each about
//!   one of 100 subjects (whose keys exist after the first sample);
//! - `personal/replay/{plain,encrypted}`: an aggregate of 1,000 such events read and folded
//!   (`get_aggregate_state`), every value decrypted.
//!
//! Run with `cargo bench --features personal --bench personal`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::storage::InMemoryAdapter;
use annals::{EventDetail, EventStore, Personal};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

const EVENTS: u64 = 1_000;
const SUBJECTS: u64 = 100;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlainRegistered {
    name: String,
    email: String,
    region: String,
    level: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealedRegistered {
    name: Personal<String>,
    email: Personal<String>,
    region: String,
    level: u32,
}

annals::events! {
    pub enum PlainEvent { Registered(PlainRegistered) = "REGISTERED" }
}

annals::events! {
    pub enum SealedEvent { Registered(SealedRegistered) = "REGISTERED" }
}

fn subject(i: u64) -> String {
    format!("trainer-{:04}", i % SUBJECTS)
}

fn plain(i: u64) -> PlainEvent {
    PlainEvent::Registered(PlainRegistered {
        name: format!("Trainer Number {i:06}"),
        email: format!("trainer.{i:06}@pallet.town"),
        region: "Kanto".to_owned(),
        level: (i % 100) as u32,
    })
}

fn sealed(i: u64) -> SealedEvent {
    let s = subject(i);
    SealedEvent::Registered(SealedRegistered {
        name: Personal::new(s.clone(), format!("Trainer Number {i:06}")),
        email: Personal::new(s, format!("trainer.{i:06}@pallet.town")),
        region: "Kanto".to_owned(),
        level: (i % 100) as u32,
    })
}

fn count_plain(n: Option<u64>, _: &EventDetail<PlainEvent>) -> u64 {
    n.unwrap_or(0) + 1
}

fn count_sealed(n: Option<u64>, e: &EventDetail<SealedEvent>) -> u64 {
    let SealedEvent::Registered(r) = &e.event;
    n.unwrap_or(0) + u64::from(r.name.known().is_some())
}

/// Pushes `events` in one commit per iteration to a fresh aggregate of `store`.
fn bench_push<E: annals::Events>(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: &EventStore<E, u64>,
    events: &[E],
) where
    E::Metadata: Default,
{
    let mut group = c.benchmark_group("personal/push_events");
    group.throughput(Throughput::Elements(EVENTS));
    let mut aggregate = 0u64;
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    aggregate += 1;
                    store
                        .push_events(&format!("a{aggregate}"), 0, events, &Default::default())
                        .await
                        .expect("pushing to an in-memory store succeeds");
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn bench_replay<E: annals::Events>(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: &EventStore<E, u64>,
    expected: u64,
) {
    let mut group = c.benchmark_group("personal/replay");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| async {
            let folded = store
                .get_aggregate_state("a1", Default::default())
                .await
                .expect("the aggregate reads");
            assert_eq!(folded.aggregate.as_ref().map(|a| a.state), Some(expected));
            folded
        });
    });
    group.finish();
}

fn personal(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime starts");
    let plain_store = EventStore::builder("PLAIN", count_plain)
        .storage_adapter(Arc::new(InMemoryAdapter::new()))
        .build()
        .expect("store");
    let sealed_store = EventStore::builder("SEALED", count_sealed)
        .storage_adapter(Arc::new(InMemoryAdapter::new()))
        .build()
        .expect("store");
    let plain_events: Vec<PlainEvent> = (1..=EVENTS).map(plain).collect();
    let sealed_events: Vec<SealedEvent> = (1..=EVENTS).map(sealed).collect();
    bench_push(c, &rt, "plain", &plain_store, &plain_events);
    bench_push(c, &rt, "encrypted", &sealed_store, &sealed_events);
    bench_replay(c, &rt, "plain", &plain_store, EVENTS);
    bench_replay(c, &rt, "encrypted", &sealed_store, EVENTS);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = personal
}
criterion_main!(benches);
