//! The workload every crash test runs, and the integrity check after reopening.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use annals::engine::sim::SimFs;
use annals::storage::{
    AppendEvent, EncodedEvent, GetEventsOptions, Limits, LogAdapter, StorageAdapter, StorageError,
};
use annals::{Durability, Timestamp};

pub const DIR: &str = "/store";
pub const STORES: [&str; 2] = ["POKEMONS", "TRAINERS"];
pub const AGGREGATES: [&str; 4] = ["a", "b", "c", "d"];

/// Small segments and frequent checkpoints, so the workload rolls over and checkpoints often.
pub fn open(fs: &SimFs) -> Result<LogAdapter, StorageError> {
    LogAdapter::builder(DIR)
        .file_system(Arc::new(fs.clone()))
        .durability(Durability::Immediate)
        .segment_bytes(64 << 10)
        .checkpoint_events(8)
        .limits(Limits {
            event_bytes_max: 8 << 10,
            group_events_max: 16,
            group_bytes_max: 32 << 10,
            ..Limits::default()
        })
        .open()
}

/// One commit of the workload and what became of it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub events: Vec<AppendEvent>,
    /// Position of the first event, if the commit was acknowledged.
    pub acked: Option<u64>,
}

fn event(store: &str, aggregate: &str, version: u64, commit: usize, i: usize) -> AppendEvent {
    // The payload names its commit, so any stored event can be traced back to one.
    let mut payload = format!("commit {commit} event {i};").into_bytes();
    payload.resize(1500, b'.');
    AppendEvent {
        event_store_id: store.to_owned(),
        event: EncodedEvent {
            aggregate_id: aggregate.to_owned(),
            version,
            timestamp: Timestamp::from_unix_millis(1_700_000_000_000 + commit as i64),
            event_type: "HAPPENED".to_owned(),
            schema_version: 1,
            payload,
            metadata: vec![0x80],
        },
    }
}

/// Runs `commits` commits (every fifth one a group over both stores) and records each
/// outcome. Versions follow what was acknowledged, as an application would.
pub async fn run(log: &LogAdapter, commits: usize) -> Vec<Attempt> {
    run_from(log, 0, commits, HashMap::new()).await
}

/// Like [`run`], numbering commits from `first` and continuing from known `versions`.
pub async fn run_from(
    log: &LogAdapter,
    first: usize,
    commits: usize,
    mut versions: HashMap<(String, String), u64>,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    for c in first..first + commits {
        let targets: Vec<(&str, &str)> = if c % 5 == 4 {
            vec![
                (STORES[0], AGGREGATES[c % 4]),
                (STORES[1], AGGREGATES[(c + 1) % 4]),
                (STORES[1], AGGREGATES[(c + 2) % 4]),
            ]
        } else {
            vec![(STORES[0], AGGREGATES[c % 4])]
        };
        let events: Vec<AppendEvent> = targets
            .iter()
            .enumerate()
            .map(|(i, (s, a))| {
                let v = versions
                    .get(&(s.to_string(), a.to_string()))
                    .copied()
                    .unwrap_or(0)
                    + 1;
                event(s, a, v, c, i)
            })
            .collect();
        let result = log.push_event_group(events.clone()).await;
        let acked = match result {
            Ok(positions) => {
                for e in &events {
                    versions.insert(
                        (e.event_store_id.clone(), e.event.aggregate_id.clone()),
                        e.event.version,
                    );
                }
                Some(positions[0])
            }
            Err(_) => None,
        };
        attempts.push(Attempt { events, acked });
    }
    attempts
}

/// Checks a reopened store against the attempts; panics with `context` on any violation.
pub async fn check(log: &LogAdapter, attempts: &[Attempt], context: &str) {
    let mut by_position: BTreeMap<u64, (String, EncodedEvent)> = BTreeMap::new();
    for store in STORES {
        for aggregate in AGGREGATES {
            let events = log
                .get_events(store, aggregate, &GetEventsOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{context}: reading {store}/{aggregate}: {e}"));
            for (i, e) in events.iter().enumerate() {
                assert_eq!(
                    e.event.version,
                    i as u64 + 1,
                    "{context}: versions of {store}/{aggregate} not gap-free"
                );
                by_position.insert(e.position, (store.to_owned(), e.event.clone()));
            }
        }
    }
    let positions: Vec<u64> = by_position.keys().copied().collect();
    assert_eq!(
        positions,
        (1..=positions.len() as u64).collect::<Vec<_>>(),
        "{context}: positions not gap-free"
    );
    assert_eq!(
        log.last_position(),
        positions.len() as u64,
        "{context}: last position"
    );
    // Each stored event belongs to exactly one attempted commit, and commits are whole.
    let mut present_commits: HashMap<usize, usize> = HashMap::new();
    for (store, e) in by_position.values() {
        let commit = commit_of(&e.payload)
            .unwrap_or_else(|| panic!("{context}: stray event {store}/{}", e.aggregate_id));
        let attempt = &attempts[commit];
        assert!(
            attempt
                .events
                .iter()
                .any(|a| a.event_store_id == *store && a.event == *e),
            "{context}: stored event of commit {commit} differs from what was appended"
        );
        *present_commits.entry(commit).or_default() += 1;
    }
    for (commit, attempt) in attempts.iter().enumerate() {
        let present = present_commits.get(&commit).copied().unwrap_or(0);
        if let Some(first) = attempt.acked {
            assert_eq!(
                present,
                attempt.events.len(),
                "{context}: acknowledged commit {commit} lost events"
            );
            for (i, e) in attempt.events.iter().enumerate() {
                let (store, stored) = &by_position[&(first + i as u64)];
                assert_eq!(
                    (store, stored),
                    (&e.event_store_id, &e.event),
                    "{context}: commit {commit} moved"
                );
            }
        } else {
            assert!(
                present == 0 || present == attempt.events.len(),
                "{context}: commit {commit} is partly visible ({present} of {})",
                attempt.events.len()
            );
        }
    }
}

fn commit_of(payload: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(payload.get(..30)?)
        .ok()
        .or_else(|| std::str::from_utf8(payload).ok())?;
    text.strip_prefix("commit ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// The next append on every aggregate succeeds.
pub async fn append_more(log: &LogAdapter, context: &str) {
    for store in STORES {
        for aggregate in AGGREGATES {
            let last = log
                .get_events(
                    store,
                    aggregate,
                    &GetEventsOptions {
                        reverse: true,
                        limit: Some(1),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"))
                .first()
                .map_or(0, |e| e.event.version);
            log.push_event(event(store, aggregate, last + 1, usize::MAX, 0))
                .await
                .unwrap_or_else(|e| panic!("{context}: next append on {store}/{aggregate}: {e}"));
        }
    }
}

/// Counts the mutating operations of a clean run of the workload.
pub async fn count_ops(commits: usize) -> u64 {
    let fs = SimFs::new();
    let log = open(&fs).expect("a clean open");
    let attempts = run(&log, commits).await;
    assert!(
        attempts.iter().all(|a| a.acked.is_some()),
        "a clean run acknowledges everything"
    );
    drop(log);
    fs.ops()
}

/// The versions the acknowledged attempts leave behind.
pub fn versions(attempts: &[Attempt]) -> HashMap<(String, String), u64> {
    let mut versions = HashMap::new();
    for e in attempts
        .iter()
        .filter(|a| a.acked.is_some())
        .flat_map(|a| &a.events)
    {
        versions.insert(
            (e.event_store_id.clone(), e.event.aggregate_id.clone()),
            e.event.version,
        );
    }
    versions
}

pub fn dir() -> &'static Path {
    Path::new(DIR)
}
