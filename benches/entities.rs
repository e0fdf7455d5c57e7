//! One hot entity under contention, on the log adapter (`annals::open` defaults: every commit
//! fdatasync'ed before it is acknowledged):
//!
//! - **entity**: 1,000 concurrent senders send `Count` commands to one entity id through
//!   [`Entities`]; each waits for its reply (so for durability) before sending the next. The
//!   instance decides the commands queued behind an in-flight commit and commits them as one
//!   group. Durable commands/s over N commands.
//! - **command with retry**: the same 1,000 senders run the same decision as a
//!   [`Command`](annals::Command) (read the aggregate, push the next version, retried on
//!   `EventAlreadyExists` without limit) on another id of the same store, for a fixed time.
//!   Successful commands/s.
//!
//! Run with `cargo bench --bench entities`; `ANNALS_BENCH_ENTITY_COMMANDS` sets N (default
//! 200,000) and `ANNALS_BENCH_RETRY_SECONDS` the baseline's duration (default 10). Without
//! `--bench` (as `cargo test --all-targets` builds and runs benches) it makes one quick pass at
//! a tiny size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals::entity::{CommandContext, Entities, Entity, EntityOptions};
use annals::{Aggregate, Command, Error, EventDetail, EventStore, NewEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counted {
    total: u64,
    sender: u64,
}

annals::events! {
    enum CounterEvent {
        Counted(Counted) = "COUNTED",
    }
}

fn reduce(_: Option<u64>, event: &EventDetail<CounterEvent>) -> u64 {
    let CounterEvent::Counted(counted) = &event.event;
    counted.total
}

struct Counter;

impl Entity for Counter {
    type Command = u64;
    type Events = CounterEvent;
    type State = u64;
    type Rejection = std::convert::Infallible;

    fn decide(
        state: Option<&Aggregate<u64>>,
        sender: &u64,
        _: &mut CommandContext<'_, u64>,
    ) -> Result<Vec<CounterEvent>, std::convert::Infallible> {
        let total = state.map_or(0, |a| a.state) + 1;
        Ok(vec![CounterEvent::Counted(Counted {
            total,
            sender: *sender,
        })])
    }
}

const SENDERS: u64 = 1_000;

async fn entity_rate(store: EventStore<CounterEvent, u64>, commands: u64) -> f64 {
    let entities = Entities::<Counter>::new(store, EntityOptions::default()).expect("entities");
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let handle = entities.get("hot-entity");
        let issued = Arc::clone(&issued);
        senders.push(tokio::spawn(async move {
            while issued.fetch_add(1, Ordering::Relaxed) < commands {
                handle.send(sender).await.expect("the command is recorded");
            }
        }));
    }
    for sender in senders {
        sender.await.expect("the sender finishes");
    }
    let elapsed = start.elapsed();
    let last = entities
        .get("hot-entity")
        .send(SENDERS)
        .await
        .expect("recorded");
    assert_eq!(last.version, commands + 1, "every command recorded once");
    commands as f64 / elapsed.as_secs_f64()
}

async fn retry_rate(store: EventStore<CounterEvent, u64>, duration: Duration) -> (f64, u64) {
    let command = Command::new(
        "COUNT",
        (store,),
        |sender: u64, (store,): (EventStore<CounterEvent, u64>,), (): ()| async move {
            let current = store
                .get_aggregate("hot-command", Default::default())
                .await?;
            let (version, total) = current.aggregate.map_or((0, 0), |a| (a.version, a.state));
            let event = CounterEvent::Counted(Counted {
                total: total + 1,
                sender,
            });
            let new = NewEvent::new("hot-command", version + 1, event);
            store.push_event(new, Default::default()).await?;
            Ok::<_, Error>(())
        },
    )
    .event_already_exists_retries(u32::MAX);
    let command = Arc::new(command);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let command = Arc::clone(&command);
        let done = Arc::clone(&done);
        senders.push(tokio::spawn(async move {
            while start.elapsed() < duration {
                command
                    .handle(sender, ())
                    .await
                    .expect("the command succeeds");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for sender in senders {
        sender.await.expect("the sender finishes");
    }
    let elapsed = start.elapsed();
    let done = done.load(Ordering::Relaxed);
    (done as f64 / elapsed.as_secs_f64(), done)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (commands, retry_seconds) = if benching {
        (
            env("ANNALS_BENCH_ENTITY_COMMANDS", 200_000),
            env("ANNALS_BENCH_RETRY_SECONDS", 10),
        )
    } else {
        (2_000, 0)
    };
    let retry_duration = if benching {
        Duration::from_secs(retry_seconds)
    } else {
        Duration::from_millis(200)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let adapter = annals::open(dir.path()).expect("open the store");
        let store = EventStore::builder("COUNTERS", reduce)
            .storage_adapter(adapter)
            .build()
            .expect("store");
        let entity = entity_rate(store.clone(), commands).await;
        println!("entity, {SENDERS} senders, {commands} commands: {entity:.0} durable commands/s");
        let (retry, done) = retry_rate(store, retry_duration).await;
        println!(
            "command with retry, {SENDERS} senders, {:.1} s: {done} commands, {retry:.0} commands/s",
            retry_duration.as_secs_f64()
        );
        if retry > 0.0 {
            println!("ratio: {:.1}x", entity / retry);
        }
    });
}
