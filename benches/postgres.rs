//! The PostgreSQL adapter side by side with the embedded log adapter, on the workloads of the
//! log-engine comparison (`benches/compare.rs`), through the public [`StorageAdapter`] API.
//!
//! A standalone runner (`harness = false`), like `compare.rs`: commits are bound by a WAL
//! flush or an fdatasync, so it times operations itself, keeps every latency sample for exact
//! percentiles, and prints one markdown table.
//!
//! # Adapters
//! - **log**: `LogAdapter::builder(dir).open()`, default options (an fdatasync before every
//!   acknowledgement, group commit across concurrent appenders), in a temporary directory.
//! - **postgres**: `PostgresAdapter` on `ANNALS_POSTGRES_URL`, a fresh schema dropped at the
//!   end, default options (pool of 16; group commit: the appends that queue while a transaction
//!   is in flight share the next one, and its WAL flush). The server's settings are printed
//!   with the results.
//!
//! # Workloads
//! 1. one writer, one commit per event: commits/s, p50 and p99 latency;
//! 2. 32 concurrent writers on distinct aggregates, one event per commit: events/s, p50 and
//!    p99 latency;
//! 3. bulk: 1,000 events per commit: events/s;
//! 4. replay: `get_events` of one aggregate of 100,000 events: events/s;
//! 5. catch-up: `read_log` of the whole log from position 1 in batches of 1,000 (what a
//!    subscription does): events/s.
//!
//! Events carry a 200-byte payload and 40 bytes of metadata.
//!
//! # Running
//! `eval "$(bash .ci/postgres start)"` then `cargo bench --features postgres --bench postgres`.
//! Without `ANNALS_POSTGRES_URL` it prints how to get a server and exits. Without `--bench` (as
//! under `cargo test --all-targets`) it runs a tiny smoke pass.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `ANNALS_BENCH_SECS` | 3 | seconds each timed write workload runs |
//! | `ANNALS_BENCH_WRITERS` | 32 | writers of workload 2 |
//! | `ANNALS_BENCH_REPLAY_EVENTS` | 100000 | events of the replayed aggregate |

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::storage::{
    AppendEvent, EncodedEvent, LogAdapter, PostgresAdapter, StorageAdapter, Timestamp,
};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

struct Config {
    duration: Duration,
    writers: usize,
    batch: u64,
    replay_events: u64,
}

impl Config {
    fn from_env(full: bool) -> BenchResult<Config> {
        let var = |name: &str, default: u64| -> BenchResult<u64> {
            match std::env::var(name) {
                Ok(v) => Ok(v.parse()?),
                Err(_) => Ok(default),
            }
        };
        Ok(if full {
            Config {
                duration: Duration::from_secs(var("ANNALS_BENCH_SECS", 3)?),
                writers: usize::try_from(var("ANNALS_BENCH_WRITERS", 32)?)?,
                batch: 1_000,
                replay_events: var("ANNALS_BENCH_REPLAY_EVENTS", 100_000)?,
            }
        } else {
            Config {
                duration: Duration::from_millis(100),
                writers: 4,
                batch: 100,
                replay_events: 1_000,
            }
        })
    }
}

fn event(aggregate: &str, version: u64) -> AppendEvent {
    AppendEvent {
        event_store_id: "BENCH".to_owned(),
        event: EncodedEvent {
            aggregate_id: aggregate.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000),
            event_type: "POKEMON_TRAINED".to_owned(),
            schema_version: 1,
            payload: (0..200u32)
                .map(|i| (i * 7 + version as u32) as u8)
                .collect(),
            metadata: vec![b'm'; 40],
        },
    }
}

/// Latency samples, for exact percentiles.
struct Samples(Vec<Duration>);

impl Samples {
    fn percentile_us(&mut self, p: f64) -> f64 {
        self.0.sort_unstable();
        if self.0.is_empty() {
            return f64::NAN;
        }
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        self.0[i].as_secs_f64() * 1e6
    }
}

/// One row of the report: a workload's metric for each adapter.
struct Row {
    workload: &'static str,
    metric: &'static str,
    values: Vec<f64>,
}

async fn single_writer(adapter: &dyn StorageAdapter, config: &Config) -> BenchResult<Vec<Row>> {
    let mut samples = Samples(Vec::new());
    let start = Instant::now();
    let mut version = 0;
    while start.elapsed() < config.duration {
        version += 1;
        let t = Instant::now();
        adapter.push_event(event("single", version)).await?;
        samples.0.push(t.elapsed());
    }
    let rate = version as f64 / start.elapsed().as_secs_f64();
    Ok(vec![
        Row {
            workload: "1 writer, 1 event/commit",
            metric: "commits/s",
            values: vec![rate],
        },
        Row {
            workload: "",
            metric: "p50 µs",
            values: vec![samples.percentile_us(0.5)],
        },
        Row {
            workload: "",
            metric: "p99 µs",
            values: vec![samples.percentile_us(0.99)],
        },
    ])
}

async fn concurrent_writers(
    adapter: Arc<dyn StorageAdapter>,
    config: &Config,
) -> BenchResult<Vec<Row>> {
    let start = Instant::now();
    let deadline = start + config.duration;
    let tasks: Vec<_> = (0..config.writers)
        .map(|w| {
            let adapter = Arc::clone(&adapter);
            tokio::spawn(async move {
                let aggregate = format!("writer-{w}");
                let mut samples = Vec::new();
                let mut version = 0;
                while Instant::now() < deadline {
                    version += 1;
                    let t = Instant::now();
                    adapter.push_event(event(&aggregate, version)).await?;
                    samples.push(t.elapsed());
                }
                Ok::<_, annals::StorageError>(samples)
            })
        })
        .collect();
    let mut samples = Samples(Vec::new());
    for task in tasks {
        samples.0.extend(task.await??);
    }
    let rate = samples.0.len() as f64 / start.elapsed().as_secs_f64();
    Ok(vec![
        Row {
            workload: "32 writers, 1 event/commit",
            metric: "events/s",
            values: vec![rate],
        },
        Row {
            workload: "",
            metric: "p50 µs",
            values: vec![samples.percentile_us(0.5)],
        },
        Row {
            workload: "",
            metric: "p99 µs",
            values: vec![samples.percentile_us(0.99)],
        },
    ])
}

async fn bulk(adapter: &dyn StorageAdapter, config: &Config) -> BenchResult<Vec<Row>> {
    let start = Instant::now();
    let mut version = 0;
    while start.elapsed() < config.duration {
        let group = (version + 1..=version + config.batch)
            .map(|v| event("bulk", v))
            .collect();
        adapter.push_event_group(group).await?;
        version += config.batch;
    }
    let rate = version as f64 / start.elapsed().as_secs_f64();
    Ok(vec![Row {
        workload: "bulk, 1,000 events/commit",
        metric: "events/s",
        values: vec![rate],
    }])
}

async fn replay(adapter: &dyn StorageAdapter, config: &Config) -> BenchResult<Vec<Row>> {
    let mut version = 0;
    while version < config.replay_events {
        let last = (version + config.batch).min(config.replay_events);
        let group = (version + 1..=last).map(|v| event("replayed", v)).collect();
        adapter.push_event_group(group).await?;
        version = last;
    }
    let start = Instant::now();
    let events = adapter
        .get_events("BENCH", "replayed", &Default::default())
        .await?;
    let rate = events.len() as f64 / start.elapsed().as_secs_f64();
    assert_eq!(
        events.len() as u64,
        config.replay_events,
        "the whole aggregate is read"
    );
    Ok(vec![Row {
        workload: "replay one aggregate",
        metric: "events/s",
        values: vec![rate],
    }])
}

async fn catch_up(adapter: &dyn StorageAdapter) -> BenchResult<Vec<Row>> {
    let start = Instant::now();
    let (mut next, mut read) = (1, 0usize);
    loop {
        let batch = adapter.read_log(next, 1_000).await?;
        let Some(last) = batch.last() else { break };
        next = last.position + 1;
        read += batch.len();
    }
    let rate = read as f64 / start.elapsed().as_secs_f64();
    Ok(vec![Row {
        workload: "read_log catch-up, whole log",
        metric: "events/s",
        values: vec![rate],
    }])
}

async fn run_all(adapter: Arc<dyn StorageAdapter>, config: &Config) -> BenchResult<Vec<Row>> {
    let mut rows = single_writer(&*adapter, config).await?;
    rows.extend(concurrent_writers(Arc::clone(&adapter), config).await?);
    rows.extend(bulk(&*adapter, config).await?);
    rows.extend(replay(&*adapter, config).await?);
    rows.extend(catch_up(&*adapter).await?);
    Ok(rows)
}

async fn server_settings(url: &str) -> BenchResult<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut out = Vec::new();
    for setting in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "shared_buffers",
    ] {
        let row = client.query_one(&format!("SHOW {setting}"), &[]).await?;
        out.push(format!("{setting}={}", row.get::<_, String>(0)));
    }
    Ok(out.join(", "))
}

fn main() -> BenchResult<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let Ok(url) = std::env::var("ANNALS_POSTGRES_URL") else {
        println!(
            "benches/postgres skipped: ANNALS_POSTGRES_URL is not set; start a server with \
             `eval \"$(bash .ci/postgres start)\"`, then run \
             `cargo bench --features postgres --bench postgres`"
        );
        return Ok(());
    };
    let config = Config::from_env(full)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let log: Arc<dyn StorageAdapter> = Arc::new(LogAdapter::builder(dir.path()).open()?);
        let log_rows = run_all(log, &config).await?;

        let schema = format!("annals_bench_{}", std::process::id());
        let postgres = PostgresAdapter::builder(&url)
            .schema(&schema)
            .connect()
            .await?;
        let postgres_rows = run_all(Arc::new(postgres), &config).await;
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await?;
        let postgres_rows = postgres_rows?;

        println!("\nPostgreSQL: {}", server_settings(&url).await?);
        println!("\n| workload | metric | log adapter | PostgreSQL adapter |\n|---|---|---:|---:|");
        for (log, pg) in log_rows.iter().zip(&postgres_rows) {
            println!(
                "| {} | {} | {:.0} | {:.0} |",
                log.workload, log.metric, log.values[0], pg.values[0]
            );
        }
        Ok(())
    })
}
