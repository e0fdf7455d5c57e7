//! The log adapter's keys: a redb database, `keys.redb`, in the store directory.
//!
//! Opened on first use and created by the first key written (a store that never encrypts
//! anything has no file), whole: built under `keys.redb.creating`, synced and renamed into
//! place, so a crash leaves no file or a complete one. Every write is a redb transaction
//! committed with its default durability (fsync), so a key is on disk before the event
//! encrypted with it is appended. Unlike `snapshots.redb`, the file is never replaced: keys
//! cannot be recomputed, so a file redb refuses, or an operation redb fails on, is reported
//! as [`StorageError::Corruption`] and the file left as it is. redb asserts on some damaged
//! files, so every call into it runs under `catch_unwind`.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{KEY_RECORD_BYTES, KeyStore, SubjectKey};
use crate::engine::{FileSystem, layout};
use crate::storage::StorageError;
use crate::storage::redb_file::{Db, RedbFile};

/// The layout of the file this code writes.
const KEYS_FORMAT_VERSION: u32 = 1;
/// Subject → key record (format byte, 8-byte id, 32-byte secret).
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");

/// Keys of a log adapter, in `keys.redb`.
pub(crate) struct LogKeys {
    file: RedbFile,
    state: RwLock<State>,
}

enum State {
    Unopened,
    Open(Db),
    /// The store was closed: no more key I/O, so the directory can be reopened.
    Shut,
}

impl fmt::Debug for LogKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogKeys")
            .field("path", &self.file.path)
            .finish_non_exhaustive()
    }
}

impl LogKeys {
    /// The keys of the store in `dir`; nothing is opened yet.
    pub(crate) fn new(fs: Arc<dyn FileSystem>, dir: &Path) -> Self {
        LogKeys {
            file: RedbFile::new(
                fs,
                layout::keys_file(dir),
                "key",
                "open key file",
                1 << 20,
                KEYS_FORMAT_VERSION,
                |txn| txn.open_table(KEYS).map(drop),
            ),
            state: RwLock::new(State::Unopened),
        }
    }

    fn corruption(&self, reason: impl Into<String>) -> StorageError {
        self.file.corruption(reason)
    }

    fn redb_error(&self, e: impl Into<redb::Error>) -> StorageError {
        self.file.redb_error(e)
    }

    /// Runs `op` on the open database; opens it first (creating it if `create`). Without
    /// `create`, a missing file gives `Ok(None)`.
    fn with_db<T>(
        &self,
        create: bool,
        op: impl FnOnce(&redb::Database) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            match &*state {
                State::Shut => return Err(StorageError::Closed),
                State::Open(db) => return self.guarded(db, op).map(Some),
                State::Unopened => {}
            }
        }
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Unopened) {
            let exists = self.file.exists()?;
            if !exists && !create {
                return Ok(None);
            }
            *state = State::Open(self.file.open()?);
        }
        match &*state {
            State::Shut => Err(StorageError::Closed),
            State::Open(db) => self.guarded(db, op).map(Some),
            State::Unopened => Ok(None),
        }
    }

    fn guarded<T>(
        &self,
        db: &Db,
        op: impl FnOnce(&redb::Database) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.file.guarded(db, op)
    }

    /// The record of `subject` in `db`: `Ok(None)` when there is none, corruption when there
    /// is one that is not a key record.
    fn read(&self, db: &redb::Database, subject: &str) -> Result<Option<SubjectKey>, StorageError> {
        let txn = db.begin_read().map_err(|e| self.redb_error(e))?;
        let table = txn.open_table(KEYS).map_err(|e| self.redb_error(e))?;
        let Some(value) = table.get(subject).map_err(|e| self.redb_error(e))? else {
            return Ok(None);
        };
        let bytes = value.value();
        if bytes.iter().all(|&b| b == 0) {
            // Zeroed by a forget that did not get to delete the record: no key.
            return Ok(None);
        }
        SubjectKey::from_record(bytes)
            .map(Some)
            .ok_or_else(|| self.corruption(format!("malformed key record of subject {subject:?}")))
    }
}

impl LogKeys {
    /// Deletes the record of `subject`, if any, in a committed transaction.
    fn remove(&self, db: &redb::Database, subject: &str) -> Result<(), StorageError> {
        let txn = db.begin_write().map_err(|e| self.redb_error(e))?;
        {
            let mut table = txn.open_table(KEYS).map_err(|e| self.redb_error(e))?;
            table.remove(subject).map_err(|e| self.redb_error(e))?;
        }
        txn.commit().map_err(|e| self.redb_error(e))
    }
}

impl KeyStore for LogKeys {
    fn get(&self, subject: &str) -> Result<Option<SubjectKey>, StorageError> {
        Ok(self.with_db(false, |db| self.read(db, subject))?.flatten())
    }

    fn get_or_insert(
        &self,
        subject: &str,
        candidate: &SubjectKey,
    ) -> Result<SubjectKey, StorageError> {
        let key = self.with_db(true, |db| {
            // One write transaction at a time (redb's rule): the check and the insert are
            // atomic.
            let txn = db.begin_write().map_err(|e| self.redb_error(e))?;
            let key = {
                let mut table = txn.open_table(KEYS).map_err(|e| self.redb_error(e))?;
                let existing = table
                    .get(subject)
                    .map_err(|e| self.redb_error(e))?
                    .map(|v| v.value().to_vec());
                let zeroed = existing
                    .as_deref()
                    .is_none_or(|v| v.iter().all(|&b| b == 0));
                match existing.as_deref().and_then(SubjectKey::from_record) {
                    Some(key) => key,
                    None if !zeroed => {
                        return Err(
                            self.corruption(format!("malformed key record of subject {subject:?}"))
                        );
                    }
                    None => {
                        let record = candidate.to_record();
                        table
                            .insert(subject, record.as_slice())
                            .map_err(|e| self.redb_error(e))?;
                        candidate.clone()
                    }
                }
            };
            txn.commit().map_err(|e| self.redb_error(e))?;
            Ok(key)
        })?;
        key.ok_or(StorageError::Closed)
    }

    fn forget(&self, subject: &str) -> Result<bool, StorageError> {
        let forgotten = self.with_db(false, |db| {
            if self.read(db, subject)?.is_none() {
                // No key, or a record a forget zeroed before a crash: delete what is there.
                self.remove(db, subject)?;
                return Ok(false);
            }
            // First the key's bytes are replaced by zeros, durably: a crash before the delete
            // leaves a record that reads as no key.
            let txn = db.begin_write().map_err(|e| self.redb_error(e))?;
            {
                let mut table = txn.open_table(KEYS).map_err(|e| self.redb_error(e))?;
                table
                    .insert(subject, [0u8; KEY_RECORD_BYTES].as_slice())
                    .map_err(|e| self.redb_error(e))?;
            }
            txn.commit().map_err(|e| self.redb_error(e))?;
            self.remove(db, subject)?;
            Ok(true)
        })?;
        Ok(forgotten.unwrap_or(false))
    }

    fn close(&self) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = State::Shut;
    }
}
