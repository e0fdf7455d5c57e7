//! The application layer's durable state: consumer checkpoints now, and the tables of views,
//! dead letters and queues that are committed together with them.
//!
//! A [`StateStore`] is one redb database, in a file beside the event log (or in memory, for
//! tests and in-memory adapters). Everything the runtime floor must commit atomically with a
//! consumer's checkpoint lives in it, so "apply this event and move the checkpoint past it" is
//! one redb transaction: done exactly once, or not at all, across crashes. Every commit is
//! durable (redb's default: fsync before returning).
//!
//! The file is created atomically (`create_atomically`): complete, with its tables, under a
//! temporary name, then renamed into place. A process killed while it creates the file leaves
//! no state file (the next open creates it afresh) and never a half-made one, so a state file
//! that does not open is damage, reported as [`StorageError::Corruption`] and never replaced:
//! it holds checkpoints and dead letters that nothing else can restore.
//!
//! redb may panic on a damaged file; those panics are contained here and reported as
//! [`StorageError::Corruption`], never propagated to the caller.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use crate::engine::io::{
    Creation, FileSystem, OsFileSystem, RedbBackend, create_atomically, retry_while_held,
};
use crate::runtime::state_schema::CONSUMERS;
use crate::storage::{Position, StorageError};

/// An error inside a state-store transaction: any redb error (`?` converts each of them),
/// boxed so that results stay small. Returning one aborts the transaction: nothing of it is
/// committed.
#[derive(Debug)]
pub struct TxnError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for TxnError {
    fn from(e: E) -> Self {
        TxnError(Box::new(e.into()))
    }
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Durable application state in one redb database: see the [module docs](self).
pub struct StateStore {
    db: redb::Database,
    /// The file, or a description of the in-memory store, for error messages.
    path: PathBuf,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens (or creates) the state file at `path`. A second open of the same file, from this
    /// process or another, fails with [`StorageError::Locked`]; a damaged file with
    /// [`StorageError::Corruption`].
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let state = annals::state::StateStore::open(dir.path().join("state.redb"))?;
    /// assert_eq!(state.checkpoint("pokedex")?, None);
    /// # Ok::<(), annals::StorageError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref().to_owned();
        let fs = OsFileSystem;
        let io_error =
            |operation, file: &Path, source| StorageError::io(operation, file.to_owned(), source);
        match create_atomically(&fs, &path, |temp| initialise(&fs, temp), io_error)? {
            Creation::Existing | Creation::Created => {}
            // Another handle is creating it, and will hold it open.
            Creation::Busy => return Err(StorageError::Locked { path }),
        }
        // redb locks the file it opens: a second open anywhere is `DatabaseAlreadyOpen`. A lock
        // just released (by the creation above, or a handle closed an instant ago) may look
        // held for a moment; see `LOCK_SETTLE`.
        let opened = retry_while_held(|| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| redb::Database::open(&path))) {
                Ok(Ok(db)) => Ok(Some(db)),
                Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Ok(None),
                Ok(Err(redb::DatabaseError::UpgradeRequired(found))) => {
                    Err(StorageError::FormatUpgradeRequired {
                        path: path.clone(),
                        found,
                    })
                }
                Ok(Err(e)) => Err(error(&path, "open", e)),
                Err(_) => Err(damaged(&path, "redb failed while opening it")),
            }
        })?;
        match opened {
            Some(db) => Ok(StateStore { db, path }),
            None => Err(StorageError::Locked { path }),
        }
    }

    /// A state store in memory: nothing survives the process.
    pub fn in_memory() -> Self {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory redb database opens");
        StateStore {
            db,
            path: PathBuf::from("<in memory>"),
        }
    }

    /// The next position consumer `name` delivers, as last committed; `None` if it never
    /// committed.
    pub fn checkpoint(&self, name: &str) -> Result<Option<Position>, StorageError> {
        self.read(|txn| {
            let table = match txn.open_table(CONSUMERS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table.get(name)?.map(|v| v.value()))
        })
    }

    /// Every consumer's checkpoint, by name.
    pub fn checkpoints(&self) -> Result<Vec<(String, Position)>, StorageError> {
        self.read(|txn| {
            let table = match txn.open_table(CONSUMERS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            table
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    Ok((k.value().to_owned(), v.value()))
                })
                .collect()
        })
    }

    /// Runs `apply` in one durable write transaction and, in the same transaction, moves
    /// consumer `name`'s checkpoint to `next`: the writes and the checkpoint commit together
    /// or not at all. What views and actions build on.
    pub fn commit_with_checkpoint<T>(
        &self,
        name: &str,
        next: Position,
        apply: impl FnOnce(&redb::WriteTransaction) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        self.write(|txn| {
            let out = apply(txn)?;
            txn.open_table(CONSUMERS)?.insert(name, next)?;
            Ok(out)
        })
    }

    /// Like [`commit_with_checkpoint`](Self::commit_with_checkpoint), but `apply` may decline:
    /// when it returns `Ok(Err(e))`, nothing of the transaction is committed (neither its
    /// writes nor the checkpoint) and `e` is returned as `Ok(Err(e))`. What lets a view refuse
    /// a batch whose handler failed without losing the reason.
    pub fn try_commit_with_checkpoint<T, E>(
        &self,
        name: &str,
        next: Position,
        apply: impl FnOnce(&redb::WriteTransaction) -> Result<Result<T, E>, TxnError>,
    ) -> Result<Result<T, E>, StorageError> {
        self.guarded("write", || {
            let txn = self.db.begin_write()?;
            match apply(&txn)? {
                Ok(out) => {
                    txn.open_table(CONSUMERS)?.insert(name, next)?;
                    txn.commit()?;
                    Ok(Ok(out))
                }
                Err(declined) => {
                    txn.abort()?;
                    Ok(Err(declined))
                }
            }
        })
    }

    /// Removes consumer `name`'s checkpoint inside `txn` (so it commits with the rest of the
    /// transaction): for consumers that are retired, such as a view version replaced by a
    /// rebuild.
    pub fn remove_checkpoint_in(txn: &redb::WriteTransaction, name: &str) -> Result<(), TxnError> {
        txn.open_table(CONSUMERS)?.remove(name)?;
        Ok(())
    }

    /// Moves consumer `name`'s checkpoint to `next`, durably.
    pub fn set_checkpoint(&self, name: &str, next: Position) -> Result<(), StorageError> {
        self.commit_with_checkpoint(name, next, |_| Ok(()))
    }

    /// Runs `read` in a read transaction (redb panics contained).
    pub fn read<T>(
        &self,
        read: impl FnOnce(&redb::ReadTransaction) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        self.guarded("read", || {
            let txn = self.db.begin_read()?;
            read(&txn)
        })
    }

    /// Runs `write` in a write transaction and commits it durably (redb panics contained).
    pub fn write<T>(
        &self,
        write: impl FnOnce(&redb::WriteTransaction) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        self.guarded("write", || {
            let txn = self.db.begin_write()?;
            let out = write(&txn)?;
            txn.commit()?;
            Ok(out)
        })
    }

    fn guarded<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce() -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(TxnError(e))) => Err(error(&self.path, operation, *e)),
            Err(_) => Err(damaged(&self.path, "redb failed on it")),
        }
    }
}

/// Builds a complete, empty state database at `temp`: redb's header and the tables every
/// open expects, committed and synced. Through the I/O seam, so that redb does not take its
/// own lock on the file being created (the creation's lock is already held on it).
fn initialise(fs: &OsFileSystem, temp: &Path) -> Result<(), StorageError> {
    let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let file = fs
            .open(temp, true)
            .map_err(|source| StorageError::io("create", temp.to_owned(), source))?;
        let db = redb::Database::builder()
            .create_with_backend(RedbBackend(file))
            .map_err(|e| error(temp, "create", e))?;
        let txn = db.begin_write().map_err(|e| error(temp, "create", e))?;
        txn.open_table(CONSUMERS)
            .map_err(|e| error(temp, "create", e))?;
        txn.commit().map_err(|e| error(temp, "create", e))
    }));
    built.unwrap_or_else(|_| Err(damaged(temp, "redb failed while creating it")))
}

fn damaged(path: &Path, reason: &str) -> StorageError {
    StorageError::corruption(
        path.to_owned(),
        0,
        format!("the state database is damaged ({reason})"),
    )
}

/// Maps a redb error: I/O errors keep their kind (a full disk stays `StorageFull`), damage is
/// `Corruption`.
fn error(path: &Path, operation: &'static str, e: impl Into<redb::Error>) -> StorageError {
    match e.into() {
        redb::Error::Io(source) if source.raw_os_error() == Some(28) => StorageError::StorageFull {
            path: path.to_owned(),
        },
        // redb reports a file it cannot make sense of as invalid data.
        redb::Error::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
            StorageError::corruption(
                path.to_owned(),
                0,
                format!("the state database is damaged ({source})"),
            )
        }
        redb::Error::Io(source) => StorageError::io(operation, path.to_owned(), source),
        other => StorageError::corruption(path.to_owned(), 0, other.to_string()),
    }
}
