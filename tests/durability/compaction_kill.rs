//! Acknowledged commits survive `kill -9` of a process that compacts the log in a loop while
//! it appends: the child appends from several tasks (one acknowledgement line per commit) and
//! compacts away the scratch aggregates the parent wrote before it, again and again; the
//! parent kills it at a random moment, reopens the store and checks that every acknowledged
//! commit is there, byte-identical at its positions, that scratch events are intact or gone,
//! and that the integrity check is clean. It runs for a few seconds (`ANNALS_KILL_SECONDS`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::storage::StorageAdapter;

use crate::sigkill::{Rng, append_commits};
use crate::workload::{self, Ack, TASKS};

const DIR_VAR: &str = "ANNALS_COMPACT_KILL_CHILD_DIR";
const RUN_VAR: &str = "ANNALS_COMPACT_KILL_CHILD_RUN";
const CHILD_TEST: &str = "compaction_kill::compaction_kill_child_appends_and_compacts";
/// The child test, as [`workload::kill_child`] runs it.
const CHILD: workload::ChildTest = workload::ChildTest {
    name: CHILD_TEST,
    dir_var: DIR_VAR,
    run_var: RUN_VAR,
};

fn scratch(run: u64) -> String {
    format!("scratch{run}")
}

#[test]
fn acknowledged_commits_survive_sigkill_during_compaction() {
    let seconds: u64 = std::env::var("ANNALS_KILL_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut rng = Rng::seeded();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut acks: HashMap<String, Ack> = HashMap::new();
    let started = Instant::now();
    let mut run = 0u64;
    let mut removed_seen = 0u64;
    while run < 3 || started.elapsed() < Duration::from_secs(seconds) {
        rt.block_on(write_scratch(dir.path(), run));
        let delay = Duration::from_millis(50 + rng.below(400));
        for ack in workload::kill_child(&CHILD, dir.path(), run, delay) {
            acks.insert(ack.commit.clone(), ack);
        }
        let context = format!("after kill {run} (delay {delay:?})");
        removed_seen += rt.block_on(check(dir.path(), run, &acks, &context));
        run += 1;
    }
    println!(
        "compaction kill: {run} kills, {} commits acknowledged, {removed_seen} scratch \
         positions found removed in {:.1?}",
        acks.len(),
        started.elapsed()
    );
}

/// Appends this run's scratch aggregate, which the child's compactions remove.
async fn write_scratch(dir: &Path, run: u64) {
    let log = workload::open(dir).unwrap();
    for version in 1..=40 {
        let e = workload::event(&format!("s{run}"), 0, 1, "POKEMONS", &scratch(run), version);
        log.push_event(e).await.unwrap();
    }
    log.close();
}

/// Reopens the store and checks it; returns how many scratch positions are gone.
async fn check(dir: &Path, run: u64, acks: &HashMap<String, Ack>, context: &str) -> u64 {
    let log = workload::open(dir).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    let events = log.read_log(1, usize::MAX).await.unwrap();
    let by_position: HashMap<u64, _> = events.iter().map(|e| (e.position, e)).collect();
    for ack in acks.values() {
        for (i, expected) in ack.events.iter().enumerate() {
            let found = by_position
                .get(&(ack.first + i as u64))
                .unwrap_or_else(|| panic!("{context}: acknowledged commit {} lost", ack.commit));
            assert_eq!(found.event_store_id, expected.event_store_id, "{context}");
            assert_eq!(
                found.event, expected.event,
                "{context}: commit {} differs",
                ack.commit
            );
        }
    }
    // Only scratch events ever go, and what is left of a scratch aggregate is a suffix.
    let last = log.last_position();
    let gone = (1..=last).filter(|p| !by_position.contains_key(p)).count() as u64;
    for r in 0..=run {
        let versions: Vec<u64> = events
            .iter()
            .filter(|e| e.event.aggregate_id == scratch(r))
            .map(|e| e.event.version)
            .collect();
        if let Some(&first) = versions.first() {
            assert_eq!(versions, (first..=40).collect::<Vec<_>>(), "{context}");
        }
    }
    let scratch_total = 40 * (run + 1);
    assert!(gone <= scratch_total, "{context}: {gone} positions gone");
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{context}: {:?}", report.problems);
    log.close();
    gone
}

/// The child: appends from several tasks and compacts in a loop until killed.
#[test]
#[ignore = "run by acknowledged_commits_survive_sigkill_during_compaction as a child process"]
fn compaction_kill_child_appends_and_compacts() {
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
        let compactor = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                loop {
                    log.compact_where(|e| !e.aggregate.starts_with("scratch"))
                        .await
                        .expect("compaction");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| tokio::spawn(append_commits(Arc::clone(&log), run, task, None)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        compactor.await.unwrap();
    });
}
