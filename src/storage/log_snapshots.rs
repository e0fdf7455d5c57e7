//! The log adapter's snapshots: a redb database, `snapshots.redb`, in the store directory.
//!
//! The file is separate from `index.redb` because its life is different: the index is rebuilt
//! from the log, while snapshots cannot be (they hold reduced states that only the typed layer
//! can compute), so they must survive an index rebuild. They are derived data all the same:
//! a snapshot file that is missing, unreadable or of another format is deleted and started
//! afresh, with a warning, and every failure of a snapshot operation is reported to the caller
//! (which replays from the events) rather than allowed to fail a read. redb asserts on some
//! damaged files, so every call into it runs under `catch_unwind`.
//!
//! The file is opened lazily, on the first snapshot operation, and created only by the first
//! write: a store that never uses snapshots never has the file. It is created atomically
//! ([`create_atomically`]: complete under a temporary name, then renamed into place), so a
//! crash while it is created leaves no file rather than a damaged one. Its I/O goes through the
//! engine's [`FileSystem`] seam like the index's. The record layout is in `docs/format.md`.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::redb_file::{Db, RedbFile};
use super::{SnapshotRecord, SnapshotStats, SnapshotStorage, StorageError};
use crate::engine::{FileSystem, layout};

/// The layout of the file this code writes.
const SNAPSHOTS_FORMAT_VERSION: u32 = 1;
/// (store id, aggregate id, version) → an encoded [`SnapshotRecord`].
const SNAPSHOTS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("snapshots");
/// First bytes of every record value.
const RECORD_MAGIC: &[u8; 4] = b"ANSN";
/// The record layout this code writes.
const RECORD_FORMAT_VERSION: u32 = 1;
/// Bytes of a record value before the state.
const RECORD_HEADER_BYTES: usize = 40;

/// Snapshots of a log adapter, in `snapshots.redb`.
pub(crate) struct LogSnapshots {
    file: RedbFile,
    state: RwLock<State>,
}

enum State {
    /// Not opened yet: the next operation opens it.
    Unopened,
    Open(Db),
    /// An operation failed inside redb: the next write deletes the file and starts afresh;
    /// reads find nothing until then.
    Damaged,
    /// The store was closed: no more snapshot I/O, so the directory can be reopened.
    Shut,
}

impl fmt::Debug for LogSnapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSnapshots")
            .field("path", &self.file.path)
            .finish_non_exhaustive()
    }
}

impl LogSnapshots {
    /// Snapshots of the store in `dir`; nothing is opened yet.
    pub(crate) fn new(fs: Arc<dyn FileSystem>, dir: &Path) -> Self {
        LogSnapshots {
            file: RedbFile::new(
                fs,
                layout::snapshots_file(dir),
                "snapshot",
                "open snapshot file",
                4 << 20,
                SNAPSHOTS_FORMAT_VERSION,
                |txn| txn.open_table(SNAPSHOTS).map(drop),
            ),
            state: RwLock::new(State::Unopened),
        }
    }

    /// Stops all snapshot I/O (the store is closing); later operations fail with
    /// [`StorageError::Closed`].
    pub(crate) fn close(&self) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = State::Shut;
    }

    /// How many records the file holds and its size; zeros when there is no file yet.
    pub(crate) fn stats(&self) -> Result<SnapshotStats, StorageError> {
        let records = self.with_db(false, |db| {
            let txn = db.begin_read().map_err(|e| self.redb_error(e))?;
            match txn.open_table(SNAPSHOTS) {
                Ok(table) => table.len().map_err(|e| self.redb_error(e)),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
                Err(e) => Err(self.redb_error(e)),
            }
        })?;
        let file_bytes = match records {
            Some(_) => self
                .file
                .fs
                .open(&self.file.path, false)
                .and_then(|f| f.size())
                .map_err(self.io_error("measure"))?,
            None => 0,
        };
        Ok(SnapshotStats {
            records: records.unwrap_or(0),
            file_bytes,
        })
    }

    fn io_error(&self, operation: &'static str) -> impl Fn(io::Error) -> StorageError + '_ {
        move |source| StorageError::io(operation, self.file.path.clone(), source)
    }

    fn redb_error(&self, e: impl Into<redb::Error>) -> StorageError {
        self.file.redb_error(e)
    }

    /// Runs `op` on the open database. `create` opens (and if needed creates) the file; without
    /// it, a missing file gives `Ok(None)`. A failure inside redb (an error or a panic) marks
    /// the file damaged: the next operation deletes it and starts afresh.
    fn with_db<T>(
        &self,
        create: bool,
        op: impl FnOnce(&redb::Database) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        match &*state {
            State::Shut => Err(StorageError::Closed),
            State::Open(db) => {
                let result = self.guarded(db, op);
                drop(state);
                if result.is_err() {
                    let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                    if matches!(*state, State::Open(_)) {
                        *state = State::Damaged;
                    }
                }
                result.map(Some)
            }
            State::Unopened | State::Damaged => {
                drop(state);
                self.with_db_opening(create, op)
            }
        }
    }

    /// [`with_db`](Self::with_db) when the file is not open: opens it (or recreates a damaged
    /// one) under the write lock first.
    fn with_db_opening<T>(
        &self,
        create: bool,
        op: impl FnOnce(&redb::Database) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let db = match std::mem::replace(&mut *state, State::Unopened) {
            State::Shut => {
                *state = State::Shut;
                return Err(StorageError::Closed);
            }
            State::Open(db) => db,
            State::Damaged if !create => {
                // Reads never repair: with nothing usable to return, report no snapshot.
                *state = State::Damaged;
                return Ok(None);
            }
            State::Damaged => {
                tracing::warn!(
                    file = %self.file.path.display(),
                    "recreating a damaged snapshot file; aggregates are replayed from their events"
                );
                self.file
                    .fs
                    .remove(&self.file.path)
                    .map_err(self.io_error("delete damaged snapshot file"))?;
                self.file.open()?
            }
            State::Unopened => {
                let exists = self.file.exists()?;
                if !exists && !create {
                    return Ok(None);
                }
                self.open_or_recreate()?
            }
        };
        let result = self.guarded(&db, op);
        *state = if result.is_err() {
            State::Damaged
        } else {
            State::Open(db)
        };
        result.map(Some)
    }

    fn guarded<T>(
        &self,
        db: &Db,
        op: impl FnOnce(&redb::Database) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.file.guarded(db, op)
    }

    /// Opens the file, or deletes a damaged one and creates it anew.
    fn open_or_recreate(&self) -> Result<Db, StorageError> {
        match self.file.open() {
            Ok(db) => Ok(db),
            // Not damage: the file is kept for `annals upgrade`.
            Err(e @ StorageError::FormatUpgradeRequired { .. }) => Err(e),
            Err(e) => {
                tracing::warn!(
                    file = %self.file.path.display(),
                    error = %e,
                    "deleting a damaged snapshot file; aggregates are replayed from their events"
                );
                self.file
                    .fs
                    .remove(&self.file.path)
                    .map_err(self.io_error("delete damaged snapshot file"))?;
                self.file.open()
            }
        }
    }

    /// Removes the records at `versions` of one aggregate, in one transaction.
    fn remove(
        &self,
        db: &redb::Database,
        event_store_id: &str,
        aggregate_id: &str,
        versions: &[u64],
    ) -> Result<(), StorageError> {
        if versions.is_empty() {
            return Ok(());
        }
        let txn = db.begin_write().map_err(|e| self.redb_error(e))?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(|e| self.redb_error(e))?;
            for &version in versions {
                table
                    .remove((event_store_id, aggregate_id, version))
                    .map_err(|e| self.redb_error(e))?;
            }
        }
        txn.commit().map_err(|e| self.redb_error(e))
    }
}

/// Encodes a record's value (its version is in the key).
fn encode_record(record: &SnapshotRecord) -> Result<Vec<u8>, String> {
    let state_len = u32::try_from(record.state.len())
        .map_err(|_| format!("a state of {} bytes is too large", record.state.len()))?;
    let mut value = Vec::with_capacity(RECORD_HEADER_BYTES + record.state.len());
    value.extend_from_slice(RECORD_MAGIC);
    value.extend_from_slice(&RECORD_FORMAT_VERSION.to_le_bytes());
    value.extend_from_slice(&record.checksum.to_le_bytes());
    value.extend_from_slice(&0u32.to_le_bytes());
    value.extend_from_slice(&record.reducer_version.to_le_bytes());
    value.extend_from_slice(&record.event_position.to_le_bytes());
    value.extend_from_slice(&record.event_checksum.to_le_bytes());
    value.extend_from_slice(&state_len.to_le_bytes());
    value.extend_from_slice(&record.state);
    debug_assert_eq!(value.len(), RECORD_HEADER_BYTES + record.state.len());
    Ok(value)
}

/// Decodes a record value stored under `version`; `None` if it is not a record of this format.
/// The checksum is carried over, not checked: the typed layer checks it.
fn decode_record(version: u64, value: &[u8]) -> Option<SnapshotRecord> {
    let header = value.get(..RECORD_HEADER_BYTES)?;
    let u32_at = |i: usize| {
        header
            .get(i..i + 4)?
            .try_into()
            .ok()
            .map(u32::from_le_bytes)
    };
    let u64_at = |i: usize| {
        header
            .get(i..i + 8)?
            .try_into()
            .ok()
            .map(u64::from_le_bytes)
    };
    if &header[0..4] != RECORD_MAGIC || u32_at(4)? != RECORD_FORMAT_VERSION || u32_at(12)? != 0 {
        return None;
    }
    let state = &value[RECORD_HEADER_BYTES..];
    if usize::try_from(u32_at(36)?).ok()? != state.len() {
        return None;
    }
    Some(SnapshotRecord {
        version,
        reducer_version: u64_at(16)?,
        event_position: u64_at(24)?,
        event_checksum: u32_at(32)?,
        state: state.to_vec(),
        checksum: u32_at(8)?,
    })
}

impl SnapshotStorage for LogSnapshots {
    fn put(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        record: &SnapshotRecord,
    ) -> Result<(), StorageError> {
        let value = encode_record(record).map_err(|reason| StorageError::InvalidConfiguration {
            reason: format!("snapshot of {event_store_id}/{aggregate_id}: {reason}"),
        })?;
        self.with_db(true, |db| {
            let txn = db.begin_write().map_err(|e| self.redb_error(e))?;
            {
                let mut table = txn.open_table(SNAPSHOTS).map_err(|e| self.redb_error(e))?;
                table
                    .insert(
                        (event_store_id, aggregate_id, record.version),
                        value.as_slice(),
                    )
                    .map_err(|e| self.redb_error(e))?;
            }
            txn.commit().map_err(|e| self.redb_error(e))
        })
        .map(|_| ())
    }

    fn latest(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        max_version: u64,
    ) -> Result<Option<SnapshotRecord>, StorageError> {
        let found = self.with_db(false, |db| {
            let mut malformed = Vec::new();
            let found = {
                let txn = db.begin_read().map_err(|e| self.redb_error(e))?;
                let table = txn.open_table(SNAPSHOTS).map_err(|e| self.redb_error(e))?;
                let range = table
                    .range(
                        (event_store_id, aggregate_id, 0)
                            ..=(event_store_id, aggregate_id, max_version),
                    )
                    .map_err(|e| self.redb_error(e))?;
                let mut found = None;
                for item in range.rev() {
                    let (key, value) = item.map_err(|e| self.redb_error(e))?;
                    let version = key.value().2;
                    match decode_record(version, value.value()) {
                        Some(record) => {
                            found = Some(record);
                            break;
                        }
                        None => malformed.push(version),
                    }
                }
                found
            };
            if !malformed.is_empty() {
                tracing::warn!(
                    file = %self.file.path.display(),
                    event_store_id,
                    aggregate_id,
                    versions = ?malformed,
                    "deleting malformed snapshot records"
                );
                // Best effort: the records are skipped whether or not they go.
                let _ = self.remove(db, event_store_id, aggregate_id, &malformed);
            }
            Ok(found)
        })?;
        Ok(found.flatten())
    }

    fn delete(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<(), StorageError> {
        self.with_db(false, |db| {
            self.remove(db, event_store_id, aggregate_id, &[version])
        })
        .map(|_| ())
    }

    fn prune(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        keep: usize,
    ) -> Result<usize, StorageError> {
        let removed = self.with_db(false, |db| {
            let versions = {
                let txn = db.begin_read().map_err(|e| self.redb_error(e))?;
                let table = txn.open_table(SNAPSHOTS).map_err(|e| self.redb_error(e))?;
                let range = table
                    .range(
                        (event_store_id, aggregate_id, 0)
                            ..=(event_store_id, aggregate_id, u64::MAX),
                    )
                    .map_err(|e| self.redb_error(e))?;
                let mut versions = Vec::new();
                for item in range {
                    let (key, _) = item.map_err(|e| self.redb_error(e))?;
                    versions.push(key.value().2);
                }
                versions
            };
            let excess = versions.len().saturating_sub(keep);
            self.remove(db, event_store_id, aggregate_id, &versions[..excess])?;
            Ok(excess)
        })?;
        Ok(removed.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_encoding() {
        let record = SnapshotRecord::new(42, 7, 1_000, 0xdead_beef, b"state".to_vec());
        let value = encode_record(&record).unwrap();
        assert_eq!(decode_record(42, &value), Some(record));
    }

    #[test]
    fn malformed_record_values_do_not_decode() {
        let record = SnapshotRecord::new(1, 1, 1, 1, b"state".to_vec());
        let value = encode_record(&record).unwrap();
        assert_eq!(decode_record(1, &value[..value.len() - 1]), None);
        assert_eq!(decode_record(1, &value[..10]), None);
        let mut bad_magic = value.clone();
        bad_magic[0] ^= 1;
        assert_eq!(decode_record(1, &bad_magic), None);
        let mut bad_format = value;
        bad_format[4] = 9;
        assert_eq!(decode_record(1, &bad_format), None);
    }
}
