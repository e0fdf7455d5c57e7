//! Live readers: how late a reader in another process sees a commit, whether following slows
//! the writer, and what opening a reader costs.
//!
//! 1. **Lag.** A writer runs in a child process (this binary, re-invoked) with `annals::open`
//!    defaults (`Durability::Immediate`). The parent asks it for probe commits (one event
//!    each) at random intervals of 0–5 ms; the child prints the wall-clock time at which each
//!    append was acknowledged. A [`LogReader`] in the parent follows the store, and a task
//!    records when its [`watch_log`](StorageAdapter::watch_log) first shows each position.
//!    The lag is the time from acknowledgement to visibility (0 when the reader saw the commit
//!    before the writer's fdatasync returned). Measured with the reader polling every 10 ms
//!    (the default) and every 1 ms, on an idle writer and on one that also appends groups of
//!    100 events as fast as it can.
//! 2. **Writer under load**: the events per second of that loaded writer, without a reader
//!    and with each kind of reader following it.
//! 3. **Opening a reader** on a closed store of `ANNALS_BENCH_READER_EVENTS` events (default
//!    1,000,000): the scan that builds its index, in events per second.
//!
//! Run with `cargo bench --bench live_reader` (`ANNALS_BENCH_PROBES`, default 500 per row).
//! Without `--bench` (as `cargo test --all-targets` runs it) it makes one quick pass.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use annals::Timestamp;
use annals::storage::{AppendEvent, EncodedEvent, LogReader, StorageAdapter};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Makes this binary the writer child, on the store directory it names.
const WRITER_VAR: &str = "ANNALS_LIVE_BENCH_WRITER";
/// Set (to anything) to have the writer child append bulk groups besides the probes.
const LOAD_VAR: &str = "ANNALS_LIVE_BENCH_LOAD";
const LOAD_GROUP: u64 = 100;

fn event(aggregate: &str, version: u64) -> AppendEvent {
    let mut payload =
        format!("{{\"aggregate\":\"{aggregate}\",\"version\":{version}}}").into_bytes();
    payload.resize(200, b' ');
    AppendEvent {
        event_store_id: "BENCH".to_owned(),
        event: EncodedEvent {
            aggregate_id: aggregate.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + version as i64),
            event_type: "HAPPENED".to_owned(),
            schema_version: 1,
            payload,
            metadata: Vec::new(),
        },
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The writer child: a probe commit per line read from stdin, answered with
/// `ack <position> <unix nanos>`; with [`LOAD_VAR`], bulk groups meanwhile. At the end of its
/// input it prints `load <events> <seconds>` and closes the store.
fn writer_child(dir: &Path) -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let log = annals::open(dir)?;
        let loading = std::env::var_os(LOAD_VAR).is_some();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Instant::now();
        let load = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut events = 0u64;
                while loading && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let group = (1..=LOAD_GROUP)
                        .map(|v| event("load", events + v))
                        .collect();
                    log.push_event_group(group).await?;
                    events += LOAD_GROUP;
                }
                Ok::<u64, annals::StorageError>(events)
            })
        };
        let mut lines =
            tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
        let mut version = 0;
        while lines.next_line().await?.is_some() {
            version += 1;
            let position = log.push_event(event("probe", version)).await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "ack {position} {}", unix_nanos())?;
            out.flush()?;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let events = load.await??;
        println!("load {events} {}", started.elapsed().as_secs_f64());
        log.close();
        Ok(())
    })
}

/// A reader following the store, and when it first showed each position (unix nanos).
struct Follower {
    _reader: Arc<LogReader>,
    seen: Arc<Mutex<BTreeMap<u64, u128>>>,
}

impl Follower {
    fn start(runtime: &tokio::runtime::Runtime, dir: &Path, poll: Duration) -> BenchResult<Self> {
        let reader = Arc::new(LogReader::builder(dir).poll_interval(poll).open()?);
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let mut watch = reader.watch_log();
        let record = Arc::clone(&seen);
        runtime.spawn(async move {
            while watch.changed().await.is_ok() {
                let position = *watch.borrow_and_update();
                record.lock().unwrap().insert(position, unix_nanos());
            }
        });
        Ok(Follower {
            _reader: reader,
            seen,
        })
    }

    /// When the reader first showed `position` or a later one.
    fn seen_at(&self, position: u64) -> Option<u128> {
        let seen = self.seen.lock().unwrap();
        seen.range(position..).map(|(_, &t)| t).min()
    }
}

/// One measured row.
struct Row {
    name: String,
    /// Lags in microseconds (empty without a reader).
    lags: Vec<u64>,
    seen_before_ack: usize,
    load_events_per_s: Option<f64>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

struct Writer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Writer {
    fn spawn(dir: &Path, load: bool) -> BenchResult<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env(WRITER_VAR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if load {
            command.env(LOAD_VAR, "1");
        }
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Writer {
            child,
            stdin,
            stdout,
        })
    }

    /// Asks for one probe commit: its position and when it was acknowledged.
    fn probe(&mut self) -> BenchResult<(u64, u128)> {
        writeln!(self.stdin, "probe")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("ack"), Some(position), Some(at)) => Ok((position.parse()?, at.parse()?)),
            _ => Err(format!("unexpected line from the writer: {line:?}").into()),
        }
    }

    /// Ends the writer; its bulk load's events per second.
    fn finish(mut self) -> BenchResult<f64> {
        drop(self.stdin);
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        self.child.wait()?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("load"), Some(events), Some(secs)) => {
                Ok(events.parse::<f64>()? / secs.parse::<f64>()?)
            }
            _ => Err(format!("unexpected line from the writer: {line:?}").into()),
        }
    }
}

fn lag_row(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    name: &str,
    poll: Option<Duration>,
    load: bool,
    probes: usize,
) -> BenchResult<Row> {
    let dir = root.join(name.replace([' ', ','], "-"));
    annals::open(&dir)?.close();
    let mut writer = Writer::spawn(&dir, load)?;
    let follower = match poll {
        Some(poll) => Some(Follower::start(runtime, &dir, poll)?),
        None => None,
    };
    let mut acks = Vec::with_capacity(probes);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..probes {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 5_000));
        acks.push(writer.probe()?);
    }
    // Room for the last probes to be seen.
    std::thread::sleep(Duration::from_millis(200));
    let load_events_per_s = writer.finish()?;
    let mut lags = Vec::new();
    let mut seen_before_ack = 0;
    if let Some(follower) = &follower {
        for (position, acked) in acks {
            let seen = follower
                .seen_at(position)
                .ok_or_else(|| format!("{name}: the reader never showed position {position}"))?;
            if seen < acked {
                seen_before_ack += 1;
            }
            lags.push((seen.saturating_sub(acked) / 1000) as u64);
        }
    }
    lags.sort_unstable();
    std::fs::remove_dir_all(&dir)?;
    Ok(Row {
        name: name.to_owned(),
        lags,
        seen_before_ack,
        load_events_per_s: load.then_some(load_events_per_s),
    })
}

/// Seconds to open a reader on a closed store of `events` events.
fn open_time(runtime: &tokio::runtime::Runtime, root: &Path, events: u64) -> BenchResult<f64> {
    let dir = root.join("open");
    runtime.block_on(async {
        let log = annals::open(&dir)?;
        let mut written = 0;
        while written < events {
            let n = 1_000.min(events - written);
            // Event k (from 0) is version k / 1,000 + 1 of aggregate k % 1,000.
            let group = (written..written + n)
                .map(|k| event(&format!("a{}", k % 1_000), k / 1_000 + 1))
                .collect();
            log.push_event_group(group).await?;
            written += n;
        }
        log.close();
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    let started = Instant::now();
    let reader = LogReader::builder(&dir).manual_refresh().open()?;
    let took = started.elapsed().as_secs_f64();
    assert_eq!(reader.last_position(), events);
    drop(reader);
    std::fs::remove_dir_all(&dir)?;
    Ok(took)
}

fn main() -> BenchResult<()> {
    if let Some(dir) = std::env::var_os(WRITER_VAR) {
        return writer_child(Path::new(&dir));
    }
    let full = std::env::args().any(|a| a == "--bench");
    let var = |name: &str, full_default: u64, quick: u64| -> BenchResult<u64> {
        match std::env::var(name) {
            Ok(v) => Ok(v.parse()?),
            Err(_) if full => Ok(full_default),
            Err(_) => Ok(quick),
        }
    };
    let probes = var("ANNALS_BENCH_PROBES", 500, 20)? as usize;
    let open_events = var("ANNALS_BENCH_READER_EVENTS", 1_000_000, 10_000)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let root = tempfile::tempdir()?;
    let ms = Duration::from_millis;
    let configs: [(&str, Option<Duration>, bool); 5] = [
        (
            "idle writer, reader polling every 10 ms",
            Some(ms(10)),
            false,
        ),
        ("idle writer, reader polling every 1 ms", Some(ms(1)), false),
        ("loaded writer, no reader", None, true),
        (
            "loaded writer, reader polling every 10 ms",
            Some(ms(10)),
            true,
        ),
        (
            "loaded writer, reader polling every 1 ms",
            Some(ms(1)),
            true,
        ),
    ];
    let mut rows = Vec::new();
    for (name, poll, load) in configs {
        rows.push(lag_row(&runtime, root.path(), name, poll, load, probes)?);
    }
    println!(
        "| writer and reader | probes | lag p50 ms | lag p99 ms | lag max ms | seen before the \
         ack | writer's load events/s |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for row in &rows {
        let load = row
            .load_events_per_s
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        if row.lags.is_empty() {
            println!("| {} | {probes} | - | - | - | - | {load} |", row.name);
            continue;
        }
        println!(
            "| {} | {probes} | {:.2} | {:.2} | {:.2} | {} | {load} |",
            row.name,
            percentile(&row.lags, 50.0),
            percentile(&row.lags, 99.0),
            percentile(&row.lags, 100.0),
            row.seen_before_ack
        );
    }
    let took = open_time(&runtime, root.path(), open_events)?;
    println!();
    println!(
        "opening a reader on a closed store of {open_events} events: {took:.2} s ({:.0} \
         events/s)",
        open_events as f64 / took
    );
    Ok(())
}
