//! What snapshots buy and what they cost, on the log adapter (`annals::open` defaults: every
//! acknowledged append fdatasync'ed):
//!
//! - `get_aggregate` of one aggregate of 100,000 events (~200-byte payloads), as a full replay
//!   and from a snapshot: one at the last version (nothing to fold), and one 99 versions back
//!   (99 events to fold, the most a policy of `every(100)` leaves);
//! - `push_event` of single events by a store with and without a snapshot policy, pushes of
//!   the two stores interleaved so both see the same disk;
//! - `push_event` while another task keeps pushing to and reading another aggregate, once
//!   without snapshots and once with a policy, so that snapshot writes run during the timed
//!   pushes.
//!
//! Each figure is a percentile over individual calls, printed as a table, followed by
//! criterion's estimates for the two reads. Run with `cargo bench --bench snapshots` (about a
//! minute after the build); `ANNALS_BENCH_SNAPSHOT_EVENTS` changes the aggregate's size.
//! Without `--bench` (as `cargo test --all-targets` runs it) it makes one quick pass over every
//! path at a tiny size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annals::{EventDetail, EventStore, GetAggregateOptions, NewEvent, SnapshotPolicy, Timestamp};
use criterion::{Criterion, Throughput};
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

/// The same ~200-byte payload as the other benchmarks'.
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    balance_cents: i64,
    credits: u64,
    last_reference: String,
}

fn reduce(state: Option<Account>, event: &EventDetail<AccountEvent>) -> Account {
    let mut account = state.unwrap_or_default();
    match &event.event {
        AccountEvent::Credited(c) => {
            account.balance_cents += c.amount_cents;
            account.credits += 1;
            account.last_reference.clone_from(&c.reference);
        }
    }
    account
}

type Accounts = EventStore<AccountEvent, Account>;

const STORE: &str = "BENCH";
const AGGREGATE: &str = "acct-1";

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

fn new_event(aggregate_id: &str, version: u64) -> NewEvent<AccountEvent> {
    NewEvent::new(aggregate_id, version, credited(version)).with_timestamp(
        Timestamp::from_unix_millis(1_714_566_896_789 + version as i64),
    )
}

struct Setup {
    /// `every(100)`; its snapshot is at the last version, so reads fold no event.
    with: Accounts,
    /// A snapshot 99 versions before the last, so reads fold 99 events: the most `every(100)`
    /// ever folds.
    behind: Accounts,
    without: Accounts,
    events: u64,
}

/// A log store in `dir` holding one aggregate of `events` events in each of two stores, and
/// the stores of [`Setup`] over them, with their snapshots written.
fn setup(rt: &Runtime, dir: &std::path::Path, events: u64) -> Setup {
    let adapter = annals::open(dir).expect("the bench store opens");
    let without = EventStore::builder(STORE, reduce)
        .storage_adapter(adapter.clone())
        .build()
        .expect("BENCH is a valid id");
    let with = EventStore::builder(STORE, reduce)
        .storage_adapter(adapter.clone())
        .snapshots(SnapshotPolicy::every(100))
        .build()
        .expect("BENCH is a valid id");
    let point = events - 99;
    let behind = EventStore::builder("BENCH_BEHIND", reduce)
        .storage_adapter(adapter)
        .snapshots(SnapshotPolicy::when(
            move |_, e: &EventDetail<AccountEvent>| e.version == point,
        ))
        .build()
        .expect("BENCH_BEHIND is a valid id");
    rt.block_on(async {
        let mut version = 1;
        while version <= events {
            let end = (version + 499).min(events);
            let group = (version..=end)
                .flat_map(|v| {
                    [
                        without.group_event(new_event(AGGREGATE, v), Default::default()),
                        behind.group_event(new_event(AGGREGATE, v), Default::default()),
                    ]
                })
                .collect::<Result<Vec<_>, _>>()
                .expect("events encode");
            annals::push_event_group(group)
                .await
                .expect("the load commits");
            version = end + 1;
        }
        // The first read through snapshots replays everything and writes the snapshot.
        with.get_aggregate(AGGREGATE, GetAggregateOptions::default())
            .await
            .expect("the aggregate reads");
        with.flush_snapshots().await;
        behind
            .get_aggregate(AGGREGATE, GetAggregateOptions::default())
            .await
            .expect("the aggregate reads");
        behind.flush_snapshots().await;
    });
    Setup {
        with,
        behind,
        without,
        events,
    }
}

/// Times `runs` calls of `f`, returning the sorted durations.
fn sample(rt: &Runtime, runs: usize, mut f: impl AsyncFnMut(usize)) -> Vec<Duration> {
    rt.block_on(async {
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs {
            let start = Instant::now();
            f(i).await;
            times.push(start.elapsed());
        }
        times.sort();
        times
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn row(name: &str, times: &[Duration]) {
    println!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} |",
        times.len(),
        percentile(times, 0.5).as_secs_f64() * 1e3,
        percentile(times, 0.99).as_secs_f64() * 1e3,
        times.iter().sum::<Duration>().as_secs_f64() * 1e3 / times.len() as f64,
    );
}

async fn read(store: &Accounts, events: u64) -> usize {
    let read = store
        .get_existing_aggregate(AGGREGATE, GetAggregateOptions::default())
        .await
        .expect("the aggregate reads");
    assert_eq!(read.aggregate.version, events);
    read.events.len()
}

fn reads(rt: &Runtime, s: &Setup, full_runs: usize, snapshot_runs: usize) {
    let full = sample(rt, full_runs, async |_| {
        assert_eq!(read(&s.without, s.events).await as u64, s.events);
    });
    let snap = sample(rt, snapshot_runs, async |_| {
        assert_eq!(
            read(&s.with, s.events).await,
            0,
            "the snapshot is at the last version"
        );
    });
    let behind = sample(rt, snapshot_runs, async |_| {
        assert_eq!(
            read(&s.behind, s.events).await,
            99,
            "99 events follow the snapshot"
        );
    });
    let n = s.events;
    row(&format!("get_aggregate, {n} events, full replay"), &full);
    row(
        &format!("get_aggregate, {n} events, snapshot at the last version"),
        &snap,
    );
    row(
        &format!("get_aggregate, {n} events, snapshot + 99 events"),
        &behind,
    );
}

fn appends(rt: &Runtime, s: &Setup, runs: usize) {
    // Interleaved, so both stores see the same disk weather.
    let mut with = Vec::with_capacity(runs);
    let mut without = Vec::with_capacity(runs);
    rt.block_on(async {
        for version in 1..=runs as u64 {
            for (store, times, id) in [
                (&s.with, &mut with, "push-with"),
                (&s.without, &mut without, "push-without"),
            ] {
                let start = Instant::now();
                store
                    .push_event(new_event(id, version), Default::default())
                    .await
                    .expect("the push commits");
                times.push(start.elapsed());
            }
        }
    });
    with.sort();
    without.sort();
    row("push_event, store without snapshot policy", &without);
    row("push_event, store with `every(100)`", &with);
}

/// Times pushes by `writer` to one aggregate while another task keeps growing a second one
/// (`tag`) by 100 events and reading it through `reader`; with a snapshot policy, each of those
/// reads writes a snapshot during the timed pushes.
fn appends_during_reads(
    rt: &Runtime,
    reader: &Accounts,
    writer: &Accounts,
    tag: &str,
    runs: usize,
) -> Vec<Duration> {
    let reader = reader.clone();
    let writer = writer.clone();
    let read_side = format!("read-side-{tag}");
    let push_side = format!("push-side-{tag}");
    let mut times = rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let reading = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut version = 0;
                while !stop.load(Ordering::Relaxed) {
                    let group = (version + 1..=version + 100)
                        .map(|v| reader.group_event(new_event(&read_side, v), Default::default()))
                        .collect::<Result<Vec<_>, _>>()
                        .expect("events encode");
                    annals::push_event_group(group)
                        .await
                        .expect("the group commits");
                    version += 100;
                    reader
                        .get_aggregate(&read_side, GetAggregateOptions::default())
                        .await
                        .expect("the aggregate reads");
                }
                reader.flush_snapshots().await;
            })
        };
        let mut times = Vec::with_capacity(runs);
        for version in 1..=runs as u64 {
            let start = Instant::now();
            writer
                .push_event(new_event(&push_side, version), Default::default())
                .await
                .expect("the push commits");
            times.push(start.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        reading.await.expect("the reader finishes");
        times
    });
    times.sort();
    times
}

/// Pushes under the same concurrent load, without and with the snapshot writes it causes.
fn appends_during_snapshot_writes(rt: &Runtime, s: &Setup, runs: usize) {
    let quiet = appends_during_reads(rt, &s.without, &s.without, "quiet", runs);
    let writing = appends_during_reads(rt, &s.with, &s.with, "writing", runs);
    row("push_event, beside pushes and reads, no snapshots", &quiet);
    row(
        "push_event, beside pushes and reads writing snapshots",
        &writing,
    );
}

fn criterion_reads(rt: &Runtime, s: &Setup) {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("get_aggregate_100k");
    group.throughput(Throughput::Elements(s.events));
    group.bench_function("full_replay", |b| {
        b.to_async(rt).iter(|| read(&s.without, s.events));
    });
    group.bench_function("from_snapshot", |b| {
        b.to_async(rt).iter(|| read(&s.with, s.events));
    });
    group.bench_function("from_snapshot_plus_99", |b| {
        b.to_async(rt).iter(|| read(&s.behind, s.events));
    });
    group.finish();
    c.final_summary();
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let events = match std::env::var("ANNALS_BENCH_SNAPSHOT_EVENTS") {
        Ok(v) => v.parse().expect("ANNALS_BENCH_SNAPSHOT_EVENTS is a number"),
        Err(_) if bench => 100_000,
        Err(_) => 1_000,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime starts");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let s = setup(&rt, dir.path(), events);
    if !bench {
        // A smoke pass: every path runs once.
        reads(&rt, &s, 1, 1);
        appends(&rt, &s, 2);
        appends_during_snapshot_writes(&rt, &s, 2);
        return;
    }
    println!("\n| measurement | calls | p50 ms | p99 ms | mean ms |");
    println!("|---|--:|--:|--:|--:|");
    reads(&rt, &s, 11, 1_000);
    appends(&rt, &s, 1_000);
    appends_during_snapshot_writes(&rt, &s, 1_000);
    println!();
    criterion_reads(&rt, &s);
}
