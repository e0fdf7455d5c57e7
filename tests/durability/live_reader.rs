//! A live reader in this process follows a store that a child process writes, and keeps
//! following it when the child is killed with SIGKILL mid-load and another child recovers the
//! store and appends on.
//!
//! The reader is checked at every step: every event it shows is an event of some commit,
//! rebuilt byte for byte from its payload; positions come gap-free and increasing; a commit
//! (an event group of up to four events across stores) is never visible in part; and every
//! commit the child has acknowledged is visible once the reader has refreshed. After the
//! kills, the reader holds exactly what the writer's recovery keeps. `ANNALS_LIVE_KILLS` sets
//! the number of kills (default 4).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use annals::storage::{LogReader, StorageAdapter};

use crate::sigkill::{Rng, append_commits};
use crate::workload::{self, Ack, TASKS};

/// Names the store directory; the child test does nothing without it.
const DIR_VAR: &str = "ANNALS_LIVE_CHILD_DIR";
/// Numbers the child's round, so commit ids are unique across children.
const ROUND_VAR: &str = "ANNALS_LIVE_CHILD_ROUND";
/// Commits per task, when the child is to stop by itself.
const COMMITS_VAR: &str = "ANNALS_LIVE_CHILD_COMMITS";
const CHILD_TEST: &str = "live_reader::live_reader_child_appends";
const SIGKILL: i32 = 9;
/// Commits each task of the child makes under load before it stops by itself.
const COMMITS_PER_TASK: u64 = 600;
/// How long the reader may take to show what was acknowledged: far beyond its 10 ms poll,
/// so a loaded machine does not fail the test.
const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn a_live_reader_sees_every_acknowledged_commit_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    create_store(dir.path());
    let rt = runtime();
    let (mut child, acks_rx) = spawn_child(dir.path(), 0, Some(COMMITS_PER_TASK));
    rt.block_on(async {
        let mut follower = Follower::open(dir.path());
        let snapshot = reader(dir.path(), false);
        let mut acks: HashMap<String, Ack> = HashMap::new();
        let mut checks = 0;
        let status = loop {
            follower.drain("under load").await;
            // Whatever was acknowledged before the refresh is visible after it.
            receive_acks(&acks_rx, &mut acks);
            snapshot.refresh().unwrap();
            workload::check(&snapshot, &acks, "a reader refreshed under load").await;
            checks += 1;
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "the writer child failed: {status}");
        receive_all_acks(acks_rx, &mut acks);
        let end = acks.values().map(end_of).max().unwrap();
        follower.catch_up(end, "after the writer finished").await;
        assert_eq!(follower.seen, end, "the follower saw every event, no more");
        let checked = workload::check(follower.reader.as_ref(), &acks, "after the writer").await;
        assert_eq!(
            checked.commits,
            acks.len(),
            "every commit seen was acknowledged"
        );
        assert_eq!(acks.len(), TASKS * COMMITS_PER_TASK as usize);
        println!(
            "live reader: {} commits ({end} events) followed, {checks} checks under load",
            acks.len()
        );
    });
}

#[test]
fn a_live_reader_keeps_reading_when_the_writer_is_killed() {
    let rounds: u64 = std::env::var("ANNALS_LIVE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    create_store(dir.path());
    let rt = runtime();
    let mut rng = Rng::seeded();
    rt.block_on(async {
        let mut follower = Follower::open(dir.path());
        let snapshot = reader(dir.path(), false);
        let mut acks: HashMap<String, Ack> = HashMap::new();
        for round in 0..rounds {
            // The next child recovers the store the last one left (a torn tail zero-filled
            // under the reader's eyes) and appends on.
            let (mut child, acks_rx) = spawn_child(dir.path(), round, None);
            let delay = Duration::from_millis(150 + rng.below(600));
            let started = Instant::now();
            while started.elapsed() < delay {
                follower.drain("while the writer runs").await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = child.kill();
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(SIGKILL), "round {round}: {status}");
            receive_all_acks(acks_rx, &mut acks);
            let context = format!("after kill {round} (after {delay:?})");
            let end = acks.values().map(end_of).max().unwrap_or(0);
            follower.catch_up(end, &context).await;
            snapshot.refresh().unwrap();
            workload::check(&snapshot, &acks, &context).await;
        }
        // The writer's recovery keeps exactly what the reader shows: nothing it showed was
        // torn, nothing whole was left out.
        let writer = Arc::new(workload::open(dir.path()).unwrap());
        snapshot.refresh().unwrap();
        assert_eq!(snapshot.last_position(), writer.last_position());
        follower.drain("after recovery").await;
        assert_eq!(follower.seen, writer.last_position());
        // And it follows the recovered writer's next commit.
        append_commits(Arc::clone(&writer), rounds, 0, Some(1)).await;
        follower
            .catch_up(writer.last_position(), "after the next commit")
            .await;
        writer.close();
        println!(
            "live reader: {rounds} writers killed, {} events followed across them",
            follower.seen
        );
    });
}

/// The child: appends, one acknowledgement line per commit, until killed or, when told, until
/// each task made its commits. Ignored, so it only runs when a parent asks for it.
#[test]
#[ignore = "run by the live reader tests as a child process"]
fn live_reader_child_appends() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_VAR).unwrap().parse().unwrap();
    let limit: Option<u64> = std::env::var(COMMITS_VAR).ok().map(|v| v.parse().unwrap());
    runtime().block_on(async move {
        let log = Arc::new(workload::open(Path::new(&dir)).expect("the child opens the store"));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| tokio::spawn(append_commits(Arc::clone(&log), round, task, limit)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        log.close();
    });
}

/// A reader following the log in global order, checking every event as it comes.
struct Follower {
    reader: Arc<LogReader>,
    /// The last position read.
    seen: u64,
    /// The commit being read: (id, index of the last event read, its size).
    commit: Option<(String, usize, usize)>,
}

impl Follower {
    fn open(dir: &Path) -> Self {
        Follower {
            reader: Arc::new(reader(dir, true)),
            seen: 0,
            commit: None,
        }
    }

    /// Reads everything the reader shows now, checking it.
    async fn drain(&mut self, context: &str) {
        loop {
            let batch = self.reader.read_log(self.seen + 1, 256).await.unwrap();
            let short = batch.len() < 256;
            for logged in batch {
                assert_eq!(
                    logged.position,
                    self.seen + 1,
                    "{context}: positions in order"
                );
                self.seen = logged.position;
                let (commit, i, n) = workload::parse_payload(&logged.event.payload)
                    .unwrap_or_else(|| panic!("{context}: a stray event at {}", logged.position));
                let rebuilt = workload::event(
                    &commit,
                    i,
                    n,
                    &logged.event_store_id,
                    &logged.event.aggregate_id,
                    logged.event.version,
                );
                assert_eq!(
                    rebuilt.event, logged.event,
                    "{context}: event {}",
                    logged.position
                );
                assert_eq!(rebuilt.event_store_id, logged.event_store_id);
                match (&self.commit, i) {
                    (None, 0) => {}
                    (Some((previous, last, size)), i)
                        if *previous == commit && i == last + 1 && *size == n => {}
                    (open, _) => panic!(
                        "{context}: event {i} of {n} of commit {commit} at {} after {open:?}",
                        logged.position
                    ),
                }
                self.commit = (i + 1 < n).then_some((commit, i, n));
            }
            if short {
                // The end of what the reader shows: never inside a commit.
                assert_eq!(self.commit, None, "{context}: a commit is partly visible");
                return;
            }
        }
    }

    /// Reads until position `end` has been read, waiting for the reader's refreshes.
    async fn catch_up(&mut self, end: u64, context: &str) {
        let started = Instant::now();
        let mut watch = self.reader.watch_log();
        loop {
            self.drain(context).await;
            if self.seen >= end {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{context}: the reader shows {} of {end} acknowledged events",
                self.seen
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), watch.changed()).await;
        }
    }
}

/// A reader of `dir`: following it every 10 ms, or refreshed by hand.
fn reader(dir: &Path, follow: bool) -> LogReader {
    let builder = LogReader::builder(dir);
    let builder = if follow {
        builder
    } else {
        builder.manual_refresh()
    };
    builder.open().expect("a reader opens beside the writer")
}

/// Creates the store, so that readers can open it before the first child runs.
fn create_store(dir: &Path) {
    workload::open(dir).expect("creates the store").close();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The position just past `ack`'s last event, minus one: its last event's.
fn end_of(ack: &Ack) -> u64 {
    ack.first + ack.events.len() as u64 - 1
}

/// Adds the acknowledgements received so far.
fn receive_acks(rx: &Receiver<Ack>, acks: &mut HashMap<String, Ack>) {
    add_acks(rx.try_iter(), acks);
}

/// Adds every acknowledgement of a child that has ended: up to the end of its output.
fn receive_all_acks(rx: Receiver<Ack>, acks: &mut HashMap<String, Ack>) {
    add_acks(rx.into_iter(), acks);
}

fn add_acks(new: impl Iterator<Item = Ack>, acks: &mut HashMap<String, Ack>) {
    for ack in new {
        let previous = acks.insert(ack.commit.clone(), ack);
        assert!(previous.is_none(), "a commit id was acknowledged twice");
    }
}

/// Starts a writer child on `dir`; its acknowledgements arrive on the receiver as the child
/// prints them (whole lines only: a line cut by a kill was not reported).
fn spawn_child(dir: &Path, round: u64, commits: Option<u64>) -> (Child, Receiver<Ack>) {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(ROUND_VAR, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(commits) = commits {
        command.env(COMMITS_VAR, commits.to_string());
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            // The harness prints the test's name without a line break before the test runs,
            // so the first acknowledgement follows it on the same line.
            let text = String::from_utf8_lossy(&line);
            if line.ends_with(b"\n")
                && let Some(at) = text.find("ack ")
                && let Some(ack) = Ack::parse(&text[at..])
                && tx.send(ack).is_err()
            {
                return;
            }
            line.clear();
        }
    });
    (child, rx)
}
