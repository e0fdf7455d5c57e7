//! A redb database the log adapter keeps in the store directory besides the index:
//! `snapshots.redb` and `keys.redb`.
//!
//! Both are opened on first use and created whole by [`create_atomically`] (built under a
//! temporary name, synced and renamed into place, so a crash leaves no file or a complete
//! one), carry a format mark in a `meta` table, go through the engine's [`FileSystem`] seam,
//! and run every call into redb under `catch_unwind`: redb asserts on some damaged files.
//! What to do with a file that cannot be used differs — snapshots are recomputed, keys are
//! not — and stays with each owner.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};

use super::StorageError;
use crate::engine::FileSystem;
use crate::engine::io::{Creation, RedbBackend, create_atomically};

/// The format mark: `meta`/`format` holds the record layout's version, little-endian.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";

/// One such file: where it is and what it holds.
pub(crate) struct RedbFile {
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) path: PathBuf,
    /// What it holds, as messages name it: "snapshot", "key".
    what: &'static str,
    /// The operation an error opening it names: "open snapshot file".
    open_operation: &'static str,
    cache_bytes: usize,
    /// The record layout this code writes.
    format_version: u32,
    /// Creates the file's own tables, in the transaction that checks the format mark.
    tables: fn(&redb::WriteTransaction) -> Result<(), redb::TableError>,
}

/// An open database whose drop cannot panic the caller.
pub(crate) struct Db(Option<redb::Database>);

impl Db {
    pub(crate) fn get(&self) -> &redb::Database {
        self.0
            .as_ref()
            .expect("the database is present until the handle is dropped")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // redb's drop can assert on a damaged file.
        if let Some(db) = self.0.take() {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(db)));
        }
    }
}

impl RedbFile {
    /// The file at `path`, holding `what` records of layout `format_version` in the tables
    /// `tables` creates; opened with a page cache of `cache_bytes`.
    pub(crate) fn new(
        fs: Arc<dyn FileSystem>,
        path: PathBuf,
        what: &'static str,
        open_operation: &'static str,
        cache_bytes: usize,
        format_version: u32,
        tables: fn(&redb::WriteTransaction) -> Result<(), redb::TableError>,
    ) -> Self {
        RedbFile {
            fs,
            path,
            what,
            open_operation,
            cache_bytes,
            format_version,
            tables,
        }
    }

    /// Damage of this file, `reason` said.
    pub(crate) fn corruption(&self, reason: impl Into<String>) -> StorageError {
        StorageError::corruption(self.path.clone(), 0, reason.into())
    }

    /// A redb error on this file, reported as its damage.
    pub(crate) fn redb_error(&self, e: impl Into<redb::Error>) -> StorageError {
        self.corruption(format!("{} database: {}", self.what, e.into()))
    }

    /// Whether the file exists.
    pub(crate) fn exists(&self) -> Result<bool, StorageError> {
        self.fs
            .exists(&self.path)
            .map_err(|e| StorageError::io("look for", self.path.clone(), e))
    }

    /// Runs `op` on `db`; a panic of redb's is this file's damage.
    pub(crate) fn guarded<T>(
        &self,
        db: &Db,
        op: impl FnOnce(&redb::Database) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        std::panic::catch_unwind(AssertUnwindSafe(|| op(db.get()))).unwrap_or_else(|_| {
            Err(self.corruption(format!(
                "the {} database is damaged (redb failed on it)",
                self.what
            )))
        })
    }

    /// Opens the file, creating it whole if it is missing.
    pub(crate) fn open(&self) -> Result<Db, StorageError> {
        let io_error =
            |operation, file: &Path, source| StorageError::io(operation, file.to_owned(), source);
        let created = create_atomically(
            self.fs.as_ref(),
            &self.path,
            |temp| self.open_at(temp, true).map(drop),
            io_error,
        )?;
        if created == Creation::Busy {
            // Only a second handle on the same store could be creating it, and the store's
            // lock rules that out.
            return Err(StorageError::Locked {
                path: self.path.clone(),
            });
        }
        self.open_at(&self.path, false)
    }

    /// Opens the database at `path` and makes sure it has its tables and format mark.
    fn open_at(&self, path: &Path, create: bool) -> Result<Db, StorageError> {
        let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let file = self
                .fs
                .open(path, create)
                .map_err(|e| StorageError::io(self.open_operation, path.to_owned(), e))?;
            let db = redb::Database::builder()
                .set_cache_size(self.cache_bytes)
                .create_with_backend(RedbBackend(file))
                .map_err(|e| match e {
                    redb::DatabaseError::UpgradeRequired(found) => {
                        StorageError::FormatUpgradeRequired {
                            path: path.to_owned(),
                            found,
                        }
                    }
                    e => self.redb_error(e),
                })?;
            let db = Db(Some(db));
            self.init(db.get())?;
            Ok(db)
        }));
        opened.unwrap_or_else(|_| {
            Err(self.corruption(format!(
                "the {} database is damaged (redb refused to open it)",
                self.what
            )))
        })
    }

    /// Checks the format mark (writing it into a new file) and creates the tables.
    fn init(&self, db: &redb::Database) -> Result<(), StorageError> {
        let txn = db.begin_write().map_err(|e| self.redb_error(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.redb_error(e))?;
            let format = meta
                .get(FORMAT_KEY)
                .map_err(|e| self.redb_error(e))?
                .map(|v| v.value().to_vec());
            let ours = self.format_version.to_le_bytes();
            match format {
                None => {
                    meta.insert(FORMAT_KEY, ours.as_slice())
                        .map_err(|e| self.redb_error(e))?;
                }
                Some(v) if v == ours => {}
                Some(_) => {
                    return Err(
                        self.corruption(format!("unknown {} file format version", self.what))
                    );
                }
            }
            (self.tables)(&txn).map_err(|e| self.redb_error(e))?;
        }
        txn.commit().map_err(|e| self.redb_error(e))
    }
}
