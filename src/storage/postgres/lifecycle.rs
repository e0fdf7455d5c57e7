//! Lifecycle rules on PostgreSQL: the rules live in the `aggregate_rules` and `retention`
//! tables, written in the transaction that appends their `$lifecycle` event under the head
//! lock, so every process sharing the schema sees them at once, and a push (checked in its
//! batch transaction under the same lock) never lands after a delete that should refuse it.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio_postgres::types::ToSql;

use super::error::{bad_row, from_client, from_pool};
use super::notify::publish;
use crate::storage::lifecycle::{Lifecycle, LifecycleRecord};
use crate::storage::{
    CompactionReport, DeleteMode, LIFECYCLE_STORE, Position, Retention, StorageError, Timestamp,
};

/// The lifecycle SQL, with the schema name filled in.
#[derive(Debug)]
pub(super) struct LifecycleSql {
    /// For pairs `($1[i], $2[i])` at `$3` (Unix ms): `deleted` and the first visible version.
    pub(super) visibility: String,
    /// `$1`'s retention: `max_age_ms`, `max_count` (no row: none).
    pub(super) retention_of: String,
    lock_head: String,
    rules_of: String,
    last_version: String,
    next_lifecycle_version: String,
    insert_event: String,
    move_head: String,
    set_deleted: String,
    set_truncated: String,
    set_retention: String,
    remove_retention: String,
    delete_snapshots: String,
    delete_hard_deleted_snapshots: String,
    candidates: String,
    remember_compacted: String,
    delete_hidden: String,
}

/// `GREATEST(events' last version, the one compaction remembered)` for `s`, `a` and the
/// aggregate's rules row `r`.
fn last_version_sql(schema: &str, s: &str, a: &str) -> String {
    format!(
        "GREATEST(coalesce((SELECT max(e.version) FROM {schema}.events e \
         WHERE e.event_store_id = {s} AND e.aggregate_id = {a}), 0), \
         coalesce((SELECT r.compacted_last_version FROM {schema}.aggregate_rules r \
         WHERE r.event_store_id = {s} AND r.aggregate_id = {a}), 0))"
    )
}

/// What the lifecycle rules leave of the (store, aggregate) pairs `keys` (an SQL source of
/// columns `k.s`, `k.a`) at `now` (an SQL expression, Unix ms): rows `(s, a, deleted,
/// first)`, `first` being the first visible version. The same rules as
/// `Lifecycle::visible`: truncation and `max_count` bound the suffix, then `max_age` expires
/// from that bound up to the first recent event.
pub(super) fn visibility_sql(schema: &str, keys: &str, now: &str) -> String {
    let last = last_version_sql(schema, "k.s", "k.a");
    format!(
        "WITH v AS (SELECT k.s, k.a, coalesce(r.deleted, 0::smallint) AS deleted, \
         l.last, t.max_age_ms, \
         GREATEST(coalesce(r.truncated_before, 1), 1, \
         CASE WHEN t.max_count IS NULL THEN 1 ELSE l.last - t.max_count + 1 END) AS bound \
         FROM {keys} \
         LEFT JOIN {schema}.aggregate_rules r ON r.event_store_id = k.s AND r.aggregate_id = k.a \
         LEFT JOIN {schema}.retention t ON t.event_store_id = k.s \
         CROSS JOIN LATERAL (SELECT {last} AS last) l) \
         SELECT v.s, v.a, v.deleted, CASE WHEN v.max_age_ms IS NULL THEN v.bound \
         ELSE coalesce((SELECT min(e.version) FROM {schema}.events e \
         WHERE e.event_store_id = v.s AND e.aggregate_id = v.a \
         AND e.version >= v.bound AND e.timestamp_ms >= {now} - v.max_age_ms), \
         GREATEST(v.bound, v.last + 1)) END AS first \
         FROM v"
    )
}

impl LifecycleSql {
    pub(super) fn new(schema: &str) -> Self {
        let last = last_version_sql(schema, "k.s", "k.a");
        LifecycleSql {
            visibility: visibility_sql(
                schema,
                "unnest($1::text[], $2::text[]) AS k(s, a)",
                "$3::bigint",
            ),
            lock_head: format!("SELECT position FROM {schema}.head FOR UPDATE"),
            rules_of: format!(
                "SELECT deleted, truncated_before FROM {schema}.aggregate_rules \
                 WHERE event_store_id = $1 AND aggregate_id = $2"
            ),
            last_version: format!("SELECT {}", last_version_sql(schema, "$1", "$2")),
            next_lifecycle_version: format!(
                "SELECT coalesce(max(version), 0) + 1 FROM {schema}.events \
                 WHERE event_store_id = '{LIFECYCLE_STORE}' AND aggregate_id = $1"
            ),
            insert_event: format!(
                "INSERT INTO {schema}.events (position, event_store_id, aggregate_id, version, \
                 timestamp_ms, event_type, schema_version, payload, metadata) \
                 VALUES ($1, '{LIFECYCLE_STORE}', $2, $3, $4, $5, 1, $6, ''::bytea)"
            ),
            move_head: format!(
                "WITH moved AS (UPDATE {schema}.head SET position = $1::bigint) \
                 SELECT pg_notify($2, $1::bigint::text)"
            ),
            set_deleted: format!(
                "INSERT INTO {schema}.aggregate_rules (event_store_id, aggregate_id, deleted) \
                 VALUES ($1, $2, $3) ON CONFLICT (event_store_id, aggregate_id) \
                 DO UPDATE SET deleted = $3"
            ),
            set_truncated: format!(
                "INSERT INTO {schema}.aggregate_rules (event_store_id, aggregate_id, \
                 truncated_before) VALUES ($1, $2, $3) \
                 ON CONFLICT (event_store_id, aggregate_id) DO UPDATE SET truncated_before = \
                 GREATEST({schema}.aggregate_rules.truncated_before, $3)"
            ),
            set_retention: format!(
                "INSERT INTO {schema}.retention (event_store_id, max_age_ms, max_count) \
                 VALUES ($1, $2, $3) ON CONFLICT (event_store_id) \
                 DO UPDATE SET max_age_ms = $2, max_count = $3"
            ),
            remove_retention: format!("DELETE FROM {schema}.retention WHERE event_store_id = $1"),
            delete_snapshots: format!(
                "DELETE FROM {schema}.snapshots WHERE event_store_id = $1 AND aggregate_id = $2"
            ),
            delete_hard_deleted_snapshots: format!(
                "DELETE FROM {schema}.snapshots s USING {schema}.aggregate_rules r \
                 WHERE r.deleted = 2 AND s.event_store_id = r.event_store_id \
                 AND s.aggregate_id = r.aggregate_id"
            ),
            retention_of: format!(
                "SELECT max_age_ms, max_count FROM {schema}.retention WHERE event_store_id = $1"
            ),
            // Every aggregate a rule may hide events of (soft-deleted ones never lose any).
            candidates: format!(
                "SELECT event_store_id, aggregate_id FROM {schema}.aggregate_rules \
                 WHERE deleted = 2 OR (deleted = 0 AND truncated_before > 1) \
                 UNION SELECT DISTINCT e.event_store_id, e.aggregate_id FROM {schema}.events e \
                 JOIN {schema}.retention t ON t.event_store_id = e.event_store_id"
            ),
            // Before an aggregate's first event goes: its last version and first timestamp.
            remember_compacted: format!(
                "INSERT INTO {schema}.aggregate_rules (event_store_id, aggregate_id, \
                 compacted_last_version, initial_timestamp_ms) \
                 SELECT k.s, k.a, {last}, e.timestamp_ms \
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(s, a, keep) \
                 JOIN {schema}.events e ON e.event_store_id = k.s AND e.aggregate_id = k.a \
                 AND e.version = 1 AND k.keep > 1 \
                 ON CONFLICT (event_store_id, aggregate_id) DO UPDATE SET \
                 compacted_last_version = GREATEST(coalesce({schema}.aggregate_rules\
                 .compacted_last_version, 0), EXCLUDED.compacted_last_version), \
                 initial_timestamp_ms = coalesce({schema}.aggregate_rules.initial_timestamp_ms, \
                 EXCLUDED.initial_timestamp_ms)"
            ),
            delete_hidden: format!(
                "WITH gone AS (DELETE FROM {schema}.events e \
                 USING unnest($1::text[], $2::text[], $3::bigint[]) AS k(s, a, keep) \
                 WHERE e.event_store_id = k.s AND e.aggregate_id = k.a AND e.version < k.keep \
                 RETURNING octet_length(e.aggregate_id) + octet_length(e.event_type) \
                 + octet_length(e.payload) + octet_length(e.metadata) AS bytes) \
                 SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM gone"
            ),
        }
    }
}

/// What the rules leave of each (store, aggregate): `None` when it is deleted, else the first
/// visible version.
pub(super) type Visibility = HashMap<(String, String), Option<u64>>;

/// Reads a visibility row: store, aggregate, deleted, first visible version.
pub(super) fn decode_visibility(rows: &[tokio_postgres::Row]) -> Result<Visibility, StorageError> {
    const OP: &str = "read lifecycle rules";
    let bad = |e: tokio_postgres::Error| bad_row(OP, e.to_string());
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let deleted: i16 = row.try_get(2).map_err(bad)?;
        let first: i64 = row.try_get(3).map_err(bad)?;
        let first = u64::try_from(first.max(1)).unwrap_or(1);
        let key = (row.try_get(0).map_err(bad)?, row.try_get(1).map_err(bad)?);
        out.insert(key, (deleted == 0).then_some(first));
    }
    Ok(out)
}

fn mode_of(deleted: i16) -> Option<DeleteMode> {
    match deleted {
        1 => Some(DeleteMode::Soft),
        2 => Some(DeleteMode::Hard),
        _ => None,
    }
}

/// What a lifecycle commit needs of its adapter.
pub(super) struct Commit<'a> {
    pub(super) pool: &'a Pool,
    pub(super) sql: &'a LifecycleSql,
    /// The schema's notification channel.
    pub(super) channel: &'a str,
    pub(super) published: &'a watch::Sender<Position>,
}

/// Checks a lifecycle operation against the rules in force and records it, in one
/// transaction under the head lock: its `$lifecycle` event, the head moved past it with a
/// notification, and the rules table updated.
pub(super) async fn record(
    commit: &Commit<'_>,
    store: &str,
    record: LifecycleRecord,
) -> Result<Position, StorageError> {
    const OP: &str = "record a lifecycle operation";
    let err = |e| from_client(OP, e);
    let sql = commit.sql;
    let mut client = commit.pool.get().await.map_err(|e| from_pool(OP, e))?;
    let tx = client.transaction().await.map_err(err)?;
    let head: i64 = tx
        .query_one(&sql.lock_head, &[])
        .await
        .map_err(err)?
        .try_get(0)
        .map_err(err)?;
    // The rules of this aggregate (or store), as a fold would have them.
    let mut rules = Lifecycle::default();
    let aggregate = match &record {
        LifecycleRecord::Deleted { aggregate_id, .. }
        | LifecycleRecord::Restored { aggregate_id }
        | LifecycleRecord::Truncated { aggregate_id, .. } => Some(aggregate_id.clone()),
        LifecycleRecord::RetentionSet(_) => None,
    };
    if let Some(aggregate_id) = &aggregate {
        let row = tx
            .query_opt(&sql.rules_of, &[&store, aggregate_id])
            .await
            .map_err(err)?;
        if let Some(row) = row {
            let deleted: i16 = row.try_get(0).map_err(err)?;
            if let Some(mode) = mode_of(deleted) {
                let aggregate_id = aggregate_id.clone();
                rules.apply(store, 0, &LifecycleRecord::Deleted { aggregate_id, mode });
            }
        }
    }
    rules.check(store, &record)?;
    let mut last = None;
    if let (LifecycleRecord::Truncated { .. }, Some(aggregate_id)) = (&record, &aggregate) {
        let row = tx
            .query_one(&sql.last_version, &[&store, aggregate_id])
            .await
            .map_err(err)?;
        let v: i64 = row.try_get(0).map_err(err)?;
        last = Some(u64::try_from(v).unwrap_or(0));
    }
    let record = record.clamped(|_| Ok(last.unwrap_or(0)))?;
    let version: i64 = tx
        .query_one(&sql.next_lifecycle_version, &[&store])
        .await
        .map_err(err)?
        .try_get(0)
        .map_err(err)?;
    let position = head + 1;
    let timestamp = Timestamp::now().unix_millis();
    let payload = record.payload();
    tx.execute(
        &sql.insert_event,
        &[
            &position,
            &store,
            &version,
            &timestamp,
            &record.event_type(),
            &payload,
        ],
    )
    .await
    .map_err(err)?;
    tx.query_one(&sql.move_head, &[&position, &commit.channel])
        .await
        .map_err(err)?;
    match &record {
        LifecycleRecord::Deleted { aggregate_id, mode } => {
            let deleted: i16 = if *mode == DeleteMode::Hard { 2 } else { 1 };
            tx.execute(&sql.set_deleted, &[&store, aggregate_id, &deleted])
                .await
                .map_err(err)?;
            if *mode == DeleteMode::Hard {
                // Its snapshots hold its state: they go with it, in the same transaction.
                tx.execute(&sql.delete_snapshots, &[&store, aggregate_id])
                    .await
                    .map_err(err)?;
            }
        }
        LifecycleRecord::Restored { aggregate_id } => {
            // Only a soft delete gets here (a hard one was refused above).
            let deleted: i16 = 0;
            tx.execute(&sql.set_deleted, &[&store, aggregate_id, &deleted])
                .await
                .map_err(err)?;
        }
        LifecycleRecord::Truncated {
            aggregate_id,
            before,
        } => {
            let before = i64::try_from(*before).unwrap_or(i64::MAX);
            tx.execute(&sql.set_truncated, &[&store, aggregate_id, &before])
                .await
                .map_err(err)?;
        }
        LifecycleRecord::RetentionSet(retention) => {
            let max_age = retention
                .max_age
                .map(|a| i64::try_from(a.as_millis()).unwrap_or(i64::MAX));
            let max_count = retention
                .max_count
                .map(|c| i64::try_from(c).unwrap_or(i64::MAX));
            if retention.is_none() {
                tx.execute(&sql.remove_retention, &[&store])
                    .await
                    .map_err(err)?;
            } else {
                tx.execute(&sql.set_retention, &[&store, &max_age, &max_count])
                    .await
                    .map_err(err)?;
            }
        }
    }
    tx.commit().await.map_err(err)?;
    let position = Position::try_from(position).map_err(|_| bad_row(OP, "a bad position"))?;
    publish(commit.published, position);
    Ok(position)
}

/// Reads a retention row (none: no rule).
pub(super) fn decode_retention(rows: &[tokio_postgres::Row]) -> Result<Retention, StorageError> {
    const OP: &str = "read the retention rule";
    let Some(row) = rows.first() else {
        return Ok(Retention::default());
    };
    let bad = |e: tokio_postgres::Error| bad_row(OP, e.to_string());
    let max_age: Option<i64> = row.try_get(0).map_err(bad)?;
    let max_count: Option<i64> = row.try_get(1).map_err(bad)?;
    Ok(Retention {
        max_age: max_age.map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
        max_count: max_count.map(|c| c.max(0) as u64),
    })
}

/// Deletes the rows the rules hide, in one transaction under the head lock (so no push
/// interleaves); the other rows keep their positions. An aggregate losing its first event
/// gets its last version and first timestamp remembered, so its versions continue and
/// listings keep it.
pub(super) async fn compact(
    pool: &Pool,
    sql: &LifecycleSql,
) -> Result<CompactionReport, StorageError> {
    const OP: &str = "compact";
    let err = |e| from_client(OP, e);
    let mut client = pool.get().await.map_err(|e| from_pool(OP, e))?;
    let tx = client.transaction().await.map_err(err)?;
    tx.query_one(&sql.lock_head, &[]).await.map_err(err)?;
    let candidates = tx.query(&sql.candidates, &[]).await.map_err(err)?;
    let mut stores = Vec::with_capacity(candidates.len());
    let mut aggregates = Vec::with_capacity(candidates.len());
    for row in &candidates {
        stores.push(row.try_get::<_, String>(0).map_err(err)?);
        aggregates.push(row.try_get::<_, String>(1).map_err(err)?);
    }
    let now = Timestamp::now().unix_millis();
    let rows = tx
        .query(&sql.visibility, &[&stores, &aggregates, &now])
        .await
        .map_err(err)?;
    let (mut cut_stores, mut cut_aggregates, mut keep_from) = (vec![], vec![], vec![]);
    for row in &rows {
        let deleted: i16 = row.try_get(2).map_err(err)?;
        let first: i64 = row.try_get(3).map_err(err)?;
        let keep = match mode_of(deleted) {
            Some(DeleteMode::Soft) => continue,
            Some(DeleteMode::Hard) => i64::MAX,
            None => first,
        };
        if keep > 1 {
            cut_stores.push(row.try_get::<_, String>(0).map_err(err)?);
            cut_aggregates.push(row.try_get::<_, String>(1).map_err(err)?);
            keep_from.push(keep);
        }
    }
    let params: [&(dyn ToSql + Sync); 3] = [&cut_stores, &cut_aggregates, &keep_from];
    tx.execute(&sql.remember_compacted, &params)
        .await
        .map_err(err)?;
    let gone = tx
        .query_one(&sql.delete_hidden, &params)
        .await
        .map_err(err)?;
    // Snapshots written by a read that raced the delete.
    tx.execute(&sql.delete_hard_deleted_snapshots, &[])
        .await
        .map_err(err)?;
    let events: i64 = gone.try_get(0).map_err(err)?;
    let bytes: i64 = gone.try_get(1).map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(CompactionReport {
        events_removed: u64::try_from(events).unwrap_or(0),
        bytes_before: u64::try_from(bytes).unwrap_or(0),
        ..CompactionReport::default()
    })
}
