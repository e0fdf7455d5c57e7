//! Commit latency of the log adapter over a store's life, segment rolls included, and the disk
//! space of small stores.
//!
//! Three measurements, each on a fresh store in a temporary directory, with `annals::open`
//! defaults (`Durability::Immediate`: every acknowledged commit is fdatasync'ed):
//!
//! 1. **bulk load**: one writer pushes groups of `ANNALS_BENCH_BULK_GROUP` events (default
//!    1,000) until `ANNALS_BENCH_BULK_EVENTS` events (default 10,000,000) are stored; the
//!    latency of every commit, the segment rolls and the events per second;
//! 2. **single writer**: one writer pushes one event per commit for `ANNALS_BENCH_SINGLE_SECS`
//!    seconds (default 180); the latency of every commit and the segment rolls;
//! 3. **small stores**: the disk space (allocated blocks) of stores of 42 and 1,000 events while
//!    they are open, and once closed (allocated blocks and file lengths).
//!
//! Events carry a ~200-byte payload, like the other benchmarks'. The rolls are counted from
//! the number of segment files; the commits during which it grew (the commits that rolled the
//! log over) are also reported apart. Everything is printed as markdown tables.
//!
//! Run with `cargo bench --bench commit_latency` (about four minutes with the defaults);
//! `ANNALS_BENCH_BULK_EVENTS=1000000 ANNALS_BENCH_SINGLE_SECS=20` makes a short run, and
//! `ANNALS_BENCH_CHECKPOINT_EVENTS` sets the bulk and single-writer stores' `checkpoint_events`
//! (to see what index checkpoints cost the commits). Without
//! `--bench` (as `cargo test --all-targets` runs it) it makes one quick pass at a tiny size.

use std::path::Path;
use std::time::{Duration, Instant};

use annals::Timestamp;
use annals::engine::LogCounters;
use annals::storage::{AppendEvent, EncodedEvent, LogAdapter, StorageAdapter};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const STORE: &str = "ACCOUNTS";

/// The sizes of one run.
struct Sizes {
    bulk_events: u64,
    bulk_group: u64,
    single: Duration,
    /// `checkpoint_events` of the stores; `None`: the default.
    checkpoint_events: Option<usize>,
}

impl Sizes {
    fn from_env(full: bool) -> BenchResult<Self> {
        let var = |name: &str, full_default: u64, quick: u64| -> BenchResult<u64> {
            match std::env::var(name) {
                Ok(v) => Ok(v.parse()?),
                Err(_) if full => Ok(full_default),
                Err(_) => Ok(quick),
            }
        };
        Ok(Sizes {
            bulk_events: var("ANNALS_BENCH_BULK_EVENTS", 10_000_000, 20_000)?,
            bulk_group: var("ANNALS_BENCH_BULK_GROUP", 1_000, 1_000)?,
            single: Duration::from_secs(var("ANNALS_BENCH_SINGLE_SECS", 180, 1)?),
            checkpoint_events: match std::env::var("ANNALS_BENCH_CHECKPOINT_EVENTS") {
                Ok(v) => Some(v.parse()?),
                Err(_) => None,
            },
        })
    }

    /// Opens the store of one workload.
    fn open(&self, dir: &Path) -> BenchResult<LogAdapter> {
        let mut builder = LogAdapter::builder(dir);
        if let Some(events) = self.checkpoint_events {
            builder = builder.checkpoint_events(events);
        }
        Ok(builder.open()?)
    }
}

/// A ~200-byte payload, different for every event.
fn payload(n: u64) -> Vec<u8> {
    let mut p = format!(
        "{{\"account_id\":\"acct-{:06}\",\"amount_cents\":{},\"currency\":\"EUR\",\
         \"reference\":\"ref-{n:012}\",\"memo\":\"monthly credit\",\"tags\":[\"a\",\"b\"],\
         \"booked_at_ms\":1700000000000,\"sequence\":{n}}}",
        n % 10_000,
        n % 100_000
    )
    .into_bytes();
    p.resize(200, b' ');
    p
}

fn event(aggregate: &str, version: u64, n: u64) -> AppendEvent {
    AppendEvent {
        event_store_id: STORE.to_owned(),
        event: EncodedEvent {
            aggregate_id: aggregate.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + n as i64),
            event_type: "ACCOUNT_CREDITED".to_owned(),
            schema_version: 1,
            payload: payload(n),
            metadata: Vec::new(),
        },
    }
}

/// Latencies of individual commits, in microseconds.
#[derive(Default)]
struct Latencies(Vec<u64>);

impl Latencies {
    fn record(&mut self, took: Duration) {
        self.0.push(took.as_micros() as u64);
    }

    fn percentile(sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
    }

    /// p50, p99, p99.9 and max, in milliseconds.
    fn summary(&mut self) -> [f64; 4] {
        self.0.sort_unstable();
        let s = &self.0;
        [
            Self::percentile(s, 50.0),
            Self::percentile(s, 99.0),
            Self::percentile(s, 99.9),
            s.last().copied().unwrap_or(0) as f64 / 1000.0,
        ]
    }

    /// Commits slower than `ms` milliseconds.
    fn over(&self, ms: u64) -> usize {
        self.0.iter().filter(|&&us| us > ms * 1000).count()
    }
}

/// One row of the latency table.
struct Row {
    name: &'static str,
    commits: usize,
    events: u64,
    elapsed: Duration,
    latencies: Latencies,
    /// Latencies of the commits during which the log rolled over to a new segment.
    rolling: Latencies,
    rolls: usize,
    counters: LogCounters,
}

async fn bulk(dir: &Path, sizes: &Sizes) -> BenchResult<Row> {
    let log = sizes.open(dir)?;
    let segments_before = log.stats().segments;
    let mut latencies = Latencies::default();
    let mut rolling = Latencies::default();
    let aggregates = (sizes.bulk_events / 1_000).max(1);
    let mut versions = vec![0u64; aggregates as usize];
    let mut n = 0u64;
    let start = Instant::now();
    while n < sizes.bulk_events {
        let a = (n / sizes.bulk_group) % aggregates;
        let aggregate = format!("acct-{a:06}");
        let take = sizes.bulk_group.min(sizes.bulk_events - n);
        let group: Vec<AppendEvent> = (0..take)
            .map(|i| {
                versions[a as usize] += 1;
                event(&aggregate, versions[a as usize], n + i)
            })
            .collect();
        let segments = log.stats().segments;
        let t = Instant::now();
        log.push_event_group(group).await?;
        let took = t.elapsed();
        latencies.record(took);
        if log.stats().segments != segments {
            rolling.record(took);
        }
        n += take;
    }
    let elapsed = start.elapsed();
    let rolls = log.stats().segments - segments_before;
    let counters = log.counters();
    log.close();
    Ok(Row {
        name: "bulk load",
        commits: latencies.0.len(),
        events: n,
        elapsed,
        latencies,
        rolling,
        rolls,
        counters,
    })
}

async fn single(dir: &Path, sizes: &Sizes) -> BenchResult<Row> {
    let log = sizes.open(dir)?;
    let segments_before = log.stats().segments;
    let mut latencies = Latencies::default();
    let mut rolling = Latencies::default();
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < sizes.single {
        let aggregate = format!("acct-{:06}", n / 1_000);
        let segments = log.stats().segments;
        let t = Instant::now();
        log.push_event(event(&aggregate, n % 1_000 + 1, n)).await?;
        let took = t.elapsed();
        latencies.record(took);
        if log.stats().segments != segments {
            rolling.record(took);
        }
        n += 1;
    }
    let elapsed = start.elapsed();
    let rolls = log.stats().segments - segments_before;
    let counters = log.counters();
    log.close();
    Ok(Row {
        name: "single writer",
        commits: latencies.0.len(),
        events: n,
        elapsed,
        latencies,
        rolling,
        rolls,
        counters,
    })
}

/// Allocated bytes and file lengths of everything under `dir`.
fn disk_usage(dir: &Path) -> BenchResult<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut allocated = 0;
    let mut length = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (a, l) = disk_usage(&entry.path())?;
            allocated += a;
            length += l;
        } else {
            allocated += meta.blocks() * 512;
            length += meta.len();
        }
    }
    Ok((allocated, length))
}

/// Disk space (allocated bytes) of a store of `events` events while it is open, then of the
/// closed store (allocated bytes and file lengths, with the length of each file).
async fn small_store(dir: &Path, events: u64) -> BenchResult<(u64, u64, u64, String)> {
    let open_allocated = {
        let log = LogAdapter::builder(dir).open()?;
        for n in 0..events {
            let aggregate = format!("pokemon-{}", n % 7);
            log.push_event(event(&aggregate, n / 7 + 1, n)).await?;
        }
        // The next segment's preparation, if one was asked for, is done by now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (allocated, _) = disk_usage(dir)?;
        log.close();
        allocated
    };
    let (allocated, length) = disk_usage(dir)?;
    let mut files = Vec::new();
    for sub in [dir.to_owned(), dir.join("log")] {
        for entry in std::fs::read_dir(&sub)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() && meta.len() > 0 {
                let name = entry.file_name().to_string_lossy().into_owned();
                files.push(format!("{name} {}", kib(meta.len())));
            }
        }
    }
    files.sort();
    Ok((open_allocated, allocated, length, files.join(", ")))
}

fn kib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

fn main() -> BenchResult<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = Sizes::from_env(full)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut rows = Vec::new();
        let dir = tempfile::tempdir()?;
        rows.push(bulk(&dir.path().join("bulk"), &sizes).await?);
        std::fs::remove_dir_all(dir.path().join("bulk"))?;
        rows.push(single(&dir.path().join("single"), &sizes).await?);
        std::fs::remove_dir_all(dir.path().join("single"))?;

        println!(
            "| workload | commits | events | events/s | p50 ms | p99 ms | p99.9 ms | max ms \
             | max / p99 | commits > 20 ms | rolls | syncs | events per sync |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for row in &mut rows {
            let [p50, p99, p999, max] = row.latencies.summary();
            let rate = row.events as f64 / row.elapsed.as_secs_f64();
            println!(
                "| {} | {} | {} | {:.0} | {p50:.3} | {p99:.3} | {p999:.3} | {max:.3} | {:.1} \
                 | {} | {} | {} | {:.1} |",
                row.name,
                row.commits,
                row.events,
                rate,
                max / p99.max(0.001),
                row.latencies.over(20),
                row.rolls,
                row.counters.syncs,
                row.counters.events_per_sync(),
            );
        }
        println!();
        println!("| workload | commits that rolled | their max ms | of them > 20 ms |");
        println!("|---|---|---|---|");
        for row in &mut rows {
            let max = row.rolling.summary()[3];
            let over = row.rolling.over(20);
            println!(
                "| {} | {} | {max:.3} | {over} |",
                row.name,
                row.rolling.0.len()
            );
        }
        println!();
        println!(
            "| store | on disk while open (allocated) | on disk closed (allocated) | file lengths \
             | files |"
        );
        println!("|---|---|---|---|---|");
        for events in [42, 1_000] {
            let path = dir.path().join(format!("small-{events}"));
            let (open, allocated, length, files) = small_store(&path, events).await?;
            println!(
                "| {events} events | {} | {} | {} | {files} |",
                kib(open),
                kib(allocated),
                kib(length)
            );
        }
        Ok(())
    })
}
