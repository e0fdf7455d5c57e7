//! What the child appends, how it reports acknowledgements, and the parent's integrity check.
//!
//! Every event's payload names its commit, its index in the commit and the commit's size, and
//! the rest of the event is derived from those and its place (store, aggregate, version): so
//! the parent can rebuild any stored event and tell which commit it belongs to without
//! knowing what the child attempted.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use annals::storage::{
    AppendEvent, EncodedEvent, GetEventsOptions, Limits, ListAggregateIdsOptions, LogAdapter,
    StorageAdapter, StorageError,
};
use annals::{Durability, Timestamp};

pub const STORES: [&str; 2] = ["POKEMONS", "TRAINERS"];
/// Concurrent appending tasks in the child; each owns its own aggregates, so the child never
/// conflicts with itself.
pub const TASKS: usize = 3;
pub const AGGREGATES_PER_TASK: usize = 3;
/// The aggregate the parent appends to after each kill.
pub const PARENT_AGGREGATE: &str = "parent";
const PAYLOAD_BYTES: usize = 200;
const BASE_MILLIS: i64 = 1_700_000_000_000;

/// Small segments and frequent checkpoints, so rollovers and index checkpoints are constant.
pub fn open(dir: &Path) -> Result<LogAdapter, StorageError> {
    LogAdapter::builder(dir)
        .durability(Durability::Immediate)
        .segment_bytes(256 << 10)
        .checkpoint_events(64)
        .limits(Limits {
            event_bytes_max: 4 << 10,
            group_events_max: 8,
            group_bytes_max: 16 << 10,
            ..Limits::default()
        })
        .open()
}

pub fn task_aggregate(task: usize, k: usize) -> String {
    format!("t{task}-{k}")
}

/// Every aggregate the child or the parent may write.
pub fn known_aggregates() -> Vec<String> {
    let mut all: Vec<String> = (0..TASKS)
        .flat_map(|t| (0..AGGREGATES_PER_TASK).map(move |k| task_aggregate(t, k)))
        .collect();
    all.push(PARENT_AGGREGATE.to_owned());
    all
}

/// FNV-1a, to derive filler bytes and timestamps from a commit id.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn payload(commit: &str, i: usize, n: usize) -> Vec<u8> {
    let mut p = format!("commit {commit} event {i} of {n};").into_bytes();
    let mut x = fnv(&p) | 1;
    while p.len() < PAYLOAD_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p
}

/// Event `i` of the `n` events of `commit`, placed at `store`/`aggregate`/`version`.
pub fn event(
    commit: &str,
    i: usize,
    n: usize,
    store: &str,
    aggregate: &str,
    version: u64,
) -> AppendEvent {
    AppendEvent {
        event_store_id: store.to_owned(),
        event: EncodedEvent {
            aggregate_id: aggregate.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(
                BASE_MILLIS + (fnv(commit.as_bytes()) % 1000) as i64,
            ),
            event_type: "SURVIVED".to_owned(),
            schema_version: 1,
            payload: payload(commit, i, n),
            metadata: commit.as_bytes().to_vec(),
        },
    }
}

/// `(commit, i, n)` named by a payload.
pub fn parse_payload(payload: &[u8]) -> Option<(String, usize, usize)> {
    let end = payload.iter().position(|&b| b == b';')?;
    let text = std::str::from_utf8(&payload[..end]).ok()?;
    let mut words = text.split(' ');
    let (Some("commit"), Some(commit), Some("event"), Some(i), Some("of"), Some(n), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return None;
    };
    Some((commit.to_owned(), i.parse().ok()?, n.parse().ok()?))
}

/// An acknowledged commit: its id, the position of its first event, and where each event went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub commit: String,
    pub first: u64,
    pub events: Vec<AppendEvent>,
}

impl Ack {
    /// The line the child prints: `ack <commit> <first> <store>/<aggregate>/<version>...`.
    pub fn line(&self) -> String {
        let mut line = format!("ack {} {}", self.commit, self.first);
        for e in &self.events {
            let place = format!(
                " {}/{}/{}",
                e.event_store_id, e.event.aggregate_id, e.event.version
            );
            line.push_str(&place);
        }
        line.push('\n');
        line
    }

    /// Parses a complete line printed by [`Ack::line`]; `None` for other output.
    pub fn parse(line: &str) -> Option<Ack> {
        let mut words = line.strip_prefix("ack ")?.split_whitespace();
        let commit = words.next()?.to_owned();
        let first = words.next()?.parse().ok()?;
        let places: Vec<&str> = words.collect();
        let n = places.len();
        let events = places
            .iter()
            .enumerate()
            .map(|(i, place)| {
                let mut parts = place.split('/');
                let (store, aggregate) = (parts.next()?, parts.next()?);
                let version = parts.next()?.parse().ok()?;
                Some(event(&commit, i, n, store, aggregate, version))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Ack {
            commit,
            first,
            events,
        })
    }
}

/// What one check of a reopened store found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Events in the store.
    pub events: u64,
    /// Commits in the store.
    pub commits: usize,
}

/// Checks a reopened store against every acknowledgement so far; panics with `context`.
pub async fn check(
    log: &dyn StorageAdapter,
    acks: &HashMap<String, Ack>,
    context: &str,
) -> Checked {
    let by_position = read_all(log, context).await;
    let last = by_position.keys().next_back().copied().unwrap_or(0);
    assert_eq!(
        by_position.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "{context}: positions are not gap-free"
    );
    assert_eq!(*log.watch_log().borrow(), last, "{context}: last position");

    // Every stored event is an event of some commit, rebuilt byte for byte from its payload;
    // each commit's events are all there, in order, at consecutive positions.
    let mut commits: HashMap<String, Vec<(u64, usize, usize)>> = HashMap::new();
    for (&position, e) in &by_position {
        let (commit, i, n) = parse_payload(&e.event.payload)
            .unwrap_or_else(|| panic!("{context}: stray event at position {position}"));
        let rebuilt = event(
            &commit,
            i,
            n,
            &e.event_store_id,
            &e.event.aggregate_id,
            e.event.version,
        );
        assert_eq!(&rebuilt, e, "{context}: event at {position} is damaged");
        commits.entry(commit).or_default().push((position, i, n));
    }
    for (commit, members) in &commits {
        let (first, _, n) = members[0];
        let expected: Vec<(u64, usize, usize)> = (0..n).map(|i| (first + i as u64, i, n)).collect();
        assert_eq!(
            members, &expected,
            "{context}: commit {commit} is partly visible or out of order"
        );
    }

    for ack in acks.values() {
        for (i, e) in ack.events.iter().enumerate() {
            let position = ack.first + i as u64;
            assert_eq!(
                by_position.get(&position),
                Some(e),
                "{context}: acknowledged commit {} lost or moved event {i}",
                ack.commit
            );
        }
    }
    Checked {
        events: last,
        commits: commits.len(),
    }
}

/// Reads every aggregate of every store (listed ones and known ones), checking that versions
/// are `1..=n` and that listing shows exactly the aggregates that have events.
async fn read_all(log: &dyn StorageAdapter, context: &str) -> BTreeMap<u64, AppendEvent> {
    let mut by_position = BTreeMap::new();
    for store in STORES {
        let listed: Vec<String> = log
            .list_aggregate_ids(store, &ListAggregateIdsOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{context}: listing {store}: {e}"))
            .aggregate_ids
            .into_iter()
            .map(|entry| entry.aggregate_id)
            .collect();
        let mut names = known_aggregates();
        names.extend(listed.iter().cloned());
        names.sort();
        names.dedup();
        for aggregate in names {
            let events = log
                .get_events(store, &aggregate, &GetEventsOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{context}: reading {store}/{aggregate}: {e}"));
            assert_eq!(
                !events.is_empty(),
                listed.contains(&aggregate),
                "{context}: listing of {store} disagrees with {aggregate}'s events"
            );
            for (i, e) in events.into_iter().enumerate() {
                assert_eq!(
                    e.event.version,
                    i as u64 + 1,
                    "{context}: versions of {store}/{aggregate} are not 1..=n"
                );
                let stored = AppendEvent {
                    event_store_id: store.to_owned(),
                    event: e.event,
                };
                let previous = by_position.insert(e.position, stored);
                assert!(
                    previous.is_none(),
                    "{context}: two events at position {}",
                    e.position
                );
            }
        }
    }
    by_position
}

/// The last version of an aggregate (0 when it has none).
pub async fn last_version(log: &LogAdapter, store: &str, aggregate: &str) -> u64 {
    let options = GetEventsOptions {
        reverse: true,
        limit: Some(1),
        ..Default::default()
    };
    log.get_events(store, aggregate, &options)
        .await
        .expect("reading the last version")
        .first()
        .map_or(0, |e| e.event.version)
}

/// A child test of this binary that appends until it is killed: its full name, as the test
/// harness knows it, and the variables naming its store directory (it does nothing without
/// it) and its run (so commit ids are unique across runs).
pub struct ChildTest {
    pub name: &'static str,
    pub dir_var: &'static str,
    pub run_var: &'static str,
}

/// Runs `child` on `dir` as run `run`, kills it with SIGKILL after `delay`, reaps it and
/// returns what it acknowledged.
pub fn kill_child(child: &ChildTest, dir: &Path, run: u64, delay: Duration) -> Vec<Ack> {
    const SIGKILL: i32 = 9;
    let exe = std::env::current_exe().unwrap();
    let mut process = Command::new(exe)
        .args([
            "--exact",
            child.name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(child.dir_var, dir)
        .env(child.run_var, run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = process.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        // Only whole lines count: a line cut by the kill was not fully reported.
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            if line.ends_with(b"\n") {
                lines.push(String::from_utf8_lossy(&line).into_owned());
            }
            line.clear();
        }
        lines
    });
    std::thread::sleep(delay);
    // The child may have died already (a failure, reported below); then kill is a no-op.
    let _ = process.kill();
    let status = process.wait().unwrap();
    let lines = reader.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "run {run}: the child ended by itself ({status}) before the kill; its output:\n{}",
        lines.concat()
    );
    lines.iter().filter_map(|l| Ack::parse(l)).collect()
}
