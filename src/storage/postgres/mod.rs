//! The PostgreSQL storage adapter (feature `postgres`): events in a database server, shared by
//! any number of processes.
//!
//! [`PostgresAdapter`] keeps everything in one schema (default `annals`) that it creates and
//! migrates itself (versioned migrations): an `events` table with a primary key on the global
//! position and a unique constraint on (store, aggregate, version), a one-row `head` table
//! holding the last committed position, and a `snapshots` table ([`PostgresSnapshots`]).
//!
//! # Commits and the global order
//! Appends go through one committer task per adapter, which combines the appends that queue
//! up while a transaction is in flight into the next one (group commit: one WAL flush for
//! many appends; see `group_commit.rs`). A batch transaction first locks the head row
//! (`SELECT position FROM head FOR UPDATE`), held until the transaction ends, so transactions
//! are serialised: one holding positions `p..q` is visible before any later one can take
//! `q + 1`. This is what makes reading the log by position gap-free — a reader never sees
//! position 7 while 6 is still uncommitted, the stale-sequence problem of event stores that
//! take numbers from a sequence before commit. Inside the lock it reads the latest committed
//! versions and decides each append of the batch in turn, against those and the appends
//! accepted before it in the batch: a conflicting append is refused alone, takes no position,
//! and the others commit. The accepted events are inserted with the head moved past them and
//! `NOTIFY <schema>_log, '<last position>'`, in one statement; the unique constraint backs the
//! version check up in the database itself.
//!
//! The price of the order is one transaction at a time per schema; batching makes each carry
//! every append that waited for it. See `docs/postgres.md` for figures and tuning.
//!
//! # Following commits
//! [`watch_log`](StorageAdapter::watch_log) is fed by this process's own commits and by a
//! listener that `LISTEN`s on the schema's channel, so commits of other processes
//! wake subscriptions without polling.
//!
//! # Failures
//! A lost connection is [`StorageError::Unavailable`], a statement timeout
//! [`StorageError::Timeout`], any other refusal [`StorageError::Database`]. Reads are retried
//! once on a fresh connection when the connection was lost. When the connection of a batch
//! transaction is lost mid-commit, every append of the batch has an unknown outcome and gets
//! `Unavailable`; pushing it again is safe (see [`StorageError::Unavailable`]). Any other
//! failure of a batch (a statement timeout) is reported to each of its appends; a refusal of
//! the whole transaction by the server retries each append alone, so that only an offending
//! one fails.

pub(crate) mod error;
mod group_commit;
#[cfg(feature = "personal")]
mod key_table;
mod lifecycle;
mod notify;
mod schema;
mod snapshot_table;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

#[cfg(feature = "personal")]
pub use key_table::PostgresKeys;
pub use snapshot_table::PostgresSnapshots;

/// For the runtime's PostgreSQL state store, which connects with the adapter's settings.
pub(crate) use self::error::{bad_row as bad_state_row, from_client as from_state_client};
pub(crate) use self::schema::{History, Migration, check_schema_name};
/// The client crate, for [`PostgresAdapter::builder_with_config`]'s `Config` without a
/// separate (and possibly mismatched) dependency.
pub use tokio_postgres;

use self::error::{bad_row, from_client, from_pool, is_connection_lost};
use self::group_commit::GroupCommit;
use self::notify::Listener;
use super::lifecycle::LifecycleRecord;
use super::{
    AggregateIdEntry, AggregateIdsQuery, AppendEvent, CompactionReport, DeleteMode, EncodedEvent,
    GetEventsOptions, LIFECYCLE_STORE, Limits, LoggedEvent, Position, Retention, SnapshotStorage,
    StorageAdapter, StorageError, StoredEvent, Timestamp,
};

/// The schema used when none is configured.
pub const DEFAULT_SCHEMA: &str = "annals";

/// Configures and connects a [`PostgresAdapter`]: see [`PostgresAdapter::builder`].
#[derive(Debug, Clone)]
pub struct PostgresAdapterBuilder {
    config: Result<tokio_postgres::Config, String>,
    schema: String,
    pool_size: usize,
    statement_timeout: Option<Duration>,
    connect_timeout: Duration,
    limits: Limits,
    #[cfg(feature = "personal")]
    key_cache_ttl: Duration,
}

/// How long a PostgreSQL adapter trusts a cached key (or the absence of one) by default: a
/// forget in another process takes effect here within this time.
#[cfg(feature = "personal")]
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(2);

impl PostgresAdapterBuilder {
    /// The PostgreSQL schema holding the adapter's tables (default [`DEFAULT_SCHEMA`]): 1 to
    /// 48 bytes of lowercase ASCII letters, digits and `_`, not starting with a digit or `pg_`.
    /// Adapters on different schemas of one database are fully independent.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Most connections the adapter's pool opens (default 16). Two more are used: one that
    /// listens for commits, one for snapshots.
    ///
    /// Appends use one of them at a time: they are combined into one transaction at a time
    /// (see the [module docs](self#commits-and-the-global-order)); the others serve
    /// reads.
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections;
        self
    }

    /// The server-side `statement_timeout` of the adapter's connections (default 30 s; `None`
    /// keeps the server's setting). A statement that runs longer, an append waiting for other
    /// commits included, is cancelled with [`StorageError::Timeout`].
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long connecting, and waiting for a pooled connection, may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The limits the adapter enforces (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long the adapter trusts a cached key, or the absence of one (default
    /// [`DEFAULT_KEY_CACHE_TTL`], feature `personal`). Keys are shared by every process on
    /// the schema: a subject forgotten by another process reads as forgotten here at most this
    /// long after that forget returned. A forget through this adapter takes effect here at once.
    #[cfg(feature = "personal")]
    pub fn key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.key_cache_ttl = ttl;
        self
    }

    /// Connects, creates or migrates the schema, and starts listening for commits. Must be
    /// called inside a tokio runtime, which then runs the adapter's background tasks.
    pub async fn connect(self) -> Result<PostgresAdapter, StorageError> {
        let mut config = self
            .config
            .map_err(|reason| StorageError::InvalidConfiguration { reason })?;
        schema::check_schema_name(&self.schema)?;
        if self.pool_size == 0 {
            return Err(StorageError::InvalidConfiguration {
                reason: "a PostgreSQL pool needs at least one connection".to_owned(),
            });
        }
        if config.get_application_name().is_none() {
            config.application_name("annals");
        }
        config.connect_timeout(self.connect_timeout);
        if let Some(timeout) = self.statement_timeout {
            let setting = format!("-c statement_timeout={}", timeout.as_millis().max(1));
            let options = match config.get_options() {
                Some(options) => format!("{options} {setting}"),
                None => setting,
            };
            config.options(&options);
        }
        let schema = self.schema;

        let (mut client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| from_client("connect", e))?;
        let driver = tokio::spawn(connection);
        schema::migrate(&mut client, &schema).await?;
        let statements = Statements::new(&schema);
        let head = read_head(&client, &statements.head).await?;
        drop(client);
        let _ = driver.await;

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.connect_timeout))
            .create_timeout(Some(self.connect_timeout))
            .build()
            .map_err(|e| StorageError::InvalidConfiguration {
                reason: format!("the PostgreSQL pool: {e}"),
            })?;
        let published = Arc::new(watch::Sender::new(head));
        let mut listener_config = config.clone();
        // Notice a silently dead server within a minute, not after the OS default of hours.
        listener_config.keepalives_idle(Duration::from_secs(30));
        let listener = Listener::spawn(listener_config, &schema, Arc::clone(&published));
        let snapshots = PostgresSnapshots::start(config.clone(), &schema)?;
        #[cfg(feature = "personal")]
        let keys = super::Keys::new(
            Box::new(PostgresKeys::start(config.clone(), &schema)?),
            Some(self.key_cache_ttl),
        );
        let writer = GroupCommit::spawn(pool.clone(), &schema, Arc::clone(&published));
        Ok(PostgresAdapter {
            config,
            pool,
            writer,
            statements,
            limits: self.limits,
            published,
            snapshots,
            #[cfg(feature = "personal")]
            keys,
            _listener: listener,
            lifecycle_sql: lifecycle::LifecycleSql::new(&schema),
            channel: notify::channel(&schema),
            schema,
        })
    }
}

/// A [`StorageAdapter`] on a PostgreSQL server: see the [module docs](self).
///
/// ```no_run
/// # async fn example() -> Result<(), annals::StorageError> {
/// use std::sync::Arc;
/// use annals::storage::PostgresAdapter;
///
/// let adapter = PostgresAdapter::builder("postgres://annals@127.0.0.1/annals")
///     .schema("pokemons")
///     .pool_size(8)
///     .connect()
///     .await?;
/// let adapter = Arc::new(adapter); // hand it to EventStore::builder(...).storage_adapter
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresAdapter {
    /// The connection settings, timeouts included: what the runtime's state store on the same
    /// database connects with.
    config: tokio_postgres::Config,
    pool: Pool,
    /// Combines concurrent appends into batch transactions.
    writer: GroupCommit,
    schema: String,
    statements: Statements,
    limits: Limits,
    published: Arc<watch::Sender<Position>>,
    snapshots: PostgresSnapshots,
    /// Subjects' data keys, in `personal_keys` (feature `personal`).
    #[cfg(feature = "personal")]
    keys: super::Keys,
    _listener: Listener,
    /// The lifecycle rules' SQL.
    lifecycle_sql: lifecycle::LifecycleSql,
    /// The schema's notification channel, for lifecycle commits.
    channel: String,
}

/// The adapter's SQL, with the schema name filled in.
#[derive(Debug)]
struct Statements {
    head: String,
    read_events: String,
    read_events_reverse: String,
    read_log: String,
    scan_forward: String,
    scan_reverse: String,
    scan_forward_from: String,
    scan_reverse_from: String,
}

const EVENT_COLUMNS: &str =
    "position, aggregate_id, version, timestamp_ms, event_type, schema_version, payload, metadata";

impl Statements {
    fn new(schema: &str) -> Self {
        // The aggregate's events within the suffix its lifecycle rules leave ($6: now).
        let visible = lifecycle::visibility_sql(
            schema,
            "(VALUES ($1::text, $2::text)) AS k(s, a)",
            "$6::bigint",
        );
        let read_events = |order: &str| {
            format!(
                "WITH vis AS ({visible}) SELECT {EVENT_COLUMNS} FROM {schema}.events, vis \
                 WHERE event_store_id = $1 AND aggregate_id = $2 AND vis.deleted = 0 \
                 AND version BETWEEN GREATEST($3, vis.first) AND $4 ORDER BY version {order} \
                 LIMIT $5"
            )
        };
        let scan = |from: Option<&str>, order: &str| {
            let (cursor, limit) = match from {
                Some(cmp) => (
                    format!("AND (timestamp_ms, aggregate_id) {cmp} ($4, $5)"),
                    "$6",
                ),
                None => (String::new(), "$4"),
            };
            // First events, and those of aggregates whose first event compaction removed;
            // deleted aggregates left out.
            format!(
                "SELECT timestamp_ms, aggregate_id FROM (SELECT timestamp_ms, aggregate_id \
                 FROM {schema}.events WHERE event_store_id = $1 AND version = 1 \
                 UNION ALL SELECT initial_timestamp_ms, aggregate_id \
                 FROM {schema}.aggregate_rules WHERE event_store_id = $1 \
                 AND initial_timestamp_ms IS NOT NULL) f \
                 WHERE timestamp_ms BETWEEN $2 AND $3 {cursor} AND NOT EXISTS (SELECT 1 \
                 FROM {schema}.aggregate_rules r WHERE r.event_store_id = $1 \
                 AND r.aggregate_id = f.aggregate_id AND r.deleted > 0) \
                 ORDER BY timestamp_ms {order}, aggregate_id {order} LIMIT {limit}"
            )
        };
        Statements {
            head: format!("SELECT position FROM {schema}.head"),
            read_events: read_events("ASC"),
            read_events_reverse: read_events("DESC"),
            // With whether a lifecycle rule may hide the event (then its visibility is read).
            read_log: format!(
                "SELECT event_store_id, {EVENT_COLUMNS}, EXISTS (SELECT 1 \
                 FROM {schema}.aggregate_rules r WHERE r.event_store_id = e.event_store_id \
                 AND r.aggregate_id = e.aggregate_id \
                 AND (r.deleted > 0 OR r.truncated_before > 1)) \
                 OR EXISTS (SELECT 1 FROM {schema}.retention t \
                 WHERE t.event_store_id = e.event_store_id) \
                 FROM {schema}.events e WHERE position >= $1 ORDER BY position LIMIT $2"
            ),
            scan_forward: scan(None, "ASC"),
            scan_reverse: scan(None, "DESC"),
            scan_forward_from: scan(Some(">="), "ASC"),
            scan_reverse_from: scan(Some("<="), "DESC"),
        }
    }
}

impl PostgresAdapter {
    /// A builder connecting to `url`, a libpq-style connection string or URL
    /// (`postgres://user:password@host:port/database` or `host=… user=… dbname=…`).
    pub fn builder(url: &str) -> PostgresAdapterBuilder {
        let config = url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| format!("invalid PostgreSQL connection string: {e}"));
        Self::builder_for(config)
    }

    /// A builder connecting with a ready [`tokio_postgres::Config`].
    pub fn builder_with_config(config: tokio_postgres::Config) -> PostgresAdapterBuilder {
        Self::builder_for(Ok(config))
    }

    fn builder_for(config: Result<tokio_postgres::Config, String>) -> PostgresAdapterBuilder {
        PostgresAdapterBuilder {
            config,
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 16,
            statement_timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            #[cfg(feature = "personal")]
            key_cache_ttl: DEFAULT_KEY_CACHE_TTL,
        }
    }

    /// Connects to `url` with the default settings: see [`builder`](Self::builder).
    pub async fn connect(url: &str) -> Result<PostgresAdapter, StorageError> {
        Self::builder(url).connect().await
    }

    /// The PostgreSQL schema holding the adapter's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The settings the adapter connects with (for the runtime's state store).
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The adapter's snapshots (also reachable as [`StorageAdapter::snapshots`]).
    pub fn snapshot_storage(&self) -> &PostgresSnapshots {
        &self.snapshots
    }

    /// The schema migration this build brings every schema to.
    pub fn schema_version() -> i32 {
        schema::latest_version()
    }

    async fn client(
        &self,
        operation: &'static str,
    ) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(|e| from_pool(operation, e))
    }

    /// What its lifecycle operations commit with.
    fn lifecycle_commit(&self) -> lifecycle::Commit<'_> {
        lifecycle::Commit {
            pool: &self.pool,
            sql: &self.lifecycle_sql,
            channel: &self.channel,
            published: &self.published,
        }
    }

    /// What the lifecycle rules leave of each (store, aggregate) pair at `now`: `None` when
    /// it is deleted, else its first visible version.
    async fn visibility(
        &self,
        pairs: &[(&str, &str)],
        now: Timestamp,
    ) -> Result<lifecycle::Visibility, StorageError> {
        if pairs.is_empty() {
            return Ok(Default::default());
        }
        let (stores, aggregates): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
        let now = now.unix_millis();
        let rows = self
            .read(
                "read lifecycle rules",
                &self.lifecycle_sql.visibility,
                &[&stores, &aggregates, &now],
            )
            .await?;
        lifecycle::decode_visibility(&rows)
    }

    /// Runs one read query, retried once on a new connection if the connection was lost (a
    /// read is idempotent; the pool drops the broken connection).
    async fn read(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StorageError> {
        let attempt = || async {
            let client = self.client(operation).await?;
            let statement = client
                .prepare_cached(sql)
                .await
                .map_err(|e| from_client(operation, e))?;
            client
                .query(&statement, params)
                .await
                .map_err(|e| from_client(operation, e))
        };
        match attempt().await {
            Err(e) if is_connection_lost(&e) => attempt().await,
            other => other,
        }
    }
}

async fn read_head(client: &tokio_postgres::Client, sql: &str) -> Result<Position, StorageError> {
    const OP: &str = "read the head position";
    let head: i64 = client
        .query_one(sql, &[])
        .await
        .map_err(|e| from_client(OP, e))?
        .try_get(0)
        .map_err(|e| bad_row(OP, e.to_string()))?;
    u64::try_from(head).map_err(|_| bad_row(OP, "a negative head position"))
}

/// Decodes the event columns ([`EVENT_COLUMNS`]) starting at column `at`.
fn decode_event(
    operation: &'static str,
    row: &tokio_postgres::Row,
    at: usize,
) -> Result<StoredEvent, StorageError> {
    let bad = |e: tokio_postgres::Error| bad_row(operation, e.to_string());
    let unsigned = |i: usize, what: &str| -> Result<u64, StorageError> {
        let v: i64 = row.try_get(at + i).map_err(bad)?;
        u64::try_from(v).map_err(|_| bad_row(operation, format!("a negative {what}: {v}")))
    };
    let schema_version = unsigned(5, "schema version")?;
    Ok(StoredEvent {
        position: unsigned(0, "position")?,
        event: EncodedEvent {
            aggregate_id: row.try_get(at + 1).map_err(bad)?,
            version: unsigned(2, "version")?,
            timestamp: Timestamp::from_unix_millis(row.try_get(at + 3).map_err(bad)?),
            event_type: row.try_get(at + 4).map_err(bad)?,
            schema_version: u32::try_from(schema_version).map_err(|_| {
                bad_row(
                    operation,
                    format!("schema version {schema_version} out of range"),
                )
            })?,
            payload: row.try_get(at + 6).map_err(bad)?,
            metadata: row.try_get(at + 7).map_err(bad)?,
        },
    })
}

/// A `LIMIT` parameter: usize clamped to PostgreSQL's bigint.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl StorageAdapter for PostgresAdapter {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn snapshots(&self) -> Option<&dyn SnapshotStorage> {
        Some(&self.snapshots)
    }

    #[cfg(feature = "personal")]
    fn keys(&self) -> Option<&super::Keys> {
        Some(&self.keys)
    }

    async fn read_events(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        options: &GetEventsOptions,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        const OP: &str = "read events";
        let Ok(min) = i64::try_from(options.min_version.unwrap_or(1)) else {
            return Ok(Vec::new()); // no stored version is that high
        };
        let max = options
            .max_version
            .map_or(i64::MAX, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let limit = sql_limit(options.limit.unwrap_or(usize::MAX));
        let now = Timestamp::now().unix_millis();
        let sql = if options.reverse {
            &self.statements.read_events_reverse
        } else {
            &self.statements.read_events
        };
        let rows = self
            .read(
                OP,
                sql,
                &[&event_store_id, &aggregate_id, &min, &max, &limit, &now],
            )
            .await?;
        rows.iter().map(|row| decode_event(OP, row, 0)).collect()
    }

    #[tracing::instrument(
        name = "annals.commit",
        level = "debug",
        skip_all,
        fields(events = events.len()),
    )]
    async fn append(&self, events: Vec<AppendEvent>) -> Result<Vec<Position>, StorageError> {
        self.writer.append(events).await
    }

    async fn scan_aggregate_ids(
        &self,
        event_store_id: &str,
        query: &AggregateIdsQuery,
    ) -> Result<Vec<AggregateIdEntry>, StorageError> {
        const OP: &str = "list aggregate ids";
        let after = query
            .initial_event_after
            .map_or(i64::MIN, Timestamp::unix_millis);
        let before = query
            .initial_event_before
            .map_or(i64::MAX, Timestamp::unix_millis);
        // The cursor is compared inclusively, and cut at a NUL (which PostgreSQL text cannot
        // hold and no stored id contains): the rows this admits beyond the exact bound are
        // removed below by `query.admits`, so one more row is fetched.
        let limit = query
            .scan_limit()
            .map_or(i64::MAX, |l| sql_limit(l).saturating_add(1));
        let rows = match &query.after_entry {
            Some(entry) => {
                let cursor_ms = entry.initial_event_timestamp.unix_millis();
                let cursor_id = entry.aggregate_id.split('\0').next().unwrap_or_default();
                let sql = if query.reverse {
                    &self.statements.scan_reverse_from
                } else {
                    &self.statements.scan_forward_from
                };
                let params: [&(dyn ToSql + Sync); 6] = [
                    &event_store_id,
                    &after,
                    &before,
                    &cursor_ms,
                    &cursor_id,
                    &limit,
                ];
                self.read(OP, sql, &params).await?
            }
            None => {
                let sql = if query.reverse {
                    &self.statements.scan_reverse
                } else {
                    &self.statements.scan_forward
                };
                self.read(OP, sql, &[&event_store_id, &after, &before, &limit])
                    .await?
            }
        };
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let bad = |e: tokio_postgres::Error| bad_row(OP, e.to_string());
            let entry = AggregateIdEntry {
                initial_event_timestamp: Timestamp::from_unix_millis(row.try_get(0).map_err(bad)?),
                aggregate_id: row.try_get(1).map_err(bad)?,
            };
            if query.admits(&entry) {
                entries.push(entry);
            }
        }
        if let Some(limit) = query.scan_limit() {
            entries.truncate(limit);
        }
        Ok(entries)
    }

    async fn read_log(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StorageError> {
        const OP: &str = "read the log";
        let now = Timestamp::now();
        let mut from = i64::try_from(from).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        // Hidden events are skipped, reading on so that fewer than `limit` events means the
        // end of the log.
        while out.len() < limit {
            let want = limit - out.len();
            let rows = self
                .read(OP, &self.statements.read_log, &[&from, &sql_limit(want)])
                .await?;
            let full = rows.len() >= want;
            let mut batch = Vec::with_capacity(rows.len());
            let mut ruled = Vec::with_capacity(rows.len());
            for row in &rows {
                let bad = |e: tokio_postgres::Error| bad_row(OP, e.to_string());
                let StoredEvent { position, event } = decode_event(OP, row, 1)?;
                batch.push(LoggedEvent {
                    event_store_id: row.try_get(0).map_err(bad)?,
                    position,
                    event,
                });
                ruled.push(row.try_get::<_, bool>(9).map_err(bad)?);
            }
            let Some(last) = batch.last() else { break };
            from = i64::try_from(last.position + 1).unwrap_or(i64::MAX);
            // Only events a rule may hide need their aggregate's visibility read.
            let mut pairs: Vec<(&str, &str)> = batch
                .iter()
                .zip(&ruled)
                .filter(|(e, ruled)| **ruled && e.event_store_id != LIFECYCLE_STORE)
                .map(|(e, _)| (e.event_store_id.as_str(), e.event.aggregate_id.as_str()))
                .collect();
            pairs.sort_unstable();
            pairs.dedup();
            let visibility = self.visibility(&pairs, now).await?;
            out.extend(batch.into_iter().filter(|e| {
                let key = (e.event_store_id.clone(), e.event.aggregate_id.clone());
                match visibility.get(&key) {
                    Some(None) => false,
                    Some(Some(first)) => e.event.version >= *first,
                    None => true,
                }
            }));
            if !full {
                break;
            }
        }
        Ok(out)
    }

    async fn delete_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        mode: DeleteMode,
    ) -> Result<Position, StorageError> {
        let record =
            LifecycleRecord::checked_delete(&self.limits, event_store_id, aggregate_id, mode)?;
        lifecycle::record(&self.lifecycle_commit(), event_store_id, record).await
    }

    async fn restore_aggregate(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
    ) -> Result<Position, StorageError> {
        let record = LifecycleRecord::checked_restore(&self.limits, event_store_id, aggregate_id)?;
        lifecycle::record(&self.lifecycle_commit(), event_store_id, record).await
    }

    async fn truncate_before(
        &self,
        event_store_id: &str,
        aggregate_id: &str,
        version: u64,
    ) -> Result<Position, StorageError> {
        let record =
            LifecycleRecord::checked_truncate(&self.limits, event_store_id, aggregate_id, version)?;
        lifecycle::record(&self.lifecycle_commit(), event_store_id, record).await
    }

    async fn set_retention(
        &self,
        event_store_id: &str,
        retention: Retention,
    ) -> Result<Position, StorageError> {
        let record = LifecycleRecord::checked_retention(&self.limits, event_store_id, retention)?;
        lifecycle::record(&self.lifecycle_commit(), event_store_id, record).await
    }

    async fn retention(&self, event_store_id: &str) -> Result<Retention, StorageError> {
        self.limits.check_event_store_id(event_store_id)?;
        let rows = self
            .read(
                "read the retention rule",
                &self.lifecycle_sql.retention_of,
                &[&event_store_id],
            )
            .await?;
        lifecycle::decode_retention(&rows)
    }

    /// Deletes the rows the rules hide; the others keep their positions.
    async fn compact(&self) -> Result<CompactionReport, StorageError> {
        lifecycle::compact(&self.pool, &self.lifecycle_sql).await
    }

    fn watch_log(&self) -> watch::Receiver<Position> {
        self.published.subscribe()
    }
}
