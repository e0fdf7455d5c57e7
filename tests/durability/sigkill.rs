//! The kill loop (parent) and the appending process it kills (child).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::storage::{LogAdapter, StorageAdapter};

use crate::workload::{self, AGGREGATES_PER_TASK, Ack, PARENT_AGGREGATE, STORES, TASKS};

/// Names the store directory; the child test does nothing without it.
const DIR_VAR: &str = "ANNALS_SIGKILL_CHILD_DIR";
/// Numbers the child's run, so commit ids are unique across runs.
const RUN_VAR: &str = "ANNALS_SIGKILL_CHILD_RUN";
/// The child test's full name, as the test harness knows it.
const CHILD_TEST: &str = "sigkill::sigkill_child_appends_until_killed";
/// The child test, as [`workload::kill_child`] runs it.
const CHILD: workload::ChildTest = workload::ChildTest {
    name: CHILD_TEST,
    dir_var: DIR_VAR,
    run_var: RUN_VAR,
};
const KILLS_DEFAULT: u64 = 100;
/// Kills per store directory: checking reads the whole store, so long runs start a fresh
/// directory now and then to keep each check bounded.
const KILLS_PER_STORE: u64 = 200;

/// A small xorshift generator for delays and the child's choices.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the clock and the process id.
    pub fn seeded() -> Self {
        Rng(seed())
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

#[derive(Default)]
struct Totals {
    kills: u64,
    kills_before_first_ack: u64,
    commits_acked: u64,
    commits_verified: u64,
    events_verified: u64,
    stores: u64,
    /// Commits in the last store when the run ended.
    commits_stored: usize,
}

#[test]
fn acknowledged_commits_survive_sigkill() {
    let kills: u64 = std::env::var("ANNALS_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS_DEFAULT);
    let seed = std::env::var("ANNALS_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(seed);
    println!("sigkill: {kills} kills, seed {seed}");
    let mut rng = Rng(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut run = 0;
    while run < kills {
        let dir = tempfile::tempdir().unwrap();
        let mut acks: HashMap<String, Ack> = HashMap::new();
        totals.stores += 1;
        for _ in 0..KILLS_PER_STORE.min(kills - run) {
            let delay = Duration::from_micros(1_000 + rng.below(49_000));
            let new_acks = workload::kill_child(&CHILD, dir.path(), run, delay);
            if new_acks.is_empty() {
                totals.kills_before_first_ack += 1;
            }
            totals.kills += 1;
            totals.commits_acked += new_acks.len() as u64;
            for ack in new_acks {
                let previous = acks.insert(ack.commit.clone(), ack);
                assert!(
                    previous.is_none(),
                    "run {run}: a commit id was acknowledged twice"
                );
            }
            let context = format!("after kill {run} (delay {delay:?}, seed {seed})");
            let checked = rt.block_on(reopen_and_check(dir.path(), run, &mut acks, &context));
            totals.commits_verified += acks.len() as u64;
            totals.events_verified += checked.events;
            totals.commits_stored = checked.commits;
            run += 1;
        }
    }
    println!(
        "sigkill: {} kills ({} before the first acknowledgement) over {} store(s); {} commits \
         acknowledged by children; {} acknowledged-commit checks and {} stored-event checks \
         passed in {:.1?}; the last store holds {} commits",
        totals.kills,
        totals.kills_before_first_ack,
        totals.stores,
        totals.commits_acked,
        totals.commits_verified,
        totals.events_verified,
        started.elapsed(),
        totals.commits_stored
    );
    assert_eq!(totals.kills, kills);
}

/// Reopens the killed store, checks it, appends once more and closes it again.
async fn reopen_and_check(
    dir: &Path,
    run: u64,
    acks: &mut HashMap<String, Ack>,
    context: &str,
) -> workload::Checked {
    let log = workload::open(dir).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    let checked = workload::check(&log, acks, context).await;
    let store = STORES[(run % 2) as usize];
    let version = workload::last_version(&log, store, PARENT_AGGREGATE).await + 1;
    let commit = format!("p{run}");
    let events = vec![workload::event(
        &commit,
        0,
        1,
        store,
        PARENT_AGGREGATE,
        version,
    )];
    let first = log
        .push_event_group(events.clone())
        .await
        .unwrap_or_else(|e| panic!("{context}: the next append failed: {e}"));
    assert_eq!(first, vec![checked.events + 1], "{context}: next position");
    acks.insert(
        commit.clone(),
        Ack {
            commit,
            first: first[0],
            events,
        },
    );
    log.close();
    checked
}

/// The child: appends until killed. Ignored, so it only runs when the parent asks for it.
#[test]
#[ignore = "run by acknowledged_commits_survive_sigkill as a child process"]
fn sigkill_child_appends_until_killed() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let run: u64 = std::env::var(RUN_VAR).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = Arc::new(workload::open(Path::new(&dir)).expect("the child opens the store"));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| tokio::spawn(append_forever(Arc::clone(&log), run, task)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// One task of the child: single events and groups over its own aggregates in both stores,
/// one acknowledgement line per commit.
async fn append_forever(log: Arc<LogAdapter>, run: u64, task: usize) {
    append_commits(log, run, task, None).await;
}

/// What [`append_forever`] does, stopping after `limit` commits when one is given.
pub async fn append_commits(log: Arc<LogAdapter>, run: u64, task: usize, limit: Option<u64>) {
    let streams: Vec<(&str, String)> = STORES
        .iter()
        .flat_map(|s| {
            (0..AGGREGATES_PER_TASK).map(move |k| (*s, workload::task_aggregate(task, k)))
        })
        .collect();
    let mut versions = Vec::new();
    for (store, aggregate) in &streams {
        versions.push(workload::last_version(&log, store, aggregate).await);
    }
    let mut rng = Rng(seed() ^ (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for seq in 0..limit.unwrap_or(u64::MAX) {
        let commit = format!("{run}.{task}.{seq}");
        let members = if rng.below(5) < 3 {
            1
        } else {
            2 + rng.below(3) as usize
        };
        // Distinct streams, so each member's version is simply the stream's next one.
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < members {
            let s = rng.below(streams.len() as u64) as usize;
            if !chosen.contains(&s) {
                chosen.push(s);
            }
        }
        let events: Vec<_> = chosen
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let (store, aggregate) = &streams[s];
                workload::event(&commit, i, members, store, aggregate, versions[s] + 1)
            })
            .collect();
        let positions = log
            .push_event_group(events.clone())
            .await
            .unwrap_or_else(|e| panic!("child run {run}: commit {commit} failed: {e}"));
        for &s in &chosen {
            versions[s] += 1;
        }
        let ack = Ack {
            commit,
            first: positions[0],
            events,
        };
        let mut out = std::io::stdout().lock();
        out.write_all(ack.line().as_bytes()).unwrap();
        out.flush().unwrap();
    }
}
