//! The redb backend of the [`StateStore`](super::StateStore): one redb database, in a file
//! beside the event log or in memory.
//!
//! The file is created atomically (`create_atomically`): complete, with its tables, under a
//! temporary name, then renamed into place. A process killed while it creates the file leaves
//! no state file (the next open creates it afresh) and never a half-made one, so a state file
//! that does not open is damage, reported as [`StorageError::Corruption`] and never replaced:
//! it holds checkpoints and dead letters that nothing else can restore.
//!
//! redb may panic on a damaged file; those panics are contained here and reported as
//! [`StorageError::Corruption`], never propagated to the caller. Every commit is durable
//! (redb's default: fsync before returning). Write transactions are serialised by redb:
//! one writer at a time, readers never wait.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::ops::{Letters, StateRead, StateWrite};
use super::records::{DeadLetter, Delivery, QueueRecord, Received, as_millis, millis};
use super::redb_records::{decode_letter, encode_letter};
use super::redb_schema::{
    ACTION_DEAD_LETTERS, ACTION_RETRY_REQUESTS, CONSUMERS, QUEUE_DEAD_LETTERS, QUEUE_MESSAGES,
    QUEUE_META, VIEW_VERSIONS, ViewTable, view_table_name, view_table_version,
};
use super::txn_error::TxnError;
use crate::engine::io::{
    Creation, FileSystem, OsFileSystem, RedbBackend, create_atomically, retry_while_held,
};
use crate::runtime::lease::Fence;
use crate::storage::{Position, StorageError, Timestamp};

/// The state in one redb database.
pub(crate) struct RedbStore {
    db: redb::Database,
    /// The file, or a description of the in-memory store, for error messages.
    path: PathBuf,
}

impl RedbStore {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (or creates) the state file at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, StorageError> {
        let path = path.to_owned();
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
            Some(db) => Ok(RedbStore { db, path }),
            None => Err(StorageError::Locked { path }),
        }
    }

    /// A store in memory.
    pub(crate) fn in_memory() -> Self {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory redb database opens");
        RedbStore {
            db,
            path: PathBuf::from("<in memory>"),
        }
    }

    /// Runs `read` in a read transaction (redb panics contained).
    pub(crate) fn read<T>(
        &self,
        read: impl Fn(&dyn StateRead) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        self.guarded(|| {
            let txn = self
                .db
                .begin_read()
                .map_err(|e| error(&self.path, "read", e))?;
            read(&RedbRead {
                txn: &txn,
                path: &self.path,
            })
        })
    }

    /// Runs `write` in a write transaction: committed durably when it returns `Ok(Ok(_))`,
    /// aborted otherwise (redb panics contained).
    pub(crate) fn try_write<T, E>(
        &self,
        write: impl FnOnce(&dyn StateWrite) -> Result<Result<T, E>, TxnError>,
    ) -> Result<Result<T, E>, StorageError> {
        self.guarded(|| {
            let fail = |e: redb::Error| TxnError::from(error(&self.path, "write", e));
            let txn = self.db.begin_write().map_err(|e| fail(e.into()))?;
            let out = write(&RedbWrite {
                txn: &txn,
                path: &self.path,
            })?;
            match out {
                Ok(out) => {
                    txn.commit().map_err(|e| fail(e.into()))?;
                    Ok(Ok(out))
                }
                Err(declined) => {
                    txn.abort().map_err(|e| fail(e.into()))?;
                    Ok(Err(declined))
                }
            }
        })
    }

    fn guarded<T>(&self, f: impl FnOnce() -> Result<T, TxnError>) -> Result<T, StorageError> {
        match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(e.into_storage()),
            Err(_) => Err(damaged(&self.path, "redb failed on it")),
        }
    }
}

/// A read transaction.
struct RedbRead<'t> {
    txn: &'t redb::ReadTransaction,
    path: &'t Path,
}

/// A write transaction.
struct RedbWrite<'t> {
    txn: &'t redb::WriteTransaction,
    path: &'t Path,
}

impl RedbRead<'_> {
    fn fail(&self, e: impl Into<redb::Error>) -> TxnError {
        error(self.path, "read", e).into()
    }

    /// Table `def`, or `None` when it was never written.
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>, TxnError> {
        match self.txn.open_table(def) {
            Ok(table) => Ok(Some(table)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl<'t> RedbWrite<'t> {
    fn fail(&self, e: impl Into<redb::Error>) -> TxnError {
        error(self.path, "write", e).into()
    }

    /// Table `def`, created if missing (so never `None`).
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Option<redb::Table<'t, K, V>>, TxnError> {
        self.txn.open_table(def).map(Some).map_err(|e| self.fail(e))
    }

    fn damaged(&self, table: &str, reason: String) -> TxnError {
        damaged_table(self.path, table, reason)
    }
}

fn damaged_table(path: &Path, table: &str, reason: String) -> TxnError {
    StorageError::corruption(path.to_owned(), 0, format!("table {table}: {reason}")).into()
}

/// The reads, the same code over a read or a write transaction: `$t.table(def)` is the table,
/// or `None` if it was never written.
macro_rules! reads {
    ($ty:ty) => {
        impl StateRead for $ty {
            fn checkpoint(&self, name: &str) -> Result<Option<Position>, TxnError> {
                let Some(t) = self.table(CONSUMERS)? else {
                    return Ok(None);
                };
                Ok(t.get(name).map_err(|e| self.fail(e))?.map(|v| v.value()))
            }

            fn checkpoints(&self) -> Result<Vec<(String, Position)>, TxnError> {
                let Some(t) = self.table(CONSUMERS)? else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                for row in t.iter().map_err(|e| self.fail(e))? {
                    let (k, v) = row.map_err(|e| self.fail(e))?;
                    out.push((k.value().to_owned(), v.value()));
                }
                Ok(out)
            }

            fn view_version(&self, view: &str) -> Result<Option<u64>, TxnError> {
                let Some(t) = self.table(VIEW_VERSIONS)? else {
                    return Ok(None);
                };
                Ok(t.get(view).map_err(|e| self.fail(e))?.map(|v| v.value()))
            }

            fn view_get(
                &self,
                view: &str,
                version: u64,
                table: &str,
                key: &str,
            ) -> Result<Option<Vec<u8>>, TxnError> {
                let name = view_table_name(view, version, table);
                let Some(t) = self.table(ViewTable::new(&name))? else {
                    return Ok(None);
                };
                let value = t.get(key).map_err(|e| self.fail(e))?;
                Ok(value.map(|v| v.value().to_vec()))
            }

            fn view_scan(
                &self,
                view: &str,
                version: u64,
                table: &str,
                prefix: &str,
            ) -> Result<Vec<(String, Vec<u8>)>, TxnError> {
                let name = view_table_name(view, version, table);
                let Some(t) = self.table(ViewTable::new(&name))? else {
                    return Ok(Vec::new());
                };
                let mut rows = Vec::new();
                for row in t.range(prefix..).map_err(|e| self.fail(e))? {
                    let (k, v) = row.map_err(|e| self.fail(e))?;
                    if !k.value().starts_with(prefix) {
                        break;
                    }
                    rows.push((k.value().to_owned(), v.value().to_vec()));
                }
                Ok(rows)
            }

            fn dead_letters(&self, which: Letters<'_>) -> Result<Vec<DeadLetter>, TxnError> {
                let Some(t) = self.table(ACTION_DEAD_LETTERS)? else {
                    return Ok(Vec::new());
                };
                let requests = self.table(ACTION_RETRY_REQUESTS)?;
                let range = match which {
                    Letters::All => t.iter(),
                    Letters::Of(action) => t.range((action, 0)..=(action, u64::MAX)),
                    Letters::At(action, at) => t.range((action, at)..=(action, at)),
                };
                let mut out = Vec::new();
                for row in range.map_err(|e| self.fail(e))? {
                    let (key, value) = row.map_err(|e| self.fail(e))?;
                    let (action, position) = key.value();
                    let requested = match &requests {
                        Some(r) => r
                            .get((action, position))
                            .map_err(|e| self.fail(e))?
                            .map(|v| v.value()),
                        None => None,
                    };
                    let letter = decode_letter(value.value(), requested).map_err(|reason| {
                        damaged_table(self.path, "action_dead_letters", reason)
                    })?;
                    out.push(letter);
                }
                Ok(out)
            }

            fn retry_requests(&self, action: &str) -> Result<Vec<(Position, i64)>, TxnError> {
                let Some(t) = self.table(ACTION_RETRY_REQUESTS)? else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                let range = t.range((action, 0)..=(action, u64::MAX));
                for row in range.map_err(|e| self.fail(e))? {
                    let (key, value) = row.map_err(|e| self.fail(e))?;
                    out.push((key.value().1, value.value()));
                }
                Ok(out)
            }

            fn queue_len(&self, queue: &str) -> Result<u64, TxnError> {
                let Some(t) = self.table(QUEUE_META)? else {
                    return Ok(0);
                };
                Ok(t.get(queue)
                    .map_err(|e| self.fail(e))?
                    .map_or(0, |v| v.value().1))
            }

            fn queue_in_flight(&self, queue: &str, now_ms: i64) -> Result<u64, TxnError> {
                let Some(t) = self.table(QUEUE_MESSAGES)? else {
                    return Ok(0);
                };
                let mut in_flight = 0;
                let range = t.range((queue, 0)..=(queue, u64::MAX));
                for row in range.map_err(|e| self.fail(e))? {
                    let (key, value) = row.map_err(|e| self.fail(e))?;
                    let id = key.value().1;
                    let record = QueueRecord::decode(value.value()).map_err(|reason| {
                        damaged_table(
                            self.path,
                            "queue_messages",
                            format!("message {id}: {reason}"),
                        )
                    })?;
                    if record.receive_count > 0 && record.visible_at > now_ms {
                        in_flight += 1;
                    }
                }
                Ok(in_flight)
            }

            fn queue_dead_letters(&self, queue: &str) -> Result<Vec<(u64, QueueRecord)>, TxnError> {
                let Some(t) = self.table(QUEUE_DEAD_LETTERS)? else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                let range = t.range((queue, 0)..=(queue, u64::MAX));
                for row in range.map_err(|e| self.fail(e))? {
                    let (key, value) = row.map_err(|e| self.fail(e))?;
                    let id = key.value().1;
                    let record = QueueRecord::decode(value.value()).map_err(|reason| {
                        damaged_table(
                            self.path,
                            "queue_dead_letters",
                            format!("message {id}: {reason}"),
                        )
                    })?;
                    out.push((id, record));
                }
                Ok(out)
            }
        }
    };
}

reads!(RedbRead<'_>);
reads!(RedbWrite<'_>);

impl RedbWrite<'_> {
    /// Lowers queue `queue`'s message count by `removed`.
    fn shrink(&self, queue: &str, removed: u64) -> Result<(), TxnError> {
        let mut meta = self.txn.open_table(QUEUE_META).map_err(|e| self.fail(e))?;
        let (next_id, len) = meta
            .get(queue)
            .map_err(|e| self.fail(e))?
            .map_or((1, 0), |v| v.value());
        meta.insert(queue, (next_id, len.saturating_sub(removed)))
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn message(&self, queue: &str, id: u64) -> Result<Option<QueueRecord>, TxnError> {
        let messages = self
            .txn
            .open_table(QUEUE_MESSAGES)
            .map_err(|e| self.fail(e))?;
        let Some(bytes) = messages.get((queue, id)).map_err(|e| self.fail(e))? else {
            return Ok(None);
        };
        let record = QueueRecord::decode(bytes.value())
            .map_err(|reason| self.damaged("queue_messages", format!("message {id}: {reason}")))?;
        Ok(Some(record))
    }

    fn put_message(&self, queue: &str, id: u64, record: &QueueRecord) -> Result<(), TxnError> {
        self.txn
            .open_table(QUEUE_MESSAGES)
            .map_err(|e| self.fail(e))?
            .insert((queue, id), record.encode().as_slice())
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

impl StateWrite for RedbWrite<'_> {
    fn check_fence(&self, _: &Fence) -> Result<(), TxnError> {
        // Consumer groups are joined through the PostgreSQL state store only.
        Err(StorageError::InvalidConfiguration {
            reason: "consumer groups need the PostgreSQL state store".to_owned(),
        }
        .into())
    }

    fn set_checkpoint(&self, name: &str, next: Position) -> Result<(), TxnError> {
        let mut t = self.txn.open_table(CONSUMERS).map_err(|e| self.fail(e))?;
        t.insert(name, next).map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn remove_checkpoint(&self, name: &str) -> Result<(), TxnError> {
        let mut t = self.txn.open_table(CONSUMERS).map_err(|e| self.fail(e))?;
        t.remove(name).map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn set_view_version(&self, view: &str, version: u64) -> Result<(), TxnError> {
        let mut t = self
            .txn
            .open_table(VIEW_VERSIONS)
            .map_err(|e| self.fail(e))?;
        t.insert(view, version).map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn view_put(
        &self,
        view: &str,
        version: u64,
        table: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), TxnError> {
        let name = view_table_name(view, version, table);
        let mut t = self
            .txn
            .open_table(ViewTable::new(&name))
            .map_err(|e| self.fail(e))?;
        t.insert(key, value).map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn view_remove(
        &self,
        view: &str,
        version: u64,
        table: &str,
        key: &str,
    ) -> Result<bool, TxnError> {
        let name = view_table_name(view, version, table);
        let mut t = self
            .txn
            .open_table(ViewTable::new(&name))
            .map_err(|e| self.fail(e))?;
        let removed = t.remove(key).map_err(|e| self.fail(e))?;
        Ok(removed.is_some())
    }

    fn drop_view_versions_before(&self, view: &str, version: u64) -> Result<(), TxnError> {
        let doomed: Vec<_> = self
            .txn
            .list_tables()
            .map_err(|e| self.fail(e))?
            .filter(|t| view_table_version(t.name(), view).is_some_and(|v| v < version))
            .collect();
        for table in doomed {
            self.txn.delete_table(table).map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<(), TxnError> {
        let bytes = encode_letter(letter);
        let mut t = self
            .txn
            .open_table(ACTION_DEAD_LETTERS)
            .map_err(|e| self.fail(e))?;
        t.insert((letter.action.as_str(), letter.position), bytes.as_slice())
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn remove_dead_letter(&self, action: &str, position: Position) -> Result<bool, TxnError> {
        let mut requests = self
            .txn
            .open_table(ACTION_RETRY_REQUESTS)
            .map_err(|e| self.fail(e))?;
        requests
            .remove((action, position))
            .map_err(|e| self.fail(e))?;
        let mut letters = self
            .txn
            .open_table(ACTION_DEAD_LETTERS)
            .map_err(|e| self.fail(e))?;
        let removed = letters
            .remove((action, position))
            .map_err(|e| self.fail(e))?;
        Ok(removed.is_some())
    }

    fn request_retry(
        &self,
        action: &str,
        position: Option<Position>,
        now: i64,
    ) -> Result<Vec<Position>, TxnError> {
        let letters = self
            .txn
            .open_table(ACTION_DEAD_LETTERS)
            .map_err(|e| self.fail(e))?;
        let (from, to) = position.map_or((0, u64::MAX), |p| (p, p));
        let mut positions = Vec::new();
        for row in letters
            .range((action, from)..=(action, to))
            .map_err(|e| self.fail(e))?
        {
            positions.push(row.map_err(|e| self.fail(e))?.0.value().1);
        }
        let mut requests = self
            .txn
            .open_table(ACTION_RETRY_REQUESTS)
            .map_err(|e| self.fail(e))?;
        for &position in &positions {
            requests
                .insert((action, position), now)
                .map_err(|e| self.fail(e))?;
        }
        Ok(positions)
    }

    fn clear_retry_request(
        &self,
        action: &str,
        position: Position,
        requested_at: i64,
    ) -> Result<(), TxnError> {
        let mut requests = self
            .txn
            .open_table(ACTION_RETRY_REQUESTS)
            .map_err(|e| self.fail(e))?;
        let current = requests
            .get((action, position))
            .map_err(|e| self.fail(e))?
            .map(|v| v.value());
        if current == Some(requested_at) {
            requests
                .remove((action, position))
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    fn enqueue(&self, queue: &str, body: &[u8], length_max: u64) -> Result<Option<u64>, TxnError> {
        let now = Timestamp::now().unix_millis();
        let mut meta = self.txn.open_table(QUEUE_META).map_err(|e| self.fail(e))?;
        let (next_id, len) = meta
            .get(queue)
            .map_err(|e| self.fail(e))?
            .map_or((1, 0), |v| v.value());
        if len >= length_max {
            return Ok(None);
        }
        meta.insert(queue, (next_id + 1, len + 1))
            .map_err(|e| self.fail(e))?;
        drop(meta);
        let record = QueueRecord {
            receive_count: 0,
            visible_at: now,
            enqueued_at: now,
            last_error: None,
            body: body.to_vec(),
        };
        self.put_message(queue, next_id, &record)?;
        Ok(Some(next_id))
    }

    fn receive(&self, queue: &str, delivery: Delivery) -> Result<Received, TxnError> {
        let now = Timestamp::now().unix_millis();
        let mut messages = self
            .txn
            .open_table(QUEUE_MESSAGES)
            .map_err(|e| self.fail(e))?;
        let mut next_visible_at: Option<i64> = None;
        let mut dead = Vec::new();
        let mut found = None;
        for row in messages
            .range((queue, 0)..=(queue, u64::MAX))
            .map_err(|e| self.fail(e))?
        {
            let (key, value) = row.map_err(|e| self.fail(e))?;
            let id = key.value().1;
            let record = QueueRecord::decode(value.value()).map_err(|reason| {
                self.damaged("queue_messages", format!("message {id}: {reason}"))
            })?;
            if record.visible_at > now {
                next_visible_at =
                    Some(next_visible_at.map_or(record.visible_at, |t| t.min(record.visible_at)));
            } else if record.receive_count >= delivery.max_receives.max(1) {
                dead.push((id, record));
            } else {
                found = Some((id, record));
                break;
            }
        }
        if !dead.is_empty() {
            let mut dead_letters = self
                .txn
                .open_table(QUEUE_DEAD_LETTERS)
                .map_err(|e| self.fail(e))?;
            for (id, record) in &dead {
                messages.remove((queue, *id)).map_err(|e| self.fail(e))?;
                dead_letters
                    .insert((queue, *id), record.encode().as_slice())
                    .map_err(|e| self.fail(e))?;
                tracing::warn!(
                    queue,
                    id,
                    receive_count = record.receive_count,
                    "message received too many times; moved to the dead letters"
                );
            }
            self.shrink(queue, dead.len() as u64)?;
        }
        let Some((id, mut record)) = found else {
            let next_visible_in = next_visible_at.map(|at| millis(at.saturating_sub(now)));
            return Ok(Received::Empty { next_visible_in });
        };
        record.receive_count = record.receive_count.saturating_add(1);
        record.visible_at = now.saturating_add(as_millis(delivery.visibility_timeout));
        messages
            .insert((queue, id), record.encode().as_slice())
            .map_err(|e| self.fail(e))?;
        Ok(Received::Message(id, record))
    }

    fn ack(&self, queue: &str, id: u64) -> Result<bool, TxnError> {
        let mut messages = self
            .txn
            .open_table(QUEUE_MESSAGES)
            .map_err(|e| self.fail(e))?;
        let removed = messages
            .remove((queue, id))
            .map_err(|e| self.fail(e))?
            .is_some();
        drop(messages);
        if removed {
            self.shrink(queue, 1)?;
        }
        Ok(removed)
    }

    fn release(
        &self,
        queue: &str,
        id: u64,
        delay: Duration,
        error: Option<&str>,
    ) -> Result<bool, TxnError> {
        let visible_at = Timestamp::now()
            .unix_millis()
            .saturating_add(as_millis(delay));
        let Some(mut record) = self.message(queue, id)? else {
            return Ok(false);
        };
        record.visible_at = visible_at;
        record.last_error = error.map(str::to_owned);
        self.put_message(queue, id, &record)?;
        Ok(true)
    }

    fn dead_letter_message(&self, queue: &str, id: u64, error: &str) -> Result<bool, TxnError> {
        let Some(mut record) = self.message(queue, id)? else {
            return Ok(false);
        };
        self.txn
            .open_table(QUEUE_MESSAGES)
            .map_err(|e| self.fail(e))?
            .remove((queue, id))
            .map_err(|e| self.fail(e))?;
        record.last_error = Some(error.to_owned());
        self.txn
            .open_table(QUEUE_DEAD_LETTERS)
            .map_err(|e| self.fail(e))?
            .insert((queue, id), record.encode().as_slice())
            .map_err(|e| self.fail(e))?;
        self.shrink(queue, 1)?;
        Ok(true)
    }

    fn retry_queue_dead_letter(&self, queue: &str, id: u64) -> Result<bool, TxnError> {
        let now = Timestamp::now().unix_millis();
        let mut dead_letters = self
            .txn
            .open_table(QUEUE_DEAD_LETTERS)
            .map_err(|e| self.fail(e))?;
        let Some(bytes) = dead_letters
            .remove((queue, id))
            .map_err(|e| self.fail(e))?
            .map(|v| v.value().to_vec())
        else {
            return Ok(false);
        };
        drop(dead_letters);
        let mut record = QueueRecord::decode(&bytes).map_err(|reason| {
            self.damaged("queue_dead_letters", format!("message {id}: {reason}"))
        })?;
        record.receive_count = 0;
        record.visible_at = now;
        self.put_message(queue, id, &record)?;
        let mut meta = self.txn.open_table(QUEUE_META).map_err(|e| self.fail(e))?;
        let (next_id, len) = meta
            .get(queue)
            .map_err(|e| self.fail(e))?
            .map_or((id + 1, 0), |v| v.value());
        meta.insert(queue, (next_id.max(id + 1), len + 1))
            .map_err(|e| self.fail(e))?;
        Ok(true)
    }

    fn drop_queue_dead_letter(&self, queue: &str, id: u64) -> Result<bool, TxnError> {
        let mut dead_letters = self
            .txn
            .open_table(QUEUE_DEAD_LETTERS)
            .map_err(|e| self.fail(e))?;
        let removed = dead_letters.remove((queue, id)).map_err(|e| self.fail(e))?;
        Ok(removed.is_some())
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
