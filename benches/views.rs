//! View update throughput: how fast a view applies the log, in events/s.
//!
//! N typed events (1,000 aggregates; each handler decodes its event and bumps a per-aggregate
//! counter) sit in an in-memory log, so the figure is the view's cost, not the log's (reading
//! the log from disk is measured in `benches/subscriptions.rs`). A fresh view, on disk in a
//! temporary directory, is run from position 1 until it has applied the last event:
//!
//! - **kv**: a `KvView` in a `StateStore` file (redb), one durable commit per batch of 256;
//! - **sql**: a `SqlView` (SQLite, WAL, `synchronous=FULL`) with an upsert per event, one
//!   durable commit per batch of 256;
//! - **kv on PostgreSQL** (feature `postgres`, when `ANNALS_POSTGRES_URL` names a server): the
//!   same `KvView` in the PostgreSQL state store, on a fresh schema dropped afterwards, one
//!   transaction per batch of 256.
//!
//! Median of 3 runs. Run with `cargo bench --features sql --bench views`;
//! `ANNALS_BENCH_VIEW_EVENTS` sets N (default 100,000). Without `--bench` (as
//! `cargo test --all-targets` builds and runs benches) it makes one quick pass at a tiny size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::state::StateStore;
use annals::storage::{InMemoryAdapter, StorageAdapter};
use annals::view::{KvTables, KvView, SqlView, ViewRunner};
use annals::{EventDetail, EventStore, NewEvent, Position};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Credited {
    amount: u64,
    memo: String,
}

annals::events! {
    enum AccountEvent {
        Credited(Credited) = "ACCOUNT_CREDITED",
    }
}

type Accounts = EventStore<AccountEvent, ()>;

/// Waits long enough for any healthy run; a timeout means the bench is broken.
const PATIENCE: Duration = Duration::from_secs(3_600);

fn kv_view(accounts: &Accounts, state: Arc<StateStore>) -> KvView {
    KvView::builder("balances", 1)
        .on(
            accounts,
            |tables: &mut KvTables<'_>, event: &EventDetail<AccountEvent>| {
                let AccountEvent::Credited(credited) = &event.event;
                let id = &event.aggregate_id;
                let balance: u64 = tables.get("balances", id)?.unwrap_or(0);
                tables.put("balances", id, &(balance + credited.amount))
            },
        )
        .build(state)
        .expect("build the kv view")
}

fn sql_view(accounts: &Accounts, dir: &std::path::Path) -> SqlView {
    SqlView::builder("balances", 1)
        .schema("CREATE TABLE balances (id TEXT PRIMARY KEY, balance INTEGER NOT NULL)")
        .on(
            accounts,
            |db: &rusqlite::Connection, event: &EventDetail<AccountEvent>| {
                let AccountEvent::Credited(credited) = &event.event;
                let amount = i64::try_from(credited.amount).unwrap_or(i64::MAX);
                db.execute(
                    "INSERT INTO balances VALUES (?1, ?2) \
                     ON CONFLICT (id) DO UPDATE SET balance = balance + ?2",
                    (&event.aggregate_id, amount),
                )
                .map(|_| ())
            },
        )
        .open(dir)
        .expect("open the sql view")
}

async fn load(accounts: &Accounts, events: u64) -> Position {
    let aggregates = 1_000.min(events);
    let mut last = 0;
    for i in 0..events {
        let event = AccountEvent::Credited(Credited {
            amount: i % 100,
            memo: "monthly interest, credited on the first business day".into(),
        });
        let id = format!("account-{:06}", i % aggregates);
        let version = i / aggregates + 1;
        last = accounts
            .push_event(NewEvent::new(id, version, event), Default::default())
            .await
            .expect("push")
            .position;
    }
    last
}

/// Time from starting `runner` to the view having applied `last`.
async fn time_catch_up(
    start: Instant,
    runner: ViewRunner,
    wait: impl std::future::Future<Output = Result<(), annals::view::ViewError>>,
) -> Duration {
    wait.await.expect("the view catches up");
    let elapsed = start.elapsed();
    runner.stop().await.expect("the runner stops cleanly");
    elapsed
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let events: u64 = if benching {
        std::env::var("ANNALS_BENCH_VIEW_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000)
    } else {
        1_000
    };
    let runs = if benching { 3 } else { 1 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
        let accounts: Accounts = EventStore::builder("ACCOUNTS", |_, _: &EventDetail<_>| ())
            .storage_adapter(adapter.clone())
            .build()
            .expect("build the store");
        let last = load(&accounts, events).await;

        let mut kv = Vec::new();
        for _ in 0..runs {
            let dir = tempfile::tempdir().expect("tempdir");
            let state = StateStore::open(dir.path().join("state.redb")).expect("state");
            let view = kv_view(&accounts, Arc::new(state));
            let start = Instant::now();
            let runner = view.run(adapter.clone());
            kv.push(time_catch_up(start, runner, view.wait_for(last, PATIENCE)).await);
        }
        let mut sql = Vec::new();
        for _ in 0..runs {
            let dir = tempfile::tempdir().expect("tempdir");
            let view = sql_view(&accounts, dir.path());
            let start = Instant::now();
            let runner = view.run(adapter.clone());
            sql.push(time_catch_up(start, runner, view.wait_for(last, PATIENCE)).await);
        }
        let mut rows = vec![("kv", kv), ("sql", sql)];
        #[cfg(feature = "postgres")]
        if let Ok(url) = std::env::var("ANNALS_POSTGRES_URL") {
            let mut pg = Vec::new();
            for run in 0..runs {
                let schema = format!("annals_bench_views_{}_{run}", std::process::id());
                let postgres = annals::storage::PostgresAdapter::builder(&url)
                    .schema(&schema)
                    .connect()
                    .await
                    .expect("connect to PostgreSQL");
                let state = StateStore::postgres(&postgres).await.expect("state");
                let view = kv_view(&accounts, Arc::new(state));
                let start = Instant::now();
                let runner = view.run(adapter.clone());
                pg.push(time_catch_up(start, runner, view.wait_for(last, PATIENCE)).await);
                drop((view, postgres));
                drop_schema(&url, &schema).await;
            }
            rows.push(("kv on PostgreSQL", pg));
        }
        for (name, runs) in rows {
            let elapsed = median(runs);
            let rate = events as f64 / elapsed.as_secs_f64();
            println!(
                "view update throughput, {name}: {events} events in {:.3} s = {rate:.0} events/s",
                elapsed.as_secs_f64()
            );
        }
    });
}

/// Drops a schema the bench made.
#[cfg(feature = "postgres")]
async fn drop_schema(url: &str, schema: &str) {
    use annals::storage::postgres::tokio_postgres;
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to drop the schema");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop the bench schema");
}
