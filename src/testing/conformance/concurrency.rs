//! Racing commits: groups stay all or nothing, one push wins each version.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::storage::{
    EncodedEvent, EventAlreadyExists, GetEventsOptions, Position, StorageAdapter, StorageError,
    StoredEvent,
};

use super::events::{OTHER_STORE, STORE, at, event, read, read_all, versions};
use super::expect::expect_conflict;

/// Writer tasks of the group race.
const RACING_TASKS: usize = 32;
/// Groups each writer task pushes.
const RACING_ROUNDS: usize = 12;
/// Reader tasks checking atomic visibility while the writers race.
const RACING_READERS: usize = 4;
/// The aggregates the racing groups write to.
const RACING_SLOTS: [(&str, &str); 3] = [(STORE, "x"), (STORE, "y"), (OTHER_STORE, "x")];

/// The slots a racing group writes to, by its (task, round); a slot listed twice gets two
/// consecutive versions.
fn racing_plan(task: usize, round: usize) -> &'static [usize] {
    const PLANS: [&[usize]; 5] = [&[0, 1, 2], &[0, 1], &[1, 2], &[2, 0], &[0, 0, 2]];
    PLANS[(task + round) % PLANS.len()]
}

/// The payload of event `index` of racing group (task, round).
fn racing_payload(task: usize, round: usize, index: usize) -> Vec<u8> {
    format!("{task}:{round}:{index}").into_bytes()
}

/// Parses a racing payload back to (task, round, index).
fn parse_racing_payload(payload: &[u8]) -> Option<(usize, usize, usize)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(':').map(str::parse::<usize>);
    let parsed = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    parts.next().is_none().then_some(parsed)
}

/// What happened to one racing group.
struct RacingOutcome {
    task: usize,
    round: usize,
    /// (slot, version) of each event, in input order.
    events: Vec<(usize, u64)>,
    result: Result<Vec<Position>, EventAlreadyExists>,
}

async fn racing_writer(
    adapter: Arc<dyn StorageAdapter>,
    task: usize,
    barrier: Arc<tokio::sync::Barrier>,
) -> Vec<RacingOutcome> {
    const CHECK: &str = "concurrent_event_groups_are_all_or_nothing";
    barrier.wait().await;
    let mut outcomes = Vec::new();
    for round in 0..RACING_ROUNDS {
        let plan = racing_plan(task, round);
        let mut next_version: HashMap<usize, u64> = HashMap::new();
        let mut commit = Vec::new();
        let mut events = Vec::new();
        for (index, &slot) in plan.iter().enumerate() {
            let (store, aggregate_id) = RACING_SLOTS[slot];
            let version = match next_version.get(&slot) {
                Some(&v) => v + 1,
                None => {
                    let newest = GetEventsOptions {
                        reverse: true,
                        limit: Some(1),
                        ..Default::default()
                    };
                    let last = read(CHECK, &*adapter, store, aggregate_id, newest).await;
                    last.first().map_or(0, |e| e.event.version) + 1
                }
            };
            next_version.insert(slot, version);
            let encoded = EncodedEvent {
                payload: racing_payload(task, round, index),
                ..event(aggregate_id, version)
            };
            commit.push(at(store, encoded));
            events.push((slot, version));
        }
        let result = match adapter.push_event_group(commit).await {
            Ok(positions) => Ok(positions),
            Err(StorageError::EventAlreadyExists(conflict)) => Err(conflict),
            // Versions only grow, so a group built from a stale read can only conflict.
            Err(e) => panic!("{CHECK}: group ({task}, {round}) failed with {e}, not a conflict"),
        };
        outcomes.push(RacingOutcome {
            task,
            round,
            events,
            result,
        });
        tokio::task::yield_now().await;
    }
    outcomes
}

/// The racing groups (task, round) whose events a read of one slot shows.
fn racing_groups_seen(events: &[StoredEvent]) -> HashSet<(usize, usize)> {
    events
        .iter()
        .filter_map(|e| parse_racing_payload(&e.event.payload))
        .map(|(task, round, _)| (task, round))
        .collect()
}

/// Reads two slots one after the other until told to stop: a group seen in the first read
/// was committed before it, so if it also wrote the second slot, the second read must show it.
async fn racing_reader(
    adapter: Arc<dyn StorageAdapter>,
    reader: usize,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
    barrier: Arc<tokio::sync::Barrier>,
) {
    const CHECK: &str = "concurrent_event_groups_are_all_or_nothing";
    const PAIRS: [(usize, usize); 6] = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)];
    barrier.wait().await;
    let mut iteration = reader;
    loop {
        let (first, second) = PAIRS[iteration % PAIRS.len()];
        {
            let (store_a, aggregate_a) = RACING_SLOTS[first];
            let (store_b, aggregate_b) = RACING_SLOTS[second];
            let seen_a =
                racing_groups_seen(&read_all(CHECK, &*adapter, store_a, aggregate_a).await);
            let seen_b =
                racing_groups_seen(&read_all(CHECK, &*adapter, store_b, aggregate_b).await);
            for &(task, round) in &seen_a {
                if racing_plan(task, round).contains(&second) {
                    assert!(
                        seen_b.contains(&(task, round)),
                        "{CHECK}: group ({task}, {round}) was visible in slot {first} but not \
                         afterwards in slot {second}: a reader saw part of a commit"
                    );
                }
            }
            reads.fetch_add(1, Ordering::Relaxed);
        }
        iteration += 1;
        if stop.load(Ordering::Acquire) {
            break;
        }
        tokio::task::yield_now().await;
    }
}

async fn join<T>(handle: tokio::task::JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a conformance task was cancelled: {e}"),
    }
}

/// Many tasks race event groups over the same few aggregates of two stores while readers
/// watch. Every group is wholly visible or wholly absent (to the readers during the race and
/// when read back), each (aggregate, version) has exactly one winning group, losers fail only
/// with a conflict naming one of their events, and the versions of every aggregate are exactly
/// `1..=n`.
pub async fn concurrent_event_groups_are_all_or_nothing(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "concurrent_event_groups_are_all_or_nothing";
    let barrier = Arc::new(tokio::sync::Barrier::new(RACING_TASKS + RACING_READERS));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..RACING_READERS)
        .map(|reader| {
            let task = racing_reader(
                Arc::clone(&adapter),
                reader,
                Arc::clone(&stop),
                Arc::clone(&reads),
                Arc::clone(&barrier),
            );
            tokio::spawn(task)
        })
        .collect();
    let writers: Vec<_> = (0..RACING_TASKS)
        .map(|task| {
            tokio::spawn(racing_writer(
                Arc::clone(&adapter),
                task,
                Arc::clone(&barrier),
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.extend(join(writer).await);
    }
    stop.store(true, Ordering::Release);
    for reader in readers {
        join(reader).await;
    }
    assert!(
        reads.load(Ordering::Relaxed) > 0,
        "{CHECK}: the readers read"
    );

    // Read everything back.
    let mut stored: Vec<BTreeMap<u64, StoredEvent>> = Vec::new();
    for (slot, (store, aggregate_id)) in RACING_SLOTS.iter().enumerate() {
        let events = read_all(CHECK, &*adapter, store, aggregate_id).await;
        let count = events.len() as u64;
        assert_eq!(
            versions(&events),
            (1..=count).collect::<Vec<_>>(),
            "{CHECK}: versions of slot {slot} are exactly 1..=n"
        );
        assert!(
            events.windows(2).all(|w| w[0].position < w[1].position),
            "{CHECK}: positions of slot {slot} increase with versions"
        );
        stored.push(events.into_iter().map(|e| (e.event.version, e)).collect());
    }

    let mut winners: HashMap<(usize, u64), (usize, usize)> = HashMap::new();
    let mut committed_events = 0;
    let mut committed_groups = 0;
    for outcome in &outcomes {
        let RacingOutcome {
            task,
            round,
            events,
            result,
        } = outcome;
        match result {
            Ok(positions) => {
                committed_groups += 1;
                committed_events += events.len();
                assert_eq!(
                    positions.len(),
                    events.len(),
                    "{CHECK}: one position per event"
                );
                for (index, (&(slot, version), &position)) in
                    events.iter().zip(positions).enumerate()
                {
                    if let Some(other) = winners.insert((slot, version), (*task, *round)) {
                        panic!(
                            "{CHECK}: groups {other:?} and ({task}, {round}) both won slot \
                             {slot} v{version}"
                        );
                    }
                    let found = stored[slot].get(&version);
                    assert_eq!(
                        found.map(|e| (e.position, e.event.payload.clone())),
                        Some((position, racing_payload(*task, *round, index))),
                        "{CHECK}: committed group ({task}, {round}) is wholly visible: slot \
                         {slot} v{version}"
                    );
                    assert_eq!(
                        positions[index],
                        positions[0] + index as u64,
                        "{CHECK}: positions of group ({task}, {round}) are consecutive"
                    );
                }
            }
            Err(conflict) => {
                let named = events.iter().any(|&(slot, version)| {
                    let (store, aggregate_id) = RACING_SLOTS[slot];
                    conflict.event_store_id == store
                        && conflict.aggregate_id == aggregate_id
                        && conflict.version == version
                });
                assert!(
                    named,
                    "{CHECK}: the conflict of group ({task}, {round}) names one of its events: \
                     {conflict:?}"
                );
            }
        }
    }
    assert!(
        committed_groups > 0,
        "{CHECK}: some racing groups committed"
    );

    // Every stored event belongs to a committed group: refused groups left nothing behind.
    let stored_events: usize = stored.iter().map(BTreeMap::len).sum();
    assert_eq!(
        stored_events, committed_events,
        "{CHECK}: stored events = committed events"
    );
    for (slot, events) in stored.iter().enumerate() {
        for (version, stored_event) in events {
            let owner = parse_racing_payload(&stored_event.event.payload)
                .map(|(task, round, _)| (task, round));
            assert_eq!(
                owner,
                winners.get(&(slot, *version)).copied(),
                "{CHECK}: slot {slot} v{version} was written by the group that won it"
            );
        }
    }
}

/// Many tasks push the same versions of one aggregate: each version has exactly one winner,
/// every loser gets `EventAlreadyExists` naming that version, and the winners' events are the
/// ones stored.
pub async fn concurrent_pushes_have_one_winner_per_version(adapter: Arc<dyn StorageAdapter>) {
    const CHECK: &str = "concurrent_pushes_have_one_winner_per_version";
    const TASKS: usize = 16;
    const VERSIONS: u64 = 24;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let adapter = Arc::clone(&adapter);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let mut wins = Vec::new();
                // Each version is tried only once the previous one exists (won or lost), so a
                // push can only win or conflict.
                for version in 1..=VERSIONS {
                    let encoded = EncodedEvent {
                        payload: format!("task {task}").into_bytes(),
                        ..event("contested", version)
                    };
                    match adapter.push_event(at(STORE, encoded)).await {
                        Ok(position) => wins.push((version, position)),
                        Err(e) => {
                            expect_conflict(CHECK, Err::<(), _>(e), (STORE, "contested", version))
                        }
                    }
                    tokio::task::yield_now().await;
                }
                (task, wins)
            })
        })
        .collect();
    let mut winners: BTreeMap<u64, (usize, Position)> = BTreeMap::new();
    for task in tasks {
        let (task, wins) = join(task).await;
        for (version, position) in wins {
            if let Some(other) = winners.insert(version, (task, position)) {
                panic!(
                    "{CHECK}: tasks {} and {task} both won version {version}",
                    other.0
                );
            }
        }
    }
    let stored = read_all(CHECK, &*adapter, STORE, "contested").await;
    assert_eq!(
        versions(&stored),
        (1..=VERSIONS).collect::<Vec<_>>(),
        "{CHECK}: versions are exactly 1..=n"
    );
    assert_eq!(
        winners.len() as u64,
        VERSIONS,
        "{CHECK}: every version has a winner"
    );
    for stored_event in &stored {
        let version = stored_event.event.version;
        let (task, position) = winners[&version];
        assert_eq!(
            (stored_event.position, stored_event.event.payload.clone()),
            (position, format!("task {task}").into_bytes()),
            "{CHECK}: version {version} holds the winner's event"
        );
    }
}
