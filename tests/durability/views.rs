//! A view applies each event exactly once across `kill -9` of the process running it.
//!
//! The parent fills a log store, then repeatedly starts a child process that runs a key-value
//! view over it (one counter per aggregate, one overall) and kills it after a random delay —
//! while it starts and creates its state file, mid-batch, mid-commit, or while it waits for
//! new events. Delays are counted from the moment the child reports where it resumed, so
//! kills land while the view runs however long the process takes to start. Between kills the parent appends
//! more events, so the view both catches up and follows. At the end a last child runs the view
//! to the end of the log, and every counter must equal the number of events: an event applied
//! twice (a batch committed without its checkpoint) or never (a checkpoint moved past an
//! unapplied event) shows up as a wrong count.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use annals::Timestamp;
use annals::state::StateStore;
use annals::storage::{AppendEvent, EncodedEvent, LogAdapter, StorageAdapter};
use annals::subscription::Filter;
use annals::view::{KvTables, KvView};

const DIR_VAR: &str = "ANNALS_VIEW_KILL_DIR";
const CHILD_TEST: &str = "views::view_child_runs_until_killed";
const AGGREGATES: u64 = 20;
const EVENTS_PER_ROUND: u64 = 3_000;
const KILLS: u64 = 20;
const SIGKILL: i32 = 9;

fn log_dir(dir: &Path) -> PathBuf {
    dir.join("log")
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.redb")
}

/// The view under test: per-aggregate and overall event counts.
fn counting_view(state: Arc<StateStore>) -> KvView {
    KvView::builder("counts", 1)
        .on_logged(Filter::all(), |tables: &mut KvTables<'_>, event| {
            let key = event.event.aggregate_id.as_str();
            let count: u64 = tables.get("per_aggregate", key)?.unwrap_or(0);
            tables.put("per_aggregate", key, &(count + 1))?;
            let total: u64 = tables.get("total", "all")?.unwrap_or(0);
            tables.put("total", "all", &(total + 1))
        })
        .build(state)
        .expect("the view builds")
}

/// Appends `EVENTS_PER_ROUND` events over the aggregates, in groups of ten; returns how many
/// events each aggregate now has.
async fn append_round(dir: &Path, versions: &mut [u64]) {
    // Synced once, by close: these appends need no per-commit durability.
    let log = LogAdapter::builder(log_dir(dir))
        .durability(annals::Durability::None)
        .open()
        .expect("the parent opens the log");
    for group in 0..EVENTS_PER_ROUND / 10 {
        let commit: Vec<AppendEvent> = (0..10)
            .map(|i| {
                let a = ((group * 10 + i) * 7) % AGGREGATES;
                versions[a as usize] += 1;
                AppendEvent {
                    event_store_id: "COUNTED".into(),
                    event: EncodedEvent {
                        aggregate_id: format!("agg-{a:02}"),
                        version: versions[a as usize],
                        timestamp: Timestamp::from_unix_millis(1_700_000_000_000),
                        event_type: "HAPPENED".into(),
                        schema_version: 1,
                        payload: vec![0xA5; 64],
                        metadata: vec![0x80],
                    },
                }
            })
            .collect();
        log.push_event_group(commit).await.expect("append");
    }
    log.close();
}

/// When a kill comes: counted from the child's start, or from the moment it resumed.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// While the process starts, opens the log and the state file, or runs the view.
    AfterStart(Duration),
    /// While the view runs: after the child reported where it resumed. Counted from then,
    /// not from the start, so that the kill lands mid-batch however slowly the process
    /// starts (a loaded machine can take longer to start it than any fixed delay).
    AfterResume(Duration),
}

/// Runs the view child on `dir` and kills it at `at`; returns the position it resumed from
/// (if it got as far as printing it).
fn kill_child(dir: &Path, at: KillAt) -> Option<u64> {
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let resumed = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // The harness prints the test's name on the same line, before the child's output.
            .find_map(|l| {
                let (_, position) = l.rsplit_once("resuming at ")?;
                position.trim().parse::<u64>().ok()
            });
        let _ = tx.send(resumed);
    });
    let resumed = match at {
        KillAt::AfterStart(delay) => {
            std::thread::sleep(delay);
            None
        }
        KillAt::AfterResume(delay) => {
            // A child that ends without resuming (it failed) closes the channel at once;
            // the bound only keeps a hung child from hanging the test.
            let resumed = rx
                .recv_timeout(Duration::from_secs(300))
                .ok()
                .flatten()
                .expect("the child resumes the view");
            std::thread::sleep(delay);
            Some(resumed)
        }
    };
    let _ = child.kill();
    let status = child.wait().expect("reap the child");
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "the child ended by itself: {status}"
    );
    resumed.or_else(|| rx.recv().ok().flatten())
}

#[test]
fn a_view_applies_each_event_exactly_once_across_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut versions = vec![0u64; AGGREGATES as usize];
    let mut rng = super::sigkill_rng();
    let mut resumed = Vec::new();
    for _ in 0..KILLS {
        runtime.block_on(append_round(dir.path(), &mut versions));
        let delay = Duration::from_millis(5 + rng.below(150));
        // One kill in four while the child starts up (its state file's creation included),
        // the others while the view runs.
        let at = if rng.below(4) == 0 {
            KillAt::AfterStart(delay)
        } else {
            KillAt::AfterResume(delay)
        };
        resumed.extend(kill_child(dir.path(), at));
    }
    // The last run: catch up to the end, then check every count.
    runtime.block_on(async {
        let log: Arc<dyn StorageAdapter> = Arc::new(
            LogAdapter::builder(log_dir(dir.path()))
                .open()
                .expect("open the log"),
        );
        let last = *log.watch_log().borrow();
        let state = Arc::new(StateStore::open(state_path(dir.path())).expect("open the state"));
        let view = counting_view(state);
        let runner = view.run(Arc::clone(&log));
        // A bound against a hang only: a loaded machine catches up slowly.
        view.wait_for(last, Duration::from_secs(600))
            .await
            .expect("the view catches up");
        runner.stop().await.expect("a clean stop");
        let total: u64 = view.get("total", "all").expect("read").unwrap_or(0);
        assert_eq!(total, last, "every event applied exactly once");
        for (a, expected) in versions.iter().enumerate() {
            let key = format!("agg-{a:02}");
            let count: u64 = view.get("per_aggregate", &key).expect("read").unwrap_or(0);
            assert_eq!(count, *expected, "{key}: applied exactly once per event");
        }
        assert!(
            resumed.windows(2).all(|w| w[0] <= w[1]),
            "the view's checkpoint never went backwards: {resumed:?}"
        );
        // Child `i` started with `i` rounds applied at most; the one after it resumed short of
        // `i + 1` rounds if the kill interrupted its catch-up.
        let interrupted = resumed
            .iter()
            .enumerate()
            .skip(1)
            .filter(|&(i, &p)| p < i as u64 * EVENTS_PER_ROUND + 1)
            .count();
        println!(
            "view kills: {KILLS} kills, {last} events, {interrupted} kills interrupted a \
             catch-up; checkpoints resumed from: {resumed:?}"
        );
    });
}

/// The child: runs the view until killed. Ignored, so it only runs when the parent asks.
#[test]
#[ignore = "run by a_view_applies_each_event_exactly_once_across_sigkill as a child process"]
fn view_child_runs_until_killed() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let log: Arc<dyn StorageAdapter> = Arc::new(
            LogAdapter::builder(log_dir(&dir))
                .open()
                .expect("the child opens the log"),
        );
        let state =
            Arc::new(StateStore::open(state_path(&dir)).expect("the child opens the state"));
        let view = counting_view(state);
        println!("resuming at {}", view.checkpoint().expect("checkpoint"));
        let _runner = view.run(log);
        std::future::pending::<()>().await;
    });
}
