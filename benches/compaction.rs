//! Compaction of the log adapter's sealed segments: its throughput, what it costs concurrent
//! appends, and the disk space it gives back.
//!
//! One store in a temporary directory, `annals::open` defaults (`Durability::Immediate`,
//! segments up to 64 MiB, checkpoint every 100,000 events):
//!
//! 1. **fill**: `ANNALS_BENCH_EVENTS` events (default 1,000,000) over
//!    `ANNALS_BENCH_AGGREGATES` aggregates (default 10,000), ~200-byte payloads, in commits of
//!    1,000 events holding one version of 1,000 aggregates each; then the store is closed and
//!    reopened, so every segment but the last is sealed;
//! 2. **appends alone**: one writer pushes one event per commit to an aggregate of its own for
//!    `ANNALS_BENCH_APPEND_SECS` seconds (default 5): the latency of every commit;
//! 3. **compaction with appends**: the compaction removes the first 30% of every aggregate's
//!    versions while the same writer goes on appending; the compaction's time, the bytes of
//!    sealed segments it read per second, the bytes it gave back, and the latency of the
//!    commits made while it ran.
//!
//! Run with `cargo bench --features testing --bench compaction`; without `--bench` (as `cargo
//! test --all-targets` runs it) it makes one quick pass at a tiny size. Figures print as a
//! markdown table row.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annals::Timestamp;
use annals::storage::{AppendEvent, EncodedEvent, LogAdapter, StorageAdapter};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const STORE: &str = "ACCOUNTS";

fn event(aggregate: &str, version: u64, n: u64) -> AppendEvent {
    let mut payload = format!(
        "{{\"account_id\":\"{aggregate}\",\"amount_cents\":{n},\"currency\":\"EUR\",\
         \"reference\":\"ref-{n:012}\",\"memo\":\"monthly credit\",\"sequence\":{n}}}"
    )
    .into_bytes();
    payload.resize(200, b' ');
    AppendEvent {
        event_store_id: STORE.to_owned(),
        event: EncodedEvent {
            aggregate_id: aggregate.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + n as i64),
            event_type: "CREDITED".to_owned(),
            schema_version: 1,
            payload,
            metadata: vec![0xc0],
        },
    }
}

fn var(name: &str, full: bool, full_default: u64, quick: u64) -> BenchResult<u64> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse()?),
        Err(_) if full => Ok(full_default),
        Err(_) => Ok(quick),
    }
}

fn dir_bytes(dir: &Path) -> BenchResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir.join("log"))? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1e3
}

/// One writer appending single events until `stop`; the latency of every commit.
async fn append_until(
    log: Arc<LogAdapter>,
    stop: Arc<AtomicBool>,
    next_version: &mut u64,
) -> BenchResult<Vec<Duration>> {
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let e = event("writer", *next_version, *next_version);
        let started = Instant::now();
        log.push_event(e).await?;
        latencies.push(started.elapsed());
        *next_version += 1;
    }
    latencies.sort_unstable();
    Ok(latencies)
}

async fn run(full: bool) -> BenchResult<()> {
    let events = var("ANNALS_BENCH_EVENTS", full, 1_000_000, 20_000)?;
    let aggregates = var("ANNALS_BENCH_AGGREGATES", full, 10_000, 1_000)?.max(1);
    let append_secs = var("ANNALS_BENCH_APPEND_SECS", full, 5, 1)?;
    let versions = events / aggregates;
    let dir = tempfile::tempdir()?;
    let ids: Vec<String> = (0..aggregates).map(|a| format!("acct-{a:06}")).collect();
    {
        let log = annals::open(dir.path())?;
        let mut n = 0;
        for version in 1..=versions {
            for chunk in ids.chunks(1_000) {
                let group: Vec<AppendEvent> = chunk
                    .iter()
                    .map(|id| {
                        n += 1;
                        event(id, version, n)
                    })
                    .collect();
                log.push_event_group(group).await?;
            }
        }
        log.close();
    }
    let log = Arc::new(LogAdapter::builder(dir.path()).open()?);
    let mut next_version = 1;
    // Appends alone.
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(append_secs)).await;
            stop.store(true, Ordering::Release);
        })
    };
    let alone = append_until(Arc::clone(&log), Arc::clone(&stop), &mut next_version).await?;
    timer.await?;
    // Compaction, with the same writer appending meanwhile.
    let cut = versions * 3 / 10;
    let bytes_before = dir_bytes(dir.path())?;
    let stop = Arc::new(AtomicBool::new(false));
    let compaction = {
        let log = Arc::clone(&log);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let started = Instant::now();
            let report = log
                .compact_where(move |e| e.aggregate == "writer" || e.version > cut)
                .await;
            stop.store(true, Ordering::Release);
            report.map(|r| (r, started.elapsed()))
        })
    };
    let during = append_until(Arc::clone(&log), Arc::clone(&stop), &mut next_version).await?;
    let (report, took) = compaction.await??;
    let bytes_after = dir_bytes(dir.path())?;
    let verified = log.verify()?;
    assert!(verified.is_clean(), "{:?}", verified.problems);
    let scanned_mb = report.bytes_scanned as f64 / 1e6;
    println!(
        "| {events} events, {aggregates} aggregates | {:.2} s | {} of {} | {} | {:.1} MB/s \
         | {:.1} MB/s | {:.1} -> {:.1} MiB ({:.1}%) | {} / {:.2} / {:.2} | {} / {:.2} / {:.2} |",
        took.as_secs_f64(),
        report.segments_rewritten,
        report.segments_scanned,
        report.events_removed,
        scanned_mb / took.as_secs_f64(),
        report.bytes_before as f64 / 1e6 / took.as_secs_f64(),
        bytes_before as f64 / (1 << 20) as f64,
        bytes_after as f64 / (1 << 20) as f64,
        100.0 * (bytes_before - bytes_after.min(bytes_before)) as f64 / bytes_before as f64,
        alone.len(),
        percentile(&alone, 0.5),
        percentile(&alone, 0.99),
        during.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
    );
    Ok(())
}

fn main() -> BenchResult<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "| store | compaction time | segments rewritten | events removed | log MB/s | \
         rewritten-segment MB/s | log on disk | appends alone: n / p50 / p99 ms | during \
         compaction: n / p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    rt.block_on(run(full))
}
