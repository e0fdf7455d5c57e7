//! A process killed at any moment of a store's very first open leaves files that open.
//!
//! The child creates fresh stores one after the other, as fast as it can, each with every file
//! annals creates beside the log: the state file, the snapshot file (by a first snapshot) and
//! a SQL view's file. The parent kills it after a varied delay, so the kill lands inside some
//! creation at a random step, and then opens every store the child began: each must open,
//! read and write — a file half-made by the killed creation would fail as damaged.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use annals::state::StateStore;
use annals::storage::Corruption;
use annals::storage::{LogAdapter, SnapshotRecord, StorageAdapter};

const DIR_VAR: &str = "ANNALS_FIRST_OPEN_DIR";
const CHILD_TEST: &str = "first_open::first_open_child_creates_stores_until_killed";
const RUNS: u64 = 24;
/// The child stops by itself after this many stores, should it never be killed.
const STORES_MAX: u64 = 2_000;
const SIGKILL: i32 = 9;
/// The steps of a store's creation, as the child announces them; the last marks its end.
const PHASES: [&str; 5] = ["log", "state", "snapshot", "view", "done"];

fn store_dir(root: &Path, k: u64) -> PathBuf {
    root.join(format!("store-{k:05}"))
}

#[cfg(feature = "sql")]
fn open_view(dir: &Path) -> Result<annals::view::SqlView, annals::view::ViewError> {
    annals::view::SqlView::builder("names", 1)
        .schema("CREATE TABLE names (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
        .on_logged(
            annals::subscription::Filter::all(),
            |_: &rusqlite::Connection, _: &annals::storage::LoggedEvent| {
                Ok::<_, std::convert::Infallible>(())
            },
        )
        .open(dir.join("views"))
}

/// Everything a first open creates: the log's files, the state file, the snapshot file, a SQL
/// view's file. Each step is announced on stdout (`<phase> <k>`), so the parent can aim its
/// kill at the creation of one file.
fn create_store(dir: &Path, k: u64) {
    println!("{} {k}", PHASES[0]);
    let log = LogAdapter::builder(dir)
        .open()
        .expect("the child opens the log");
    println!("{} {k}", PHASES[1]);
    let state = StateStore::open(dir.join("state.redb")).expect("the child opens the state");
    println!("{} {k}", PHASES[2]);
    let record = SnapshotRecord::new(1, 1, 1, 0, b"state".to_vec());
    log.snapshots()
        .expect("snapshots")
        .put("POKEMONS", "pikachu", &record)
        .expect("the child writes a snapshot");
    println!("{} {k}", PHASES[3]);
    #[cfg(feature = "sql")]
    open_view(dir).expect("the child opens the view");
    println!("{} {k}", PHASES[4]);
    drop(state);
    log.close();
}

/// Opens, reads and writes every file of the store in `dir`; panics naming what failed.
fn check_store(dir: &Path) {
    let name = dir.display();
    let snapshots = dir.join("snapshots.redb");
    if snapshots.exists() {
        // The log adapter would replace a damaged snapshot file silently (it is derived
        // data): look at it directly.
        let db = redb::Database::open(&snapshots)
            .unwrap_or_else(|e| panic!("{name}: the snapshot file is damaged: {e}"));
        drop(db);
    }
    let log = LogAdapter::builder(dir)
        .open()
        .unwrap_or_else(|e| panic!("{name}: the log does not open: {e}"));
    let record = SnapshotRecord::new(2, 1, 2, 0, b"later".to_vec());
    let store = log.snapshots().expect("snapshots");
    store
        .put("POKEMONS", "pikachu", &record)
        .unwrap_or_else(|e| panic!("{name}: writing a snapshot failed: {e}"));
    assert_eq!(
        store.latest("POKEMONS", "pikachu", u64::MAX).expect("read"),
        Some(record)
    );
    log.close();
    let state = StateStore::open(dir.join("state.redb"))
        .unwrap_or_else(|e| panic!("{name}: the state does not open: {e}"));
    state.checkpoint("c").expect("read a checkpoint");
    state.set_checkpoint("c", 7).expect("write a checkpoint");
    drop(state);
    #[cfg(feature = "sql")]
    {
        let view = open_view(dir).unwrap_or_else(|e| panic!("{name}: the view does not open: {e}"));
        view.checkpoint().expect("the view's checkpoint");
    }
    for leftover in ["state.redb.creating", "snapshots.redb.creating"] {
        assert!(
            !dir.join(leftover).exists(),
            "{name}: {leftover} is left behind"
        );
    }
}

#[test]
fn a_kill_at_any_moment_of_a_first_open_leaves_files_that_open() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut rng = super::sigkill_rng();
    let exe = std::env::current_exe().expect("the test binary");
    let (mut stores, mut killed, mut no_state, mut leftovers) = (0, 0, 0, 0);
    // How long each step of a creation takes, as last measured: kills are spread over it.
    let mut durations = [Duration::from_millis(50); PHASES.len() - 1];
    for run in 0..RUNS {
        let dir = root.path().join(format!("run-{run}"));
        std::fs::create_dir_all(&dir).expect("run directory");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                CHILD_TEST,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("stdout");
        let (said, says) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The harness may print the test's name on the same line, before it.
                let marker = PHASES.iter().enumerate().find_map(|(phase, name)| {
                    let (_, k) = line.rsplit_once(&format!("{name} "))?;
                    Some((phase, k.trim().parse::<u64>().ok()?))
                });
                if let Some((phase, k)) = marker
                    && said.send((phase, k, Instant::now())).is_err()
                {
                    return;
                }
            }
        });
        // The kill lands at a random moment of one step (each file's creation in turn) of
        // store 0, 1 or 2.
        let (target, phase) = (run / 4 % 3, (run % 4) as usize);
        let mut last: Option<(usize, Instant)> = None;
        while let Ok((p, k, at)) = says.recv_timeout(Duration::from_secs(120)) {
            if let Some((before, then)) = last
                && p == (before + 1) % PHASES.len()
                && before < durations.len()
            {
                durations[before] = at - then;
            }
            last = Some((p, at));
            if (p, k) == (phase, target) {
                break;
            }
        }
        let spread = u64::try_from(durations[phase].as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        std::thread::sleep(Duration::from_micros(rng.below(spread + spread / 4)));
        let _ = child.kill();
        let status = child.wait().expect("reap the child");
        killed += u64::from(status.signal() == Some(SIGKILL));
        let mut k = 0;
        while store_dir(&dir, k).exists() {
            let store = store_dir(&dir, k);
            no_state += u64::from(!store.join("state.redb").exists());
            for leftover in ["state.redb.creating", "snapshots.redb.creating"] {
                leftovers += u64::from(store.join(leftover).exists());
            }
            check_store(&store);
            stores += 1;
            k += 1;
        }
    }
    println!(
        "first open: {RUNS} children, {killed} killed, {stores} stores checked, {no_state} \
         killed before their state file was in place, {leftovers} temporary files left by a \
         killed creation; the steps took {durations:?}"
    );
}

/// The child: creates stores `store-00000`, `store-00001`, ... until killed. Ignored, so it
/// only runs when the parent asks.
#[test]
#[ignore = "run by a_kill_at_any_moment_of_a_first_open_leaves_files_that_open as a child"]
fn first_open_child_creates_stores_until_killed() {
    let Some(root) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let root = PathBuf::from(root);
    for k in 0..STORES_MAX {
        create_store(&store_dir(&root, k), k);
    }
}

#[test]
fn a_damaged_state_file_is_corruption_and_is_left_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    {
        let state = StateStore::open(&path).expect("create");
        state.set_checkpoint("c", 42).expect("checkpoint");
    }
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.truncate(bytes.len() / 3);
    bytes[..64].fill(0xEE);
    std::fs::write(&path, &bytes).expect("damage");
    match StateStore::open(&path) {
        Err(annals::StorageError::Corruption(Corruption { file, .. })) => assert_eq!(file, path),
        Err(e) => panic!("a damaged state file gave another error: {e}"),
        Ok(_) => panic!("a damaged state file opened"),
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "the damaged file is never replaced"
    );
}

#[test]
fn a_leftover_of_a_killed_state_creation_is_replaced_or_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let leftover = dir.path().join("state.redb.creating");
    // What a creation killed half-way leaves: a temporary file that is not a database.
    std::fs::write(&leftover, [0xEE; 3000]).expect("leftover");
    let state = StateStore::open(&path).expect("the state file is created afresh");
    state.set_checkpoint("c", 42).expect("checkpoint");
    drop(state);
    assert!(!leftover.exists(), "the leftover became the state file");
    // Beside a state file that exists, a leftover is removed and the file kept.
    std::fs::write(&leftover, [0xEE; 3000]).expect("leftover");
    let state = StateStore::open(&path).expect("open");
    assert_eq!(state.checkpoint("c").expect("read"), Some(42));
    assert!(!leftover.exists(), "the leftover is removed");
}
