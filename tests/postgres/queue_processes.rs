//! Competing queue receivers in two OS processes: one durable queue in the PostgreSQL state
//! store, received from by two child processes at once. Every message is delivered to one of
//! them, once, and none is lost.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use annals::queue::{Queue, QueueOptions};
use annals::state::StateStore;

use crate::fixture;
use crate::harness::{Needs, trials};

/// The test, and the child process it starts (twice).
pub fn trials() -> Vec<libtest_mimic::Trial> {
    [
        trials!(Needs::Server, threads = 2;
            two_processes_receiving_from_one_queue_get_every_message_once,
        ),
        trials!(Needs::ChildOf { var: SCHEMA_VAR }, threads = 2; receiving_process),
    ]
    .into_iter()
    .flatten()
    .collect()
}

const CHILD_TEST: &str = "queue_processes::receiving_process";
const SCHEMA_VAR: &str = "ANNALS_QUEUE_PROCESSES_SCHEMA";
/// When the children start receiving (Unix milliseconds), so that they really overlap.
const START_VAR: &str = "ANNALS_QUEUE_PROCESSES_START_MS";
const MESSAGES: u64 = 300;
const RECEIVERS_PER_PROCESS: usize = 3;

/// Long enough that no message becomes visible again during the test: a second delivery
/// could only come from two receivers holding it at once.
fn options() -> QueueOptions {
    QueueOptions {
        visibility_timeout: Duration::from_secs(600),
        ..QueueOptions::default()
    }
}

/// One receiving process: receives and acks until the queue has nothing visible, printing
/// `GOT <id> <pid>` for each message.
async fn receiving_process() {
    let url = fixture::url();
    let var = |name| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let schema = var(SCHEMA_VAR);
    let start: i64 = var(START_VAR).parse().expect("a start time");
    let config = url.parse().expect("a valid URL");
    let state = Arc::new(
        StateStore::postgres_with_config(config, &schema)
            .await
            .expect("the child's state store"),
    );
    let wait = start - annals::Timestamp::now().unix_millis();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let receivers: Vec<_> = (0..RECEIVERS_PER_PROCESS)
        .map(|_| {
            let queue = Queue::open(Arc::clone(&state), "jobs").with_options(options());
            std::thread::spawn(move || {
                while let Some(message) = queue.receive().expect("receive") {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "GOT {} {}", message.id, std::process::id()).expect("report");
                    out.flush().expect("report");
                    assert!(queue.ack(message.id).expect("ack"), "acked by its receiver");
                }
            })
        })
        .collect();
    for receiver in receivers {
        receiver.join().expect("a receiver finishes");
    }
}

async fn two_processes_receiving_from_one_queue_get_every_message_once() {
    let url = fixture::url();
    let (adapter, _guard) = fixture::adapter(&url).await;
    let schema = adapter.schema().to_owned();
    let state = Arc::new(
        StateStore::postgres(&adapter)
            .await
            .expect("the state store"),
    );
    let queue = Queue::open(Arc::clone(&state), "jobs").with_options(options());
    for i in 0..MESSAGES {
        queue.enqueue(i.to_le_bytes().to_vec()).expect("enqueue");
    }

    let exe = std::env::current_exe().expect("the test binary");
    let start = annals::Timestamp::now().unix_millis() + 1_500;
    let children: Vec<_> = (0..2)
        .map(|_| {
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
                .env(START_VAR, start.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start a child process")
        })
        .collect();
    let mut deliveries: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (child_number, mut child) in children.into_iter().enumerate() {
        let stdout = child.stdout.take().expect("piped");
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read the child's output");
            // The harness prints `test <name> ... ` before the test runs, without a newline.
            let Some(at) = line.find("GOT ") else {
                continue;
            };
            if let ["GOT", id, pid] = line[at..].split_whitespace().collect::<Vec<_>>()[..] {
                let id = id.parse().expect("a message id");
                deliveries.entry(id).or_default().push(pid.to_owned());
            }
        }
        let status = child.wait().expect("the child ends");
        assert!(status.success(), "child {child_number} failed: {status}");
    }
    let twice: Vec<_> = deliveries.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(
        deliveries.keys().copied().collect::<Vec<_>>(),
        (1..=MESSAGES).collect::<Vec<_>>(),
        "every message delivered"
    );
    assert_eq!(queue.len().expect("length"), 0);
}
