//! The PostgreSQL state store's tables and their versioned migrations.
//!
//! The tables live in the schema of the [`PostgresAdapter`](crate::storage::PostgresAdapter)
//! whose events they follow, beside the adapter's own, with a migration history of their own
//! (`state_migrations`), so the adapter and the state store evolve independently. [`migrate`]
//! runs them with the adapter's migration runner (`storage::postgres::History`): under a
//! transaction-scoped advisory lock, every migration newer than the last recorded in one
//! transaction with its record, and a schema migrated by a newer annals refused with
//! [`StorageError::InvalidConfiguration`], untouched.
//! Migration 1 holds the runtime's state; migration 2 the tables of consumer groups
//! (`runtime/lease/table.rs`).
//!
//! Names and keys are compared byte by byte (`COLLATE "C"`), as Rust compares strings, so a
//! key-value view's prefix scan, and every listing, orders as on redb. Instants are signed
//! Unix milliseconds; those that processes must agree on (a queue message's visibility) are
//! taken from the database's clock.

use tokio_postgres::Client;

use crate::storage::StorageError;
use crate::storage::postgres::{History, Migration};

/// The state tables' migrations, with their own history table (`state_migrations`).
const STATE_TABLES: History = History {
    tables: "the state tables",
    table: "state_migrations",
    lock: "annals.migrate_state.",
    migrations: MIGRATIONS,
};

/// Every migration, in order. Append new ones; never edit a released one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "checkpoints, key-value views, action dead letters, queues",
        sql: r#"
        -- How far each durable consumer got: the next position it delivers.
        CREATE TABLE {schema}.consumers (
            name text COLLATE "C" PRIMARY KEY,
            next_position bigint NOT NULL CHECK (next_position >= 0)
        );

        -- Key-value views: the active version of each, and every version's rows.
        CREATE TABLE {schema}.view_versions (
            view text COLLATE "C" PRIMARY KEY,
            version bigint NOT NULL CHECK (version >= 1)
        );
        CREATE TABLE {schema}.view_rows (
            view text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            tbl text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            value bytea NOT NULL,
            PRIMARY KEY (view, version, tbl, key)
        );

        -- Events an action gave up on; a pending retry request in its own column.
        CREATE TABLE {schema}.action_dead_letters (
            action text COLLATE "C" NOT NULL,
            position bigint NOT NULL,
            event_store_id text NOT NULL,
            aggregate_id text NOT NULL,
            version bigint NOT NULL,
            event_type text NOT NULL,
            error text NOT NULL,
            attempts bigint NOT NULL,
            failed_at_ms bigint NOT NULL,
            retry_requested_at_ms bigint,
            PRIMARY KEY (action, position)
        );

        -- Durable queues: counters, messages (waiting or in flight) and dead letters.
        CREATE TABLE {schema}.queue_meta (
            queue text COLLATE "C" PRIMARY KEY,
            next_id bigint NOT NULL CHECK (next_id >= 1),
            len bigint NOT NULL CHECK (len >= 0)
        );
        CREATE TABLE {schema}.queue_messages (
            queue text COLLATE "C" NOT NULL,
            id bigint NOT NULL,
            visible_at_ms bigint NOT NULL,
            receive_count integer NOT NULL CHECK (receive_count >= 0),
            enqueued_at_ms bigint NOT NULL,
            last_error text,
            body bytea NOT NULL,
            PRIMARY KEY (queue, id)
        );
        -- A receive's "is anything visible, and when is the next one": by queue and time.
        CREATE INDEX queue_messages_visible ON {schema}.queue_messages (queue, visible_at_ms);
        CREATE TABLE {schema}.queue_dead_letters (
            queue text COLLATE "C" NOT NULL,
            id bigint NOT NULL,
            visible_at_ms bigint NOT NULL,
            receive_count integer NOT NULL CHECK (receive_count >= 0),
            enqueued_at_ms bigint NOT NULL,
            last_error text,
            body bytea NOT NULL,
            PRIMARY KEY (queue, id)
        );
    "#,
    },
    Migration {
        version: 2,
        name: "consumer groups: members and leases",
        sql: crate::runtime::lease::MIGRATION,
    },
];

/// Brings the state tables of `schema` up to the latest migration; returns the version they
/// were at before.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<i32, StorageError> {
    STATE_TABLES.apply(client, schema).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i32::try_from(i + 1).unwrap(), "{}", m.name);
        }
    }
}
