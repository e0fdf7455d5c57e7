//! The adapter's tables and their versioned migrations.
//!
//! Everything lives in one PostgreSQL schema (default `annals`), so several independent
//! annals stores can share a database. [`migrate`] brings a schema up to
//! [`MIGRATIONS`]: it takes a transaction-scoped advisory lock (so concurrent processes
//! migrate one at a time), creates the schema and the `migrations` table if missing, and
//! applies every migration newer than the last one recorded there, each in the same
//! transaction as its record. A schema migrated by a newer annals (a version this build does
//! not know) is refused rather than used.

use tokio_postgres::Client;

use super::error::from_client;
use crate::storage::StorageError;

/// One schema change: its number (1, 2, …, in order), a name, and its SQL, where `{schema}`
/// stands for the quoted schema name.
pub(crate) struct Migration {
    pub(crate) version: i32,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, in order. Append new ones; never edit a released one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events, head, snapshots",
        sql: r#"
        -- The last committed position. Every commit updates this one row first and holds its
        -- lock until it commits: commits are serialised, so positions follow commit order.
        CREATE TABLE {schema}.head (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            position bigint NOT NULL CHECK (position >= 0)
        );
        INSERT INTO {schema}.head (id, position) VALUES (true, 0);

        -- Ids are compared byte by byte (COLLATE "C"), as Rust compares strings, so
        -- list_aggregate_ids orders exactly as on every other adapter.
        CREATE TABLE {schema}.events (
            position bigint PRIMARY KEY CHECK (position >= 1),
            event_store_id text COLLATE "C" NOT NULL,
            aggregate_id text COLLATE "C" NOT NULL,
            version bigint NOT NULL CHECK (version >= 1),
            timestamp_ms bigint NOT NULL,
            event_type text NOT NULL,
            schema_version bigint NOT NULL CHECK (schema_version >= 0),
            payload bytea NOT NULL,
            metadata bytea NOT NULL,
            CONSTRAINT events_version_unique UNIQUE (event_store_id, aggregate_id, version)
        );
        -- list_aggregate_ids: aggregates by (first event's timestamp, id), per store.
        CREATE INDEX events_initial_event
            ON {schema}.events (event_store_id, timestamp_ms, aggregate_id)
            WHERE version = 1;

        CREATE TABLE {schema}.snapshots (
            event_store_id text COLLATE "C" NOT NULL,
            aggregate_id text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            reducer_version bigint NOT NULL,
            event_position bigint NOT NULL,
            event_checksum bigint NOT NULL,
            state bytea NOT NULL,
            checksum bigint NOT NULL,
            PRIMARY KEY (event_store_id, aggregate_id, version)
        );
    "#,
    },
    Migration {
        version: 2,
        name: "lifecycle rules",
        sql: r#"
        -- The lifecycle rules in force, written in the transaction that appends their
        -- $lifecycle event (which stays the record of what happened). One row per aggregate
        -- that was deleted, truncated or compacted:
        -- deleted: 0 no, 1 soft, 2 hard; versions below truncated_before are hidden;
        -- compacted_last_version and initial_timestamp_ms keep an aggregate's last version and
        -- first event's timestamp once compaction removed its first event, so its versions
        -- continue and listings keep it.
        CREATE TABLE {schema}.aggregate_rules (
            event_store_id text COLLATE "C" NOT NULL,
            aggregate_id text COLLATE "C" NOT NULL,
            deleted smallint NOT NULL DEFAULT 0 CHECK (deleted BETWEEN 0 AND 2),
            truncated_before bigint NOT NULL DEFAULT 0,
            compacted_last_version bigint,
            initial_timestamp_ms bigint,
            PRIMARY KEY (event_store_id, aggregate_id)
        );
        -- The retention rule of each store that has one.
        CREATE TABLE {schema}.retention (
            event_store_id text COLLATE "C" PRIMARY KEY,
            max_age_ms bigint CHECK (max_age_ms >= 0),
            max_count bigint CHECK (max_count >= 1)
        );
    "#,
    },
    Migration {
        version: 3,
        name: "personal keys",
        sql: r#"
        -- Crypto-shredding (feature `personal`): one data key per subject, as a 41-byte record
        -- (format byte 1, 8-byte key id, 32-byte secret). Forgetting overwrites the record
        -- with zeros, then deletes the row.
        CREATE TABLE {schema}.personal_keys (
            subject text COLLATE "C" PRIMARY KEY,
            record bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
    "#,
    },
];

/// The schema version this build writes and reads.
pub(crate) fn latest_version() -> i32 {
    EVENT_TABLES.latest_version()
}

/// Checks a schema name: 1 to 48 bytes of `[a-z0-9_]`, not starting with a digit, not `pg_…`.
/// Such a name needs no quoting, and `<schema>_log` is a valid notification channel.
pub(crate) fn check_schema_name(schema: &str) -> Result<(), StorageError> {
    let reason = if schema.is_empty() || schema.len() > 48 {
        Some("it must be 1 to 48 bytes long")
    } else if !schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Some("only lowercase ASCII letters, digits and '_' are allowed")
    } else if schema.as_bytes()[0].is_ascii_digit() {
        Some("it must not start with a digit")
    } else if schema.starts_with("pg_") {
        Some("names starting with pg_ are reserved by PostgreSQL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StorageError::InvalidConfiguration {
            reason: format!("invalid PostgreSQL schema name {schema:?}: {reason}"),
        }),
        None => Ok(()),
    }
}

/// Brings `schema` up to the latest migration; returns the version it was at before.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<i32, StorageError> {
    EVENT_TABLES.apply(client, schema).await
}

/// The adapter's own tables: history `migrations`, [`MIGRATIONS`].
const EVENT_TABLES: History = History {
    tables: "the event tables",
    table: "migrations",
    lock: "annals.migrate.",
    migrations: MIGRATIONS,
};

/// A list of migrations with its own history table: the adapter's tables and the runtime's
/// state tables evolve independently in one schema, each with one of these.
pub(crate) struct History {
    /// What the tables are, for the error refusing a newer schema.
    pub(crate) tables: &'static str,
    /// The history table, one row per applied migration.
    pub(crate) table: &'static str,
    /// The advisory lock's key prefix (the schema name follows).
    pub(crate) lock: &'static str,
    /// Every migration, numbered from 1 without gaps.
    pub(crate) migrations: &'static [Migration],
}

impl History {
    /// The version this build writes and reads.
    pub(crate) fn latest_version(&self) -> i32 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    /// Applies, in one transaction under a transaction-scoped advisory lock (so concurrent
    /// processes migrate one at a time), every migration newer than the last one recorded,
    /// each with its record; refuses a schema a newer build migrated. Returns the version the
    /// schema was at before.
    pub(crate) async fn apply(
        &self,
        client: &mut Client,
        schema: &str,
    ) -> Result<i32, StorageError> {
        const OP: &str = "migrate the schema";
        let err = |e| from_client(OP, e);
        let table = self.table;
        let tx = client.transaction().await.map_err(err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1 || $2))",
            &[&self.lock, &schema],
        )
        .await
        .map_err(err)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.{table} (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(err)?;
        let row = tx
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {schema}.{table}"),
                &[],
            )
            .await
            .map_err(err)?;
        let current: i32 = row.try_get(0).map_err(err)?;
        let latest = self.latest_version();
        if current > latest {
            return Err(StorageError::InvalidConfiguration {
                reason: format!(
                    "{} of schema {schema:?} are at migration {current}, newer than the \
                     {latest} this version of annals knows; upgrade annals",
                    self.tables
                ),
            });
        }
        for migration in self.migrations.iter().filter(|m| m.version > current) {
            tx.batch_execute(&migration.sql.replace("{schema}", schema))
                .await
                .map_err(err)?;
            tx.execute(
                &format!("INSERT INTO {schema}.{table} (version, name) VALUES ($1, $2)"),
                &[&migration.version, &migration.name],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i32::try_from(i + 1).unwrap(), "{}", m.name);
        }
    }

    #[test]
    fn schema_names_need_no_quoting() {
        for good in ["annals", "annals_test_1", "_x"] {
            assert!(check_schema_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Annals", "1x", "a-b", "a\"b", "pg_x", &"x".repeat(49)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }
}
