//! Connecting the tests to a PostgreSQL server, one fresh schema per test. Which server is
//! [`crate::server`]'s business; a test runs only once it has one (see [`crate::harness`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use annals::storage::{Limits, PostgresAdapter, PostgresAdapterBuilder};
use annals::testing::conformance::Fixture;
use tokio_postgres::NoTls;

use crate::harness::Availability;

/// The shared server's URL. The harness runs a test that needs a server only when there is
/// one, so in such a test this always returns it.
pub fn url() -> String {
    match crate::server::shared() {
        Availability::Ready(url) => url,
        Availability::Ignored(why) | Availability::Failed(why) => {
            panic!("this test needs a PostgreSQL server: {why}")
        }
    }
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "annals_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops its schema, with everything in it, when dropped (from any context: it uses a thread
/// of its own).
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test schema");
            runtime.block_on(async {
                let client = connect(&url).await;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}: {dropped:?}", self.schema);
        }
    }
}

/// The adapter settings every test starts from: small limits so the size checks stay fast.
pub fn builder(url: &str, schema: &str) -> PostgresAdapterBuilder {
    PostgresAdapter::builder(url)
        .schema(schema)
        .pool_size(8)
        .statement_timeout(Some(Duration::from_secs(20)))
        .limits(Limits {
            event_bytes_max: 256 << 10,
            group_bytes_max: 1 << 20,
            ..Limits::default()
        })
}

/// A connected adapter on a fresh schema, and the guard that drops the schema.
pub async fn adapter(url: &str) -> (PostgresAdapter, SchemaGuard) {
    let schema = fresh_schema();
    let guard = SchemaGuard {
        url: url.to_owned(),
        schema: schema.clone(),
    };
    let adapter = builder(url, &schema)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL adapter connects to {url}: {e}"));
    (adapter, guard)
}

/// What the conformance suite runs on: a fresh schema per check.
pub async fn conformance() -> Fixture {
    let (adapter, guard) = adapter(&url()).await;
    Fixture::with_guard(std::sync::Arc::new(adapter), guard)
}

/// A raw client on the test server, its connection driven on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// The store the tests write to.
pub const STORE: &str = "POKEMONS";

/// Event `version` of `aggregate_id` in [`STORE`]; its payload names it.
pub fn event(aggregate_id: &str, version: u64) -> annals::storage::AppendEvent {
    annals::storage::AppendEvent {
        event_store_id: STORE.to_owned(),
        event: annals::storage::EncodedEvent {
            aggregate_id: aggregate_id.to_owned(),
            version,
            timestamp: annals::Timestamp::from_unix_millis(1_700_000_000_000),
            event_type: "POKEMON_TRAINED".to_owned(),
            schema_version: 1,
            payload: format!("{aggregate_id}@{version}").into_bytes(),
            metadata: Vec::new(),
        },
    }
}

/// A builder for `schema` whose connections carry `application_name`, so a test can find (and
/// terminate) exactly its own server backends.
pub fn named_builder(url: &str, schema: &str, application_name: &str) -> PostgresAdapterBuilder {
    let mut config: tokio_postgres::Config = url.parse().expect("a valid test URL");
    config.application_name(application_name);
    PostgresAdapter::builder_with_config(config)
        .schema(schema)
        .pool_size(4)
}

/// Terminates every server backend whose `application_name` is `name` and that matches
/// `condition` (SQL on pg_stat_activity); returns how many.
pub async fn terminate(client: &tokio_postgres::Client, name: &str, condition: &str) -> i64 {
    client
        .query_one(
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid() AND ({condition})"
            ),
            &[&name],
        )
        .await
        .expect("terminate backends")
        .get(0)
}

/// Holds the adapter's head-row lock in an open transaction, as a commit in flight does: every
/// other commit of the schema queues behind it until it commits or rolls back.
pub async fn hold_head<'a>(
    client: &'a mut tokio_postgres::Client,
    schema: &str,
) -> (tokio_postgres::Transaction<'a>, i64) {
    let tx = client.transaction().await.expect("begin");
    let position: i64 = tx
        .query_one(
            &format!("UPDATE {schema}.head SET position = position + 1 RETURNING position"),
            &[],
        )
        .await
        .expect("take the head lock")
        .get(0);
    (tx, position)
}
