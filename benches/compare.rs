//! Compares annals with SQLite and redb on the same event workloads, in one run.
//!
//! This is a standalone runner (`harness = false`), not a criterion benchmark: fsync-bound
//! workloads take milliseconds per operation, so it times operations itself, keeps every
//! latency sample for exact percentiles, and prints one markdown table at the end.
//!
//! # Engines
//! Every engine stores the same events (store id, aggregate id, version, global position,
//! timestamp, type, a ~200-byte MessagePack payload and metadata) and acknowledges a commit
//! only once it is durable, except where said:
//! - **annals** goes through the public [`StorageAdapter`] API on a tokio runtime, on the log
//!   adapter (`LogAdapter::builder(dir).open()`, default options: `Durability::Immediate`,
//!   an fdatasync before every acknowledgement, group commit across concurrent appenders).
//!   The adapter is chosen in one place, [`open_annals_adapter`].
//! - **SQLite** (bundled): WAL mode, `synchronous=FULL` (the WAL is fsynced at every commit),
//!   one table keyed by `(store, aggregate, version)`; one connection behind a mutex, since
//!   SQLite serialises writers anyway.
//! - **redb**, used directly: a table keyed by `(store, aggregate, version)` holding the event
//!   bytes, a one-row table with the last global position, default durability (fsync per
//!   commit); one shared `Database`, whose write transactions are serialised.
//!
//! SQLite and redb check only that a version is unique (as Castore does); annals also checks
//! that it is the next one.
//!
//! # Workloads
//! 1. one writer, one durable commit per event: commits/s, p50 and p99 latency;
//! 2. N concurrent writers (32 by default) on distinct aggregates: events/s, p99 latency and
//!    (annals) events per data sync, from `LogAdapter::counters()`;
//! 3. bulk: 1,000 events per commit: events/s;
//! 4. replay one aggregate of 100,000 events, decoding each payload with rmp-serde into a
//!    struct and folding it into a typed aggregate: events/s;
//! 5. bulk-load speed, open time (until ready to append) after a clean close and after a
//!    simulated crash, bytes on disk per event, and the process's resident memory after
//!    opening and reading a sample of aggregates, at each size of `ANNALS_BENCH_OPEN_EVENTS`;
//! 6. typed (`typed-*` workloads, rows "typed: …"): workloads 1–4 with events declared by
//!    `annals::events!` (two types, a nested struct, strings, ~200-byte payload, metadata
//!    without `Default`), built per push as an application builds them. annals pushes and reads
//!    them through `EventStore` on the same adapter (`push_event`, `push_batch`,
//!    `get_aggregate_state`, `get_aggregate`); SQLite and redb encode them the same way
//!    (MessagePack with named fields into a reused buffer) before their inserts, and decode
//!    payload and metadata and fold the same `EventDetail`s after their reads. The typed replay
//!    also reports the process's RSS growth over one fold. `typed-snapshots` (annals only)
//!    times `get_aggregate` under `SnapshotPolicy::every(1000)` right after a snapshot and 999
//!    events after it. `typed-tasks` (annals only) is typed workload 2 as an async
//!    application runs it: N tasks on the runtime instead of N blocked threads;
//! 7. raw (`raw`): one 300-byte `pwrite` + `fdatasync` per commit into a preallocated file,
//!    the floor under any durable single-event commit on this disk; then one `pwrite` of a
//!    bulk commit's bytes (`ANNALS_BENCH_BATCH` typed events' frames) + `fdatasync` per
//!    commit, the floor under bulk loads. Printed above the table with annals' typed single
//!    writer and typed bulk as fractions of them;
//! 8. scale (annals only): `ANNALS_BENCH_SCALE_EVENTS` events spread round-robin over
//!    `ANNALS_BENCH_SCALE_AGGREGATES` aggregates, loaded in commits of
//!    `ANNALS_BENCH_SCALE_BATCH` events under `Durability::None` and made durable with one
//!    `sync()` at the end; then open time (clean and after a crash), resident memory, and the
//!    latency of `get_events` on random aggregates.
//!
//! Throughput rows also report the process's CPU time per event (user + system, all threads,
//! from `/proc/self/stat`, Linux only): on a machine shared with other work, wall-clock
//! throughput falls with the CPU others take, while CPU per event shows what the workload
//! itself costs.
//!
//! Resident memory is the process's RSS (`/proc/self/statm`) after opening and reading,
//! minus the RSS just before opening, after returning freed heap to the OS (`malloc_trim`
//! on glibc) so that memory kept by the allocator from earlier workloads does not hide the
//! growth. It is Linux-only; elsewhere the figures are "n/a".
//!
//! # Running
//! `cargo bench --bench compare` runs everything with the defaults below and writes
//! `target/compare-report.md` and `target/compare-report.svg`. Without `--bench` (as under
//! `cargo test --all-targets`) it only runs a tiny smoke pass and writes nothing.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `ANNALS_BENCH_SECS` | 3 | seconds each timed write workload runs (after a warm-up) |
//! | `ANNALS_BENCH_MAX_EVENTS` | 500000 | a write workload also stops after this many events |
//! | `ANNALS_BENCH_WRITERS` | 32 | writer threads of workload 2 |
//! | `ANNALS_BENCH_BATCH` | 1000 | events per commit of workload 3 and of every bulk load |
//! | `ANNALS_BENCH_REPLAY_EVENTS` | 100000 | events of the replayed aggregate |
//! | `ANNALS_BENCH_REPLAY_RUNS` | 3 | replays timed; the median is reported |
//! | `ANNALS_BENCH_OPEN_EVENTS` | 100000,1000000 | store sizes of workload 5; empty skips it |
//! | `ANNALS_BENCH_SAMPLE` | 1000 | aggregates read after opening, before measuring memory |
//! | `ANNALS_BENCH_SCALE_EVENTS` | 1000000 | events of workload 8 |
//! | `ANNALS_BENCH_SCALE_AGGREGATES` | 100000 | aggregates of workload 8 |
//! | `ANNALS_BENCH_SCALE_BATCH` | 10000 | events per commit of workload 8's load |
//! | `ANNALS_BENCH_SCALE_READS` | 10000 | random `get_events` calls timed in workload 8 |
//! | `ANNALS_BENCH_ENGINES` | annals,sqlite,redb | engines to run, in column order |
//! | `ANNALS_BENCH_WORKLOADS` | all, see below | workloads to run |
//! | `ANNALS_BENCH_DIR` | target/compare-data | where the temporary databases live |
//!
//! The workloads are `single`, `concurrent`, `bulk`, `replay`, `typed-single`,
//! `typed-concurrent`, `typed-tasks`, `typed-bulk`, `typed-replay`, `typed-snapshots`, `raw`,
//! `open` and `scale`. A short run of the throughput rows only (about two minutes):
//! `ANNALS_BENCH_SECS=2 ANNALS_BENCH_WORKLOADS=single,concurrent,bulk,replay,typed-single,\
//! typed-concurrent,typed-tasks,typed-bulk,typed-replay,typed-snapshots,raw cargo bench \
//! --bench compare`.

use std::error::Error;
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use annals::storage::{
    self, AppendEvent, EncodedEvent, GetEventsOptions, StorageAdapter, Timestamp,
};
use annals::{
    Durability, EventDetail, EventStore, Events, GetAggregateOptions, NewEvent, SnapshotPolicy,
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use tokio::runtime::{Handle, Runtime};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The event store id every engine writes to.
const STORE: &str = "BENCH";
/// The type of every benchmark event.
const EVENT_TYPE: &str = "ACCOUNT_CREDITED";
/// Events per aggregate in bulk loads and in workload 3.
const BULK_AGGREGATE_EVENTS: u64 = 100;
/// Distinct payloads cycled through, encoded once before any timing.
const PAYLOAD_POOL: usize = 64;
/// Timestamp of the first event; event `i` is `i` milliseconds later.
const EPOCH_MS: i64 = 1_714_566_896_789;
/// The snapshot policy of the typed snapshot workload: `SnapshotPolicy::every(1000)`.
const SNAPSHOT_EVERY: u64 = 1_000;

// ---------------------------------------------------------------------------------------------
// The annals engine's adapter: the one place to change when the log adapter lands.
// ---------------------------------------------------------------------------------------------

/// The storage adapter the annals engine benchmarks, and whether it survives a reopen.
struct AnnalsAdapter {
    adapter: Arc<dyn StorageAdapter>,
    /// `true` for an adapter whose commits are durable and that reopens from `dir`.
    durable: bool,
    /// The log adapter's counters (events, syncs), when it is one.
    counters: Option<Arc<dyn Fn() -> annals::engine::LogCounters + Send + Sync>>,
}

/// SWITCH POINT. Opens (or creates) the annals adapter under test in the empty or existing
/// directory `dir`: the log adapter with its default options (`Durability::Immediate`).
/// Labels, reopen, disk and memory figures follow from `durable`; for the in-memory adapter
/// the line would be `Ok(AnnalsAdapter::in_memory(storage::InMemoryAdapter::new()))`.
fn open_annals_adapter(dir: &Path, runtime: &Handle) -> BenchResult<AnnalsAdapter> {
    let _ = runtime;
    Ok(AnnalsAdapter::log(
        storage::LogAdapter::builder(dir).open()?,
    ))
}

/// The log adapter for workload 8's bulk load: default options but `Durability::None`, so
/// appends are acknowledged after the write and one `sync()` makes the load durable.
fn open_annals_bulk_loader(dir: &Path) -> BenchResult<Arc<storage::LogAdapter>> {
    Ok(Arc::new(
        storage::LogAdapter::builder(dir)
            .durability(Durability::None)
            .open()?,
    ))
}

// The switch point uses one of these two constructors; the other stays unused.
#[allow(dead_code)]
impl AnnalsAdapter {
    fn in_memory(adapter: impl StorageAdapter) -> Self {
        AnnalsAdapter {
            adapter: Arc::new(adapter),
            durable: false,
            counters: None,
        }
    }

    fn log(adapter: storage::LogAdapter) -> Self {
        let log = Arc::new(adapter);
        let counted = Arc::clone(&log);
        AnnalsAdapter {
            adapter: log,
            durable: true,
            counters: Some(Arc::new(move || counted.counters())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events and the typed aggregate they fold into
// ---------------------------------------------------------------------------------------------

/// The payload of every event: about 200 bytes once encoded with named fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AccountCredited {
    account_id: String,
    amount_cents: i64,
    currency: String,
    reference: String,
    memo: String,
    tags: Vec<String>,
    booked_at_ms: i64,
    sequence: u64,
}

/// The metadata of every event.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Metadata {
    correlation_id: String,
}

fn payload_pool() -> BenchResult<Vec<Vec<u8>>> {
    (0..PAYLOAD_POOL)
        .map(|i| {
            let payload = AccountCredited {
                account_id: format!("acct-{:08}", i * 7919),
                amount_cents: 1_000 + i as i64 * 37,
                currency: "EUR".to_owned(),
                reference: format!("INV-2024-{:06}", i * 104_729),
                memo: format!("monthly subscription renewal, plan professional, seat {i:03}"),
                tags: vec![
                    "billing".to_owned(),
                    "renewal".to_owned(),
                    "eu-west".to_owned(),
                ],
                booked_at_ms: EPOCH_MS + i as i64,
                sequence: i as u64,
            };
            Ok(rmp_serde::to_vec_named(&payload)?)
        })
        .collect()
}

fn metadata_bytes() -> BenchResult<Vec<u8>> {
    let metadata = Metadata {
        correlation_id: "0b6f8c2e-5d1a-4c3b-9e7f".to_owned(),
    };
    Ok(rmp_serde::to_vec_named(&metadata)?)
}

/// Pre-encoded event contents, shared by every engine and workload.
struct Corpus {
    payloads: Vec<Vec<u8>>,
    metadata: Vec<u8>,
    typed: TypedCorpus,
}

impl Corpus {
    fn new() -> BenchResult<Self> {
        Ok(Corpus {
            payloads: payload_pool()?,
            metadata: metadata_bytes()?,
            typed: TypedCorpus::new(),
        })
    }

    fn event<'a>(&'a self, aggregate: &'a str, version: u64) -> BenchEvent<'a> {
        BenchEvent {
            aggregate,
            version,
            timestamp_ms: EPOCH_MS + version as i64,
            event_type: EVENT_TYPE,
            payload: &self.payloads[version as usize % self.payloads.len()],
            metadata: &self.metadata,
        }
    }

    /// Appends version `version` of `aggregate` in its own commit: pre-encoded bytes through
    /// the engine, or with `typed` a typed event built, encoded and pushed.
    fn append_one(
        &self,
        engine: &dyn Engine,
        typed: bool,
        aggregate: &str,
        version: u64,
    ) -> BenchResult<()> {
        if typed {
            engine.typed_push(vec![self.typed.new_event(aggregate, version)])
        } else {
            engine.append_one(&self.event(aggregate, version))
        }
    }

    fn payload_bytes_mean(&self) -> usize {
        self.payloads.iter().map(Vec::len).sum::<usize>() / self.payloads.len()
    }
}

/// One event to append, borrowed from the corpus.
#[derive(Clone, Copy, Debug)]
struct BenchEvent<'a> {
    aggregate: &'a str,
    version: u64,
    timestamp_ms: i64,
    event_type: &'a str,
    payload: &'a [u8],
    metadata: &'a [u8],
}

/// One event as read back, borrowed from the engine's buffers where it can be.
#[derive(Clone, Copy, Debug)]
struct EventView<'a> {
    version: u64,
    position: u64,
    timestamp_ms: i64,
    event_type: &'a str,
    payload: &'a [u8],
    metadata: &'a [u8],
}

/// The typed aggregate of workload 4.
#[derive(Debug, Default)]
struct Account {
    version: u64,
    last_position: u64,
    balance_cents: i64,
    credits: u64,
    memo_bytes: usize,
}

impl Account {
    /// Decodes the payload and folds it in, checking the event comes in version order.
    fn apply(&mut self, event: EventView<'_>) -> BenchResult<()> {
        if event.version != self.version + 1 || event.position <= self.last_position {
            return Err(format!(
                "event v{} at position {} read after v{} at position {}",
                event.version, event.position, self.version, self.last_position
            )
            .into());
        }
        if event.event_type != EVENT_TYPE {
            return Err(format!("unexpected event type {:?}", event.event_type).into());
        }
        let credited: AccountCredited = rmp_serde::from_slice(event.payload)?;
        self.version = event.version;
        self.last_position = event.position;
        self.balance_cents += credited.amount_cents;
        self.credits += 1;
        self.memo_bytes += credited.memo.len() + credited.reference.len();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The typed workloads' events: declared with `events!`, as an application declares them
// ---------------------------------------------------------------------------------------------

/// An amount with its currency: the nested struct of the typed payloads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Money {
    cents: i64,
    currency: String,
}

/// The typed workloads' main payload: about 200 bytes once encoded with named fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credited {
    account_id: String,
    amount: Money,
    reference: String,
    memo: String,
    tags: Vec<String>,
    booked_at_ms: i64,
    sequence: u64,
}

/// The other event type, one event in eight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Debited {
    account_id: String,
    amount: Money,
    reference: String,
    memo: String,
}

/// The metadata of every typed event; deliberately without `Default`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trace {
    correlation_id: String,
    actor: String,
}

annals::events! {
    /// The events of the typed workloads.
    pub enum AccountEvent {
        type Metadata = Trace;
        Credited(Credited) = "ACCOUNT_CREDITED",
        Debited(Debited) = "ACCOUNT_DEBITED",
    }
}

/// The typed aggregate's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Balance {
    cents: i64,
    movements: u64,
    last_reference: String,
}

fn reduce(state: Option<Balance>, event: &EventDetail<AccountEvent>) -> Balance {
    let mut balance = state.unwrap_or_default();
    match &event.event {
        AccountEvent::Credited(c) => {
            balance.cents += c.amount.cents;
            balance.last_reference.clone_from(&c.reference);
        }
        AccountEvent::Debited(d) => {
            balance.cents -= d.amount.cents;
            balance.last_reference.clone_from(&d.reference);
        }
    }
    balance.movements += 1;
    balance
}

type Accounts = EventStore<AccountEvent, Balance>;

/// The typed events cycled through (built once; each push clones one, as an application
/// builds a fresh value).
struct TypedCorpus {
    events: Vec<AccountEvent>,
    trace: Trace,
}

impl TypedCorpus {
    fn new() -> Self {
        let events = (0..PAYLOAD_POOL)
            .map(|i| {
                let amount = Money {
                    cents: 1_000 + i as i64 * 37,
                    currency: "EUR".to_owned(),
                };
                if i % 8 == 7 {
                    AccountEvent::Debited(Debited {
                        account_id: format!("acct-{:08}", i * 7919),
                        amount,
                        reference: format!("REF-2024-{:06}", i * 104_729),
                        memo: format!("card payment, terminal {i:04}, contactless, EU"),
                    })
                } else {
                    AccountEvent::Credited(Credited {
                        account_id: format!("acct-{:08}", i * 7919),
                        amount,
                        reference: format!("INV-2024-{:06}", i * 104_729),
                        memo: format!("monthly subscription renewal, plan pro, seat {i:03}"),
                        tags: vec!["billing".to_owned(), "renewal".to_owned()],
                        booked_at_ms: EPOCH_MS + i as i64,
                        sequence: i as u64,
                    })
                }
            })
            .collect();
        TypedCorpus {
            events,
            trace: Trace {
                correlation_id: "0b6f8c2e-5d1a-4c3b-9e7f".to_owned(),
                actor: "billing-service".to_owned(),
            },
        }
    }

    /// Version `version` of `aggregate`, as an application builds it.
    fn new_event(&self, aggregate: &str, version: u64) -> NewEvent<AccountEvent> {
        let event = self.events[version as usize % self.events.len()].clone();
        NewEvent::with_metadata_of(aggregate, version, event, self.trace.clone())
    }

    /// Mean size of an encoded payload and of the metadata.
    fn encoded_bytes(&self) -> (usize, usize) {
        let payloads: usize = self
            .events
            .iter()
            .map(|e| e.encode_payload().map_or(0, |p| p.len()))
            .sum();
        let metadata = annals::codec::encode(&self.trace).map_or(0, |m| m.len());
        (payloads / self.events.len(), metadata)
    }
}

thread_local! {
    /// The reused encoding buffer of SQLite's and redb's typed pushes.
    static TYPED_SCRATCH: std::cell::RefCell<Vec<u8>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

/// What a typed fold gives: the last version, the state, the events kept.
struct Folded {
    version: u64,
    state: Balance,
    kept: usize,
}

// ---------------------------------------------------------------------------------------------
// The engines
// ---------------------------------------------------------------------------------------------

/// What a workload needs from a storage engine. Every append is one commit that is durable
/// (as far as the engine promises) when the call returns.
trait Engine: Send + Sync {
    /// Appends one event in its own commit.
    fn append_one(&self, event: &BenchEvent<'_>) -> BenchResult<()> {
        self.append_batch(std::slice::from_ref(event))
    }

    /// Appends `events` in one atomic commit.
    fn append_batch(&self, events: &[BenchEvent<'_>]) -> BenchResult<()>;

    /// Visits the events of `aggregate` in version order.
    fn read_aggregate(
        &self,
        aggregate: &str,
        visit: &mut (dyn FnMut(EventView<'_>) -> BenchResult<()> + Send),
    ) -> BenchResult<()>;

    /// Pushes typed events in one atomic commit. The default does what the typed layer does
    /// on top of the engine: encodes each payload and metadata with MessagePack (named
    /// fields) into a reused buffer, then appends the bytes.
    fn typed_push(&self, events: Vec<NewEvent<AccountEvent>>) -> BenchResult<()> {
        let timestamp_ms = Timestamp::now().unix_millis();
        TYPED_SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            buf.clear();
            let mut spans = Vec::with_capacity(events.len());
            for e in &events {
                let start = buf.len();
                e.event.encode_payload_into(&mut buf)?;
                let middle = buf.len();
                annals::codec::encode_into(&e.metadata, &mut buf)?;
                spans.push((start, middle, buf.len()));
            }
            let batch: Vec<BenchEvent<'_>> = events
                .iter()
                .zip(&spans)
                .map(|(e, &(start, middle, end))| BenchEvent {
                    aggregate: &e.aggregate_id,
                    version: e.version,
                    timestamp_ms: e.timestamp.map_or(timestamp_ms, Timestamp::unix_millis),
                    event_type: e.event.event_type(),
                    payload: &buf[start..middle],
                    metadata: &buf[middle..end],
                })
                .collect();
            self.append_batch(&batch)
        })
    }

    /// Decodes the events of `aggregate` (payload and metadata) and folds them into a
    /// `Balance`; with `keep`, also keeps every decoded event (Castore's getAggregate shape).
    fn typed_fold(&self, aggregate: &str, keep: bool) -> BenchResult<Folded> {
        let mut id = aggregate.to_owned();
        let mut state = None;
        let mut version = 0;
        let mut kept = Vec::new();
        self.read_aggregate(aggregate, &mut |view| {
            let event = AccountEvent::decode_payload(view.event_type, view.payload)?;
            let metadata: Trace = annals::codec::decode(view.metadata)?;
            let detail = EventDetail {
                aggregate_id: std::mem::take(&mut id),
                version: view.version,
                timestamp: Timestamp::from_unix_millis(view.timestamp_ms),
                event,
                metadata,
            };
            state = Some(reduce(state.take(), &detail));
            version = detail.version;
            if keep {
                id = detail.aggregate_id.clone();
                kept.push(detail);
            } else {
                id = detail.aggregate_id;
            }
            Ok(())
        })?;
        Ok(Folded {
            version,
            state: state.unwrap_or_default(),
            kept: std::hint::black_box(kept).len(),
        })
    }

    /// The typed stores with snapshot policies `every(1000)` and `SnapshotPolicy::default()`,
    /// on engines that have them.
    fn snapshot_stores(&self) -> Option<(Accounts, Accounts, Handle)> {
        None
    }

    /// The typed store (no snapshots) and its runtime, on engines with an async API.
    fn typed_store(&self) -> Option<(Accounts, Handle)> {
        None
    }

    /// Events and data syncs so far, on engines that count them.
    fn events_and_syncs(&self) -> Option<(u64, u64)> {
        None
    }

    /// Closes the engine cleanly; reopening is [`EngineKind::open`] on the same directory.
    fn close(self: Box<Self>) -> BenchResult<()>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EngineKind {
    Annals,
    Sqlite,
    Redb,
}

impl FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "annals" => Ok(EngineKind::Annals),
            "sqlite" => Ok(EngineKind::Sqlite),
            "redb" => Ok(EngineKind::Redb),
            other => Err(format!("unknown engine {other:?} (annals, sqlite, redb)")),
        }
    }
}

/// Per-run context: the tokio runtime the annals engine drives its futures on.
struct Context {
    runtime: Runtime,
}

/// An engine opened in a directory, with what the report needs to know about it.
struct Opened {
    engine: Box<dyn Engine>,
    /// Whether its data survives close and open (and sits on disk).
    durable: bool,
}

impl EngineKind {
    /// Opens (or creates) the engine's store in `dir` and returns once it can append.
    fn open(self, dir: &Path, ctx: &Context) -> BenchResult<Opened> {
        Ok(match self {
            EngineKind::Annals => {
                let handle = ctx.runtime.handle().clone();
                let _runtime = handle.enter();
                let opened = open_annals_adapter(dir, &handle)?;
                Opened {
                    durable: opened.durable,
                    engine: Box::new(AnnalsEngine::new(opened, handle)?),
                }
            }
            EngineKind::Sqlite => Opened {
                engine: Box::new(SqliteEngine::open(dir)?),
                durable: true,
            },
            EngineKind::Redb => Opened {
                engine: Box::new(RedbEngine::open(dir)?),
                durable: true,
            },
        })
    }

    /// The column label; `durable` tells the annals adapters apart.
    fn label(self, durable: bool) -> &'static str {
        match (self, durable) {
            (EngineKind::Annals, false) => "annals (in-memory)",
            (EngineKind::Annals, true) => "annals (log)",
            (EngineKind::Sqlite, _) => "SQLite",
            (EngineKind::Redb, _) => "redb",
        }
    }
}

/// annals through the public `StorageAdapter` API, and its typed workloads through an
/// `EventStore` on the same adapter.
struct AnnalsEngine {
    adapter: Arc<dyn StorageAdapter>,
    counters: Option<Arc<dyn Fn() -> annals::engine::LogCounters + Send + Sync>>,
    runtime: Handle,
    typed: Accounts,
    snapshotted: Accounts,
    budgeted: Accounts,
}

impl AnnalsEngine {
    fn new(opened: AnnalsAdapter, runtime: Handle) -> BenchResult<Self> {
        let AnnalsAdapter {
            adapter, counters, ..
        } = opened;
        let typed = EventStore::builder(STORE, reduce)
            .storage_adapter(adapter.clone())
            .build()?;
        let snapshotted = EventStore::builder(STORE, reduce)
            .storage_adapter(adapter.clone())
            .snapshots(SnapshotPolicy::every(SNAPSHOT_EVERY))
            .build()?;
        let budgeted = EventStore::builder(STORE, reduce)
            .storage_adapter(adapter.clone())
            .snapshots(SnapshotPolicy::default())
            .build()?;
        Ok(AnnalsEngine {
            adapter,
            counters,
            runtime,
            typed,
            snapshotted,
            budgeted,
        })
    }

    fn to_append(event: &BenchEvent<'_>) -> AppendEvent {
        AppendEvent {
            event_store_id: STORE.to_owned(),
            event: EncodedEvent {
                aggregate_id: event.aggregate.to_owned(),
                version: event.version,
                timestamp: Timestamp::from_unix_millis(event.timestamp_ms),
                event_type: event.event_type.to_owned(),
                schema_version: 1,
                payload: event.payload.to_vec(),
                metadata: event.metadata.to_vec(),
            },
        }
    }
}

impl Engine for AnnalsEngine {
    fn append_one(&self, event: &BenchEvent<'_>) -> BenchResult<()> {
        let append = Self::to_append(event);
        self.runtime.block_on(self.adapter.push_event(append))?;
        Ok(())
    }

    fn append_batch(&self, events: &[BenchEvent<'_>]) -> BenchResult<()> {
        let group = events.iter().map(Self::to_append).collect();
        self.runtime
            .block_on(self.adapter.push_event_group(group))?;
        Ok(())
    }

    fn typed_push(&self, mut events: Vec<NewEvent<AccountEvent>>) -> BenchResult<()> {
        if events.len() == 1
            && let Some(event) = events.pop()
        {
            self.runtime
                .block_on(self.typed.push_event(event, Default::default()))?;
        } else {
            self.runtime.block_on(self.typed.push_batch(events))?;
        }
        Ok(())
    }

    fn typed_fold(&self, aggregate: &str, keep: bool) -> BenchResult<Folded> {
        let options = GetAggregateOptions::default();
        let (aggregate, kept) = if keep {
            let got = self
                .runtime
                .block_on(self.typed.get_aggregate(aggregate, options))?;
            (got.aggregate, std::hint::black_box(got.events).len())
        } else {
            let got = self
                .runtime
                .block_on(self.typed.get_aggregate_state(aggregate, options))?;
            (got.aggregate, 0)
        };
        let aggregate = aggregate.ok_or("the replayed aggregate is empty")?;
        Ok(Folded {
            version: aggregate.version,
            state: aggregate.state,
            kept,
        })
    }

    fn typed_store(&self) -> Option<(Accounts, Handle)> {
        Some((self.typed.clone(), self.runtime.clone()))
    }

    fn events_and_syncs(&self) -> Option<(u64, u64)> {
        self.counters.as_ref().map(|counters| {
            let c = counters();
            (c.events, c.syncs)
        })
    }

    fn snapshot_stores(&self) -> Option<(Accounts, Accounts, Handle)> {
        Some((
            self.snapshotted.clone(),
            self.budgeted.clone(),
            self.runtime.clone(),
        ))
    }

    fn read_aggregate(
        &self,
        aggregate: &str,
        visit: &mut (dyn FnMut(EventView<'_>) -> BenchResult<()> + Send),
    ) -> BenchResult<()> {
        // Borrowed from the adapter's read buffer, as SQLite's and redb's rows are.
        let options = GetEventsOptions::default();
        let mut failed = None;
        self.runtime.block_on(self.adapter.visit_events(
            STORE,
            aggregate,
            &options,
            &mut |event| {
                let view = EventView {
                    version: event.version,
                    position: event.position,
                    timestamp_ms: event.timestamp.unix_millis(),
                    event_type: event.event_type,
                    payload: event.payload,
                    metadata: event.metadata,
                };
                match visit(view) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        failed = Some(e);
                        ControlFlow::Break(())
                    }
                }
            },
        ))?;
        failed.map_or(Ok(()), Err)
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        // Inside the runtime, in case the adapter's drop stops background tasks.
        let _runtime = self.runtime.enter();
        self.runtime.block_on(self.snapshotted.flush_snapshots());
        self.runtime.block_on(self.budgeted.flush_snapshots());
        drop(self.typed);
        drop(self.snapshotted);
        drop(self.budgeted);
        drop(self.adapter);
        Ok(())
    }
}

/// SQLite: one `events` table, WAL, `synchronous=FULL`, one connection behind a mutex.
struct SqliteEngine {
    state: Mutex<SqliteState>,
}

struct SqliteState {
    conn: rusqlite::Connection,
    last_position: u64,
}

const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS events(
    store TEXT, aggregate TEXT, version INTEGER, position INTEGER, timestamp INTEGER,
    type TEXT, payload BLOB, metadata BLOB,
    PRIMARY KEY(store, aggregate, version))";

const SQLITE_INSERT: &str = "INSERT INTO events
    (store, aggregate, version, position, timestamp, type, payload, metadata)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const SQLITE_SELECT: &str =
    "SELECT version, position, timestamp, type, payload, metadata FROM events
    WHERE store = ?1 AND aggregate = ?2 ORDER BY version";

impl SqliteEngine {
    fn open(dir: &Path) -> BenchResult<Self> {
        let conn = rusqlite::Connection::open(dir.join("events.sqlite"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("SQLite refused WAL mode (got {mode:?})").into());
        }
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
        conn.execute_batch(SQLITE_SCHEMA)?;
        // Rows are inserted in position order, so the last rowid holds the last position:
        // a B-tree descent instead of a scan of `position`, which has no index.
        let last: Option<i64> = conn
            .query_row(
                "SELECT position FROM events ORDER BY rowid DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        Ok(SqliteEngine {
            state: Mutex::new(SqliteState {
                conn,
                last_position: u64::try_from(last.unwrap_or(0))?,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SqliteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine for SqliteEngine {
    fn append_batch(&self, events: &[BenchEvent<'_>]) -> BenchResult<()> {
        let mut state = self.lock();
        let SqliteState {
            conn,
            last_position,
        } = &mut *state;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut position = *last_position;
        {
            let mut insert = tx.prepare_cached(SQLITE_INSERT)?;
            for event in events {
                position += 1;
                insert.execute(params![
                    STORE,
                    event.aggregate,
                    i64::try_from(event.version)?,
                    i64::try_from(position)?,
                    event.timestamp_ms,
                    event.event_type,
                    event.payload,
                    event.metadata,
                ])?;
            }
        }
        tx.commit()?;
        *last_position = position;
        Ok(())
    }

    fn read_aggregate(
        &self,
        aggregate: &str,
        visit: &mut (dyn FnMut(EventView<'_>) -> BenchResult<()> + Send),
    ) -> BenchResult<()> {
        let state = self.lock();
        let mut select = state.conn.prepare_cached(SQLITE_SELECT)?;
        let mut rows = select.query(params![STORE, aggregate])?;
        while let Some(row) = rows.next()? {
            visit(EventView {
                version: u64::try_from(row.get::<_, i64>(0)?)?,
                position: u64::try_from(row.get::<_, i64>(1)?)?,
                timestamp_ms: row.get(2)?,
                event_type: row.get_ref(3)?.as_str()?,
                payload: row.get_ref(4)?.as_blob()?,
                metadata: row.get_ref(5)?.as_blob()?,
            })?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        let state = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        state.conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

/// redb used directly: events keyed by `(store, aggregate, version)`.
struct RedbEngine {
    db: redb::Database,
}

const REDB_EVENTS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("events");
const REDB_META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REDB_LAST_POSITION: &str = "last_position";

impl RedbEngine {
    fn open(dir: &Path) -> BenchResult<Self> {
        let db = redb::Database::create(dir.join("events.redb"))?;
        let txn = db.begin_read()?;
        let last_position = match txn.open_table(REDB_META) {
            Ok(meta) => meta.get(REDB_LAST_POSITION)?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        drop(txn);
        if last_position.is_none() {
            let txn = db.begin_write()?;
            txn.open_table(REDB_EVENTS)?;
            txn.open_table(REDB_META)?.insert(REDB_LAST_POSITION, 0)?;
            txn.commit()?;
        }
        Ok(RedbEngine { db })
    }

    /// The stored value: position, timestamp, type, payload and metadata, length-prefixed.
    fn encode(buf: &mut Vec<u8>, position: u64, event: &BenchEvent<'_>) -> BenchResult<()> {
        buf.clear();
        buf.extend_from_slice(&position.to_le_bytes());
        buf.extend_from_slice(&event.timestamp_ms.to_le_bytes());
        buf.extend_from_slice(&u16::try_from(event.event_type.len())?.to_le_bytes());
        buf.extend_from_slice(event.event_type.as_bytes());
        buf.extend_from_slice(&u32::try_from(event.payload.len())?.to_le_bytes());
        buf.extend_from_slice(event.payload);
        buf.extend_from_slice(event.metadata);
        Ok(())
    }

    fn decode(version: u64, bytes: &[u8]) -> BenchResult<EventView<'_>> {
        let corrupt = || format!("redb value of v{version} is malformed");
        let take = |at: usize, len: usize| bytes.get(at..at + len).ok_or_else(corrupt);
        let position = u64::from_le_bytes(take(0, 8)?.try_into()?);
        let type_len = usize::from(u16::from_le_bytes(take(16, 2)?.try_into()?));
        let event_type = std::str::from_utf8(take(18, type_len)?)?;
        let at = 18 + type_len;
        let payload_len = u32::from_le_bytes(take(at, 4)?.try_into()?);
        let payload_len = usize::try_from(payload_len)?;
        let payload = take(at + 4, payload_len)?;
        let metadata = bytes.get(at + 4 + payload_len..).ok_or_else(corrupt)?;
        Ok(EventView {
            version,
            position,
            timestamp_ms: i64::from_le_bytes(take(8, 8)?.try_into()?),
            event_type,
            payload,
            metadata,
        })
    }
}

impl Engine for RedbEngine {
    fn append_batch(&self, events: &[BenchEvent<'_>]) -> BenchResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(REDB_META)?;
            let mut position = meta.get(REDB_LAST_POSITION)?.map_or(0, |v| v.value());
            let mut table = txn.open_table(REDB_EVENTS)?;
            let mut value = Vec::with_capacity(512);
            for event in events {
                position += 1;
                Self::encode(&mut value, position, event)?;
                let key = (STORE, event.aggregate, event.version);
                if table.insert(key, value.as_slice())?.is_some() {
                    // Dropping the transaction aborts the commit.
                    return Err(
                        format!("{} v{} already exists", event.aggregate, event.version).into(),
                    );
                }
            }
            meta.insert(REDB_LAST_POSITION, position)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn read_aggregate(
        &self,
        aggregate: &str,
        visit: &mut (dyn FnMut(EventView<'_>) -> BenchResult<()> + Send),
    ) -> BenchResult<()> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REDB_EVENTS)?;
        for entry in table.range((STORE, aggregate, 1)..=(STORE, aggregate, u64::MAX))? {
            let (key, value) = entry?;
            visit(Self::decode(key.value().2, value.value())?)?;
        }
        Ok(())
    }

    fn close(self: Box<Self>) -> BenchResult<()> {
        drop(self.db);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

struct Config {
    /// `false` for the smoke pass run by `cargo test`: tiny sizes, no report files.
    full: bool,
    secs: f64,
    max_events: u64,
    writers: usize,
    batch: usize,
    replay_events: u64,
    replay_runs: usize,
    open_events: Vec<u64>,
    /// Aggregates read after an open, before resident memory is measured.
    sample: u64,
    scale_events: u64,
    scale_aggregates: u64,
    scale_batch: usize,
    scale_reads: usize,
    engines: Vec<EngineKind>,
    workloads: Vec<String>,
    dir: PathBuf,
    target_dir: PathBuf,
}

fn env_or<T: FromStr>(name: &str, default: T) -> BenchResult<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|e| format!("{name}={value:?}: {e}").into()),
        Err(_) => Ok(default),
    }
}

fn env_list<T: FromStr>(name: &str, default: &str) -> BenchResult<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    let value = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace('_', "")
                .parse()
                .map_err(|e| format!("{name}: {s:?}: {e}").into())
        })
        .collect()
}

impl Config {
    fn from_env(full: bool) -> BenchResult<Self> {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let dir = env_or("ANNALS_BENCH_DIR", target_dir.join("compare-data"))?;
        let engines = env_list("ANNALS_BENCH_ENGINES", "annals,sqlite,redb")?;
        let workloads = env_list(
            "ANNALS_BENCH_WORKLOADS",
            "single,concurrent,bulk,replay,typed-single,typed-concurrent,typed-tasks,typed-bulk,\
             typed-replay,typed-snapshots,raw,open,scale",
        )?;
        if !full {
            return Ok(Config {
                full,
                secs: 0.05,
                max_events: 200,
                writers: 4,
                batch: 100,
                replay_events: 1_000,
                replay_runs: 1,
                open_events: vec![1_000],
                sample: 10,
                scale_events: 2_000,
                scale_aggregates: 200,
                scale_batch: 500,
                scale_reads: 50,
                engines,
                workloads,
                dir,
                target_dir,
            });
        }
        Ok(Config {
            full,
            secs: env_or("ANNALS_BENCH_SECS", 3.0)?,
            max_events: env_or("ANNALS_BENCH_MAX_EVENTS", 500_000)?,
            writers: env_or("ANNALS_BENCH_WRITERS", 32)?,
            batch: env_or("ANNALS_BENCH_BATCH", 1_000)?,
            replay_events: env_or("ANNALS_BENCH_REPLAY_EVENTS", 100_000)?,
            replay_runs: env_or("ANNALS_BENCH_REPLAY_RUNS", 3)?,
            open_events: env_list("ANNALS_BENCH_OPEN_EVENTS", "100000,1000000")?,
            sample: env_or("ANNALS_BENCH_SAMPLE", 1_000)?,
            scale_events: env_or("ANNALS_BENCH_SCALE_EVENTS", 1_000_000)?,
            scale_aggregates: env_or("ANNALS_BENCH_SCALE_AGGREGATES", 100_000)?,
            scale_batch: env_or("ANNALS_BENCH_SCALE_BATCH", 10_000)?,
            scale_reads: env_or("ANNALS_BENCH_SCALE_READS", 10_000)?,
            engines,
            workloads,
            dir,
            target_dir,
        })
    }

    fn runs(&self, workload: &str) -> bool {
        self.workloads.iter().any(|w| w == workload)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }

    fn warm_up(&self) -> Duration {
        Duration::from_secs_f64((self.secs / 10.0).min(0.5))
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

/// One figure of one engine.
struct Measure {
    /// The row of the report, e.g. "1 writer, 1 event/commit".
    workload: String,
    /// What is measured, with its unit, e.g. "commits/s".
    metric: &'static str,
    higher_is_better: bool,
    /// `None` when the figure does not apply to the engine.
    value: Option<f64>,
}

impl Measure {
    fn new(workload: &str, metric: &'static str, higher_is_better: bool, value: f64) -> Self {
        Measure {
            workload: workload.to_owned(),
            metric,
            higher_is_better,
            value: Some(value),
        }
    }

    fn maybe(
        workload: &str,
        metric: &'static str,
        higher_is_better: bool,
        value: Option<f64>,
    ) -> Self {
        Measure {
            value,
            ..Measure::new(workload, metric, higher_is_better, 0.0)
        }
    }

    fn missing(workload: &str, metric: &'static str, higher_is_better: bool) -> Self {
        Measure {
            value: None,
            ..Measure::new(workload, metric, higher_is_better, 0.0)
        }
    }
}

/// Latency samples in nanoseconds.
#[derive(Default)]
struct Latencies(Vec<u64>);

impl Latencies {
    fn record(&mut self, elapsed: Duration) {
        self.0
            .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100) in microseconds.
    fn percentile_us(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1] as f64 / 1_000.0
    }
}

/// A fresh, empty directory for one engine and workload, deleted when dropped.
fn scratch(config: &Config, name: &str) -> BenchResult<tempfile::TempDir> {
    std::fs::create_dir_all(&config.dir)?;
    Ok(tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(&config.dir)?)
}

fn dir_bytes(dir: &Path) -> BenchResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Appends `total` events in commits of `batch`, to aggregates `{prefix}{n}` of
/// `per_aggregate` events each, numbering events from `first`. Returns the next number.
fn load(
    engine: &dyn Engine,
    corpus: &Corpus,
    prefix: &str,
    per_aggregate: u64,
    first: u64,
    total: u64,
    batch: usize,
) -> BenchResult<u64> {
    let end = first + total;
    let mut next = first;
    while next < end {
        let count = (end - next).min(batch as u64);
        let ids: Vec<(String, u64)> = (next..next + count)
            .map(|n| {
                (
                    format!("{prefix}{}", n / per_aggregate),
                    n % per_aggregate + 1,
                )
            })
            .collect();
        let events: Vec<BenchEvent<'_>> = ids
            .iter()
            .map(|(aggregate, version)| corpus.event(aggregate, *version))
            .collect();
        engine.append_batch(&events)?;
        next += count;
    }
    Ok(next)
}

/// The row name of a workload, marked when it runs typed.
fn row_name(typed: bool, name: &str) -> String {
    if typed {
        format!("typed: {name}")
    } else {
        name.to_owned()
    }
}

/// [`load`] of typed events: each commit's events built, encoded and pushed as an application
/// does.
fn typed_load(
    engine: &dyn Engine,
    corpus: &Corpus,
    prefix: &str,
    per_aggregate: u64,
    first: u64,
    total: u64,
    batch: usize,
) -> BenchResult<u64> {
    let end = first + total;
    let mut next = first;
    while next < end {
        let count = (end - next).min(batch as u64);
        let events = (next..next + count)
            .map(|n| {
                let aggregate = format!("{prefix}{}", n / per_aggregate);
                corpus.typed.new_event(&aggregate, n % per_aggregate + 1)
            })
            .collect();
        engine.typed_push(events)?;
        next += count;
    }
    Ok(next)
}

/// Workload 1: one writer, one durable commit per event.
fn single_writer(
    config: &Config,
    opened: &Opened,
    corpus: &Corpus,
    typed: bool,
) -> BenchResult<Vec<Measure>> {
    let row = row_name(typed, "1 writer, 1 event/commit");
    let engine = &*opened.engine;
    let aggregate = "single";
    let mut version = 0;
    let warm_up_end = Instant::now() + config.warm_up();
    while Instant::now() < warm_up_end {
        version += 1;
        corpus.append_one(engine, typed, aggregate, version)?;
    }
    let mut latencies = Latencies::default();
    let start = Instant::now();
    let deadline = start + config.duration();
    let mut commits = 0u64;
    while Instant::now() < deadline && commits < config.max_events {
        version += 1;
        let t = Instant::now();
        corpus.append_one(engine, typed, aggregate, version)?;
        latencies.record(t.elapsed());
        commits += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(vec![
        Measure::new(&row, "commits/s", true, commits as f64 / secs),
        Measure::new(&row, "p50 latency µs", false, latencies.percentile_us(50.0)),
        Measure::new(&row, "p99 latency µs", false, latencies.percentile_us(99.0)),
    ])
}

/// Workload 2: concurrent writers, one aggregate each, one event per commit.
fn concurrent_writers(
    config: &Config,
    opened: &Opened,
    corpus: &Corpus,
    typed: bool,
) -> BenchResult<Vec<Measure>> {
    let row = row_name(
        typed,
        &format!("{} writers, 1 event/commit", config.writers),
    );
    let engine = &*opened.engine;
    let writers = config.writers.max(1);
    let per_writer_max = (config.max_events / writers as u64).max(1);
    let barrier = Barrier::new(writers + 1);
    let stop = AtomicBool::new(false);
    let (start, results, cpu, counted) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (barrier, stop) = (&barrier, &stop);
                scope.spawn(move || -> BenchResult<(u64, Latencies, Instant)> {
                    let aggregate = format!("writer-{w}");
                    // Warm-up commit outside the timed window: creates the aggregate.
                    corpus.append_one(engine, typed, &aggregate, 1)?;
                    let mut version = 1;
                    let mut latencies = Latencies::default();
                    barrier.wait();
                    let mut commits = 0;
                    while !stop.load(Ordering::Relaxed) && commits < per_writer_max {
                        version += 1;
                        let t = Instant::now();
                        corpus.append_one(engine, typed, &aggregate, version)?;
                        latencies.record(t.elapsed());
                        commits += 1;
                    }
                    Ok((commits, latencies, Instant::now()))
                })
            })
            .collect();
        barrier.wait();
        let cpu = CpuClock::start();
        let counted = engine.events_and_syncs();
        let start = Instant::now();
        let deadline = start + config.duration();
        while Instant::now() < deadline && handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a writer thread panicked".into()))
            })
            .collect();
        (start, results, cpu, counted)
    });
    let per_sync = events_per_sync(counted, engine.events_and_syncs());
    let (total, secs, mut latencies) = merge_writers(start, results)?;
    Ok(vec![
        Measure::new(&row, "events/s", true, total as f64 / secs),
        Measure::new(&row, "p99 latency µs", false, latencies.percentile_us(99.0)),
        Measure::maybe(&row, CPU_FIGURE, false, cpu.us_per(total)),
        Measure::maybe(&row, PER_SYNC_FIGURE, true, per_sync),
    ])
}

/// Concurrent writers' results together: their commits, the seconds from `start` to the last
/// one's end, and every commit's latency.
fn merge_writers(
    start: Instant,
    results: Vec<BenchResult<(u64, Latencies, Instant)>>,
) -> BenchResult<(u64, f64, Latencies)> {
    let (mut total, mut end) = (0, start);
    let mut latencies = Latencies::default();
    for result in results {
        let (commits, mut samples, finished) = result?;
        total += commits;
        end = end.max(finished);
        latencies.0.append(&mut samples.0);
    }
    Ok((total, (end - start).as_secs_f64(), latencies))
}

/// Group commit's figure: events written per data sync over a workload (annals only).
const PER_SYNC_FIGURE: &str = "events per sync";

/// Events per sync between two readings of an engine's counters.
fn events_per_sync(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((events_0, syncs_0), (events_1, syncs_1)) = (before?, after?);
    (syncs_1 > syncs_0).then(|| (events_1 - events_0) as f64 / (syncs_1 - syncs_0) as f64)
}

/// Typed workload 2 as an async application runs it (annals only): `writers` tasks on the
/// runtime (one worker thread per CPU), each pushing typed events one per commit to its own
/// aggregate through `EventStore::push_event`, as concurrent request handlers do. Workload 2
/// runs OS threads, each blocking on its push, which every engine can; here no thread
/// blocks, so what a commit costs besides its share of a sync is a task's wake-up.
fn typed_tasks(config: &Config, opened: &Opened, _corpus: &Corpus) -> BenchResult<Vec<Measure>> {
    let row = format!("typed: {} tasks, 1 event/commit", config.writers);
    let figures = [
        ("events/s", true),
        ("p99 latency µs", false),
        (CPU_FIGURE, false),
        (PER_SYNC_FIGURE, true),
    ];
    let engine = &*opened.engine;
    let Some((store, runtime)) = engine.typed_store() else {
        return Ok(figures
            .iter()
            .map(|&(figure, higher)| Measure::missing(&row, figure, higher))
            .collect());
    };
    let writers = config.writers.max(1);
    let per_writer_max = (config.max_events / writers as u64).max(1);
    let corpus = Arc::new(TypedCorpus::new());
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(tokio::sync::Barrier::new(writers + 1));
    let (start, cpu, counted, results) = runtime.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (store, corpus) = (store.clone(), Arc::clone(&corpus));
                let (stop, ready) = (Arc::clone(&stop), Arc::clone(&ready));
                tokio::spawn(async move {
                    let aggregate = format!("task-{w}");
                    // Warm-up commit outside the timed window: creates the aggregate. The
                    // barrier is passed even if it fails, so the others are not left waiting.
                    let first = corpus.new_event(&aggregate, 1);
                    let warmed = store.push_event(first, Default::default()).await;
                    ready.wait().await;
                    warmed?;
                    let (mut version, mut commits) = (1, 0);
                    let mut latencies = Latencies::default();
                    while !stop.load(Ordering::Relaxed) && commits < per_writer_max {
                        version += 1;
                        let t = Instant::now();
                        let event = corpus.new_event(&aggregate, version);
                        store.push_event(event, Default::default()).await?;
                        latencies.record(t.elapsed());
                        commits += 1;
                    }
                    BenchResult::Ok((commits, latencies, Instant::now()))
                })
            })
            .collect();
        ready.wait().await;
        let cpu = CpuClock::start();
        let counted = engine.events_and_syncs();
        let start = Instant::now();
        let deadline = start + config.duration();
        while Instant::now() < deadline && tasks.iter().any(|t| !t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.unwrap_or_else(|e| Err(e.into())));
        }
        (start, cpu, counted, results)
    });
    let per_sync = events_per_sync(counted, engine.events_and_syncs());
    let (total, secs, mut latencies) = merge_writers(start, results)?;
    Ok(vec![
        Measure::new(&row, figures[0].0, true, total as f64 / secs),
        Measure::new(&row, figures[1].0, false, latencies.percentile_us(99.0)),
        Measure::maybe(&row, figures[2].0, false, cpu.us_per(total)),
        Measure::maybe(&row, figures[3].0, true, per_sync),
    ])
}

/// Workload 3: commits of `config.batch` events over aggregates of 100 events.
fn bulk(
    config: &Config,
    opened: &Opened,
    corpus: &Corpus,
    typed: bool,
) -> BenchResult<Vec<Measure>> {
    let row = row_name(
        typed,
        &format!("bulk, {} events/commit", group_digits(config.batch as f64)),
    );
    let engine = &*opened.engine;
    let batch = config.batch.max(1);
    let load = if typed { typed_load } else { load };
    let mut next = load(
        engine,
        corpus,
        "bulk-",
        BULK_AGGREGATE_EVENTS,
        0,
        batch as u64,
        batch,
    )?;
    let mut latencies = Latencies::default();
    let cpu = CpuClock::start();
    let start = Instant::now();
    let deadline = start + config.duration();
    let mut events = 0;
    while Instant::now() < deadline && events < config.max_events {
        let t = Instant::now();
        next = load(
            engine,
            corpus,
            "bulk-",
            BULK_AGGREGATE_EVENTS,
            next,
            batch as u64,
            batch,
        )?;
        latencies.record(t.elapsed());
        events += batch as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(vec![
        Measure::new(&row, "events/s", true, events as f64 / secs),
        Measure::new(
            &row,
            "p50 commit ms",
            false,
            latencies.percentile_us(50.0) / 1e3,
        ),
        Measure::maybe(&row, CPU_FIGURE, false, cpu.us_per(events)),
    ])
}

/// Workload 4: replays one long aggregate into a typed `Account`.
fn replay(config: &Config, opened: &Opened, corpus: &Corpus) -> BenchResult<Vec<Measure>> {
    let row = format!(
        "replay {} events → typed aggregate",
        group_digits(config.replay_events as f64)
    );
    let engine = &*opened.engine;
    let total = config.replay_events.max(1);
    // One aggregate: every event goes to `replay-0`.
    load(
        engine,
        corpus,
        "replay-",
        total,
        0,
        total,
        config.batch.max(1),
    )?;
    let mut runs = Vec::new();
    let cpu = CpuClock::start();
    for _ in 0..config.replay_runs.max(1) {
        let mut account = Account::default();
        let t = Instant::now();
        engine.read_aggregate("replay-0", &mut |event| account.apply(event))?;
        let elapsed = t.elapsed();
        if account.version != total {
            return Err(format!("replayed {} of {total} events", account.version).into());
        }
        std::hint::black_box(&account);
        runs.push(elapsed);
    }
    let cpu = cpu.us_per(total * runs.len() as u64);
    runs.sort();
    let median = runs[runs.len() / 2].as_secs_f64();
    Ok(vec![
        Measure::new(&row, "events/s", true, total as f64 / median),
        Measure::maybe(&row, CPU_FIGURE, false, cpu),
    ])
}

/// The figure [`CpuClock`] gives.
const CPU_FIGURE: &str = "CPU µs/event (process)";

/// The process's CPU time (user + system, every thread) from `/proc/self/stat` (Linux only),
/// so that a workload's cost per event can be told apart from the time other processes take
/// on a shared machine. Its resolution is 10 ms: it is read around whole workloads only.
struct CpuClock(Option<f64>);

impl CpuClock {
    fn start() -> Self {
        CpuClock(process_cpu_secs())
    }

    /// CPU microseconds per event since [`start`](Self::start).
    fn us_per(&self, events: u64) -> Option<f64> {
        let spent = process_cpu_secs()? - self.0?;
        Some(spent * 1e6 / events.max(1) as f64)
    }
}

fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15, in clock ticks of 1/100 s (USER_HZ, fixed at 100 for /proc on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Typed workload 4: one aggregate of `replay_events` typed events, decoded (payload and
/// metadata) and folded into a `Balance`: state only (annals: `get_aggregate_state`) and with
/// every event kept (annals: `get_aggregate`); the process's RSS growth over each fold.
fn typed_replay(config: &Config, opened: &Opened, corpus: &Corpus) -> BenchResult<Vec<Measure>> {
    let row = format!(
        "typed: replay {} events",
        group_digits(config.replay_events as f64)
    );
    let engine = &*opened.engine;
    let total = config.replay_events.max(1);
    typed_load(
        engine,
        corpus,
        "typed-replay-",
        total,
        0,
        total,
        config.batch.max(1),
    )?;
    let mut out = Vec::new();
    for (keep, figure, rss_figure) in [
        (
            false,
            "events/s (state only)",
            "RSS growth MiB (state only)",
        ),
        (
            true,
            "events/s (state + events)",
            "RSS growth MiB (state + events)",
        ),
    ] {
        let mut runs = Vec::new();
        let mut growth = None;
        let cpu = CpuClock::start();
        for run in 0..config.replay_runs.max(1) {
            let base = ResidentBaseline::take();
            let t = Instant::now();
            let folded = engine.typed_fold("typed-replay-0", keep)?;
            let elapsed = t.elapsed();
            if run == 0 {
                growth = base.growth();
            }
            if folded.version != total || folded.state.movements != total {
                return Err(format!("folded {} of {total} events", folded.version).into());
            }
            if keep && folded.kept as u64 != total {
                return Err(format!("kept {} of {total} events", folded.kept).into());
            }
            std::hint::black_box(&folded.state);
            runs.push(elapsed);
        }
        let cpu = cpu.us_per(total * runs.len() as u64);
        runs.sort();
        let median = runs[runs.len() / 2].as_secs_f64();
        out.push(Measure::new(&row, figure, true, total as f64 / median));
        out.push(Measure::maybe(
            &row,
            if keep {
                "CPU µs/event (process, state + events)"
            } else {
                "CPU µs/event (process, state only)"
            },
            false,
            cpu,
        ));
        out.push(Measure::maybe(
            &row,
            rss_figure,
            false,
            growth.map(|b| b as f64 / f64::from(1 << 20)),
        ));
    }
    Ok(out)
}

/// Typed snapshot reads (annals only): `get_aggregate` of an aggregate of `replay_events`
/// events under `SnapshotPolicy::every(1000)`, right after a snapshot (nothing to fold) and
/// at the worst point of the policy (999 events after the snapshot); then under
/// `SnapshotPolicy::default()` (by replay cost), a read after each push of 5 events, as
/// commands do.
fn typed_snapshots(config: &Config, opened: &Opened, corpus: &Corpus) -> BenchResult<Vec<Measure>> {
    let row = format!(
        "typed: get_aggregate, {} events",
        group_digits(config.replay_events as f64)
    );
    const FIGURES: [&str; 6] = [
        "every(1000): p50 µs right after a snapshot",
        "every(1000): p50 µs, 999 events after it",
        "every(1000): p50 µs, 999 after, state only",
        "every(1000): p99 µs, 999 events after it",
        "default policy: p50 µs, read after each 5-event push",
        "default policy: p99 µs, read after each 5-event push",
    ];
    let engine = &*opened.engine;
    let Some((store, budgeted, runtime)) = engine.snapshot_stores() else {
        return Ok(FIGURES
            .iter()
            .map(|figure| Measure::missing(&row, figure, false))
            .collect());
    };
    // A multiple of the policy, so the first read leaves a snapshot at the last version.
    let total = (config.replay_events / SNAPSHOT_EVERY).max(1) * SNAPSHOT_EVERY;
    let id = "typed-snap-0";
    typed_load(
        engine,
        corpus,
        "typed-snap-",
        total,
        0,
        total,
        config.batch.max(1),
    )?;
    let options = GetAggregateOptions::default();
    let read_of = |store: &Accounts, id: &str, state_only: bool| -> BenchResult<Duration> {
        let t = Instant::now();
        let version = if state_only {
            let got = runtime.block_on(store.get_aggregate_state(id, options))?;
            got.aggregate.map_or(0, |a| a.version)
        } else {
            let got = runtime.block_on(store.get_aggregate(id, options))?;
            got.aggregate.map_or(0, |a| a.version)
        };
        let elapsed = t.elapsed();
        std::hint::black_box(version);
        Ok(elapsed)
    };
    let read = |state_only: bool| read_of(&store, id, state_only);
    // The first read folds everything and writes the snapshot in the background.
    read(false)?;
    runtime.block_on(store.flush_snapshots());
    let runs = if config.full { 200 } else { 5 };
    let mut after = Latencies::default();
    for _ in 0..runs {
        after.record(read(false)?);
    }
    // 999 more events: the worst point before the next snapshot.
    typed_load(
        engine,
        corpus,
        "typed-snap-",
        u64::MAX,
        total,
        SNAPSHOT_EVERY - 1,
        config.batch.max(1),
    )
    .map_err(|e| format!("pushing past the snapshot: {e}"))?;
    let (mut worst, mut worst_state) = (Latencies::default(), Latencies::default());
    for _ in 0..runs {
        worst.record(read(false)?);
        worst_state.record(read(true)?);
    }
    // The default policy, as commands use it: a read of the aggregate after each push.
    let budget_id = "typed-budget-0";
    typed_load(
        engine,
        corpus,
        "typed-budget-",
        total,
        0,
        total,
        config.batch.max(1),
    )?;
    read_of(&budgeted, budget_id, false)?;
    runtime.block_on(budgeted.flush_snapshots());
    let mut by_cost = Latencies::default();
    let mut next = total;
    for _ in 0..runs {
        next = typed_load(engine, corpus, "typed-budget-", u64::MAX, next, 5, 5)?;
        by_cost.record(read_of(&budgeted, budget_id, false)?);
    }
    Ok(vec![
        Measure::new(&row, FIGURES[0], false, after.percentile_us(50.0)),
        Measure::new(&row, FIGURES[1], false, worst.percentile_us(50.0)),
        Measure::new(&row, FIGURES[2], false, worst_state.percentile_us(50.0)),
        Measure::new(&row, FIGURES[3], false, worst.percentile_us(99.0)),
        Measure::new(&row, FIGURES[4], false, by_cost.percentile_us(50.0)),
        Measure::new(&row, FIGURES[5], false, by_cost.percentile_us(99.0)),
    ])
}

/// What a typed event's frame adds to its payload and metadata in the raw bulk loop: about
/// annals' entry header, store name, aggregate id and event type.
const RAW_FRAME_BYTES: usize = 80;

/// The raw loops' figures: commits/s and the p50 latency of one 300-byte `pwrite` +
/// `fdatasync`, and the events/s of bulk commits written the same way.
struct RawBaseline {
    commits_per_sec: f64,
    p50_us: f64,
    /// Bytes of one raw bulk commit: `batch` events of `event_bytes` each.
    bulk_bytes: usize,
    bulk_events_per_sec: f64,
}

/// The floor under any durable commit on this disk, for the write workloads' duration each,
/// into a preallocated file (written and synced once beforehand, so no commit extends it):
/// one 300-byte `pwrite` and one `fdatasync` per commit; then one `pwrite` of `batch` ×
/// `event_bytes` bytes (a bulk commit's frames, appended one after the other) and one
/// `fdatasync` per commit.
fn raw_fdatasync(config: &Config, event_bytes: usize) -> BenchResult<RawBaseline> {
    use std::os::unix::fs::FileExt as _;
    const RECORD: usize = 300;
    let dir = scratch(config, "raw")?;
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(dir.path().join("raw"))?;
    let records = 1 << 16;
    let zeros = vec![0u8; 1 << 20];
    for chunk in 0..(records * RECORD).div_ceil(zeros.len()) {
        file.write_all_at(&zeros, (chunk * zeros.len()) as u64)?;
    }
    file.sync_all()?;
    let record = [0x5a_u8; RECORD];
    let mut i = 0;
    let warm_up_end = Instant::now() + config.warm_up();
    while Instant::now() < warm_up_end {
        file.write_all_at(&record, ((i % records) * RECORD) as u64)?;
        file.sync_data()?;
        i += 1;
    }
    let mut latencies = Latencies::default();
    let start = Instant::now();
    let deadline = start + config.duration();
    let mut commits = 0u64;
    while Instant::now() < deadline && commits < config.max_events {
        let t = Instant::now();
        file.write_all_at(&record, ((i % records) * RECORD) as u64)?;
        file.sync_data()?;
        latencies.record(t.elapsed());
        i += 1;
        commits += 1;
    }
    let commits_per_sec = commits as f64 / start.elapsed().as_secs_f64();
    let p50_us = latencies.percentile_us(50.0);
    // Bulk: appends of one bulk commit's bytes, wrapping around the preallocated 64 MiB.
    let bulk_bytes = config.batch.max(1) * event_bytes;
    let area = (64usize << 20).max(bulk_bytes) / bulk_bytes * bulk_bytes;
    for chunk in 0..area.div_ceil(zeros.len()) {
        file.write_all_at(&zeros, (chunk * zeros.len()) as u64)?;
    }
    file.sync_all()?;
    let commit = vec![0x5a_u8; bulk_bytes];
    let mut offset = 0;
    let bulk_commit = |offset: &mut usize| -> std::io::Result<()> {
        file.write_all_at(&commit, *offset as u64)?;
        file.sync_data()?;
        *offset = (*offset + bulk_bytes) % area;
        Ok(())
    };
    let warm_up_end = Instant::now() + config.warm_up();
    while Instant::now() < warm_up_end {
        bulk_commit(&mut offset)?;
    }
    let start = Instant::now();
    let deadline = start + config.duration();
    let mut events = 0u64;
    while Instant::now() < deadline && events < config.max_events {
        bulk_commit(&mut offset)?;
        events += config.batch.max(1) as u64;
    }
    Ok(RawBaseline {
        commits_per_sec,
        p50_us,
        bulk_bytes,
        bulk_events_per_sec: events as f64 / start.elapsed().as_secs_f64(),
    })
}

/// Workload 5: bulk-loads `events`, then times opening until ready to append, after a clean
/// close (median of 3) and after a simulated crash (once).
///
/// The crash image is a copy of the directory taken while the engine is open and idle, after
/// its last acknowledged commit: what a killed process leaves behind. Opening it runs the
/// engine's recovery (SQLite rebuilds its WAL index; redb repairs an unclosed database).
fn open_time(
    config: &Config,
    ctx: &Context,
    kind: EngineKind,
    corpus: &Corpus,
    events: u64,
) -> BenchResult<Vec<Measure>> {
    let row = format!("open at {} events", group_digits(events as f64));
    const FIGURES: [&str; 6] = [
        "bulk load events/s",
        "open ms (clean)",
        "open ms (after crash)",
        "disk bytes/event",
        "resident MiB (clean open + reads)",
        "resident MiB (crash open + reads)",
    ];
    let dir = scratch(config, "open")?;
    let opened = kind.open(dir.path(), ctx)?;
    if !opened.durable {
        opened.engine.close()?;
        return Ok(FIGURES
            .iter()
            .enumerate()
            .map(|(i, figure)| Measure::missing(&row, figure, i == 0))
            .collect());
    }
    let t = Instant::now();
    let (prefix, per_aggregate) = ("open-", BULK_AGGREGATE_EVENTS);
    load(
        &*opened.engine,
        corpus,
        prefix,
        per_aggregate,
        0,
        events,
        config.batch,
    )?;
    let load_secs = t.elapsed().as_secs_f64();
    eprintln!("    loaded {events} events in {load_secs:.1} s");
    let crashed = scratch(config, "crash")?;
    copy_dir(dir.path(), crashed.path())?;
    opened.engine.close()?;
    let bytes = dir_bytes(dir.path())?;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let reopened = kind.open(dir.path(), ctx)?;
        runs.push(t.elapsed());
        reopened.engine.close()?;
    }
    runs.sort();
    let aggregates = events.div_ceil(per_aggregate);
    let sample = sample_aggregates(aggregates, config.sample, 1);
    let clean_rss = {
        let base = ResidentBaseline::take();
        let reopened = kind.open(dir.path(), ctx)?;
        read_sample(&*reopened.engine, prefix, &sample)?;
        let grown = base.growth();
        reopened.engine.close()?;
        grown
    };
    let base = ResidentBaseline::take();
    let t = Instant::now();
    let recovered = kind.open(crashed.path(), ctx)?;
    let crash_open = t.elapsed();
    read_sample(&*recovered.engine, prefix, &sample)?;
    let crash_rss = base.growth();
    recovered.engine.close()?;
    let mib = |bytes: Option<u64>| bytes.map(|b| b as f64 / f64::from(1 << 20));
    Ok(vec![
        Measure::new(&row, FIGURES[0], true, events as f64 / load_secs),
        Measure::new(&row, FIGURES[1], false, runs[1].as_secs_f64() * 1e3),
        Measure::new(&row, FIGURES[2], false, crash_open.as_secs_f64() * 1e3),
        Measure::new(&row, FIGURES[3], false, bytes as f64 / events.max(1) as f64),
        Measure::maybe(&row, FIGURES[4], false, mib(clean_rss)),
        Measure::maybe(&row, FIGURES[5], false, mib(crash_rss)),
    ])
}

/// The process's resident set size in bytes, from `/proc/self/statm` (Linux only).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // x86-64 and aarch64 Linux as configured by every distribution: 4 KiB pages.
    Some(pages * 4096)
}

/// Returns freed heap to the OS, so that RSS growth is not hidden by memory the allocator kept
/// from earlier workloads (glibc only; elsewhere a no-op).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim takes no pointers and may be called at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// RSS before an engine is opened; [`ResidentBaseline::growth`] is what opening and reading
/// added.
struct ResidentBaseline(Option<u64>);

impl ResidentBaseline {
    fn take() -> Self {
        trim_heap();
        ResidentBaseline(resident_bytes())
    }

    fn growth(&self) -> Option<u64> {
        Some(resident_bytes()?.saturating_sub(self.0?))
    }
}

/// `count` aggregate numbers below `aggregates`, pseudo-random but the same every run for
/// the same `seed`.
fn sample_aggregates(aggregates: u64, count: u64, seed: u64) -> Vec<u64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % aggregates.max(1)
        })
        .collect()
}

/// Reads every event of aggregates `{prefix}{n}` for `n` in `sample`; returns the latency of
/// each read.
fn read_sample(engine: &dyn Engine, prefix: &str, sample: &[u64]) -> BenchResult<Latencies> {
    let mut latencies = Latencies::default();
    for n in sample {
        let aggregate = format!("{prefix}{n}");
        let mut events = 0u64;
        let t = Instant::now();
        engine.read_aggregate(&aggregate, &mut |event| {
            events += 1;
            std::hint::black_box(event);
            Ok(())
        })?;
        latencies.record(t.elapsed());
        if events == 0 {
            return Err(format!("aggregate {aggregate} read back empty").into());
        }
    }
    Ok(latencies)
}

/// Workload 8 (annals only): `scale_events` events round-robin over `scale_aggregates`
/// aggregates (aggregate `n % A` gets version `n / A + 1`, so each aggregate's events are
/// spread over the whole log), loaded in commits of `scale_batch` under `Durability::None`
/// and synced once; then open times, resident memory and random `get_events` latency.
fn scale(config: &Config, ctx: &Context, corpus: &Corpus) -> BenchResult<Vec<Measure>> {
    let (events, aggregates) = (config.scale_events, config.scale_aggregates.max(1));
    let row = format!(
        "{} events over {} aggregates",
        group_digits(events as f64),
        group_digits(aggregates as f64)
    );
    let prefix = "scale-";
    let dir = scratch(config, "scale")?;
    let crashed = scratch(config, "scale-crash")?;
    let handle = ctx.runtime.handle().clone();
    let (load_secs, sync_secs, close_secs) = {
        let _runtime = handle.enter();
        let loader = open_annals_bulk_loader(dir.path())?;
        let opened = AnnalsAdapter {
            adapter: loader.clone(),
            durable: true,
            counters: None,
        };
        let engine = AnnalsEngine::new(opened, handle.clone())?;
        let t = Instant::now();
        let batch = config.scale_batch.max(1) as u64;
        let mut next = 0;
        let mut ids: Vec<(String, u64)> = Vec::with_capacity(batch as usize);
        while next < events {
            let count = (events - next).min(batch);
            ids.clear();
            ids.extend(
                (next..next + count)
                    .map(|n| (format!("{prefix}{}", n % aggregates), n / aggregates + 1)),
            );
            let batch: Vec<BenchEvent<'_>> = ids
                .iter()
                .map(|(aggregate, version)| corpus.event(aggregate, *version))
                .collect();
            engine.append_batch(&batch)?;
            next += count;
            if next % (events / 10).max(1) < count {
                eprintln!(
                    "    loaded {next} events in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
            }
        }
        let synced = Instant::now();
        handle.block_on(loader.sync())?;
        let sync_secs = synced.elapsed().as_secs_f64();
        let load_secs = t.elapsed().as_secs_f64();
        copy_dir(dir.path(), crashed.path())?;
        // Closing drains the index checkpoints still pending after the load.
        let closing = Instant::now();
        Box::new(engine).close()?;
        loader.close();
        drop(loader);
        (load_secs, sync_secs, closing.elapsed().as_secs_f64())
    };
    eprintln!(
        "    loaded and synced in {load_secs:.1} s (sync {sync_secs:.2} s), closed in \
         {close_secs:.1} s"
    );
    let bytes = dir_bytes(dir.path())?;
    let kind = EngineKind::Annals;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let reopened = kind.open(dir.path(), ctx)?;
        runs.push(t.elapsed());
        reopened.engine.close()?;
    }
    runs.sort();
    let sample = sample_aggregates(aggregates, config.sample, 1);
    let reads = sample_aggregates(aggregates, config.scale_reads as u64, 2);
    let (clean_rss, mut latencies, reads_secs) = {
        let base = ResidentBaseline::take();
        let reopened = kind.open(dir.path(), ctx)?;
        read_sample(&*reopened.engine, prefix, &sample)?;
        let grown = base.growth();
        let t = Instant::now();
        let latencies = read_sample(&*reopened.engine, prefix, &reads)?;
        let secs = t.elapsed().as_secs_f64();
        reopened.engine.close()?;
        (grown, latencies, secs)
    };
    let base = ResidentBaseline::take();
    let t = Instant::now();
    let recovered = kind.open(crashed.path(), ctx)?;
    let crash_open = t.elapsed();
    read_sample(&*recovered.engine, prefix, &sample)?;
    let crash_rss = base.growth();
    recovered.engine.close()?;
    let mib = |bytes: Option<u64>| bytes.map(|b| b as f64 / f64::from(1 << 20));
    let per_aggregate = |bytes: Option<u64>| bytes.map(|b| b as f64 / aggregates as f64);
    Ok(vec![
        Measure::new(
            &row,
            "load events/s (Durability::None + sync)",
            true,
            events as f64 / load_secs,
        ),
        Measure::new(&row, "final sync ms", false, sync_secs * 1e3),
        Measure::new(&row, "close ms after the load", false, close_secs * 1e3),
        Measure::new(
            &row,
            "disk bytes/event",
            false,
            bytes as f64 / events.max(1) as f64,
        ),
        Measure::new(&row, "open ms (clean)", false, runs[1].as_secs_f64() * 1e3),
        Measure::new(
            &row,
            "open ms (after crash)",
            false,
            crash_open.as_secs_f64() * 1e3,
        ),
        Measure::maybe(
            &row,
            "resident MiB (clean open + reads)",
            false,
            mib(clean_rss),
        ),
        Measure::maybe(
            &row,
            "resident bytes/aggregate (clean open + reads)",
            false,
            per_aggregate(clean_rss),
        ),
        Measure::maybe(
            &row,
            "resident MiB (crash open + reads)",
            false,
            mib(crash_rss),
        ),
        Measure::new(
            &row,
            "get_events reads/s (random aggregate)",
            true,
            reads.len() as f64 / reads_secs,
        ),
        Measure::new(
            &row,
            "get_events p50 µs",
            false,
            latencies.percentile_us(50.0),
        ),
        Measure::new(
            &row,
            "get_events p99 µs",
            false,
            latencies.percentile_us(99.0),
        ),
    ])
}

/// The disk's own fsync latency: 200 appends of 300 bytes, each followed by `fdatasync`.
/// Returns p50 and p99 in microseconds. Virtual disks throttle, so the runner probes before
/// and after the workloads and prints both with the figures.
fn disk_probe(config: &Config) -> BenchResult<(f64, f64)> {
    use std::io::Write as _;
    let dir = scratch(config, "probe")?;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(dir.path().join("probe"))?;
    let record = [0x5a_u8; 300];
    let mut latencies = Latencies::default();
    for _ in 0..200 {
        let t = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        latencies.record(t.elapsed());
    }
    Ok((latencies.percentile_us(50.0), latencies.percentile_us(99.0)))
}

/// Copies the files under `from` into the empty directory `to`.
fn copy_dir(from: &Path, to: &Path) -> BenchResult<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

type Workload = fn(&Config, &Opened, &Corpus) -> BenchResult<Vec<Measure>>;

/// What a run measured.
struct Results {
    /// Column labels, one per engine.
    labels: Vec<String>,
    /// Per engine, its measures, in the same order for every engine.
    measures: Vec<Vec<Measure>>,
    /// Workload 8, annals only.
    scale: Vec<Measure>,
    /// The raw `pwrite` + `fdatasync` loop's figures, when it ran.
    raw: Option<RawBaseline>,
}

/// Runs every workload on every engine.
fn run_all(config: &Config, ctx: &Context, corpus: &Corpus) -> BenchResult<Results> {
    let workloads: [(&str, Workload); 10] = [
        ("single", |c, o, k| single_writer(c, o, k, false)),
        ("concurrent", |c, o, k| concurrent_writers(c, o, k, false)),
        ("bulk", |c, o, k| bulk(c, o, k, false)),
        ("replay", replay),
        ("typed-single", |c, o, k| single_writer(c, o, k, true)),
        ("typed-concurrent", |c, o, k| {
            concurrent_writers(c, o, k, true)
        }),
        ("typed-tasks", typed_tasks),
        ("typed-bulk", |c, o, k| bulk(c, o, k, true)),
        ("typed-replay", typed_replay),
        ("typed-snapshots", typed_snapshots),
    ];
    let mut labels = Vec::new();
    for &kind in &config.engines {
        let dir = scratch(config, "label")?;
        let opened = kind.open(dir.path(), ctx)?;
        labels.push(kind.label(opened.durable).to_owned());
        opened.engine.close()?;
    }
    let mut measures: Vec<Vec<Measure>> = config.engines.iter().map(|_| Vec::new()).collect();
    let raw = if config.runs("raw") {
        eprintln!("raw: pwrite + fdatasync");
        let (payload, metadata) = corpus.typed.encoded_bytes();
        let raw = raw_fdatasync(config, payload + metadata + RAW_FRAME_BYTES)?;
        eprintln!(
            "    {} commits/s, p50 {} µs; bulk {} events/s",
            format_value(Some(raw.commits_per_sec)),
            format_value(Some(raw.p50_us)),
            format_value(Some(raw.bulk_events_per_sec)),
        );
        Some(raw)
    } else {
        None
    };
    for (name, workload) in workloads {
        if !config.runs(name) {
            continue;
        }
        for (column, &kind) in config.engines.iter().enumerate() {
            eprintln!("{name}: {kind:?}");
            let dir = scratch(config, name)?;
            let opened = kind.open(dir.path(), ctx)?;
            let result = workload(config, &opened, corpus)?;
            opened.engine.close()?;
            for m in &result {
                eprintln!("    {} {}: {}", m.workload, m.metric, format_value(m.value));
            }
            measures[column].extend(result);
        }
    }
    let open_events = if config.runs("open") {
        config.open_events.as_slice()
    } else {
        &[]
    };
    for &events in open_events {
        for (column, &kind) in config.engines.iter().enumerate() {
            eprintln!("open at {events}: {kind:?}");
            let result = open_time(config, ctx, kind, corpus, events)?;
            for m in &result {
                eprintln!("    {} {}: {}", m.workload, m.metric, format_value(m.value));
            }
            measures[column].extend(result);
        }
    }
    let mut scale_measures = Vec::new();
    if config.runs("scale") && config.engines.contains(&EngineKind::Annals) {
        eprintln!("scale: Annals");
        scale_measures = scale(config, ctx, corpus)?;
        for m in &scale_measures {
            eprintln!("    {} {}: {}", m.workload, m.metric, format_value(m.value));
        }
    }
    Ok(Results {
        labels,
        measures,
        scale: scale_measures,
        raw,
    })
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn group_digits(value: f64) -> String {
    let digits = format!("{:.0}", value.round());
    let (sign, digits) = digits.split_at(usize::from(digits.starts_with('-')));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn format_value(value: Option<f64>) -> String {
    match value {
        None => "n/a".to_owned(),
        Some(v) if !v.is_finite() => "–".to_owned(),
        Some(v) if v.abs() >= 100.0 => group_digits(v),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => {
            let r = a / b;
            if r >= 10.0 {
                format!("{r:.0}×")
            } else if r >= 0.1 {
                format!("{r:.2}×")
            } else {
                // Two significant digits, however small.
                let decimals = (-r.log10()).ceil().max(0.0) as usize + 1;
                format!("{r:.decimals$}×")
            }
        }
        _ => "–".to_owned(),
    }
}

/// The markdown table: one row per figure, one column per engine, then annals/SQLite and
/// annals/redb ratios when those engines ran.
fn markdown_table(config: &Config, labels: &[String], measures: &[Vec<Measure>]) -> String {
    let column = |kind| config.engines.iter().position(|&k| k == kind);
    let annals = column(EngineKind::Annals);
    let others: Vec<(usize, &str)> = [(EngineKind::Sqlite, "SQLite"), (EngineKind::Redb, "redb")]
        .into_iter()
        .filter_map(|(kind, name)| Some((column(kind)?, name)))
        .filter(|_| annals.is_some())
        .collect();
    let mut out = String::from("| workload | figure |");
    for label in labels {
        let _ = write!(out, " {label} |");
    }
    for (_, name) in &others {
        let _ = write!(out, " annals/{name} |");
    }
    out.push_str("\n|---|---|");
    for _ in labels.iter().chain(others.iter().map(|_| &labels[0])) {
        out.push_str("--:|");
    }
    out.push('\n');
    let rows = measures.first().map_or(0, Vec::len);
    for r in 0..rows {
        let first = &measures[0][r];
        let better = if first.higher_is_better { "↑" } else { "↓" };
        let _ = write!(out, "| {} | {} {better} |", first.workload, first.metric);
        for engine in measures {
            let _ = write!(out, " {} |", format_value(engine[r].value));
        }
        if let Some(a) = annals {
            for &(o, _) in &others {
                let _ = write!(
                    out,
                    " {} |",
                    ratio(measures[a][r].value, measures[o][r].value)
                );
            }
        }
        out.push('\n');
    }
    out
}

fn report(config: &Config, corpus: &Corpus, probes: [(f64, f64); 2], results: &Results) -> String {
    let (labels, measures) = (&results.labels, &results.measures);
    let mut out = String::from("# annals vs SQLite vs redb\n\n");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        out,
        "{cpus} CPUs; payload {} bytes (MessagePack, named fields), metadata {} bytes; \
         {} s per write workload (at most {} events); {} writers; {} events per bulk commit; \
         replay median of {} runs; data in `{}`.\n",
        corpus.payload_bytes_mean(),
        corpus.metadata.len(),
        config.secs,
        group_digits(config.max_events as f64),
        config.writers,
        group_digits(config.batch as f64),
        config.replay_runs,
        config.dir.display(),
    );
    let [(before_p50, before_p99), (after_p50, after_p99)] = probes;
    let _ = writeln!(
        out,
        "Disk probe (300-byte append + `fdatasync`): p50 {} µs, p99 {} µs before the run; \
         p50 {} µs, p99 {} µs after it.\n",
        format_value(Some(before_p50)),
        format_value(Some(before_p99)),
        format_value(Some(after_p50)),
        format_value(Some(after_p99)),
    );
    if let Some(raw) = &results.raw {
        let typed_annals = |workload: &str, metric: &str| {
            config
                .engines
                .iter()
                .position(|&k| k == EngineKind::Annals)
                .and_then(|a| {
                    measures[a]
                        .iter()
                        .find(|m| m.workload.starts_with(workload) && m.metric == metric)
                })
                .and_then(|m| m.value)
        };
        let typed_single = |metric: &str| typed_annals("typed: 1 writer", metric);
        let typed_bulk = typed_annals("typed: bulk", "events/s");
        let _ = writeln!(
            out,
            "Raw baseline (preallocated file, same run): 300-byte `pwrite` + `fdatasync` per \
             commit: {} commits/s, p50 {} µs; annals typed single writer / raw: {} \
             (commits/s), {} (p50 latency). Bulk: one {}-byte `pwrite` ({} events' frames) + \
             `fdatasync` per commit: {} events/s; annals typed bulk / raw: {}.\n",
            format_value(Some(raw.commits_per_sec)),
            format_value(Some(raw.p50_us)),
            ratio(typed_single("commits/s"), Some(raw.commits_per_sec)),
            ratio(typed_single("p50 latency µs"), Some(raw.p50_us)),
            group_digits(raw.bulk_bytes as f64),
            group_digits(config.batch.max(1) as f64),
            format_value(Some(raw.bulk_events_per_sec)),
            ratio(typed_bulk, Some(raw.bulk_events_per_sec)),
        );
    }
    let (typed_payload, typed_metadata) = corpus.typed.encoded_bytes();
    let _ = writeln!(
        out,
        "Typed rows (\"typed: …\"): events declared with `events!` (two types, a nested \
         struct, strings; payload {typed_payload} bytes, metadata {typed_metadata} bytes), \
         built per push as an application does; annals pushes and reads them through \
         `EventStore` (`push_event`, `push_batch`, `get_aggregate_state`, `get_aggregate`), \
         SQLite and redb encode and decode them the same way (MessagePack, named fields, \
         reused buffers) around their own storage.\n"
    );
    out.push_str(&markdown_table(config, labels, measures));
    out.push_str(
        "\n↑ higher is better, ↓ lower is better; a ratio is annals' figure divided by the \
         other engine's. SQLite: WAL, `synchronous=FULL`, one connection behind a mutex. \
         redb: default durability (fsync per commit), one shared `Database`. Open: until ready \
         to append, page cache warm; \"clean\" after a clean close (median of 3), \"after \
         crash\" on a copy of the files taken while the engine was open (recovery runs).\n",
    );
    out.push_str(
        "\nResident MiB: growth of the process's RSS from just before the open (heap trimmed) \
         to after it and after reading every event of a fixed sample of aggregates.\n",
    );
    if let Some(first) = results.scale.first() {
        let _ = writeln!(
            out,
            "\n## Scale: {} (annals only)\n\nLoaded in commits of {} events under \
             `Durability::None`, then one `sync()`; each aggregate's events are spread over \
             the whole log (round-robin). Opens and reads use the default options \
             (`Durability::Immediate`); `get_events` reads every event of a random aggregate, \
             page cache warm.\n\n| figure | annals (log) |\n|---|--:|",
            first.workload,
            group_digits(config.scale_batch as f64),
        );
        for m in &results.scale {
            let better = if m.higher_is_better { "↑" } else { "↓" };
            let _ = writeln!(out, "| {} {better} | {} |", m.metric, format_value(m.value));
        }
    }
    if labels.iter().any(|l| l.contains("in-memory")) {
        out.push_str(
            "\n**annals (in-memory)** keeps events in process memory and never touches the \
             disk: its write figures are not durable and not comparable as such; it has no \
             open time. They show the cost of the storage API itself; the log adapter's \
             figures replace this column.\n",
        );
    }
    out
}

const SVG_COLORS: [&str; 3] = ["#1f77b4", "#ff7f0e", "#2ca02c"];

/// A bar chart: one panel per figure, one bar per engine, bars scaled to the panel's largest.
fn svg_chart(labels: &[String], measures: &[Vec<Measure>]) -> String {
    const WIDTH: usize = 760;
    const LABEL_W: usize = 170;
    const BAR_H: usize = 16;
    const BAR_MAX_W: usize = 440;
    let rows = measures.first().map_or(0, Vec::len);
    let panel_h = 26 + labels.len() * (BAR_H + 4) + 10;
    let height = 40 + rows * panel_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">\
         annals vs SQLite vs redb (↑ higher is better, ↓ lower is better)</text>\n"
    );
    for r in 0..rows {
        let first = &measures[0][r];
        let top = 40 + r * panel_h;
        let better = if first.higher_is_better { "↑" } else { "↓" };
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{} — {} {better}</text>",
            top + 16,
            escape(&first.workload),
            escape(first.metric),
        );
        let max = measures
            .iter()
            .filter_map(|m| m[r].value)
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        for (e, label) in labels.iter().enumerate() {
            let y = top + 26 + e * (BAR_H + 4);
            let value = measures[e][r].value.filter(|v| v.is_finite());
            let width = match value {
                Some(v) if max > 0.0 => ((v / max) * BAR_MAX_W as f64).max(1.0) as usize,
                _ => 0,
            };
            let color = SVG_COLORS[e % SVG_COLORS.len()];
            let _ = writeln!(
                svg,
                "<text x=\"20\" y=\"{}\">{}</text>\
                 <rect x=\"{LABEL_W}\" y=\"{y}\" width=\"{width}\" height=\"{BAR_H}\" \
                 fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{}\">{}</text>",
                y + 12,
                escape(label),
                LABEL_W + width + 6,
                y + 12,
                format_value(measures[e][r].value),
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and then a smoke
    // pass checks that every engine and workload still runs, in well under a second each.
    let full = std::env::args().any(|a| a == "--bench");
    let config = Config::from_env(full)?;
    let ctx = Context {
        runtime: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    let corpus = Corpus::new()?;
    let before = disk_probe(&config)?;
    let results = run_all(&config, &ctx, &corpus)?;
    let after = disk_probe(&config)?;
    let report = report(&config, &corpus, [before, after], &results);
    println!("\n{report}");
    if config.full {
        std::fs::create_dir_all(&config.target_dir)?;
        let md = config.target_dir.join("compare-report.md");
        let svg = config.target_dir.join("compare-report.svg");
        std::fs::write(&md, &report)?;
        std::fs::write(&svg, svg_chart(&results.labels, &results.measures))?;
        eprintln!("wrote {} and {}", md.display(), svg.display());
    }
    Ok(())
}
