//! Several OS processes running one application over one database: an event action in a
//! consumer group, a queue action on a shared queue, and a key-value view, while events are
//! appended and one process is killed with SIGKILL and restarted. And the fence: a process
//! paused (SIGSTOP) past its lease, whose partition another process took over, cannot commit
//! when it resumes (SIGCONT).
//!
//! The guarantees checked: every event is handled by the action at least once (its side effect,
//! a line printed, is not in the database: at-least-once), every queue message is sent at least
//! once and none is lost, the view counts every event exactly once (its rows commit with its
//! checkpoint), each dead letter exists once and is visible from any process.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::action::{ActionContext, ActionError, EventAction, QueueAction, dead_letter};
use annals::lease::GroupOptions;
use annals::queue::{Queue, QueueOptions};
use annals::state::StateStore;
use annals::storage::{LoggedEvent, StorageAdapter};
use annals::subscription::Filter;
use annals::view::{KvTables, KvView};

use crate::fixture;
use crate::harness::{Needs, trials};

pub fn trials() -> Vec<libtest_mimic::Trial> {
    [
        trials!(Needs::Server, threads = 2;
            three_processes_share_actions_queues_and_views_through_a_kill,
            a_paused_member_cannot_commit_after_its_lease_is_taken_over,
            members_split_partitions_and_take_over_from_the_dead,
        ),
        trials!(Needs::OwnServer, threads = 2;
            a_group_action_pauses_while_the_database_is_down_and_resumes,
        ),
        trials!(Needs::ChildOf { var: SCHEMA_VAR }, threads = 2;
            group_process,
            slow_process,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

const SCHEMA_VAR: &str = "ANNALS_GROUPS_SCHEMA";
const PROCESS_VAR: &str = "ANNALS_GROUPS_PROCESS";
const PARTITIONS: u32 = 4;
const POISON: &str = "poison";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"))
}

fn say(line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("report");
    out.flush().expect("report");
}

/// Waits until standard input ends: the parent's way of saying "stop".
async fn until_stdin_ends() {
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await
    .expect("stdin reader");
}

/// A child running the application: started by the first test with the schema and its
/// number in its environment, it prints `EFFECT <position> <process>` for every event its
/// action handles and `SENT <position> <process>` for every queue message it sends.
async fn group_process() {
    let url = fixture::url();
    let process = var(PROCESS_VAR);
    let adapter = fixture::builder(&url, &var(SCHEMA_VAR))
        .connect()
        .await
        .expect("the child connects");
    let state = Arc::new(StateStore::postgres(&adapter).await.expect("state"));
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    let options = GroupOptions::partitions(PARTITIONS)
        .leases(Duration::from_millis(1500), Duration::from_millis(300));

    let me = process.clone();
    let mailer = EventAction::new(
        "mailer",
        move |event: LoggedEvent, mut ctx: ActionContext| {
            let me = me.clone();
            async move {
                if event.event.aggregate_id == POISON {
                    return Err(ActionError::permanent("poisoned"));
                }
                say(format!("EFFECT {} {me}", event.position));
                ctx.enqueue("mail", event.position.to_string())?;
                Ok(())
            }
        },
    )
    .filter(Filter::all().stores([fixture::STORE]));
    let mailer = mailer
        .spawn_in_group(adapter.clone(), state.clone(), options)
        .await
        .expect("the action joins its group");

    let mail = Queue::open(state.clone(), "mail").with_options(QueueOptions {
        visibility_timeout: Duration::from_secs(3),
        ..QueueOptions::default()
    });
    let me = process.clone();
    let sender = QueueAction::new("sender", mail, move |message, _ctx| {
        let me = me.clone();
        async move {
            let body = String::from_utf8_lossy(&message.body).into_owned();
            say(format!("SENT {body} {me}"));
            Ok::<(), ActionError>(())
        }
    })
    .spawn();

    let counts = KvView::builder("counts", 1)
        .on_logged(
            Filter::all().stores([fixture::STORE]),
            |tables: &mut KvTables<'_>, event: &LoggedEvent| {
                let id = &event.event.aggregate_id;
                let count: u64 = tables.get("counts", id)?.unwrap_or(0);
                tables.put("counts", id, &(count + 1))
            },
        )
        .build(state.clone())
        .expect("the view");
    // A view is one consumer: it runs in one process at a time, with failover.
    let view = counts
        .run_in_group(
            adapter.clone(),
            GroupOptions::partitions(1).leases(options.lease_ttl, options.renew_interval),
        )
        .await
        .expect("the view joins its group");

    say(format!("READY {process}"));
    until_stdin_ends().await;
    mailer.stop().await.expect("the action stops cleanly");
    sender.stop().await.expect("the queue action stops cleanly");
    view.stop().await.expect("the view stops cleanly");
}

/// A child process and the lines it printed so far.
struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn start(test: &str, url: &str, schema: &str, process: u64) -> Process {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                test,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(crate::server::URL_VAR, url)
            .env(SCHEMA_VAR, schema)
            .env(PROCESS_VAR, process.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a child process");
        let stdout = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness prints `test <name> ... ` before the test runs, without a newline.
                for word in ["READY", "EFFECT", "SENT", "START", "DONE"] {
                    if let Some(at) = line.find(&format!("{word} ")) {
                        sink.lock().unwrap().push(line[at..].to_owned());
                    }
                }
            }
        });
        Process { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn count(&self, word: &str) -> usize {
        self.lines().iter().filter(|l| l.starts_with(word)).count()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    /// Closes its standard input (it stops cleanly) and waits for it.
    fn finish(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("the child ends");
        assert!(status.success(), "a child failed: {status}");
        self.lines()
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(word, position, process)` of every line starting with `word`.
fn parse(lines: &[String], word: &str) -> Vec<(u64, String)> {
    lines
        .iter()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next()? == word).then_some(())?;
            Some((fields.next()?.parse().ok()?, fields.next()?.to_owned()))
        })
        .collect()
}

async fn three_processes_share_actions_queues_and_views_through_a_kill() {
    let url = fixture::url();
    let (adapter, guard) = fixture::adapter(&url).await;
    let state = Arc::new(StateStore::postgres(&adapter).await.expect("state"));
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    const TEST: &str = "groups::group_process";
    let mut processes: Vec<Option<Process>> = (0..3)
        .map(|p| Some(Process::start(TEST, &url, &guard.schema, p)))
        .collect();
    let all_ready =
        |processes: &[Option<Process>]| processes.iter().flatten().all(|p| p.count("READY") == 1);
    wait_until("the processes are ready", Duration::from_secs(60), || {
        all_ready(&processes)
    })
    .await;

    let ids: Vec<String> = (0..30)
        .map(|i| format!("trainer-{i}"))
        .chain([POISON.to_owned()])
        .collect();
    const ROUNDS: u64 = 10;
    let mut finished = Vec::new();
    for round in 1..=ROUNDS {
        let events = ids.iter().map(|id| fixture::event(id, round)).collect();
        adapter.append(events).await.expect("appended");
        if round == 4 {
            // Killed mid-way: its partitions are taken over once its leases expire.
            let mut killed = processes[1].take().expect("process 1");
            killed.signal("KILL");
            killed.child.wait().expect("reaped");
            finished.extend(killed.lines());
        }
        if round == 7 {
            processes[1] = Some(Process::start(TEST, &url, &guard.schema, 3));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let head = adapter.read_log(1, usize::MAX).await.expect("log").len() as u64;
    assert_eq!(head, ROUNDS * ids.len() as u64);

    let settled = || {
        let checkpoints: BTreeMap<String, u64> = state
            .checkpoints()
            .expect("checkpoints")
            .into_iter()
            .collect();
        let partitions_done = (0..PARTITIONS).all(|k| {
            checkpoints
                .get(&format!("mailer#{k}"))
                .is_some_and(|&next| next > head)
        });
        let view_done = checkpoints
            .get("view:counts:v1")
            .is_some_and(|&next| next > head);
        let queue_empty = Queue::open(state.clone(), "mail").is_empty().expect("len");
        partitions_done && view_done && queue_empty
    };
    wait_until("every event is handled", Duration::from_secs(90), settled).await;
    for process in processes.into_iter().flatten() {
        finished.extend(process.finish());
    }

    let positions = |word| -> BTreeMap<u64, Vec<String>> {
        let mut by_position: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (position, process) in parse(&finished, word) {
            by_position.entry(position).or_default().push(process);
        }
        by_position
    };
    let log = adapter.read_log(1, usize::MAX).await.expect("log");
    let handled: BTreeSet<u64> = log
        .iter()
        .filter(|e| e.event.aggregate_id != POISON)
        .map(|e| e.position)
        .collect();
    let effects = positions("EFFECT");
    let sent = positions("SENT");
    for position in &handled {
        assert!(
            effects.contains_key(position),
            "event {position} was never handled"
        );
        assert!(
            sent.contains_key(position),
            "the message of {position} was lost"
        );
    }
    let workers: BTreeSet<&String> = effects.values().flatten().collect();
    assert!(workers.len() >= 2, "the work was not shared: {workers:?}");
    let again = effects.values().filter(|p| p.len() > 1).count();
    eprintln!(
        "{} events handled by {} processes; {again} handled again after the kill",
        handled.len(),
        workers.len()
    );

    // Exactly once: the view's rows commit with its checkpoint.
    let counts = KvView::builder("counts", 1)
        .build(state.clone())
        .expect("the view");
    for id in &ids {
        let count: Option<u64> = counts.get("counts", id).expect("read");
        assert_eq!(count, Some(ROUNDS), "{id} counted exactly once per event");
    }
    // Each poisoned event is dead-lettered once, and any process sees it.
    let letters = dead_letter::list(&state, "mailer").expect("dead letters");
    let poisoned: Vec<u64> = log
        .iter()
        .filter(|e| e.event.aggregate_id == POISON)
        .map(|e| e.position)
        .collect();
    let lettered: Vec<u64> = letters.iter().map(|l| l.position).collect();
    assert_eq!(lettered, poisoned);
}

/// A child whose action is slow (400 ms per event), printing `START` and `DONE` around each.
async fn slow_process() {
    let url = fixture::url();
    let process = var(PROCESS_VAR);
    let adapter = fixture::builder(&url, &var(SCHEMA_VAR))
        .connect()
        .await
        .expect("the child connects");
    let state = Arc::new(StateStore::postgres(&adapter).await.expect("state"));
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    let me = process.clone();
    let slow = EventAction::new("slow", move |event: LoggedEvent, _ctx: ActionContext| {
        let me = me.clone();
        async move {
            say(format!("START {} {me}", event.position));
            tokio::time::sleep(Duration::from_millis(400)).await;
            say(format!("DONE {} {me}", event.position));
            Ok::<(), ActionError>(())
        }
    });
    let options =
        GroupOptions::partitions(1).leases(Duration::from_millis(1000), Duration::from_millis(200));
    let runner = slow
        .spawn_in_group(adapter, state, options)
        .await
        .expect("joined");
    say(format!("READY {process}"));
    until_stdin_ends().await;
    // A paused member's runner may end on its lost lease: that is not a failure here.
    let _ = runner.stop().await;
}

async fn a_paused_member_cannot_commit_after_its_lease_is_taken_over() {
    let url = fixture::url();
    let (adapter, guard) = fixture::adapter(&url).await;
    let state = StateStore::postgres(&adapter).await.expect("state");
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    const TEST: &str = "groups::slow_process";
    let mut processes: Vec<Process> = (0..2)
        .map(|p| Process::start(TEST, &url, &guard.schema, p))
        .collect();
    wait_until("the processes are ready", Duration::from_secs(60), || {
        processes.iter().all(|p| p.count("READY") == 1)
    })
    .await;
    // Until both have heartbeated, the lease may move once between them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    const EVENTS: u64 = 12;
    for i in 0..EVENTS {
        adapter
            .append(vec![fixture::event(&format!("slow-{i}"), 1)])
            .await
            .expect("appended");
    }
    wait_until(
        "a process handles an event",
        Duration::from_secs(30),
        || processes.iter().any(|p| p.count("START") > 0),
    )
    .await;
    let holder = processes
        .iter()
        .position(|p| p.count("START") > 0)
        .expect("a holder");
    let paused = processes.remove(holder);
    let other = processes.remove(0);
    assert_eq!(other.count("START"), 0, "one holder at a time");
    // Paused in the middle of an event, past its lease's time to live.
    paused.signal("STOP");
    wait_until(
        "the other process takes over",
        Duration::from_secs(30),
        || other.count("START") > 0,
    )
    .await;
    let started_before_pause = paused.count("START");
    wait_until(
        "the other process handles everything",
        Duration::from_secs(60),
        || {
            state
                .checkpoint("slow#0")
                .expect("checkpoint")
                .is_some_and(|next| next > EVENTS)
        },
    )
    .await;
    paused.signal("CONT");
    // The resumed process finishes the event it was in, and its commit is refused.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        state.checkpoint("slow#0").expect("checkpoint"),
        Some(EVENTS + 1),
        "a fenced process moved the checkpoint back"
    );
    let paused_lines = paused.finish();
    let started = paused_lines
        .iter()
        .filter(|l| l.starts_with("START"))
        .count();
    assert_eq!(
        started, started_before_pause,
        "the paused process started another event after it lost its lease"
    );
    other.finish();
}

/// Members of one group in one process (each with its own identity, as separate processes
/// would have): they split the partitions, a member that stops renewing loses its partitions
/// after the time to live, one that leaves hands them over at once, and a group cannot change
/// its partition count.
async fn members_split_partitions_and_take_over_from_the_dead() {
    let url = fixture::url();
    let (adapter, _guard) = fixture::adapter(&url).await;
    let state = StateStore::postgres(&adapter).await.expect("state");
    let ttl = Duration::from_millis(600);
    let options = GroupOptions::partitions(6).leases(ttl, Duration::from_millis(100));
    let a = state.join_group("g", options).await.expect("a joins");
    let b = state.join_group("g", options).await.expect("b joins");
    let split = |a: &annals::lease::GroupMember, b: &annals::lease::GroupMember| {
        let (x, y) = (a.held(), b.held());
        x.len() == 3 && y.len() == 3 && x.keys().all(|k| !y.contains_key(k))
    };
    wait_until("the partitions are split", Duration::from_secs(10), || {
        split(&a, &b)
    })
    .await;
    let epochs: BTreeMap<u32, i64> = b.held().values().map(|l| (l.partition, l.epoch)).collect();

    // A member that dies keeps nothing once its leases expire; the other takes everything,
    // each lease under a new epoch.
    drop(b);
    let started = Instant::now();
    wait_until(
        "the survivor holds every partition",
        Duration::from_secs(10),
        || a.held().len() == 6,
    )
    .await;
    assert!(
        started.elapsed() >= ttl / 2,
        "taken over before the leases could expire"
    );
    let held = a.held();
    for (partition, epoch) in &epochs {
        assert!(
            held[partition].epoch > *epoch,
            "partition {partition} kept its epoch"
        );
    }
    let leases = state.group_leases("g").await.expect("listed");
    assert_eq!(leases.len(), 6);
    assert!(leases.iter().all(|l| l.live && l.holder == a.member_id()));

    // A member that leaves hands its partitions over without waiting for them to expire.
    let c = state.join_group("g", options).await.expect("c joins");
    wait_until(
        "the newcomer gets its share",
        Duration::from_secs(10),
        || split(&a, &c),
    )
    .await;
    a.leave().await;
    let started = Instant::now();
    wait_until(
        "the partitions are handed over",
        Duration::from_secs(10),
        || c.held().len() == 6,
    )
    .await;
    assert!(
        started.elapsed() < ttl,
        "the handover waited for the leases to expire"
    );

    let refused = state.join_group("g", GroupOptions::partitions(4)).await;
    assert!(
        matches!(
            refused,
            Err(annals::StorageError::InvalidConfiguration { .. })
        ),
        "{refused:?}"
    );
    let local = StateStore::in_memory().join_group("g", options).await;
    assert!(
        matches!(
            local,
            Err(annals::StorageError::InvalidConfiguration { .. })
        ),
        "{local:?}"
    );
    c.leave().await;
}

/// The database restarts under a running group: the action's partitions stop while it cannot
/// be reached and start again from their checkpoints once it can; every event is handled, and
/// the action never stops for it.
async fn a_group_action_pauses_while_the_database_is_down_and_resumes() {
    // Restarting the shared server would break the other tests: this one starts its own.
    let server = tokio::task::spawn_blocking(crate::server::Server::start)
        .await
        .expect("start")
        .unwrap_or_else(|e| panic!("a private PostgreSQL server starts: {e}"));
    let adapter = fixture::builder(server.url(), "annals")
        .connect()
        .await
        .expect("connects");
    let state = Arc::new(StateStore::postgres(&adapter).await.expect("state"));
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    let handled = Arc::new(Mutex::new(Vec::new()));
    let seen = handled.clone();
    let action = EventAction::new("restarted", move |event: LoggedEvent, _: ActionContext| {
        seen.lock().unwrap().push(event.position);
        async { Ok::<(), ActionError>(()) }
    });
    let options =
        GroupOptions::partitions(2).leases(Duration::from_millis(1000), Duration::from_millis(200));
    let runner = action
        .spawn_in_group(adapter.clone(), state.clone(), options)
        .await
        .expect("joined");
    let append = |from: u64| {
        let adapter = adapter.clone();
        async move {
            for i in from..from + 10 {
                loop {
                    match adapter
                        .append(vec![fixture::event(&format!("a-{i}"), 1)])
                        .await
                    {
                        Ok(_) | Err(annals::StorageError::EventAlreadyExists(_)) => break,
                        Err(annals::StorageError::Unavailable { .. }) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("append: {e}"),
                    }
                }
            }
        }
    };
    let all_handled = |count: u64| {
        let handled = handled.clone();
        move || {
            let seen: BTreeSet<u64> = handled.lock().unwrap().iter().copied().collect();
            seen == (1..=count).collect()
        }
    };
    append(0).await;
    wait_until(
        "the first events are handled",
        Duration::from_secs(30),
        all_handled(10),
    )
    .await;

    let server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server
            .restart()
            .unwrap_or_else(|e| panic!("the server restarts: {e}"));
        server
    })
    .await
    .expect("restart");
    append(10).await;
    wait_until(
        "the events after the restart are handled",
        Duration::from_secs(60),
        all_handled(20),
    )
    .await;
    assert!(!runner.is_finished(), "the action stopped on the outage");
    // Both partitions commit again: their checkpoints pass every event.
    wait_until(
        "the checkpoints pass every event",
        Duration::from_secs(30),
        || {
            state.checkpoints().is_ok_and(|checkpoints| {
                (0..2).all(|k| {
                    let name = format!("restarted#{k}");
                    checkpoints.iter().any(|(n, next)| *n == name && *next > 20)
                })
            })
        },
    )
    .await;
    runner.stop().await.expect("stops cleanly");
    drop((adapter, state));
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("stop");
}
