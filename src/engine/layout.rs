//! The names of a store directory's files: the one place they are spelled.
//!
//! ```text
//! <dir>/LOCK                 advisory lock held while the store is open
//! <dir>/log/0000000001.seg   segments, in order (see docs/format.md)
//! <dir>/log/0000000002.seg.creating
//!                            the next segment, prepared ahead of need (never data)
//! <dir>/log/0000000001.seg.compact
//!                            a sealed segment being rewritten by compaction
//! <dir>/index.redb           the persisted index (derived; rebuilt from the log if lost)
//! <dir>/snapshots.redb       aggregate snapshots of the log adapter (made on first use)
//! <dir>/keys.redb            subjects' data keys, feature `personal` (made on first use)
//! <dir>/state.redb           the runtime's state: consumers, views, dead letters, queues
//! <dir>/views/               the files of views opened without a directory of their own
//! ```
//!
//! A database file is created under its name with [`CREATING_SUFFIX`] appended and renamed
//! into place once complete, so a leftover `*.creating` file is an unfinished creation.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The advisory lock file, held while the store is open.
pub const LOCK: &str = "LOCK";
/// The directory of the log's segment files.
pub const LOG_DIR: &str = "log";
/// The persisted index of the log.
pub const INDEX_FILE: &str = "index.redb";
/// The log adapter's aggregate snapshots.
pub const SNAPSHOTS_FILE: &str = "snapshots.redb";
/// The log adapter's data keys of subjects (crypto-shredding, feature `personal`). Never in
/// redb's older file format (it is newer than that), so `upgrade_dir` leaves it alone.
pub const KEYS_FILE: &str = "keys.redb";
/// The runtime's state store, by default.
pub const STATE_FILE: &str = "state.redb";
/// The directory of the views' files, by default.
pub const VIEWS_DIR: &str = "views";
/// Appended to a database file's name while it is being created.
pub const CREATING_SUFFIX: &str = ".creating";

/// `<dir>/LOCK`.
pub fn lock(dir: &Path) -> PathBuf {
    dir.join(LOCK)
}

/// `<dir>/log`.
pub fn log_dir(dir: &Path) -> PathBuf {
    dir.join(LOG_DIR)
}

/// `<dir>/index.redb`.
pub fn index_file(dir: &Path) -> PathBuf {
    dir.join(INDEX_FILE)
}

/// `<dir>/snapshots.redb`.
pub fn snapshots_file(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOTS_FILE)
}

/// `<dir>/keys.redb`.
pub fn keys_file(dir: &Path) -> PathBuf {
    dir.join(KEYS_FILE)
}

/// `<dir>/state.redb`.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// `<dir>/views`.
pub fn views_dir(dir: &Path) -> PathBuf {
    dir.join(VIEWS_DIR)
}

/// The name a database file at `path` has while it is being created: `<path>.creating`.
pub fn creating(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(CREATING_SUFFIX);
    PathBuf::from(name)
}
