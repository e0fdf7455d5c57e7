//! Subjects' data keys in the `personal_keys` table (feature `personal`).
//!
//! [`KeyStore`] is synchronous, the client asynchronous: as for snapshots, calls go to one
//! worker thread owning a single-threaded runtime and its own connection, and the caller
//! blocks on the answer, which works from any context. The connection is opened on first use
//! and reopened (once per call) after it is lost; every operation is idempotent.

use std::sync::mpsc;
use std::thread;

use tokio_postgres::{Client, NoTls};

use super::error::{bad_row, from_client, is_connection_lost};
use crate::storage::StorageError;
use crate::storage::keys::{KEY_RECORD_BYTES, KeyStore, SubjectKey};

/// The [`PostgresAdapter`](super::PostgresAdapter)'s [`KeyStore`], in its `personal_keys`
/// table, shared by every process on the schema. Calls block the calling thread until a worker
/// thread with its own connection has answered.
#[derive(Debug)]
pub struct PostgresKeys {
    requests: mpsc::Sender<Request>,
}

enum Op {
    Get,
    GetOrInsert(SubjectKey),
    Forget,
}

enum Answer {
    Key(Option<SubjectKey>),
    Forgotten(bool),
}

struct Request {
    subject: String,
    op: Op,
    reply: mpsc::SyncSender<Result<Answer, StorageError>>,
}

struct Worker {
    config: tokio_postgres::Config,
    table: String,
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
}

impl PostgresKeys {
    /// Starts the worker thread for the keys of `schema`.
    pub(crate) fn start(
        config: tokio_postgres::Config,
        schema: &str,
    ) -> Result<PostgresKeys, StorageError> {
        let io = |operation| {
            move |source| StorageError::io(operation, std::path::PathBuf::new(), source)
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("start the key worker's runtime"))?;
        let mut worker = Worker {
            config,
            table: format!("{schema}.personal_keys"),
            runtime,
            client: None,
        };
        let (requests, incoming) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("annals-pg-keys".to_owned())
            .spawn(move || {
                while let Ok(request) = incoming.recv() {
                    let answer = worker.serve(&request);
                    let _ = request.reply.send(answer);
                }
            })
            .map_err(io("start the key worker thread"))?;
        Ok(PostgresKeys { requests })
    }

    fn call(&self, subject: &str, op: Op) -> Result<Answer, StorageError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let request = Request {
            subject: subject.to_owned(),
            op,
            reply,
        };
        self.requests
            .send(request)
            .map_err(|_| StorageError::Closed)?;
        answer.recv().map_err(|_| StorageError::Closed)?
    }
}

impl KeyStore for PostgresKeys {
    fn get(&self, subject: &str) -> Result<Option<SubjectKey>, StorageError> {
        match self.call(subject, Op::Get)? {
            Answer::Key(key) => Ok(key),
            Answer::Forgotten(_) => Err(bad_row("read a key", "unexpected answer")),
        }
    }

    fn get_or_insert(
        &self,
        subject: &str,
        candidate: &SubjectKey,
    ) -> Result<SubjectKey, StorageError> {
        match self.call(subject, Op::GetOrInsert(candidate.clone()))? {
            Answer::Key(Some(key)) => Ok(key),
            _ => Err(bad_row("create a key", "the key could not be created")),
        }
    }

    fn forget(&self, subject: &str) -> Result<bool, StorageError> {
        match self.call(subject, Op::Forget)? {
            Answer::Forgotten(found) => Ok(found),
            Answer::Key(_) => Err(bad_row("forget a key", "unexpected answer")),
        }
    }
}

impl Worker {
    fn serve(&mut self, request: &Request) -> Result<Answer, StorageError> {
        match self.try_serve(request) {
            Err(e) if is_connection_lost(&e) => {
                self.client = None;
                self.try_serve(request)
            }
            other => other,
        }
    }

    fn try_serve(&mut self, request: &Request) -> Result<Answer, StorageError> {
        const OP: &str = "access personal keys";
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
        let subject = &request.subject;
        let select = format!("SELECT record FROM {table} WHERE subject = $1");
        self.runtime.block_on(async {
            match &request.op {
                Op::Get => {
                    let row = client.query_opt(&select, &[subject]).await.map_err(err)?;
                    Ok(Answer::Key(
                        row.map(|row| decode(&row)).transpose()?.flatten(),
                    ))
                }
                Op::GetOrInsert(candidate) => {
                    let insert = format!(
                        "INSERT INTO {table} (subject, record) VALUES ($1, $2) \
                         ON CONFLICT (subject) DO NOTHING"
                    );
                    let record = candidate.to_record().to_vec();
                    // Two statements, each its own transaction: the select sees the key of a
                    // concurrent insert that won. A forget in between is answered by trying
                    // again.
                    for _ in 0..3 {
                        client
                            .execute(&insert, &[subject, &record])
                            .await
                            .map_err(err)?;
                        let row = client.query_opt(&select, &[subject]).await.map_err(err)?;
                        if let Some(key) = row.map(|row| decode(&row)).transpose()?.flatten() {
                            return Ok(Answer::Key(Some(key)));
                        }
                    }
                    Ok(Answer::Key(None))
                }
                Op::Forget => {
                    // The key's bytes are first replaced by zeros (committed), then the row is
                    // deleted. Dead row versions remain until VACUUM: see
                    // docs/data-lifecycle.md.
                    let zero = format!("UPDATE {table} SET record = $2 WHERE subject = $1");
                    let zeros = vec![0u8; KEY_RECORD_BYTES];
                    let found = client
                        .execute(&zero, &[subject, &zeros])
                        .await
                        .map_err(err)?;
                    let delete = format!("DELETE FROM {table} WHERE subject = $1");
                    client.execute(&delete, &[subject]).await.map_err(err)?;
                    Ok(Answer::Forgotten(found > 0))
                }
            }
        })
    }
}

/// The key of a row; `None` for the zeros a forget writes before it deletes the row.
fn decode(row: &tokio_postgres::Row) -> Result<Option<SubjectKey>, StorageError> {
    let record: Vec<u8> = row
        .try_get(0)
        .map_err(|e| bad_row("read a key", e.to_string()))?;
    if record.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    SubjectKey::from_record(&record)
        .map(Some)
        .ok_or_else(|| bad_row("read a key", "a key record of another format"))
}
