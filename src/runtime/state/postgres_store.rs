//! The PostgreSQL backend of the [`StateStore`](super::StateStore): the state tables of
//! `postgres_schema.rs`, in the schema of the adapter whose events they follow, shared by
//! every process connected to it.
//!
//! Every operation is SQL on the tables' columns, in a transaction of its own or of the
//! caller's [`StateTxn`](super::StateTxn) (`READ COMMITTED`; reads run in one `REPEATABLE
//! READ, READ ONLY` transaction, so that they see one snapshot). The calls are synchronous and
//! never need the caller's runtime (see `postgres_connections.rs`).
//!
//! # Queues
//! A receive takes the oldest visible message that no other transaction holds (`FOR UPDATE
//! SKIP LOCKED`) and hides it until the database's clock passes its visibility timeout, so
//! competing receivers, in any number of processes, never get one message at the same time.
//! Messages added or released are announced with `NOTIFY <schema>_queues, '<queue>'` in
//! their transaction (delivered when it commits); a listener connection wakes this process's
//! waiting receivers. A receiver also looks again every [`POLL_BOUND`] at most, which covers
//! what a notification cannot announce (a receiver that rolled back, a listener reconnecting).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::executor::block_on;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Row, Statement};

use super::ops::{Letters, StateRead, StateWrite};
use super::postgres_connections::Connections;
use super::postgres_schema::migrate;
use super::postgres_txn::PgTxn;
use super::records::{DeadLetter, Delivery, QueueRecord, Received, as_millis, millis};
use super::txn_error::TxnError;
use super::wakers::{Wakers, wake};
use crate::runtime::lease::Fence;
use crate::storage::postgres::{bad_state_row, check_schema_name, from_state_client};
use crate::storage::{Position, StorageError, Timestamp};

/// The longest a receiver waiting in `Queue::next` sleeps before it looks at its queue again
/// without having been notified.
pub(crate) const POLL_BOUND: Duration = Duration::from_secs(2);

const OP: &str = "use the PostgreSQL state store";

/// The database's clock, in Unix milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// The first wait before the listener reconnects; doubled after each failure up to
/// [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Idle connections kept for reuse. A caller that finds none opens another, so nested or
/// concurrent operations never wait for each other here; a lost connection is not reused.
const IDLE_MAX: usize = 8;

/// A connection and the statements prepared on it.
struct Connection {
    client: Client,
    prepared: RefCell<HashMap<String, Statement>>,
}

/// How long a state transaction may sit idle between two statements before the server ends
/// it: far longer than any handler's work between statements, short enough that a paused
/// process's locks (a consumer lease being fenced) are freed in seconds.
const IDLE_IN_TRANSACTION_MS: u64 = 15_000;

/// The state in the tables of one PostgreSQL schema.
pub(crate) struct PostgresStore {
    connections: Connections,
    schema: String,
    sql: Sql,
    idle: std::sync::Mutex<Vec<Connection>>,
}

impl PostgresStore {
    /// Connects with `config`, creates or migrates the state tables of `schema`, and starts
    /// listening for queue notifications, which wake the receivers registered in `wakers`.
    pub(crate) async fn connect(
        config: tokio_postgres::Config,
        schema: &str,
        wakers: Weak<Wakers>,
    ) -> Result<PostgresStore, StorageError> {
        check_schema_name(schema)?;
        // A process paused inside a transaction (a long GC pause, SIGSTOP) must not hold its
        // locks, a consumer lease's among them, for ever: the server ends such a transaction.
        let mut config = config;
        let setting = format!("-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}");
        let options = match config.get_options() {
            Some(options) => format!("{options} {setting}"),
            None => setting,
        };
        config.options(&options);
        let connections = Connections::start(config)?;
        let mut client = connections.connect().await?;
        migrate(&mut client, schema).await?;
        let channel = channel(schema);
        // Runs on the store's thread until the store is dropped.
        drop(connections.spawn(listen(connections.config().clone(), channel, wakers)));
        let store = PostgresStore {
            sql: Sql::new(schema),
            schema: schema.to_owned(),
            connections,
            idle: std::sync::Mutex::new(Vec::new()),
        };
        store.give_back(Connection {
            client,
            prepared: RefCell::new(HashMap::new()),
        });
        Ok(store)
    }

    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// The settings the store connects with.
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        self.connections.config()
    }

    fn take(&self) -> Result<Connection, StorageError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(connection) if !connection.client.is_closed() => Ok(connection),
            _ => Ok(Connection {
                client: block_on(self.connections.connect())?,
                prepared: RefCell::new(HashMap::new()),
            }),
        }
    }

    fn give_back(&self, connection: Connection) {
        if connection.client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_MAX {
            idle.push(connection);
        }
    }

    /// Runs `read` in one read-only transaction.
    ///
    /// A read whose connection was lost is retried once, on a new connection (the lost one is
    /// not reused): reading again is harmless.
    pub(crate) fn read<T>(
        &self,
        read: impl Fn(&dyn StateRead) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
        let attempt = || {
            self.transaction(begin, |txn| read(txn).map(Ok::<T, TxnError>))?
                .map_err(TxnError::into_storage)
        };
        match attempt() {
            Err(StorageError::Unavailable { .. }) => attempt(),
            out => out,
        }
    }

    /// Runs `write` in one transaction: committed when it returns `Ok(Ok(_))`, rolled back
    /// otherwise.
    pub(crate) fn try_write<T, E>(
        &self,
        write: impl FnOnce(&dyn StateWrite) -> Result<Result<T, E>, TxnError>,
    ) -> Result<Result<T, E>, StorageError> {
        self.transaction("BEGIN", |txn| write(txn))
    }

    /// A connection with a transaction begun on it. Idle connections the server has dropped
    /// meanwhile (a restart, a terminated backend) are discarded one after the other, and a new
    /// one is opened if need be: nothing was sent on them, so this is safe for any operation.
    fn begin(&self, begin: &str) -> Result<Connection, StorageError> {
        let mut attempts = 0;
        loop {
            let connection = self.take()?;
            match block_on(connection.client.batch_execute(begin)) {
                Ok(()) => return Ok(connection),
                Err(e) => {
                    let e = from_state_client(OP, e);
                    attempts += 1;
                    if !matches!(e, StorageError::Unavailable { .. }) || attempts > IDLE_MAX {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn transaction<T, E>(
        &self,
        begin: &str,
        body: impl FnOnce(&PgState<'_>) -> Result<Result<T, E>, TxnError>,
    ) -> Result<Result<T, E>, StorageError> {
        let connection = self.begin(begin)?;
        let txn = PgTxn::new(&connection.client, &connection.prepared);
        let state = PgState {
            txn: &txn,
            sql: &self.sql,
            rows: RefCell::new(BTreeMap::new()),
        };
        let mut out = body(&state);
        if let Ok(Ok(_)) = &out
            && let Err(e) = state.write_rows()
        {
            out = Err(e);
        }
        drop(state);
        let end = match &out {
            Ok(Ok(_)) => "COMMIT",
            _ => "ROLLBACK",
        };
        let ended = block_on(connection.client.batch_execute(end));
        match (out, ended) {
            (Ok(out), Ok(())) => {
                self.give_back(connection);
                Ok(out)
            }
            // The commit's outcome is the error; the connection may be in any state.
            (Ok(_), Err(e)) => Err(from_state_client(OP, e)),
            (Err(e), ended) => {
                if ended.is_ok() {
                    self.give_back(connection);
                }
                Err(e.into_storage())
            }
        }
    }
}

/// The notification channel of a schema's queues (validated names need no quoting).
fn channel(schema: &str) -> String {
    format!("{schema}_queues")
}

/// Listens for queue notifications until the store is gone, reconnecting with a growing
/// backoff when the connection is lost.
async fn listen(config: tokio_postgres::Config, channel: String, wakers: Weak<Wakers>) {
    let mut backoff = BACKOFF_MIN;
    while wakers.strong_count() > 0 {
        let reason = session(&config, &channel, &wakers, &mut backoff).await;
        if wakers.strong_count() == 0 {
            return;
        }
        tracing::warn!(channel, %reason, retry_in_ms = backoff.as_millis() as u64,
            "lost the PostgreSQL state store's notification connection; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One listening session; returns why it ended.
async fn session(
    config: &tokio_postgres::Config,
    channel: &str,
    wakers: &Weak<Wakers>,
    backoff: &mut Duration,
) -> String {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(e) => return format!("connecting: {e}"),
    };
    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if heard.send(n.payload().to_owned()).is_err() {
                        return "stopped".to_owned();
                    }
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "the server closed the connection".to_owned()
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {channel}")).await {
        driver.abort();
        return format!("listening: {e}");
    }
    *backoff = BACKOFF_MIN;
    // Whatever was announced while nobody listened: every receiver looks again.
    wake(wakers, None);
    while let Some(queue) = hearing.recv().await {
        if wakers.strong_count() == 0 {
            driver.abort();
            return "stopped".to_owned();
        }
        wake(wakers, Some(&queue));
    }
    match driver.await {
        Ok(reason) => reason,
        Err(e) => format!("the connection task failed: {e}"),
    }
}

/// The store's SQL, with the schema's name filled in.
struct Sql {
    checkpoint: String,
    checkpoints: String,
    set_checkpoint: String,
    remove_checkpoint: String,
    view_version: String,
    set_view_version: String,
    view_get: String,
    view_scan: String,
    view_put_all: String,
    view_remove: String,
    view_remove_all: String,
    drop_view_versions: String,
    letters_all: String,
    letters_of: String,
    letter_at: String,
    retry_requests: String,
    put_letter: String,
    remove_letter: String,
    request_retry: String,
    clear_retry: String,
    queue_len: String,
    queue_in_flight: String,
    queue_dead_letters: String,
    enqueue: String,
    expire: String,
    shrink: String,
    take: String,
    next_visible: String,
    ack: String,
    release: String,
    dead_letter: String,
    retry_dead_letter: String,
    drop_dead_letter: String,
}

const LETTER_COLUMNS: &str = "action, position, event_store_id, aggregate_id, version, \
    event_type, error, attempts, failed_at_ms, retry_requested_at_ms";
const MESSAGE_COLUMNS: &str =
    "queue, id, visible_at_ms, receive_count, enqueued_at_ms, last_error, body";

impl Sql {
    fn new(s: &str) -> Sql {
        let channel = channel(s);
        let letters = |filter: &str| {
            format!(
                "SELECT {LETTER_COLUMNS} FROM {s}.action_dead_letters {filter} \
                 ORDER BY action, position"
            )
        };
        Sql {
            checkpoint: format!("SELECT next_position FROM {s}.consumers WHERE name = $1"),
            checkpoints: format!("SELECT name, next_position FROM {s}.consumers ORDER BY name"),
            set_checkpoint: format!(
                "INSERT INTO {s}.consumers (name, next_position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET next_position = EXCLUDED.next_position"
            ),
            remove_checkpoint: format!("DELETE FROM {s}.consumers WHERE name = $1"),
            view_version: format!("SELECT version FROM {s}.view_versions WHERE view = $1"),
            set_view_version: format!(
                "INSERT INTO {s}.view_versions (view, version) VALUES ($1, $2) \
                 ON CONFLICT (view) DO UPDATE SET version = EXCLUDED.version"
            ),
            view_get: format!(
                "SELECT value FROM {s}.view_rows \
                 WHERE view = $1 AND version = $2 AND tbl = $3 AND key = $4"
            ),
            view_scan: format!(
                "SELECT key, value FROM {s}.view_rows WHERE view = $1 AND version = $2 \
                 AND tbl = $3 AND key >= $4 AND starts_with(key, $4) ORDER BY key"
            ),
            view_put_all: format!(
                "INSERT INTO {s}.view_rows (view, version, tbl, key, value) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], \
                 $5::bytea[]) \
                 ON CONFLICT (view, version, tbl, key) DO UPDATE SET value = EXCLUDED.value"
            ),
            view_remove_all: format!(
                "DELETE FROM {s}.view_rows WHERE (view, version, tbl, key) IN ( \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]))"
            ),
            view_remove: format!(
                "DELETE FROM {s}.view_rows \
                 WHERE view = $1 AND version = $2 AND tbl = $3 AND key = $4 RETURNING 1"
            ),
            drop_view_versions: format!(
                "DELETE FROM {s}.view_rows WHERE view = $1 AND version < $2"
            ),
            letters_all: letters(""),
            letters_of: letters("WHERE action = $1"),
            letter_at: letters("WHERE action = $1 AND position = $2"),
            retry_requests: format!(
                "SELECT position, retry_requested_at_ms FROM {s}.action_dead_letters \
                 WHERE action = $1 AND retry_requested_at_ms IS NOT NULL ORDER BY position"
            ),
            put_letter: format!(
                "INSERT INTO {s}.action_dead_letters ({LETTER_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL) \
                 ON CONFLICT (action, position) DO UPDATE SET \
                 event_store_id = EXCLUDED.event_store_id, \
                 aggregate_id = EXCLUDED.aggregate_id, version = EXCLUDED.version, \
                 event_type = EXCLUDED.event_type, error = EXCLUDED.error, \
                 attempts = EXCLUDED.attempts, failed_at_ms = EXCLUDED.failed_at_ms"
            ),
            remove_letter: format!(
                "DELETE FROM {s}.action_dead_letters WHERE action = $1 AND position = $2 \
                 RETURNING 1"
            ),
            request_retry: format!(
                "UPDATE {s}.action_dead_letters SET retry_requested_at_ms = $4 \
                 WHERE action = $1 AND position BETWEEN $2 AND $3 RETURNING position"
            ),
            clear_retry: format!(
                "UPDATE {s}.action_dead_letters SET retry_requested_at_ms = NULL \
                 WHERE action = $1 AND position = $2 AND retry_requested_at_ms = $3"
            ),
            queue_len: format!("SELECT len FROM {s}.queue_meta WHERE queue = $1"),
            queue_in_flight: format!(
                "SELECT count(*) FROM {s}.queue_messages \
                 WHERE queue = $1 AND receive_count > 0 AND visible_at_ms > {NOW_MS}"
            ),
            queue_dead_letters: format!(
                "SELECT id, receive_count, visible_at_ms, enqueued_at_ms, last_error, body \
                 FROM {s}.queue_dead_letters WHERE queue = $1 ORDER BY id"
            ),
            // The counters row is taken first: enqueues of one queue are serialised, so ids
            // follow commit order and the length limit holds across processes.
            enqueue: format!(
                "WITH meta AS ( \
                     INSERT INTO {s}.queue_meta AS m (queue, next_id, len) VALUES ($1, 2, 1) \
                     ON CONFLICT (queue) DO UPDATE SET next_id = m.next_id + 1, len = m.len + 1 \
                     WHERE m.len < $3 RETURNING m.next_id - 1 AS id \
                 ), added AS ( \
                     INSERT INTO {s}.queue_messages ({MESSAGE_COLUMNS}) \
                     SELECT $1, id, {NOW_MS}, 0, {NOW_MS}, NULL, $2 FROM meta RETURNING id \
                 ) \
                 SELECT id, pg_notify('{channel}', $1)::text FROM added"
            ),
            expire: format!(
                "WITH dead AS ( \
                     DELETE FROM {s}.queue_messages WHERE (queue, id) IN ( \
                         SELECT queue, id FROM {s}.queue_messages WHERE queue = $1 \
                         AND visible_at_ms <= {NOW_MS} AND receive_count >= $2 \
                         FOR UPDATE SKIP LOCKED) \
                     RETURNING {MESSAGE_COLUMNS} \
                 ) \
                 INSERT INTO {s}.queue_dead_letters ({MESSAGE_COLUMNS}) \
                 SELECT {MESSAGE_COLUMNS} FROM dead RETURNING id, receive_count"
            ),
            shrink: format!(
                "UPDATE {s}.queue_meta SET len = greatest(len - $2, 0) WHERE queue = $1"
            ),
            take: format!(
                "UPDATE {s}.queue_messages m \
                 SET receive_count = m.receive_count + 1, visible_at_ms = {NOW_MS} + $2 \
                 FROM ( \
                     SELECT id FROM {s}.queue_messages WHERE queue = $1 \
                     AND visible_at_ms <= {NOW_MS} AND receive_count < $3 \
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED \
                 ) AS oldest \
                 WHERE m.queue = $1 AND m.id = oldest.id \
                 RETURNING m.id, m.receive_count, m.visible_at_ms, m.enqueued_at_ms, \
                 m.last_error, m.body"
            ),
            next_visible: format!(
                "SELECT min(visible_at_ms) - {NOW_MS} FROM {s}.queue_messages \
                 WHERE queue = $1 AND visible_at_ms > {NOW_MS}"
            ),
            ack: format!(
                "WITH gone AS ( \
                     DELETE FROM {s}.queue_messages WHERE queue = $1 AND id = $2 RETURNING id \
                 ), shrunk AS ( \
                     UPDATE {s}.queue_meta SET len = greatest(len - 1, 0) \
                     WHERE queue = $1 AND EXISTS (SELECT 1 FROM gone) \
                 ) \
                 SELECT count(*) FROM gone"
            ),
            release: format!(
                "UPDATE {s}.queue_messages SET visible_at_ms = {NOW_MS} + $3, last_error = $4 \
                 WHERE queue = $1 AND id = $2 RETURNING id, pg_notify('{channel}', $1)::text"
            ),
            dead_letter: format!(
                "WITH dead AS ( \
                     DELETE FROM {s}.queue_messages WHERE queue = $1 AND id = $2 \
                     RETURNING {MESSAGE_COLUMNS} \
                 ), moved AS ( \
                     INSERT INTO {s}.queue_dead_letters ({MESSAGE_COLUMNS}) \
                     SELECT queue, id, visible_at_ms, receive_count, enqueued_at_ms, $3, body \
                     FROM dead RETURNING id \
                 ), shrunk AS ( \
                     UPDATE {s}.queue_meta SET len = greatest(len - 1, 0) \
                     WHERE queue = $1 AND EXISTS (SELECT 1 FROM moved) \
                 ) \
                 SELECT count(*) FROM moved"
            ),
            retry_dead_letter: format!(
                "WITH back AS ( \
                     DELETE FROM {s}.queue_dead_letters WHERE queue = $1 AND id = $2 \
                     RETURNING {MESSAGE_COLUMNS} \
                 ), requeued AS ( \
                     INSERT INTO {s}.queue_messages ({MESSAGE_COLUMNS}) \
                     SELECT queue, id, {NOW_MS}, 0, enqueued_at_ms, last_error, body \
                     FROM back RETURNING id \
                 ), grown AS ( \
                     INSERT INTO {s}.queue_meta AS m (queue, next_id, len) \
                     SELECT $1, id + 1, 1 FROM requeued \
                     ON CONFLICT (queue) DO UPDATE \
                     SET next_id = greatest(m.next_id, EXCLUDED.next_id), len = m.len + 1 \
                 ) \
                 SELECT id, pg_notify('{channel}', $1)::text FROM requeued"
            ),
            drop_dead_letter: format!(
                "DELETE FROM {s}.queue_dead_letters WHERE queue = $1 AND id = $2 RETURNING id"
            ),
        }
    }
}

/// A view row's key: view, version, table, key.
type RowKey = (String, i64, String, String);

/// View rows as parameter arrays.
#[derive(Default)]
struct Columns {
    views: Vec<String>,
    versions: Vec<i64>,
    tables: Vec<String>,
    keys: Vec<String>,
    values: Vec<Vec<u8>>,
}

/// The state operations inside one transaction: its SQL run on it.
///
/// A key-value view's handler reads and writes a row per event; its writes wait here (the
/// latest per row, `None` for a removal) and go to the server in two statements when the
/// transaction is about to commit, or before a scan reads the table. Reads of a waiting row
/// are answered from here, so the handler sees its own writes as on redb, and a batch costs
/// one round trip per row read instead of one per read and one per write.
struct PgState<'t> {
    txn: &'t PgTxn<'t>,
    sql: &'t Sql,
    rows: RefCell<BTreeMap<RowKey, Option<Vec<u8>>>>,
}

fn bad(e: impl std::fmt::Display) -> TxnError {
    bad_state_row(OP, e.to_string()).into()
}

/// A number as a bigint parameter (saturated: ids and positions never come near).
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A bigint column as an unsigned number.
fn unsigned(row: &Row, at: usize) -> Result<u64, TxnError> {
    let v: i64 = row.try_get(at).map_err(bad)?;
    u64::try_from(v).map_err(|_| bad(format!("a negative number: {v}")))
}

impl PgState<'_> {
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, TxnError> {
        self.txn.query(sql, params)
    }

    /// Sends the view rows written so far: one upsert for the rows set, one delete for those
    /// removed.
    fn write_rows(&self) -> Result<(), TxnError> {
        let rows = std::mem::take(&mut *self.rows.borrow_mut());
        if rows.is_empty() {
            return Ok(());
        }
        let (mut put, mut gone) = (Columns::default(), Columns::default());
        for ((view, version, table, key), value) in rows {
            let columns = if value.is_some() { &mut put } else { &mut gone };
            columns.views.push(view);
            columns.versions.push(version);
            columns.tables.push(table);
            columns.keys.push(key);
            columns.values.extend(value);
        }
        if !put.keys.is_empty() {
            let params: [&(dyn ToSql + Sync); 5] = [
                &put.views,
                &put.versions,
                &put.tables,
                &put.keys,
                &put.values,
            ];
            self.query(&self.sql.view_put_all, &params)?;
        }
        if !gone.keys.is_empty() {
            let params: [&(dyn ToSql + Sync); 4] =
                [&gone.views, &gone.versions, &gone.tables, &gone.keys];
            self.query(&self.sql.view_remove_all, &params)?;
        }
        Ok(())
    }

    fn count(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<i64, TxnError> {
        let rows = self.query(sql, params)?;
        let row = rows.first().ok_or_else(|| bad("a count returned no row"))?;
        row.try_get(0).map_err(bad)
    }
}

fn letter(row: &Row) -> Result<DeadLetter, TxnError> {
    let attempts: i64 = row.try_get(7).map_err(bad)?;
    let requested: Option<i64> = row.try_get(9).map_err(bad)?;
    Ok(DeadLetter {
        action: row.try_get(0).map_err(bad)?,
        position: unsigned(row, 1)?,
        event_store_id: row.try_get(2).map_err(bad)?,
        aggregate_id: row.try_get(3).map_err(bad)?,
        version: unsigned(row, 4)?,
        event_type: row.try_get(5).map_err(bad)?,
        error: row.try_get(6).map_err(bad)?,
        attempts: u32::try_from(attempts).map_err(|_| bad(format!("{attempts} attempts")))?,
        failed_at: Timestamp::from_unix_millis(row.try_get(8).map_err(bad)?),
        retry_requested_at: requested.map(Timestamp::from_unix_millis),
    })
}

/// A message from its columns, `at` being the id's: id, receive count, visible-at,
/// enqueued-at, last error, body.
fn record(row: &Row, at: usize) -> Result<(u64, QueueRecord), TxnError> {
    let count: i32 = row.try_get(at + 1).map_err(bad)?;
    Ok((
        unsigned(row, at)?,
        QueueRecord {
            receive_count: u32::try_from(count).map_err(|_| bad(format!("{count} receives")))?,
            visible_at: row.try_get(at + 2).map_err(bad)?,
            enqueued_at: row.try_get(at + 3).map_err(bad)?,
            last_error: row.try_get(at + 4).map_err(bad)?,
            body: row.try_get(at + 5).map_err(bad)?,
        },
    ))
}

impl StateRead for PgState<'_> {
    fn checkpoint(&self, name: &str) -> Result<Option<Position>, TxnError> {
        let rows = self.query(&self.sql.checkpoint, &[&name])?;
        rows.first().map(|row| unsigned(row, 0)).transpose()
    }

    fn checkpoints(&self) -> Result<Vec<(String, Position)>, TxnError> {
        let rows = self.query(&self.sql.checkpoints, &[])?;
        rows.iter()
            .map(|row| Ok((row.try_get(0).map_err(bad)?, unsigned(row, 1)?)))
            .collect()
    }

    fn view_version(&self, view: &str) -> Result<Option<u64>, TxnError> {
        let rows = self.query(&self.sql.view_version, &[&view])?;
        rows.first().map(|row| unsigned(row, 0)).transpose()
    }

    fn view_get(
        &self,
        view: &str,
        version: u64,
        table: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, TxnError> {
        let waiting = (
            view.to_owned(),
            int(version),
            table.to_owned(),
            key.to_owned(),
        );
        if let Some(value) = self.rows.borrow().get(&waiting) {
            return Ok(value.clone());
        }
        let rows = self.query(&self.sql.view_get, &[&view, &int(version), &table, &key])?;
        rows.first()
            .map(|row| row.try_get(0).map_err(bad))
            .transpose()
    }

    fn view_scan(
        &self,
        view: &str,
        version: u64,
        table: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, TxnError> {
        self.write_rows()?;
        let rows = self.query(
            &self.sql.view_scan,
            &[&view, &int(version), &table, &prefix],
        )?;
        rows.iter()
            .map(|row| Ok((row.try_get(0).map_err(bad)?, row.try_get(1).map_err(bad)?)))
            .collect()
    }

    fn dead_letters(&self, which: Letters<'_>) -> Result<Vec<DeadLetter>, TxnError> {
        let rows = match which {
            Letters::All => self.query(&self.sql.letters_all, &[])?,
            Letters::Of(action) => self.query(&self.sql.letters_of, &[&action])?,
            Letters::At(action, position) => {
                self.query(&self.sql.letter_at, &[&action, &int(position)])?
            }
        };
        rows.iter().map(letter).collect()
    }

    fn retry_requests(&self, action: &str) -> Result<Vec<(Position, i64)>, TxnError> {
        let rows = self.query(&self.sql.retry_requests, &[&action])?;
        rows.iter()
            .map(|row| Ok((unsigned(row, 0)?, row.try_get(1).map_err(bad)?)))
            .collect()
    }

    fn queue_len(&self, queue: &str) -> Result<u64, TxnError> {
        let rows = self.query(&self.sql.queue_len, &[&queue])?;
        Ok(rows
            .first()
            .map(|row| unsigned(row, 0))
            .transpose()?
            .unwrap_or(0))
    }

    fn queue_in_flight(&self, queue: &str, _: i64) -> Result<u64, TxnError> {
        let rows = self.query(&self.sql.queue_in_flight, &[&queue])?;
        rows.first().map_or(Ok(0), |row| unsigned(row, 0))
    }

    fn queue_dead_letters(&self, queue: &str) -> Result<Vec<(u64, QueueRecord)>, TxnError> {
        let rows = self.query(&self.sql.queue_dead_letters, &[&queue])?;
        rows.iter().map(|row| record(row, 0)).collect()
    }
}

impl StateWrite for PgState<'_> {
    fn check_fence(&self, fence: &Fence) -> Result<(), TxnError> {
        let (sql, group, partition, holder, epoch, ttl_ms) = fence.statement();
        let rows = self.query(sql, &[&group, &partition, &holder, &epoch, &ttl_ms])?;
        if rows.is_empty() {
            return Err(fence.lost_error().into());
        }
        Ok(())
    }

    fn set_checkpoint(&self, name: &str, next: Position) -> Result<(), TxnError> {
        self.query(&self.sql.set_checkpoint, &[&name, &int(next)])?;
        Ok(())
    }

    fn remove_checkpoint(&self, name: &str) -> Result<(), TxnError> {
        self.query(&self.sql.remove_checkpoint, &[&name])?;
        Ok(())
    }

    fn set_view_version(&self, view: &str, version: u64) -> Result<(), TxnError> {
        self.query(&self.sql.set_view_version, &[&view, &int(version)])?;
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
        let row = (
            view.to_owned(),
            int(version),
            table.to_owned(),
            key.to_owned(),
        );
        self.rows.borrow_mut().insert(row, Some(value.to_vec()));
        Ok(())
    }

    fn view_remove(
        &self,
        view: &str,
        version: u64,
        table: &str,
        key: &str,
    ) -> Result<bool, TxnError> {
        let row = (
            view.to_owned(),
            int(version),
            table.to_owned(),
            key.to_owned(),
        );
        if let Some(waiting) = self.rows.borrow_mut().get_mut(&row) {
            // Whether it is there now: set in this transaction, or removed in it already.
            return Ok(waiting.take().is_some());
        }
        let rows = self.query(&self.sql.view_remove, &[&view, &int(version), &table, &key])?;
        Ok(!rows.is_empty())
    }

    fn drop_view_versions_before(&self, view: &str, version: u64) -> Result<(), TxnError> {
        self.write_rows()?;
        self.query(&self.sql.drop_view_versions, &[&view, &int(version)])?;
        Ok(())
    }

    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<(), TxnError> {
        let params: [&(dyn ToSql + Sync); 9] = [
            &letter.action,
            &int(letter.position),
            &letter.event_store_id,
            &letter.aggregate_id,
            &int(letter.version),
            &letter.event_type,
            &letter.error,
            &i64::from(letter.attempts),
            &letter.failed_at.unix_millis(),
        ];
        self.query(&self.sql.put_letter, &params)?;
        Ok(())
    }

    fn remove_dead_letter(&self, action: &str, position: Position) -> Result<bool, TxnError> {
        let rows = self.query(&self.sql.remove_letter, &[&action, &int(position)])?;
        Ok(!rows.is_empty())
    }

    fn request_retry(
        &self,
        action: &str,
        position: Option<Position>,
        now: i64,
    ) -> Result<Vec<Position>, TxnError> {
        let (from, to) = position.map_or((0, u64::MAX), |p| (p, p));
        let rows = self.query(
            &self.sql.request_retry,
            &[&action, &int(from), &int(to), &now],
        )?;
        let mut positions = rows
            .iter()
            .map(|row| unsigned(row, 0))
            .collect::<Result<Vec<_>, _>>()?;
        positions.sort_unstable();
        Ok(positions)
    }

    fn clear_retry_request(
        &self,
        action: &str,
        position: Position,
        requested_at: i64,
    ) -> Result<(), TxnError> {
        self.query(
            &self.sql.clear_retry,
            &[&action, &int(position), &requested_at],
        )?;
        Ok(())
    }

    fn enqueue(&self, queue: &str, body: &[u8], length_max: u64) -> Result<Option<u64>, TxnError> {
        if length_max == 0 {
            return Ok(None);
        }
        let rows = self.query(&self.sql.enqueue, &[&queue, &body, &int(length_max)])?;
        rows.first().map(|row| unsigned(row, 0)).transpose()
    }

    fn receive(&self, queue: &str, delivery: Delivery) -> Result<Received, TxnError> {
        let max_receives = i32::try_from(delivery.max_receives.max(1)).unwrap_or(i32::MAX);
        let dead = self.query(&self.sql.expire, &[&queue, &max_receives])?;
        if !dead.is_empty() {
            for row in &dead {
                let id = unsigned(row, 0)?;
                let receive_count: i32 = row.try_get(1).map_err(bad)?;
                tracing::warn!(
                    queue,
                    id,
                    receive_count,
                    "message received too many times; moved to the dead letters"
                );
            }
            self.query(&self.sql.shrink, &[&queue, &(dead.len() as i64)])?;
        }
        let timeout = as_millis(delivery.visibility_timeout);
        let taken = self.query(&self.sql.take, &[&queue, &timeout, &max_receives])?;
        if let Some(row) = taken.first() {
            let (id, record) = record(row, 0)?;
            return Ok(Received::Message(id, record));
        }
        let rows = self.query(&self.sql.next_visible, &[&queue])?;
        let next: Option<i64> = match rows.first() {
            Some(row) => row.try_get(0).map_err(bad)?,
            None => None,
        };
        Ok(Received::Empty {
            next_visible_in: next.map(millis),
        })
    }

    fn ack(&self, queue: &str, id: u64) -> Result<bool, TxnError> {
        Ok(self.count(&self.sql.ack, &[&queue, &int(id)])? > 0)
    }

    fn release(
        &self,
        queue: &str,
        id: u64,
        delay: Duration,
        error: Option<&str>,
    ) -> Result<bool, TxnError> {
        let rows = self.query(
            &self.sql.release,
            &[&queue, &int(id), &as_millis(delay), &error],
        )?;
        Ok(!rows.is_empty())
    }

    fn dead_letter_message(&self, queue: &str, id: u64, error: &str) -> Result<bool, TxnError> {
        Ok(self.count(&self.sql.dead_letter, &[&queue, &int(id), &error])? > 0)
    }

    fn retry_queue_dead_letter(&self, queue: &str, id: u64) -> Result<bool, TxnError> {
        let rows = self.query(&self.sql.retry_dead_letter, &[&queue, &int(id)])?;
        Ok(!rows.is_empty())
    }

    fn drop_queue_dead_letter(&self, queue: &str, id: u64) -> Result<bool, TxnError> {
        let rows = self.query(&self.sql.drop_dead_letter, &[&queue, &int(id)])?;
        Ok(!rows.is_empty())
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}
