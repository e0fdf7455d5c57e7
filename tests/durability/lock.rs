//! One store, one writer: deleting the `LOCK` file while a store is open does not let a second
//! handle open it, in this process or another.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use annals::engine::sim::SimFs;
use annals::state::StateStore;
use annals::storage::{LogAdapter, StorageError};

const DIR_VAR: &str = "ANNALS_LOCK_CHILD_DIR";
const CHILD_TEST: &str = "lock::lock_child_tries_to_open_the_store";

fn open(dir: &Path) -> Result<LogAdapter, StorageError> {
    LogAdapter::builder(dir).open()
}

/// What a second process gets when it opens the store in `dir`: its one line of output.
fn open_in_another_process(dir: &Path) -> String {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the child");
    assert!(out.status.success(), "the child failed: {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| Some(l.split_once("open: ")?.1.trim().to_owned()))
        .unwrap_or_else(|| panic!("the child said nothing: {stdout}"))
}

#[test]
fn a_second_open_of_an_open_store_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path()).expect("first open");
    assert!(matches!(open(dir.path()), Err(StorageError::Locked { .. })));
    assert_eq!(open_in_another_process(dir.path()), "locked");
    first.close();
    drop(first);
    drop(open(dir.path()).expect("the store opens once its handle is gone"));
}

#[test]
fn a_deleted_lock_file_does_not_let_a_second_handle_open_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path()).expect("first open");
    std::fs::remove_file(dir.path().join("LOCK")).expect("delete LOCK");
    match open(dir.path()) {
        Err(StorageError::Locked { path }) => assert_eq!(path, dir.path()),
        Err(e) => panic!("a second open in this process failed otherwise: {e}"),
        Ok(_) => panic!("a second handle opened the store after its LOCK was deleted"),
    }
    assert_eq!(
        open_in_another_process(dir.path()),
        "locked",
        "a second process opened the store after its LOCK was deleted"
    );
    // Nor does a new, unlocked LOCK file in its place.
    let stray = std::fs::File::create(dir.path().join("LOCK")).expect("a new LOCK");
    assert!(matches!(open(dir.path()), Err(StorageError::Locked { .. })));
    drop(stray);
    first.close();
    drop(first);
    drop(open(dir.path()).expect("the store opens once its handle is gone"));
}

#[test]
fn a_deleted_lock_file_on_the_simulated_disk_keeps_the_store_locked() {
    let fs = SimFs::new();
    let open = |fs: &SimFs| {
        LogAdapter::builder("/store")
            .file_system(Arc::new(fs.clone()))
            .open()
    };
    let first = open(&fs).expect("first open");
    // The simulated disk holds locks by name, like the real one holds the directory's.
    let _ = annals::engine::FileSystem::remove(&fs, Path::new("/store/LOCK"));
    assert!(matches!(open(&fs), Err(StorageError::Locked { .. })));
    first.close();
    drop(first);
    drop(open(&fs).expect("the store opens once its handle is gone"));
}

#[test]
fn a_second_open_of_a_state_file_is_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.redb");
    let first = StateStore::open(&path).expect("first open");
    assert!(matches!(
        StateStore::open(&path),
        Err(StorageError::Locked { .. })
    ));
    drop(first);
    StateStore::open(&path).expect("the state opens once its handle is gone");
}

/// The child: opens the store and says how that went. Ignored, so it only runs when the
/// parent asks.
#[test]
#[ignore = "run by the lock tests as a second process"]
fn lock_child_tries_to_open_the_store() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let outcome = match open(&PathBuf::from(dir)) {
        Ok(log) => {
            log.close();
            "opened".to_owned()
        }
        Err(StorageError::Locked { .. }) => "locked".to_owned(),
        Err(e) => format!("failed: {e}"),
    };
    println!("open: {outcome}");
}
