//! Snapshots in the `snapshots` table.
//!
//! [`SnapshotStorage`] is synchronous (the typed layer calls it from blocking tasks, and the
//! conformance suite from async code), while the client is asynchronous. Calls are therefore
//! sent to one worker thread that owns a small single-threaded runtime and its own connection;
//! the caller blocks on the answer. This works from any context, including a single-threaded
//! runtime, where blocking on the adapter's own pool would deadlock. The connection is opened
//! on first use and reopened (once per call) after it is lost.

use std::sync::mpsc;
use std::thread;

use tokio_postgres::{Client, NoTls};

use super::error::{bad_row, from_client, is_connection_lost};
use crate::storage::{SnapshotRecord, SnapshotStorage, StorageError};

/// The [`PostgresAdapter`](super::PostgresAdapter)'s [`SnapshotStorage`], in its `snapshots`
/// table. Calls block the calling thread until a worker thread with its own connection has
/// answered, so they work from any context, a single-threaded runtime included.
#[derive(Debug)]
pub struct PostgresSnapshots {
    requests: mpsc::Sender<Request>,
}

enum Op {
    Put(SnapshotRecord),
    Latest(u64),
    Delete(u64),
    Prune(usize),
}

enum Answer {
    Done,
    Record(Option<SnapshotRecord>),
    Removed(usize),
}

struct Request {
    event_store_id: String,
    aggregate_id: String,
    op: Op,
    reply: mpsc::SyncSender<Result<Answer, StorageError>>,
}

struct Worker {
    config: tokio_postgres::Config,
    table: String,
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
}

impl PostgresSnapshots {
    /// Starts the worker thread for the snapshots of `schema`.
    pub(crate) fn start(
        config: tokio_postgres::Config,
        schema: &str,
    ) -> Result<PostgresSnapshots, StorageError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| {
                StorageError::io(
                    "start the snapshot worker's runtime",
                    std::path::PathBuf::new(),
                    source,
                )
            })?;
        let mut worker = Worker {
            config,
            table: format!("{schema}.snapshots"),
            runtime,
            client: None,
        };
        let (requests, incoming) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("annals-pg-snapshots".to_owned())
            .spawn(move || {
                // Ends when the adapter, and with it every sender, is gone.
                while let Ok(request) = incoming.recv() {
                    let answer = worker.serve(&request);
                    let _ = request.reply.send(answer);
                }
            })
            .map_err(|source| {
                StorageError::io(
                    "start the snapshot worker thread",
                    std::path::PathBuf::new(),
                    source,
                )
            })?;
        Ok(PostgresSnapshots { requests })
    }

    fn call(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        op: Op,
    ) -> Result<Answer, StorageError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let request = Request {
            event_store_id: event_store_id.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            op,
            reply,
        };
        self.requests
            .send(request)
            .map_err(|_| StorageError::Closed)?;
        answer.recv().map_err(|_| StorageError::Closed)?
    }
}

impl Worker {
    fn serve(&mut self, request: &Request) -> Result<Answer, StorageError> {
        match self.try_serve(request) {
            Err(e) if is_connection_lost(&e) => {
                // Every operation is idempotent: retry once on a new connection.
                self.client = None;
                self.try_serve(request)
            }
            other => other,
        }
    }

    fn try_serve(&mut self, request: &Request) -> Result<Answer, StorageError> {
        const OP: &str = "access snapshots";
        let err = |e| from_client(OP, e);
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = self
                .runtime
                .block_on(self.config.connect(NoTls))
                .map_err(err)?;
            self.runtime.spawn(connection);
            self.client = Some(client);
        }
        let Some(client) = self.client.as_ref() else {
            return Err(StorageError::Closed);
        };
        let table = &self.table;
        let (store, aggregate) = (&request.event_store_id, &request.aggregate_id);
        self.runtime.block_on(async {
            match &request.op {
                Op::Put(record) => {
                    let version = i64::try_from(record.version).map_err(|_| {
                        StorageError::InvalidConfiguration {
                            reason: format!(
                                "snapshot version {} is beyond what PostgreSQL stores",
                                record.version
                            ),
                        }
                    })?;
                    let sql = format!(
                        "INSERT INTO {table} (event_store_id, aggregate_id, version, \
                         reducer_version, event_position, event_checksum, state, checksum) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (event_store_id, aggregate_id, version) DO UPDATE SET \
                         reducer_version = excluded.reducer_version, \
                         event_position = excluded.event_position, \
                         event_checksum = excluded.event_checksum, \
                         state = excluded.state, checksum = excluded.checksum"
                    );
                    // u64 fields that are never compared in SQL are stored bit for bit.
                    client
                        .execute(
                            &sql,
                            &[
                                store,
                                aggregate,
                                &version,
                                &(record.reducer_version as i64),
                                &(record.event_position as i64),
                                &i64::from(record.event_checksum),
                                &record.state,
                                &i64::from(record.checksum),
                            ],
                        )
                        .await
                        .map_err(err)?;
                    Ok(Answer::Done)
                }
                Op::Latest(max_version) => {
                    let bound = i64::try_from(*max_version).unwrap_or(i64::MAX);
                    let sql = format!(
                        "SELECT version, reducer_version, event_position, event_checksum, state, \
                         checksum FROM {table} WHERE event_store_id = $1 AND aggregate_id = $2 \
                         AND version <= $3 ORDER BY version DESC LIMIT 1"
                    );
                    let row = client
                        .query_opt(&sql, &[store, aggregate, &bound])
                        .await
                        .map_err(err)?;
                    row.map(|row| decode(&row)).transpose().map(Answer::Record)
                }
                Op::Delete(version) => {
                    let Ok(version) = i64::try_from(*version) else {
                        return Ok(Answer::Done);
                    };
                    let sql = format!(
                        "DELETE FROM {table} WHERE event_store_id = $1 AND aggregate_id = $2 \
                         AND version = $3"
                    );
                    client
                        .execute(&sql, &[store, aggregate, &version])
                        .await
                        .map_err(err)?;
                    Ok(Answer::Done)
                }
                Op::Prune(keep) => {
                    let keep = i64::try_from(*keep).unwrap_or(i64::MAX);
                    let sql = format!(
                        "DELETE FROM {table} WHERE event_store_id = $1 AND aggregate_id = $2 \
                         AND version IN (SELECT version FROM {table} WHERE event_store_id = $1 \
                         AND aggregate_id = $2 ORDER BY version DESC OFFSET $3)"
                    );
                    let removed = client
                        .execute(&sql, &[store, aggregate, &keep])
                        .await
                        .map_err(err)?;
                    Ok(Answer::Removed(
                        usize::try_from(removed).unwrap_or(usize::MAX),
                    ))
                }
            }
        })
    }
}

fn decode(row: &tokio_postgres::Row) -> Result<SnapshotRecord, StorageError> {
    const OP: &str = "read a snapshot";
    let get = |i: usize| {
        row.try_get::<_, i64>(i)
            .map_err(|e| bad_row(OP, e.to_string()))
    };
    let checksum = |v: i64| u32::try_from(v).map_err(|_| bad_row(OP, "a checksum out of range"));
    Ok(SnapshotRecord {
        version: u64::try_from(get(0)?).map_err(|_| bad_row(OP, "a negative version"))?,
        reducer_version: get(1)? as u64,
        event_position: get(2)? as u64,
        event_checksum: checksum(get(3)?)?,
        state: row
            .try_get::<_, Vec<u8>>(4)
            .map_err(|e| bad_row(OP, e.to_string()))?,
        checksum: checksum(get(5)?)?,
    })
}

impl SnapshotStorage for PostgresSnapshots {
    fn put(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        record: &SnapshotRecord,
    ) -> Result<(), StorageError> {
        self.call(event_store_id, aggregate_id, Op::Put(record.clone()))
            .map(|_| ())
    }

    fn latest(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        max_version: u64,
    ) -> Result<Option<SnapshotRecord>, StorageError> {
        match self.call(event_store_id, aggregate_id, Op::Latest(max_version))? {
            Answer::Record(record) => Ok(record),
            _ => Ok(None),
        }
    }

    fn delete(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<(), StorageError> {
        self.call(event_store_id, aggregate_id, Op::Delete(version))
            .map(|_| ())
    }

    fn prune(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        keep: usize,
    ) -> Result<usize, StorageError> {
        match self.call(event_store_id, aggregate_id, Op::Prune(keep))? {
            Answer::Removed(n) => Ok(n),
            _ => Ok(0),
        }
    }
}
