//! Several processes, one database: two OS processes run entities over the same PostgreSQL
//! schema and contend on the same aggregates. Each process has its own live instance per id,
//! so their commits conflict; fencing makes the loser reload and decide again. Afterwards every
//! aggregate is gap-free, every event was decided on the state just before it, and every
//! command a process saw acknowledged is stored exactly once. Timers, kept in the log, are
//! delivered by whichever process fires them, once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use annals::entity::{CommandContext, Entities, Entity, EntityOptions};
use annals::{Aggregate, EventDetail, EventStore, GetEventsOptions, StorageAdapter};
use serde::{Deserialize, Serialize};

use crate::fixture;
use crate::harness::{Needs, trials};

/// The tests of this module, and the child process the first one starts (twice).
pub fn trials() -> Vec<libtest_mimic::Trial> {
    [
        trials!(Needs::Server, threads = 2;
            two_processes_contending_on_the_same_aggregates_lose_nothing,
            a_timer_scheduled_by_one_process_is_delivered_once_by_another,
        ),
        trials!(Needs::ChildOf { var: SCHEMA_VAR }, threads = 2; contending_process),
    ]
    .into_iter()
    .flatten()
    .collect()
}

const CHILD_TEST: &str = "processes::contending_process";
const SCHEMA_VAR: &str = "ANNALS_PROCESSES_SCHEMA";
const PROCESS_VAR: &str = "ANNALS_PROCESSES_ID";
/// When the children start sending (Unix milliseconds), so that they really overlap.
const START_VAR: &str = "ANNALS_PROCESSES_START_MS";
const PROCESSES: u64 = 2;
const SENDERS: u64 = 8;
const COMMANDS_PER_SENDER: u64 = 50;
const AGGREGATES: u64 = 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counted {
    /// The count after the event, computed from the state it was decided on.
    total: u64,
    /// (process, sender, sequence number) of the command.
    tag: (u64, u64, u64),
}

annals::events! {
    pub enum CounterEvent {
        Counted(Counted) = "COUNTED",
    }
}

fn reduce(total: Option<u64>, event: &EventDetail<CounterEvent>) -> u64 {
    let CounterEvent::Counted(counted) = &event.event;
    assert_eq!(total.unwrap_or(0) + 1, counted.total, "folded in order");
    counted.total
}

struct Counter;

impl Entity for Counter {
    type Command = (u64, u64, u64);
    type Events = CounterEvent;
    type State = u64;
    type Rejection = std::convert::Infallible;

    fn decide(
        state: Option<&Aggregate<u64>>,
        tag: &(u64, u64, u64),
        _: &mut CommandContext<'_, (u64, u64, u64)>,
    ) -> Result<Vec<CounterEvent>, std::convert::Infallible> {
        let total = state.map_or(0, |counter| counter.state) + 1;
        Ok(vec![CounterEvent::Counted(Counted { total, tag: *tag })])
    }
}

fn counters(adapter: Arc<dyn StorageAdapter>) -> EventStore<CounterEvent, u64> {
    EventStore::builder("COUNTERS", reduce)
        .storage_adapter(adapter)
        .build()
        .expect("a valid store")
}

fn aggregate_of(sender: u64, seq: u64) -> String {
    format!("counter-{}", (sender + seq) % AGGREGATES)
}

/// One contending process: started by the test below with the schema in its environment,
/// it sends every command through its own entities and prints `ACK <id> <process> <sender>
/// <seq>` for each acknowledged one. Listed as ignored, and ignored when run without the
/// schema variable (see [`trials`]).
async fn contending_process() {
    let url = fixture::url();
    let var = |name| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let schema = var(SCHEMA_VAR);
    let process: u64 = var(PROCESS_VAR).parse().expect("a process number");
    let start: i64 = var(START_VAR).parse().expect("a start time");
    let adapter = fixture::builder(&url, &schema)
        .connect()
        .await
        .expect("the child connects");
    let options = EntityOptions {
        conflict_retries: u32::MAX,
        ..EntityOptions::default()
    };
    let entities =
        Entities::<Counter>::new(counters(Arc::new(adapter)), options).expect("entities");
    let wait = start - annals::Timestamp::now().unix_millis();
    tokio::time::sleep(std::time::Duration::from_millis(wait.max(0) as u64)).await;
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let entities = entities.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..COMMANDS_PER_SENDER {
                let id = aggregate_of(sender, seq);
                let reply = entities.get(id.clone()).send((process, sender, seq)).await;
                reply.unwrap_or_else(|e| panic!("{id}: command ({process}, {sender}, {seq}): {e}"));
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {id} {process} {sender} {seq}").expect("report");
                out.flush().expect("report");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a sender finishes");
    }
}

async fn two_processes_contending_on_the_same_aggregates_lose_nothing() {
    let url = fixture::url();
    // The schema is created (migrated) before the children start.
    let (adapter, _guard) = fixture::adapter(&url).await;
    let schema = adapter.schema().to_owned();
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);

    let exe = std::env::current_exe().expect("the test binary");
    let start = annals::Timestamp::now().unix_millis() + 1_500;
    let children: Vec<_> = (0..PROCESSES)
        .map(|process| {
            Command::new(&exe)
                .args([
                    "--exact",
                    CHILD_TEST,
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                // The same server, also when this binary started it.
                .env(crate::server::URL_VAR, &url)
                .env(SCHEMA_VAR, &schema)
                .env(PROCESS_VAR, process.to_string())
                .env(START_VAR, start.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start a child process")
        })
        .collect();
    let mut acknowledged: BTreeMap<String, BTreeSet<(u64, u64, u64)>> = BTreeMap::new();
    for (process, mut child) in children.into_iter().enumerate() {
        let stdout = child.stdout.take().expect("piped");
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read the child's output");
            // The harness prints `test <name> ... ` before the test runs, without a newline.
            let Some(start) = line.find("ACK ") else {
                continue;
            };
            let fields: Vec<&str> = line[start..].split_whitespace().collect();
            if let ["ACK", id, p, s, q] = fields[..] {
                let tag = (p.parse().unwrap(), s.parse().unwrap(), q.parse().unwrap());
                acknowledged.entry(id.to_owned()).or_default().insert(tag);
            }
        }
        let status = child.wait().expect("the child ends");
        assert!(status.success(), "child {process} failed: {status}");
    }
    let acked: usize = acknowledged.values().map(BTreeSet::len).sum();
    assert_eq!(
        acked as u64,
        PROCESSES * SENDERS * COMMANDS_PER_SENDER,
        "every command was acknowledged"
    );

    let store = counters(adapter);
    // How often consecutive events of an aggregate come from different processes: the
    // processes really contended.
    let mut switches = 0;
    for (id, tags) in &acknowledged {
        let events = store
            .get_events(id, GetEventsOptions::default())
            .await
            .expect("read the events");
        let mut stored = BTreeSet::new();
        for (expected, event) in (1..).zip(&events) {
            assert_eq!(event.version, expected, "{id}: versions are gap-free");
            let CounterEvent::Counted(counted) = &event.event;
            assert_eq!(
                counted.total, event.version,
                "{id}: version {} was decided on stale state",
                event.version
            );
            assert!(
                stored.insert(counted.tag),
                "{id}: {:?} stored twice",
                counted.tag
            );
        }
        assert_eq!(&stored, tags, "{id}: stored = acknowledged, nothing lost");
        switches += events
            .windows(2)
            .filter(|pair| {
                let [CounterEvent::Counted(a), CounterEvent::Counted(b)] =
                    [&pair[0].event, &pair[1].event];
                a.tag.0 != b.tag.0
            })
            .count();
        let aggregate = store
            .get_existing_aggregate(id, Default::default())
            .await
            .expect("the aggregate");
        assert_eq!(
            aggregate.aggregate.state,
            events.len() as u64,
            "{id}: the fold"
        );
    }
    assert!(
        switches > 0,
        "the two processes never interleaved: the test did not contend"
    );
}

/// Timers live in the event log, so they work on PostgreSQL like events do: one adapter (a
/// process) schedules, another one, started later, delivers, and a third finds nothing left.
async fn a_timer_scheduled_by_one_process_is_delivered_once_by_another() {
    use annals::entity::Timers;
    let url = fixture::url();
    let (first, guard) = fixture::adapter(&url).await;
    let first = Entities::<Counter>::new(counters(Arc::new(first)), EntityOptions::default())
        .expect("entities");
    Timers::new(first)
        .schedule(
            "counter-0",
            "later",
            annals::Timestamp::from_unix_millis(1_000),
            &(9, 9, 9),
        )
        .await
        .expect("scheduled");

    let connect = || async {
        let adapter = fixture::builder(&url, &guard.schema)
            .connect()
            .await
            .expect("another adapter on the schema");
        let store = counters(Arc::new(adapter));
        (
            store.clone(),
            Timers::new(
                Entities::<Counter>::new(store, EntityOptions::default()).expect("entities"),
            ),
        )
    };
    let (store, second) = connect().await;
    let pending = second.pending().await.expect("listed");
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].name.as_str(), pending[0].command),
        ("later", (9, 9, 9))
    );
    let at = annals::Timestamp::from_unix_millis(1_000);
    assert_eq!(second.fire_due(at).await.expect("fired"), 1);
    let events = store
        .get_events("counter-0", GetEventsOptions::default())
        .await
        .expect("read");
    let tags: Vec<_> = events
        .iter()
        .map(|e| {
            let CounterEvent::Counted(c) = &e.event;
            c.tag
        })
        .collect();
    assert_eq!(tags, vec![(9, 9, 9)]);

    let (_, third) = connect().await;
    assert!(third.pending().await.expect("listed").is_empty());
    assert_eq!(third.fire_due(at).await.expect("fired"), 0);
}
