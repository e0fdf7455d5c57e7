//! Target `operations`: sequences of operations and I/O faults keep acknowledged commits,
//! whole, across reopens and crashes.

use std::collections::{BTreeMap, HashMap};

use crate::engine::sim::{Damage, Fault, SimFs};
use crate::storage::{
    AggregateIdEntry, AppendEvent, EncodedEvent, GetEventsOptions, LogAdapter, StorageAdapter,
    StorageError,
};

use super::input::Input;
use super::store::{AGGREGATES, STORES, fuzz_event, list_all, open_store, runtime};

/// One commit the harness attempted.
#[derive(Clone, Debug)]
struct Attempt {
    events: Vec<AppendEvent>,
    /// Position of the first event once acknowledged.
    acked: Option<u64>,
}

/// What the store must hold: every acknowledged commit, and maybe some that failed.
#[derive(Default)]
struct Model {
    attempts: Vec<Attempt>,
    /// Indexes of failed attempts whose outcome is unknown until the next reopen.
    uncertain: Vec<usize>,
    /// Latest acknowledged version of each aggregate.
    versions: HashMap<(String, String), u64>,
}

impl Model {
    fn version(&self, store: &str, aggregate: &str) -> u64 {
        self.versions
            .get(&(store.to_owned(), aggregate.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Acknowledged events of one aggregate, in version order.
    fn events(&self, store: &str, aggregate: &str) -> Vec<(u64, &EncodedEvent)> {
        let mut out: Vec<(u64, &EncodedEvent)> = self
            .attempts
            .iter()
            .filter_map(|a| Some((a.acked?, a)))
            .flat_map(|(first, a)| {
                a.events
                    .iter()
                    .enumerate()
                    .map(move |(i, e)| (first + i as u64, e))
            })
            .filter(|(_, e)| e.event_store_id == store && e.event.aggregate_id == aggregate)
            .map(|(p, e)| (p, &e.event))
            .collect();
        out.sort_by_key(|(_, e)| e.version);
        out
    }

    fn acknowledge(&mut self, index: usize, first: u64) {
        self.attempts[index].acked = Some(first);
        for e in &self.attempts[index].events {
            self.versions.insert(
                (e.event_store_id.clone(), e.event.aggregate_id.clone()),
                e.event.version,
            );
        }
    }
}

/// The store under test and what it must hold.
struct Harness {
    fs: SimFs,
    log: Option<LogAdapter>,
    model: Model,
    checkpoint_events: usize,
    /// A fault may have hit the live store since it was opened: errors are allowed.
    faulted: bool,
}

impl Harness {
    /// The first open, which a fault may fail.
    fn open_after_fault(&mut self) {
        match open_store(&self.fs, self.checkpoint_events) {
            Ok(log) => self.log = Some(log),
            Err(e) => {
                assert!(self.faulted, "open of an empty healthy disk failed: {e:?}");
                assert!(io_kind(&e), "open under a fault failed with {e:?}");
            }
        }
    }

    async fn step(&mut self, input: &mut Input<'_>) {
        let op = input.byte();
        match op % 8 {
            0..=2 => self.push(input, 1).await,
            3 => {
                let count = 2 + usize::from(input.byte() % 3);
                self.push(input, count).await;
            }
            4 => self.read(input).await,
            5 => self.list(input).await,
            6 => match input.byte() % 4 {
                0 => self.reopen(false).await,
                _ => self.crash(input).await,
            },
            _ => {
                let kind = input.byte();
                let k = 1 + input.u64(1) % 64;
                let at = if matches!(fault_from(kind, 0), Some(Fault::FailSync(_))) {
                    // Syncs are counted separately from operations; reach a near one.
                    k
                } else {
                    self.fs.ops() + k
                };
                if let Some(fault) = fault_from(kind, at) {
                    self.fs.inject(fault);
                    self.faulted = true;
                }
            }
        }
    }

    async fn push(&mut self, input: &mut Input<'_>, count: usize) {
        let commit = self.model.attempts.len() as u64;
        let stale = input.byte() % 16 == 15;
        let mut versions: HashMap<(String, String), u64> = HashMap::new();
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            let pick = input.byte();
            let store = STORES[usize::from(pick >> 7)];
            let aggregate = AGGREGATES[usize::from(pick % 4)];
            let len = usize::from(input.byte()) * 16;
            let key = (store.to_owned(), aggregate.to_owned());
            let version = versions
                .get(&key)
                .copied()
                .unwrap_or_else(|| self.model.version(store, aggregate))
                + 1;
            versions.insert(key, version);
            events.push(fuzz_event(store, aggregate, version, commit, len));
        }
        // A stale commit reuses an acknowledged version: it must never be acknowledged.
        let stale = stale
            && match events[0].event.version {
                1 => false,
                v => {
                    events[0].event.version = v - 1;
                    true
                }
            };
        let Some(log) = &self.log else { return };
        let result = log.push_event_group(events.clone()).await;
        let index = self.model.attempts.len();
        self.model.attempts.push(Attempt {
            events,
            acked: None,
        });
        match result {
            Ok(positions) => {
                assert!(
                    !stale,
                    "a commit reusing an acknowledged version was acknowledged"
                );
                assert_eq!(positions.len(), count, "one position per event");
                self.model.acknowledge(index, positions[0]);
            }
            Err(StorageError::EventAlreadyExists(_))
            | Err(StorageError::UnexpectedVersion { .. })
                if stale || !self.model.uncertain.is_empty() => {}
            Err(e) => {
                assert!(self.faulted, "a push on a healthy store failed: {e:?}");
                assert!(io_kind(&e), "a push under a fault failed with {e:?}");
                self.model.uncertain.push(index);
            }
        }
    }

    async fn read(&mut self, input: &mut Input<'_>) {
        let pick = input.byte();
        let (store, aggregate) = (
            STORES[usize::from(pick >> 7)],
            AGGREGATES[usize::from(pick % 4)],
        );
        let bounds = input.byte();
        let options = GetEventsOptions {
            min_version: (bounds & 1 != 0).then_some(u64::from(bounds >> 4)),
            max_version: (bounds & 2 != 0).then_some(u64::from(bounds >> 3)),
            limit: (bounds & 4 != 0).then_some(usize::from(bounds % 5)),
            reverse: bounds & 8 != 0,
        };
        let Some(log) = &self.log else { return };
        let got = match log.get_events(store, aggregate, &options).await {
            Ok(got) => got,
            Err(e) => {
                assert!(self.faulted, "a read on a healthy store failed: {e:?}");
                assert!(io_kind(&e), "a read under a fault failed with {e:?}");
                return;
            }
        };
        if !self.model.uncertain.is_empty() {
            return; // a failed commit may or may not be visible
        }
        let mut expected: Vec<(u64, &EncodedEvent)> = self
            .model
            .events(store, aggregate)
            .into_iter()
            .filter(|(_, e)| options.contains(e.version))
            .collect();
        if let Some(limit) = options.limit {
            if options.reverse {
                let skip = expected.len().saturating_sub(limit);
                expected.drain(..skip);
            } else {
                expected.truncate(limit);
            }
        }
        if options.reverse {
            expected.reverse();
        }
        let got: Vec<(u64, &EncodedEvent)> = got.iter().map(|e| (e.position, &e.event)).collect();
        assert_eq!(
            got, expected,
            "get_events({store}, {aggregate}, {options:?})"
        );
    }

    async fn list(&mut self, input: &mut Input<'_>) {
        let store = STORES[usize::from(input.byte() % 2)];
        let Some(log) = &self.log else { return };
        let listed = match list_all(log, store).await {
            Ok(listed) => listed,
            Err(e) => {
                assert!(self.faulted, "listing a healthy store failed: {e:?}");
                assert!(io_kind(&e), "listing under a fault failed with {e:?}");
                return;
            }
        };
        if !self.model.uncertain.is_empty() {
            return;
        }
        let mut expected: Vec<AggregateIdEntry> = AGGREGATES
            .iter()
            .filter_map(|a| {
                let events = self.model.events(store, a);
                let (_, first) = events.first()?;
                Some(AggregateIdEntry {
                    initial_event_timestamp: first.timestamp,
                    aggregate_id: (*a).to_owned(),
                })
            })
            .collect();
        expected.sort();
        assert_eq!(listed, expected, "list_aggregate_ids({store})");
    }

    /// A power loss now: the disk keeps what `damage` lets through.
    async fn crash(&mut self, input: &mut Input<'_>) {
        let seed = input.u64(2);
        let sector = if seed.is_multiple_of(2) { 512 } else { 4096 };
        let damage = match input.byte() % 5 {
            0 => Damage::DropUnsynced,
            1 => Damage::KeepUnsynced,
            2 => Damage::RandomSubset { seed },
            3 => Damage::TornLast { sector, seed },
            _ => Damage::TornSectors { sector, seed },
        };
        let image = self.fs.crash_image(damage);
        // The old disk is gone: fail everything its store still tries, so closing is quick.
        self.fs.inject(Fault::FailFrom(self.fs.ops() + 1));
        self.log = None;
        self.fs = image;
        self.reopen(true).await;
    }

    /// Closes the store (unless it crashed), clears the faults and opens it again: it must
    /// open, hold every acknowledged commit, and accept the next append.
    async fn reopen(&mut self, crashed: bool) {
        if !crashed {
            if let Some(log) = self.log.take() {
                log.close();
            }
            self.fs.clear_faults();
        }
        self.faulted = false;
        let log = open_store(&self.fs, self.checkpoint_events)
            .unwrap_or_else(|e| panic!("reopen (crashed: {crashed}) failed: {e:?}"));
        self.reconcile(&log).await;
        self.log = Some(log);
    }

    /// Checks the reopened store against the model, then settles every uncertain commit.
    async fn reconcile(&mut self, log: &LogAdapter) {
        let mut by_position: BTreeMap<u64, (String, EncodedEvent)> = BTreeMap::new();
        for store in STORES {
            for aggregate in AGGREGATES {
                let events = log
                    .get_events(store, aggregate, &GetEventsOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("reading {store}/{aggregate} on reopen: {e:?}"));
                for (i, e) in events.into_iter().enumerate() {
                    assert_eq!(e.event.version, i as u64 + 1, "versions are gap-free");
                    by_position.insert(e.position, (store.to_owned(), e.event));
                }
            }
        }
        let count = by_position.len() as u64;
        assert!(
            by_position.keys().copied().eq(1..=count),
            "positions are gap-free"
        );
        assert_eq!(log.last_position(), count, "last position");
        let mut present: HashMap<usize, Vec<u64>> = HashMap::new();
        for (&position, (store, e)) in &by_position {
            let commit = commit_of(&e.payload).expect("every stored event names its commit");
            let attempt = self
                .model
                .attempts
                .get(commit)
                .expect("every stored event belongs to an attempted commit");
            assert!(
                attempt
                    .events
                    .iter()
                    .any(|a| a.event_store_id == *store && a.event == *e),
                "a stored event of commit {commit} differs from what was pushed"
            );
            present.entry(commit).or_default().push(position);
        }
        for (index, attempt) in self.model.attempts.iter().enumerate() {
            let positions = present.remove(&index).unwrap_or_default();
            if let Some(first) = attempt.acked {
                let expected: Vec<u64> = (first..first + attempt.events.len() as u64).collect();
                assert_eq!(
                    positions, expected,
                    "acknowledged commit {index} moved or is lost"
                );
                for (i, e) in attempt.events.iter().enumerate() {
                    let (store, stored) = &by_position[&(first + i as u64)];
                    assert_eq!(
                        (store, stored),
                        (&e.event_store_id, &e.event),
                        "commit {index}"
                    );
                }
            } else {
                assert!(
                    positions.is_empty() || positions.len() == attempt.events.len(),
                    "commit {index} is partly visible"
                );
                assert!(
                    positions.is_empty() || self.model.uncertain.contains(&index),
                    "refused commit {index} is visible"
                );
            }
        }
        // Failed commits that survived are now part of the store.
        for index in std::mem::take(&mut self.model.uncertain) {
            let events = &self.model.attempts[index].events;
            let e = &events[0];
            let found = by_position
                .iter()
                .find(|(_, (s, stored))| *s == e.event_store_id && *stored == e.event);
            if let Some((&first, _)) = found {
                self.model.acknowledge(index, first);
            }
        }
    }
}

fn fault_from(kind: u8, k: u64) -> Option<Fault> {
    match kind % 5 {
        0 => None,
        1 => Some(Fault::FailOnce(k)),
        2 => Some(Fault::FailFrom(k)),
        3 => Some(Fault::FailSync(k)),
        _ => Some(Fault::NoSpaceFrom(k)),
    }
}

/// Errors an operation may give on a store that a fault hit.
fn io_kind(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::Io { .. }
            | StorageError::StorageFull { .. }
            | StorageError::Poisoned { .. }
            | StorageError::Corruption { .. }
    )
}

/// Most operations run per input, so each execution stays fast.
const OPS_MAX: usize = 48;

/// Interprets the input as a store configuration, an initial I/O fault and a sequence of
/// operations (push, push a group, read, list, reopen, crash with damage, inject a fault)
/// against a log store on a [`SimFs`], checked against a model of acknowledged commits:
/// without faults everything succeeds; with faults errors are typed; after every reopen and
/// crash each acknowledged commit reads back identically at its position and every failed one
/// is wholly present or wholly absent.
pub fn operations(data: &[u8]) {
    let mut input = Input::new(data);
    let checkpoint_events = [2, 5, 1000][usize::from(input.byte() % 3)];
    let fault_kind = input.byte();
    let fault_at = 1 + input.u64(1);
    let fs = SimFs::new();
    let fault = fault_from(fault_kind, fault_at);
    if let Some(fault) = fault {
        fs.inject(fault);
    }
    let mut h = Harness {
        fs,
        log: None,
        model: Model::default(),
        checkpoint_events,
        faulted: fault.is_some(),
    };
    runtime().block_on(async {
        h.open_after_fault();
        for _ in 0..OPS_MAX {
            if input.is_empty() {
                break;
            }
            h.step(&mut input).await;
        }
        h.reopen(false).await;
    });
}

fn commit_of(payload: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(payload.get(..32).unwrap_or(payload)).ok()?;
    text.strip_prefix("commit ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

pub(super) fn operation_seeds() -> Vec<Vec<u8>> {
    // Header: checkpoint choice, fault kind, fault countdown. Then operations.
    let pushes: Vec<u8> = (0u8..12).flat_map(|i| [0, 0, i | (i << 5), 60]).collect();
    let mut clean = vec![0, 0, 0];
    clean.extend_from_slice(&pushes);
    clean.extend_from_slice(&[3, 2, 0, 1, 20, 130, 20, 4, 1, 0, 5, 0, 6, 0, 4, 1, 0]);
    let mut crashy = vec![1, 0, 0];
    crashy.extend_from_slice(&pushes);
    crashy.extend_from_slice(&[6, 1, 7, 0, 3, 0, 0, 2, 40, 6, 3, 9, 0, 3, 4, 0, 1, 0]);
    let mut faulty = vec![0, 1, 30];
    faulty.extend_from_slice(&pushes);
    faulty.extend_from_slice(&[7, 3, 2, 0, 0, 1, 10, 6, 0]);
    let mut dying = vec![2, 2, 40];
    dying.extend_from_slice(&pushes);
    vec![clean, crashy, faulty, dying]
}
