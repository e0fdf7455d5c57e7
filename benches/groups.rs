//! Several processes on PostgreSQL: an event action's throughput when 1, 2 and 4 OS processes
//! share its partitions (a consumer group), the failover time after one of them is killed, and
//! a queue drained by 1, 2 and 4 competing processes.
//!
//! A standalone runner (`harness = false`) that starts copies of itself as the worker
//! processes (`ANNALS_BENCH_GROUP_ROLE` set). Each worker connects, joins, prints `READY`, and
//! starts working when it reads `GO` on its standard input, so process start-up is not timed;
//! it stops when its input ends.
//!
//! # Workloads
//! 1. **action**: `ANNALS_BENCH_GROUP_EVENTS` events (default 10,000) over 256 aggregates are
//!    appended first; then P workers run an event action with a handler that does nothing, in
//!    a group of 8 partitions, from the start of the log. Timed from `GO` until every
//!    partition's checkpoint has passed the last event: events/s. Each event is one state
//!    transaction (the checkpoint, fenced by the lease).
//! 2. **failover**: two workers run the action (leases of 2 s, renewed every 400 ms) and catch
//!    up; one is killed with SIGKILL; one event per aggregate is appended at once. Timed from
//!    the kill until every partition's checkpoint has passed those events: what a process's
//!    death costs (at most the lease's time to live, plus a renewal round, plus the work).
//! 3. **queue**: `ANNALS_BENCH_GROUP_MESSAGES` messages (default 5,000) are enqueued first; P
//!    workers run a queue action that does nothing. Timed from `GO` until the queue is empty:
//!    messages/s (each message: one receive and one ack transaction).
//!
//! # Running
//! `eval "$(bash .ci/postgres start)"` then `cargo bench --features postgres --bench groups`.
//! Without `ANNALS_POSTGRES_URL` it prints how to get a server and exits. Without `--bench` (as
//! under `cargo test --all-targets`) it runs a tiny smoke pass.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::action::{ActionContext, ActionError, EventAction, QueueAction};
use annals::lease::GroupOptions;
use annals::queue::Queue;
use annals::state::StateStore;
use annals::storage::{
    AppendEvent, EncodedEvent, LoggedEvent, PostgresAdapter, StorageAdapter, Timestamp,
};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const ROLE: &str = "ANNALS_BENCH_GROUP_ROLE";
const SCHEMA: &str = "ANNALS_BENCH_GROUP_SCHEMA";
const URL: &str = "ANNALS_POSTGRES_URL";
const PARTITIONS: u32 = 8;
const AGGREGATES: u64 = 256;
const ACTION: &str = "bench-action";
const QUEUE: &str = "bench-queue";

fn options() -> GroupOptions {
    GroupOptions::partitions(PARTITIONS).leases(Duration::from_secs(2), Duration::from_millis(400))
}

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Ok(role) = std::env::var(ROLE) {
        return runtime.block_on(worker(&role));
    }
    let Ok(url) = std::env::var(URL) else {
        println!(
            "groups: no PostgreSQL server; start one with `eval \"$(bash .ci/postgres start)\"` \
             and run `cargo bench --features postgres --bench groups`"
        );
        return Ok(());
    };
    let full = std::env::args().any(|a| a == "--bench");
    let var = |name: &str, default: u64| -> BenchResult<u64> {
        Ok(match std::env::var(name) {
            Ok(v) => v.parse()?,
            Err(_) => default,
        })
    };
    let events = if full {
        var("ANNALS_BENCH_GROUP_EVENTS", 10_000)?
    } else {
        200
    };
    let messages = if full {
        var("ANNALS_BENCH_GROUP_MESSAGES", 5_000)?
    } else {
        50
    };
    let counts: &[usize] = if full { &[1, 2, 4] } else { &[2] };
    runtime.block_on(async {
        println!("| workload | processes | result |");
        println!("|---|---:|---|");
        for &processes in counts {
            let rate = action(&url, processes, events).await?;
            println!(
                "| event action, {events} events, {PARTITIONS} partitions | {processes} \
                 | {rate:.0} events/s |"
            );
        }
        let failover = failover(&url, events.min(2_000)).await?;
        println!(
            "| failover after SIGKILL (lease 2 s, renewed every 400 ms) | 2 → 1 | {:.2} s |",
            failover.as_secs_f64()
        );
        for &processes in counts {
            let rate = queue(&url, processes, messages).await?;
            println!("| queue action, {messages} messages | {processes} | {rate:.0} messages/s |");
        }
        Ok(())
    })
}

/// A fresh schema with an adapter and a state store on it, dropped at the end.
struct Schema {
    name: String,
    url: String,
    adapter: Arc<dyn StorageAdapter>,
    state: Arc<StateStore>,
}

impl Schema {
    async fn new(url: &str) -> BenchResult<Schema> {
        let name = format!(
            "annals_bench_groups_{}_{}",
            std::process::id(),
            Timestamp::now().unix_millis()
        );
        let adapter = PostgresAdapter::builder(url)
            .schema(&name)
            .connect()
            .await?;
        let state = Arc::new(StateStore::postgres(&adapter).await?);
        Ok(Schema {
            name,
            url: url.to_owned(),
            adapter: Arc::new(adapter),
            state,
        })
    }

    async fn drop_schema(self) -> BenchResult<()> {
        let (client, connection) = annals::storage::postgres::tokio_postgres::connect(
            &self.url,
            annals::storage::postgres::tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .await?;
        Ok(())
    }

    fn start(&self, role: &str, count: usize) -> BenchResult<Vec<Worker>> {
        let exe = std::env::current_exe()?;
        let mut workers = Vec::new();
        for _ in 0..count {
            let mut child = Command::new(&exe)
                .env(ROLE, role)
                .env(SCHEMA, &self.name)
                .env(URL, &self.url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let mut lines = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
            match lines.next() {
                Some(Ok(line)) if line == "READY" => {}
                other => return Err(format!("a worker did not start: {other:?}").into()),
            }
            workers.push(Worker { child });
        }
        Ok(workers)
    }

    /// Waits until every partition of the action has passed `head`.
    async fn caught_up(&self, head: u64) -> BenchResult<()> {
        loop {
            let checkpoints = self.state.checkpoints()?;
            let done = (0..PARTITIONS).all(|k| {
                let name = format!("{ACTION}#{k}");
                checkpoints
                    .iter()
                    .any(|(n, next)| *n == name && *next > head)
            });
            if done {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn append_round(&self, version: u64) -> BenchResult<u64> {
        let events = (0..AGGREGATES).map(|a| event(a, version)).collect();
        let positions = self.adapter.append(events).await?;
        Ok(positions.last().copied().unwrap_or(0))
    }
}

struct Worker {
    child: Child,
}

impl Worker {
    fn go(&mut self) -> BenchResult<()> {
        let stdin = self.child.stdin.as_mut().ok_or("stdin")?;
        writeln!(stdin, "GO")?;
        stdin.flush()?;
        Ok(())
    }

    fn finish(mut self) -> BenchResult<()> {
        drop(self.child.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
        Ok(())
    }
}

fn event(aggregate: u64, version: u64) -> AppendEvent {
    AppendEvent {
        event_store_id: "BENCH".to_owned(),
        event: EncodedEvent {
            aggregate_id: format!("aggregate-{aggregate}"),
            version,
            timestamp: Timestamp::now(),
            event_type: "HAPPENED".to_owned(),
            schema_version: 1,
            payload: vec![7; 200],
            metadata: vec![],
        },
    }
}

async fn action(url: &str, processes: usize, events: u64) -> BenchResult<f64> {
    let schema = Schema::new(url).await?;
    let rounds = events.div_ceil(AGGREGATES);
    let mut head = 0;
    for version in 1..=rounds {
        head = schema.append_round(version).await?;
    }
    let mut workers = schema.start("action", processes)?;
    // Every worker has joined: let the leases settle over them before timing.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    for worker in &mut workers {
        worker.go()?;
    }
    schema.caught_up(head).await?;
    let rate = head as f64 / started.elapsed().as_secs_f64();
    for worker in workers {
        worker.finish()?;
    }
    schema.drop_schema().await?;
    Ok(rate)
}

async fn failover(url: &str, events: u64) -> BenchResult<Duration> {
    let schema = Schema::new(url).await?;
    let mut head = 0;
    for version in 1..=events.div_ceil(AGGREGATES) {
        head = schema.append_round(version).await?;
    }
    let mut workers = schema.start("action", 2)?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for worker in &mut workers {
        worker.go()?;
    }
    schema.caught_up(head).await?;
    let mut killed = workers.remove(0);
    let started = Instant::now();
    killed.child.kill()?;
    killed.child.wait()?;
    let head = schema.append_round(events.div_ceil(AGGREGATES) + 1).await?;
    schema.caught_up(head).await?;
    let took = started.elapsed();
    for worker in workers {
        worker.finish()?;
    }
    schema.drop_schema().await?;
    Ok(took)
}

async fn queue(url: &str, processes: usize, messages: u64) -> BenchResult<f64> {
    let schema = Schema::new(url).await?;
    let queue = Queue::open(schema.state.clone(), QUEUE);
    for i in 0..messages {
        queue.enqueue(i.to_string())?;
    }
    let mut workers = schema.start("queue", processes)?;
    let started = Instant::now();
    for worker in &mut workers {
        worker.go()?;
    }
    while !queue.is_empty()? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    for worker in workers {
        worker.finish()?;
    }
    schema.drop_schema().await?;
    Ok(rate)
}

/// A worker process: joins, says `READY`, works from `GO` until its input ends.
async fn worker(role: &str) -> BenchResult<()> {
    let url = std::env::var(URL)?;
    let schema = std::env::var(SCHEMA)?;
    let adapter = PostgresAdapter::builder(&url)
        .schema(&schema)
        .connect()
        .await?;
    let state = Arc::new(StateStore::postgres(&adapter).await?);
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    println!("READY");
    std::io::stdout().flush()?;
    let mut lines = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        line
    })
    .await?;
    if lines.trim() != "GO" {
        return Ok(());
    }
    lines.clear();
    let until_end = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    });
    match role {
        "action" => {
            let action = EventAction::new(ACTION, |_: LoggedEvent, _: ActionContext| async {
                Ok::<(), ActionError>(())
            });
            let runner = action.spawn_in_group(adapter, state, options()).await?;
            until_end.await?;
            runner.stop().await?;
        }
        "queue" => {
            let queue = Queue::open(state, QUEUE);
            let runner = QueueAction::new("bench-sender", queue, |_, _| async {
                Ok::<(), ActionError>(())
            })
            .spawn();
            until_end.await?;
            runner.stop().await?;
        }
        other => return Err(format!("unknown role {other}").into()),
    }
    Ok(())
}
