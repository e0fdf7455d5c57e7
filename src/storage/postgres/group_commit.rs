//! Group commit: concurrent appends share one PostgreSQL transaction, and so one WAL flush.
//!
//! Every append of an adapter goes to one committer task through a queue. The task takes the
//! first queued append, begins a transaction and waits for the head row lock; once it holds
//! the lock, it takes everything else queued by then (up to [`BATCH_EVENTS_MAX`] events or
//! [`BATCH_BYTES_MAX`] bytes) into the same transaction, commits, answers each append, and
//! starts over. One writer alone gets a batch of one. Many writers get batches of every append
//! that arrived while the previous transaction was in flight or this one waited for the lock,
//! those of the writers just answered included when they push again at once — taking the
//! batch before the lock wait would leave them for the batch after.
//!
//! A batch transaction, in three round trips plus the lock wait and the WAL flush:
//! 1. `BEGIN` and `SELECT position FROM head FOR UPDATE`, sent together: the head row lock,
//!    held until the transaction ends, serialises batches with those of every other adapter
//!    on the schema;
//! 2. the latest committed version of every aggregate of the batch, read by a statement that
//!    starts once the lock is held, so its snapshot includes the commit this transaction
//!    waited for. Each append is decided in queue order ([`plan`]): an append whose versions
//!    do not follow the committed ones, and those of the accepted appends ahead of it in the
//!    batch, is refused alone (`EventAlreadyExists`, `UnexpectedVersion`), takes no position,
//!    and is invisible to the appends after it; the accepted ones get consecutive positions
//!    after the head, in queue order;
//! 3. one statement inserting every accepted event, moving the head to the last position and
//!    sending `NOTIFY <schema>_log, '<last position>'`, and `COMMIT`, sent together (a failed
//!    insert makes the `COMMIT` a rollback). Then every append is answered.
//!
//! Batches are serialised on the head row as single commits were, so the global order stays
//! gap-free: a batch holding positions `p..q` is visible before the next one can read the head.
//!
//! A batch that cannot begin (no connection, a lock wait that failed or timed out) fails every
//! append queued by then, none of which was sent. An append whose caller stopped waiting (a dropped
//! future) before its batch is formed is left out of it. An append is answered only after its
//! batch's commit: a refusal may rest on an earlier append of the same batch, which only the commit
//! makes true. If the transaction fails, every append of the batch gets the failure (the outcome of
//! all of them is unknown when the connection was lost during the commit), and the connection is
//! discarded. When the server refuses the transaction itself (say a unique violation from a writer
//! that bypasses the head lock), nothing was written and each append of the batch is retried in a
//! transaction of its own, so only the offending one fails.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;

use super::error::{bad_row, from_client, from_pool, is_unique_violation};
use super::notify::{self, publish};
use crate::storage::memory::check_commit_versions;
use crate::storage::{AppendEvent, EventAlreadyExists, LimitError, Position, StorageError};

const OP: &str = "append events";

/// Most events one batch transaction carries (a single larger append still goes alone).
const BATCH_EVENTS_MAX: usize = 8_192;
/// Most payload and metadata bytes one batch transaction carries (idem).
const BATCH_BYTES_MAX: usize = 16 << 20;

/// What an append gets back: its positions, or why it was refused or failed.
type Outcome = Result<Vec<Position>, StorageError>;

/// One queued append and where to send its outcome.
struct Request {
    events: Vec<AppendEvent>,
    reply: oneshot::Sender<Outcome>,
}

impl Request {
    /// Its size in events and bytes, against the batch bounds.
    fn size(&self) -> (usize, usize) {
        let bytes = self
            .events
            .iter()
            .map(|e| e.event.payload.len() + e.event.metadata.len())
            .sum();
        (self.events.len(), bytes)
    }
}

/// The adapter's side of the committer task: see the [module docs](self).
#[derive(Debug)]
pub(crate) struct GroupCommit {
    requests: mpsc::UnboundedSender<Request>,
}

impl GroupCommit {
    /// Starts the committer of `schema` on the current tokio runtime. It stops once this is
    /// dropped and the appends queued by then are answered.
    pub(crate) fn spawn(
        pool: Pool,
        schema: &str,
        published: Arc<watch::Sender<Position>>,
    ) -> GroupCommit {
        let (requests, queue) = mpsc::unbounded_channel();
        let committer = Committer {
            pool,
            sql: CommitSql::new(schema),
            channel: notify::channel(schema),
            published,
        };
        tokio::spawn(committer.run(queue));
        GroupCommit { requests }
    }

    /// Queues one append (validated, non-empty) and waits for its batch to commit.
    pub(crate) async fn append(&self, events: Vec<AppendEvent>) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        // The task ends only with the runtime it runs on: nothing of this append was sent.
        self.requests
            .send(Request { events, reply })
            .map_err(|_| StorageError::Closed)?;
        outcome.await.unwrap_or_else(|_| {
            Err(StorageError::Unavailable {
                operation: OP,
                reason: "the adapter's commit task stopped (its tokio runtime shut down) with \
                         this append queued or in flight"
                    .to_owned(),
            })
        })
    }
}

/// The batch transaction's SQL, with the schema name filled in.
struct CommitSql {
    lock_head: String,
    last_versions: String,
    write: String,
}

impl CommitSql {
    fn new(schema: &str) -> CommitSql {
        CommitSql {
            lock_head: format!("SELECT position FROM {schema}.head FOR UPDATE"),
            // With each aggregate's lifecycle rules: deleted ones are refused, and a version
            // compaction remembered counts as committed.
            last_versions: format!(
                "SELECT k.s, k.a, GREATEST((SELECT max(e.version) FROM {schema}.events e \
                 WHERE e.event_store_id = k.s AND e.aggregate_id = k.a), \
                 r.compacted_last_version), coalesce(r.deleted, 0::smallint) \
                 FROM unnest($1::text[], $2::text[]) AS k(s, a) \
                 LEFT JOIN {schema}.aggregate_rules r \
                 ON r.event_store_id = k.s AND r.aggregate_id = k.a"
            ),
            // Data-modifying CTEs run exactly once whether or not the query reads them.
            write: format!(
                "WITH inserted AS (INSERT INTO {schema}.events (position, event_store_id, \
                 aggregate_id, version, timestamp_ms, event_type, schema_version, payload, \
                 metadata) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], \
                 $4::bigint[], $5::bigint[], $6::text[], $7::bigint[], $8::bytea[], \
                 $9::bytea[])), \
                 moved AS (UPDATE {schema}.head SET position = $10::bigint) \
                 SELECT pg_notify($11, $10::bigint::text)"
            ),
        }
    }
}

/// The committer task's state.
struct Committer {
    pool: Pool,
    sql: CommitSql,
    channel: String,
    published: Arc<watch::Sender<Position>>,
}

/// The latest committed version of each (store, aggregate) of a batch; absent: none.
type Latest = HashMap<(String, String), u64>;

/// The deleted aggregates of a batch, and whether hard-deleted.
type Deleted = HashMap<(String, String), bool>;

impl Committer {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Request>) {
        let mut held_over: Option<Request> = None;
        loop {
            let first = match held_over.take() {
                Some(request) => request,
                None => match queue.recv().await {
                    Some(request) => request,
                    None => return,
                },
            };
            if first.reply.is_closed() {
                continue; // its caller stopped waiting
            }
            let (session, head) = match self.begin().await {
                Ok(begun) => begun,
                Err(e) => {
                    // No connection, or the lock wait failed: what is queued would meet the
                    // same fate one after the other. Nothing of it was sent.
                    for request in gather(first, &mut queue, &mut held_over) {
                        let _ = request.reply.send(Err(duplicate(&e)));
                    }
                    continue;
                }
            };
            // The head row is locked: everything queued by now joins the batch.
            let batch = gather(first, &mut queue, &mut held_over);
            let appends: Vec<&[AppendEvent]> = batch.iter().map(|r| r.events.as_slice()).collect();
            let outcomes = match self.finish(session, head, &appends).await {
                Ok(outcomes) => outcomes,
                // The server refused the transaction itself, so nothing of it was written:
                // each append alone, so that only an offending one fails.
                Err(StorageError::Database { .. }) if appends.len() > 1 => {
                    let mut outcomes = Vec::with_capacity(appends.len());
                    for &append in &appends {
                        outcomes.push(self.alone(append).await);
                    }
                    outcomes
                }
                Err(failure) => appends.iter().map(|_| Err(duplicate(&failure))).collect(),
            };
            for (request, outcome) in batch.into_iter().zip(outcomes) {
                // A caller that gave up meanwhile no longer listens; its outcome is moot.
                let _ = request.reply.send(outcome);
            }
        }
    }

    /// Commits one append in a transaction of its own.
    async fn alone(&self, events: &[AppendEvent]) -> Outcome {
        let (session, head) = self.begin().await?;
        let mut outcomes = self.finish(session, head, &[events]).await?;
        outcomes.pop().unwrap_or_else(|| Err(empty_batch()))
    }

    /// Takes a pooled connection, begins a transaction and locks the head row, in one round
    /// trip plus the wait for the lock; returns the head position.
    async fn begin(&self) -> Result<(Session, Position), StorageError> {
        let err = |e| from_client(OP, e);
        let client = self.pool.get().await.map_err(|e| from_pool(OP, e))?;
        let session = Session(Some(client));
        let lock_head = session
            .client()
            .prepare_cached(&self.sql.lock_head)
            .await
            .map_err(err)?;
        // Sent together; `join` polls (and so sends) them in order.
        let (begun, head) = futures::future::join(
            session.client().batch_execute("BEGIN"),
            session.client().query_one(&lock_head, &[]),
        )
        .await;
        begun.map_err(err)?;
        let head: i64 = head.map_err(err)?.try_get(0).map_err(err)?;
        let head = Position::try_from(head).map_err(|_| bad_row(OP, "a negative head position"))?;
        Ok((session, head))
    }

    /// The rest of a batch transaction begun by [`begin`](Self::begin): reads the versions,
    /// decides each append, writes and commits. `Ok` holds each append's outcome; `Err` is a
    /// failure of the whole transaction.
    async fn finish(
        &self,
        session: Session,
        head: Position,
        appends: &[&[AppendEvent]],
    ) -> Result<Vec<Outcome>, StorageError> {
        let err = |e| from_client(OP, e);
        let client = session.client();
        // A statement after the lock statement: its snapshot includes every commit before
        // this one, the one this transaction waited for included.
        let last_versions = client
            .prepare_cached(&self.sql.last_versions)
            .await
            .map_err(err)?;
        let (stores, aggregates) = keys(appends);
        let versions = client
            .query(&last_versions, &[&stores, &aggregates])
            .await
            .map_err(err)?;
        let (latest, deleted) = decode_versions(versions)?;

        let decided = plan(appends, &latest, &deleted, head);
        let Some(last) = decided
            .iter()
            .zip(appends)
            .filter_map(|(first, events)| Some(first.as_ref().ok()? + events.len() as u64 - 1))
            .max()
        else {
            // Every append refused: nothing to write, no position taken.
            client.batch_execute("ROLLBACK").await.map_err(err)?;
            session.end();
            return Ok(decided.into_iter().map(|d| d.map(|_| Vec::new())).collect());
        };
        let last = i64::try_from(last).map_err(|_| bad_row(OP, "positions beyond i64"))?;

        let mut columns = Columns::with_capacity(appends.iter().map(|a| a.len()).sum());
        for (first, events) in decided.iter().zip(appends) {
            if let Ok(first) = first {
                columns.push(events, *first)?;
            }
        }
        let write = client.prepare_cached(&self.sql.write).await.map_err(err)?;
        let params: [&(dyn ToSql + Sync); 11] = [
            &columns.positions,
            &columns.stores,
            &columns.aggregates,
            &columns.versions,
            &columns.timestamps,
            &columns.types,
            &columns.schema_versions,
            &columns.payloads,
            &columns.metadata,
            &last,
            &self.channel,
        ];
        // Sent together: if the write fails, the COMMIT ends the failed transaction as a
        // rollback (without an error of its own).
        let (written, committed) = futures::future::join(
            client.query_one(&write, &params),
            client.batch_execute("COMMIT"),
        )
        .await;
        if let Err(e) = written {
            let refusal = match appends {
                [events] if is_unique_violation(&e) => Ok(vec![Err(conflict_of(events, &latest))]),
                _ => Err(err(e)),
            };
            if committed.is_ok() {
                session.end();
            }
            return refusal;
        }
        committed.map_err(err)?;
        session.end();
        publish(&self.published, last as Position);
        Ok(decided
            .into_iter()
            .zip(appends)
            .map(|(first, events)| {
                first.map(|first| (first..first + events.len() as u64).collect())
            })
            .collect())
    }
}

/// A pooled connection in an open transaction. Dropped before [`end`](Self::end) (a failure, a
/// cancelled task), it is discarded instead of returned to the pool: closing the connection
/// makes the server roll the transaction back, and the pool never hands out a connection in
/// the middle of one, nor one that may be dead.
struct Session(Option<deadpool_postgres::Object>);

impl Session {
    fn client(&self) -> &deadpool_postgres::Object {
        // Only `end`, which consumes the session, takes the connection out.
        self.0
            .as_ref()
            .expect("a session holds its connection until it ends")
    }

    /// The transaction is over (committed or rolled back): back to the pool.
    fn end(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// The batch led by `first`: it and what is queued behind it, within the batch bounds (the
/// request that would cross them is `held_over` for the next batch), less the appends whose
/// callers stopped waiting.
fn gather(
    first: Request,
    queue: &mut mpsc::UnboundedReceiver<Request>,
    held_over: &mut Option<Request>,
) -> Vec<Request> {
    let (mut events, mut bytes) = first.size();
    let mut batch = vec![first];
    while let Ok(request) = queue.try_recv() {
        let (more_events, more_bytes) = request.size();
        if events + more_events > BATCH_EVENTS_MAX || bytes + more_bytes > BATCH_BYTES_MAX {
            *held_over = Some(request);
            break;
        }
        events += more_events;
        bytes += more_bytes;
        batch.push(request);
    }
    batch.retain(|request| !request.reply.is_closed());
    batch
}

/// The distinct (store, aggregate) pairs of a batch, as two parallel arrays.
fn keys<'a>(appends: &[&'a [AppendEvent]]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut keys: Vec<(&str, &str)> = appends
        .iter()
        .flat_map(|events| events.iter())
        .map(|e| (e.event_store_id.as_str(), e.event.aggregate_id.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().unzip()
}

fn decode_versions(rows: Vec<tokio_postgres::Row>) -> Result<(Latest, Deleted), StorageError> {
    const OP: &str = "check versions";
    let bad = |e: tokio_postgres::Error| bad_row(OP, e.to_string());
    let mut latest = HashMap::with_capacity(rows.len());
    let mut deleted = HashMap::new();
    for row in rows {
        let mode: i16 = row.try_get(3).map_err(bad)?;
        if mode > 0 {
            let key = (row.try_get(0).map_err(bad)?, row.try_get(1).map_err(bad)?);
            deleted.insert(key, mode == 2);
        }
        let version: Option<i64> = row.try_get(2).map_err(bad)?;
        if let Some(version) = version {
            let version = u64::try_from(version).map_err(|_| bad_row(OP, "a negative version"))?;
            let key = (row.try_get(0).map_err(bad)?, row.try_get(1).map_err(bad)?);
            latest.insert(key, version);
        }
    }
    Ok((latest, deleted))
}

/// Decides each append of a batch, in order, against the versions committed before the batch
/// (`latest`) and those of the accepted appends ahead of it: the first position of each
/// accepted append (consecutive from `head + 1`, in order), or why it is refused.
fn plan(
    appends: &[&[AppendEvent]],
    latest: &Latest,
    deleted: &Deleted,
    head: Position,
) -> Vec<Result<Position, StorageError>> {
    let mut accepted: HashMap<(&str, &str), u64> = HashMap::new();
    let mut next = head + 1;
    appends
        .iter()
        .map(|events| {
            // A push to a deleted aggregate is refused alone, like a conflicting one.
            if !deleted.is_empty() {
                for e in events.iter() {
                    let key = (e.event_store_id.clone(), e.event.aggregate_id.clone());
                    if let Some(&hard) = deleted.get(&key) {
                        return Err(StorageError::AggregateDeleted {
                            event_store_id: key.0,
                            aggregate_id: key.1,
                            hard,
                        });
                    }
                }
            }
            check_commit_versions(events, |store, aggregate| {
                accepted
                    .get(&(store, aggregate))
                    .copied()
                    .unwrap_or_else(|| {
                        let key = (store.to_owned(), aggregate.to_owned());
                        latest.get(&key).copied().unwrap_or(0)
                    })
            })?;
            if let Some(e) = events
                .iter()
                .find(|e| i64::try_from(e.event.version).is_err())
            {
                return Err(StorageError::UnexpectedVersion {
                    event_store_id: e.event_store_id.clone(),
                    aggregate_id: e.event.aggregate_id.clone(),
                    version: e.event.version,
                    expected: None,
                });
            }
            for e in events.iter() {
                let key = (e.event_store_id.as_str(), e.event.aggregate_id.as_str());
                accepted.insert(key, e.event.version);
            }
            let first = next;
            next += events.len() as u64;
            Ok(first)
        })
        .collect()
}

/// The conflict to report when the database's unique constraint refused a commit the version
/// check let through (only possible if something besides this adapter writes the table): the
/// first event whose version is taken, as far as `latest` knows, else the first event.
fn conflict_of(events: &[AppendEvent], latest: &Latest) -> StorageError {
    let taken = events.iter().find(|e| {
        let key = (e.event_store_id.clone(), e.event.aggregate_id.clone());
        latest.get(&key).is_some_and(|&v| e.event.version <= v)
    });
    match taken.or(events.first()) {
        Some(e) => EventAlreadyExists {
            event_store_id: e.event_store_id.clone(),
            aggregate_id: e.event.aggregate_id.clone(),
            version: e.event.version,
        }
        .into(),
        None => empty_batch(),
    }
}

fn empty_batch() -> StorageError {
    StorageError::Limit(LimitError::EmptyGroup)
}

/// A failure of a whole batch, for each of its appends ([`StorageError`] is not `Clone`; a
/// batch transaction fails only with the variants copied here).
fn duplicate(error: &StorageError) -> StorageError {
    match error {
        StorageError::Unavailable { operation, reason } => StorageError::Unavailable {
            operation,
            reason: reason.clone(),
        },
        StorageError::Timeout { operation, reason } => StorageError::Timeout {
            operation,
            reason: reason.clone(),
        },
        StorageError::Database {
            operation,
            code,
            message,
        } => StorageError::Database {
            operation,
            code: code.clone(),
            message: message.clone(),
        },
        StorageError::Closed => StorageError::Closed,
        other => StorageError::Database {
            operation: OP,
            code: None,
            message: other.to_string(),
        },
    }
}

/// The accepted events of a batch as one array per column, for the single
/// `INSERT … SELECT * FROM unnest(…)`.
struct Columns<'a> {
    positions: Vec<i64>,
    stores: Vec<&'a str>,
    aggregates: Vec<&'a str>,
    versions: Vec<i64>,
    timestamps: Vec<i64>,
    types: Vec<&'a str>,
    schema_versions: Vec<i64>,
    payloads: Vec<&'a [u8]>,
    metadata: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Columns {
            positions: Vec::with_capacity(n),
            stores: Vec::with_capacity(n),
            aggregates: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            timestamps: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        }
    }

    /// Adds an accepted append whose events take positions from `first` on.
    fn push(&mut self, events: &'a [AppendEvent], first: Position) -> Result<(), StorageError> {
        let out_of_range = || bad_row(OP, "a position or version beyond i64");
        for (
            position,
            AppendEvent {
                event_store_id,
                event,
            },
        ) in (first..).zip(events)
        {
            self.positions
                .push(i64::try_from(position).map_err(|_| out_of_range())?);
            self.stores.push(event_store_id);
            self.aggregates.push(&event.aggregate_id);
            // `plan` refused versions beyond i64.
            self.versions
                .push(i64::try_from(event.version).map_err(|_| out_of_range())?);
            self.timestamps.push(event.timestamp.unix_millis());
            self.types.push(&event.event_type);
            self.schema_versions.push(i64::from(event.schema_version));
            self.payloads.push(&event.payload);
            self.metadata.push(&event.metadata);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{EncodedEvent, Timestamp};

    fn event(aggregate: &str, version: u64) -> AppendEvent {
        AppendEvent {
            event_store_id: "S".to_owned(),
            event: EncodedEvent {
                aggregate_id: aggregate.to_owned(),
                version,
                timestamp: Timestamp::from_unix_millis(0),
                event_type: "T".to_owned(),
                schema_version: 1,
                payload: Vec::new(),
                metadata: Vec::new(),
            },
        }
    }

    #[test]
    fn a_refused_append_takes_no_position_and_is_invisible_to_the_next() {
        let latest: Latest = [(("S".to_owned(), "a".to_owned()), 1)].into();
        let appends = [
            vec![event("b", 1)],
            vec![event("a", 1)],                // taken
            vec![event("a", 2), event("c", 1)], // a's next, as if the refused one were not there
            vec![event("c", 3)],                // a gap after c@1 of the batch
            vec![event("c", 2)],                // sees c@1 of the batch
            vec![event("a", 2)],                // taken by the batch
        ];
        let appends: Vec<&[AppendEvent]> = appends.iter().map(Vec::as_slice).collect();
        let decided = plan(&appends, &latest, &Deleted::new(), 10);
        assert!(matches!(decided[0], Ok(11)));
        assert!(
            matches!(&decided[1], Err(StorageError::EventAlreadyExists(e))
            if e.aggregate_id == "a" && e.version == 1)
        );
        assert!(matches!(decided[2], Ok(12)));
        assert!(matches!(&decided[3], Err(StorageError::UnexpectedVersion {
            aggregate_id, version: 3, expected: Some(2), ..
        }) if aggregate_id == "c"));
        assert!(matches!(decided[4], Ok(14)));
        assert!(
            matches!(&decided[5], Err(StorageError::EventAlreadyExists(e))
            if e.aggregate_id == "a" && e.version == 2)
        );
    }

    #[test]
    fn an_append_with_a_conflict_inside_is_refused_whole() {
        let appends = [vec![event("x", 1), event("y", 2)], vec![event("x", 1)]];
        let appends: Vec<&[AppendEvent]> = appends.iter().map(Vec::as_slice).collect();
        let decided = plan(&appends, &Latest::new(), &Deleted::new(), 0);
        assert!(matches!(
            &decided[0],
            Err(StorageError::UnexpectedVersion { version: 2, .. })
        ));
        assert!(
            matches!(decided[1], Ok(1)),
            "x@1 was not taken by the refused append"
        );
    }
}
