//! Converting a store's database files from the file format of an older redb.
//!
//! annals keeps its index, its runtime state and its snapshots in redb databases. The redb it
//! links reads only redb's file format v3, while stores written by annals 0.1 (on redb 2) hold
//! v2 files. Opening such a store is refused with
//! [`EngineError::FormatUpgradeRequired`], naming the file, rather than treating the file as
//! damaged: the index would be rebuilt without the witnesses it holds, and the runtime state
//! (consumer positions, queues, views) could not be rebuilt at all.
//!
//! [`upgrade_dir`] converts those files with redb 2.6's own upgrade. Each file is converted on
//! a copy, `<file>.upgrading`, that replaces the original only once it is complete and synced,
//! so a crash at any moment leaves either the old file or the new one, and running the
//! upgrade again finishes the job.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::error::EngineError;
use super::io::{FileSystem, OsFileSystem};
use super::layout;

/// The database files of a store that [`upgrade_dir`] converts, relative to its directory.
const DATABASE_FILES: [&str; 3] = [
    layout::INDEX_FILE,
    layout::STATE_FILE,
    layout::SNAPSHOTS_FILE,
];

/// What [`upgrade_dir`] did to one database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileUpgrade {
    /// Converted from the older file format.
    Upgraded,
    /// Not in the older format: left as it was. (A damaged file is left too, for opening or
    /// `annals verify` to judge.)
    Unchanged,
    /// The store has no such file.
    Missing,
}

/// What [`upgrade_dir`] did, file by file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeReport {
    /// Each database file of the store, with what was done to it.
    pub files: Vec<(PathBuf, FileUpgrade)>,
}

impl UpgradeReport {
    /// How many files were converted.
    pub fn upgraded(&self) -> usize {
        self.files
            .iter()
            .filter(|(_, done)| *done == FileUpgrade::Upgraded)
            .count()
    }
}

/// Converts the database files of the closed store in `dir` that are in redb's older file
/// format (v2, written by annals 0.1 on redb 2), under the store's lock.
///
/// Fails with [`EngineError::Locked`] when another handle holds the store. Files already in
/// the current format are not touched, so running it twice is harmless.
///
/// ```no_run
/// let report = annals::engine::upgrade_dir(std::path::Path::new("pokemon-store"))?;
/// println!("{} files converted", report.upgraded());
/// # Ok::<(), annals::engine::EngineError>(())
/// ```
pub fn upgrade_dir(dir: &Path) -> Result<UpgradeReport, EngineError> {
    let fs = OsFileSystem;
    let log_dir = layout::log_dir(dir);
    // Not a store (and no LOCK file is created there) when it holds no log.
    fs.list(&log_dir)
        .map_err(|e| EngineError::io("open the log directory of", &log_dir, e))?;
    let lock_path = layout::lock(dir);
    let _lock = fs
        .try_lock(&lock_path)
        .map_err(|e| EngineError::io("lock", &lock_path, e))?
        .ok_or_else(|| EngineError::Locked {
            path: dir.to_owned(),
        })?;
    let mut files = Vec::new();
    for name in DATABASE_FILES {
        let path = dir.join(name);
        let done = upgrade_file(&path, dir)?;
        files.push((path, done));
    }
    Ok(UpgradeReport { files })
}

/// Converts the file at `path` if it is in the older format; `dir` is its directory.
fn upgrade_file(path: &Path, dir: &Path) -> Result<FileUpgrade, EngineError> {
    let copy = upgrading_path(path);
    // What a crashed upgrade left: the original is still in place and whole.
    match fs::remove_file(&copy) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::io("remove", &copy, e)),
    }
    if !path.exists() {
        return Ok(FileUpgrade::Missing);
    }
    // A read-only open changes nothing, and tells the older format apart.
    match redb::ReadOnlyDatabase::open(path) {
        Err(redb::DatabaseError::UpgradeRequired(_)) => {}
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(EngineError::Locked {
                path: path.to_owned(),
            });
        }
        Ok(_) | Err(_) => return Ok(FileUpgrade::Unchanged),
    }
    fs::copy(path, &copy).map_err(|e| EngineError::io("copy", path, e))?;
    let converted = std::panic::catch_unwind(|| -> Result<(), String> {
        let mut db = redb2::Database::open(&copy).map_err(|e| e.to_string())?;
        db.upgrade().map_err(|e| e.to_string())?;
        Ok(())
    });
    let failed = |reason: String| {
        EngineError::corruption(
            path.to_owned(),
            0,
            format!("the file could not be converted to the current format ({reason})"),
        )
    };
    match converted {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            let _ = fs::remove_file(&copy);
            return Err(failed(reason));
        }
        Err(_) => {
            let _ = fs::remove_file(&copy);
            return Err(failed("redb failed on it".into()));
        }
    }
    File::open(&copy)
        .and_then(|f| f.sync_all())
        .map_err(|e| EngineError::io("sync", &copy, e))?;
    fs::rename(&copy, path).map_err(|e| EngineError::io("rename into place", &copy, e))?;
    OsFileSystem
        .sync_dir(dir)
        .map_err(|e| EngineError::io("sync directory", dir, e))?;
    Ok(FileUpgrade::Upgraded)
}

fn upgrading_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".upgrading");
    PathBuf::from(name)
}
