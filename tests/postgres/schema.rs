//! The schema the adapter owns: migrations are recorded and applied once, also by processes
//! connecting together; a schema from a newer annals is refused; the database itself enforces
//! one event per (store, aggregate, version); rows the adapter cannot read are typed errors.

use std::sync::Arc;

use annals::StorageError;
use annals::storage::{PostgresAdapter, StorageAdapter};

use crate::fixture::{self, STORE, SchemaGuard, event};
use crate::harness::{Needs, trials};

/// The tests of this module.
pub fn trials() -> Vec<libtest_mimic::Trial> {
    trials!(Needs::Server, threads = 2;
        adapters_connecting_together_migrate_once_and_a_newer_schema_is_refused,
        the_database_enforces_one_event_per_version,
        a_row_the_adapter_cannot_read_is_a_typed_error,
    )
}

async fn adapters_connecting_together_migrate_once_and_a_newer_schema_is_refused() {
    let url = fixture::url();
    let schema = fixture::fresh_schema();
    let _guard = SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let connecting: Vec<_> = (0..4)
        .map(|_| {
            let builder = fixture::builder(&url, &schema);
            tokio::spawn(builder.connect())
        })
        .collect();
    let mut adapters = Vec::new();
    for c in connecting {
        adapters.push(c.await.expect("task").expect("every adapter connects"));
    }
    let raw = fixture::connect(&url).await;
    let recorded: Vec<i32> = raw
        .query(
            &format!("SELECT version FROM {schema}.migrations ORDER BY version"),
            &[],
        )
        .await
        .expect("migrations")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> = (1..=PostgresAdapter::schema_version()).collect();
    assert_eq!(recorded, expected, "each migration recorded once");

    raw.execute(
        &format!("INSERT INTO {schema}.migrations (version, name) VALUES (1000, 'future')"),
        &[],
    )
    .await
    .expect("record a future migration");
    let refused = fixture::builder(&url, &schema).connect().await;
    assert!(
        matches!(&refused, Err(StorageError::InvalidConfiguration { reason }) if reason.contains("1000")),
        "a schema from a newer annals is refused: {refused:?}"
    );
}

async fn the_database_enforces_one_event_per_version() {
    let url = fixture::url();
    let (adapter, guard) = fixture::adapter(&url).await;
    let schema = &guard.schema;
    adapter.push_event(event("ditto", 1)).await.expect("push");
    let raw = fixture::connect(&url).await;
    let duplicate = raw
        .execute(
            &format!(
                "INSERT INTO {schema}.events (position, event_store_id, aggregate_id, version, \
                 timestamp_ms, event_type, schema_version, payload, metadata) \
                 VALUES (99, '{STORE}', 'ditto', 1, 0, 'T', 1, '', '')"
            ),
            &[],
        )
        .await
        .expect_err("a second event at version 1 is refused by the database");
    assert_eq!(
        duplicate.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
}

async fn a_row_the_adapter_cannot_read_is_a_typed_error() {
    let url = fixture::url();
    let (adapter, guard) = fixture::adapter(&url).await;
    let adapter: Arc<dyn StorageAdapter> = Arc::new(adapter);
    let schema = &guard.schema;
    let raw = fixture::connect(&url).await;
    // Written behind the adapter's back: a schema version no u32 holds.
    raw.batch_execute(&format!(
        "UPDATE {schema}.head SET position = 1;
         INSERT INTO {schema}.events (position, event_store_id, aggregate_id, version,
             timestamp_ms, event_type, schema_version, payload, metadata)
         VALUES (1, '{STORE}', 'glitch', 1, 0, 'T', 5000000000, '', '')"
    ))
    .await
    .expect("write a bad row");
    let read = adapter
        .get_events(STORE, "glitch", &Default::default())
        .await;
    assert!(
        matches!(&read, Err(StorageError::Database { code: None, .. })),
        "get_events: {read:?}"
    );
    let log = adapter.read_log(1, 10).await;
    assert!(
        matches!(&log, Err(StorageError::Database { code: None, .. })),
        "read_log: {log:?}"
    );
}
