//! SQL views: tables in SQLite, written by handlers with SQL, read with any query (joins
//! included). Feature `sql` (opt-in: not in the default build).
//!
//! Each view version is one SQLite file in a directory the application chooses (beside the
//! store, say): `{dir}/{name}.v{version}.sqlite3`, in WAL mode with `synchronous=FULL`. The
//! file holds the view's tables (created by its [schema](SqlViewBuilder::schema) when the file
//! is new) and the row `annals_view`: the view's checkpoint and whether this version is
//! active. A batch of events and the checkpoint row commit in one SQLite transaction.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::{sync::Arc, time::Duration};
//! use annals::{EventDetail, EventStore, NewEvent, storage::InMemoryAdapter, view::SqlView};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Appeared { pub name: String }
//! # annals::events! { pub enum PokemonEvent { Appeared(Appeared) = "POKEMON_APPEARED" } }
//!
//! let adapter = Arc::new(InMemoryAdapter::new());
//! let pokemons = EventStore::builder("POKEMONS", |_, _: &EventDetail<PokemonEvent>| ())
//!     .storage_adapter(adapter.clone())
//!     .build()?;
//! let dir = tempfile::tempdir()?;
//! let names = SqlView::builder("pokemon-names", 1)
//!     .schema("CREATE TABLE names (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
//!     .on(&pokemons, |db: &rusqlite::Connection, event: &EventDetail<PokemonEvent>| {
//!         let PokemonEvent::Appeared(appeared) = &event.event;
//!         db.execute("INSERT INTO names VALUES (?1, ?2)", (&event.aggregate_id, &appeared.name))
//!             .map(|_| ())
//!     })
//!     .open(dir.path())?;
//! let runner = names.run(adapter);
//!
//! let appeared = PokemonEvent::Appeared(Appeared { name: "Pikachu".into() });
//! let pushed = pokemons.push_event(NewEvent::new("p1", 1, appeared), Default::default()).await?;
//! names.wait_for(pushed.position, Duration::from_secs(10)).await?;
//! let name: String =
//!     names.query(|db| db.query_row("SELECT name FROM names WHERE id = 'p1'", [], |r| r.get(0)))?;
//! assert_eq!(name, "Pikachu");
//! runner.stop().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::error::{BoxError, ViewError};
use super::handler::{Deletes, Failure, Routes, decoder, guarded};
use super::id::ViewId;
use super::progress::Progress;
use super::runner::{Backend, Refused, Start, ViewRunner};
use super::status::ViewStatus;
use crate::model::event::{EventDetail, Events};
use crate::model::event_store::EventStore;
use crate::runtime::subscription::Filter;
use crate::storage::{DeleteMode, LIFECYCLE_STORE, LoggedEvent, Position, StorageAdapter};

/// How long a connection waits for a lock held by another before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const META_TABLE: &str = "CREATE TABLE annals_view (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    view TEXT NOT NULL,
    version INTEGER NOT NULL,
    next_position INTEGER NOT NULL,
    active INTEGER NOT NULL
)";

type SqlHandler = Box<dyn Fn(&Connection, &LoggedEvent) -> Result<(), Failure> + Send + Sync>;

/// Configures a [`SqlView`]: its schema and handlers, then [`open`](Self::open).
pub struct SqlViewBuilder {
    name: String,
    version: u64,
    schema: String,
    handlers: Vec<(Filter, SqlHandler)>,
    routes: Routes,
}

impl std::fmt::Debug for SqlViewBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlViewBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

impl SqlViewBuilder {
    /// SQL statements creating the view's tables and indexes, run once, when this version's
    /// file is created (in the transaction that creates it). Repeated calls append.
    pub fn schema(mut self, sql: impl AsRef<str>) -> Self {
        self.schema.push_str(sql.as_ref());
        self.schema.push_str(";\n");
        self
    }

    /// Handles every event of `store`, decoded (and upcast) into its typed form. The handler
    /// writes through the connection, inside the batch's transaction.
    pub fn on<E, S, H, Err>(mut self, store: &EventStore<E, S>, handler: H) -> Self
    where
        E: Events,
        S: Clone + Send + Sync + 'static,
        H: Fn(&Connection, &EventDetail<E>) -> Result<(), Err> + Send + Sync + 'static,
        Err: Into<BoxError>,
    {
        let decode = decoder(store);
        self.routes.add_store(store.event_store_id());
        let filter = Filter::all().stores([store.event_store_id()]);
        let handler: SqlHandler = Box::new(move |db, logged| {
            let event = decode(logged)?;
            handler(db, &event).map_err(|e| Failure::Handler(e.into()))
        });
        self.handlers.push((filter, handler));
        self
    }

    /// Handles the deletes of `store`'s aggregates (soft and hard, see
    /// [`EventStore::delete_aggregate`]): the handler gets the deleted aggregate's id and the
    /// [`DeleteMode`], and writes through the connection inside the batch's transaction, so the
    /// aggregate's rows go with the checkpoint that passes the delete. (A restore is not
    /// replayed: a view that must show restored aggregates again is rebuilt.)
    pub fn on_deleted<E, S, H, Err>(mut self, store: &EventStore<E, S>, handler: H) -> Self
    where
        E: Events,
        S: Clone + Send + Sync + 'static,
        H: Fn(&Connection, &str, DeleteMode) -> Result<(), Err> + Send + Sync + 'static,
        Err: Into<BoxError>,
    {
        self.routes.add_store(LIFECYCLE_STORE);
        let deletes = Deletes::of(store.event_store_id());
        let filter = deletes.filter();
        let handler: SqlHandler = Box::new(move |db, logged| match deletes.read(logged)? {
            Some((aggregate_id, mode)) => {
                handler(db, &aggregate_id, mode).map_err(|e| Failure::Handler(e.into()))
            }
            None => Ok(()),
        });
        self.handlers.push((filter, handler));
        self
    }

    /// Handles every event `filter` admits, as stored (no decoding).
    pub fn on_logged<H, Err>(mut self, filter: Filter, handler: H) -> Self
    where
        H: Fn(&Connection, &LoggedEvent) -> Result<(), Err> + Send + Sync + 'static,
        Err: Into<BoxError>,
    {
        self.routes.add_any();
        let handler: SqlHandler =
            Box::new(move |db, logged| handler(db, logged).map_err(|e| Failure::Handler(e.into())));
        self.handlers.push((filter, handler));
        self
    }

    /// Opens (or creates) this version's file in `dir` (created if missing). Fails on an
    /// invalid name or version, a schema SQLite refuses, and with [`ViewError::Superseded`]
    /// when a newer version is active there.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<SqlView, ViewError> {
        let id = ViewId::new(self.name, self.version)?;
        let dir = dir.as_ref().to_owned();
        std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let other_active = active_elsewhere(&dir, &id)?;
        if let Some(active) = other_active.filter(|a| *a > id.version) {
            return Err(id.superseded(active));
        }
        let path = file_path(&dir, &id.name, id.version);
        // No temporary file and rename here: SQLite's own journal makes the creation atomic.
        // The schema and the `annals_view` row commit in one transaction, so a process killed
        // while it creates the file leaves a file without that row (a creation that did not
        // commit, finished by the next open and skipped by `statuses`), never a damaged one.
        let new = !path.exists();
        let mut writer = connect(&path, true).map_err(sql(&id))?;
        let meta = initialise(&mut writer, &id, &self.schema)?;
        if new {
            // SQLite syncs the directory for its journals only: make the file's name durable.
            let d = std::fs::File::open(&dir).map_err(io("open directory", &dir))?;
            d.sync_all().map_err(io("sync directory", &dir))?;
        }
        let inner = SqlInner {
            progress: Progress::new(meta.next, meta.active),
            active: AtomicU64::new(if meta.active {
                id.version
            } else {
                other_active.unwrap_or(0)
            }),
            filter: self.routes.filter(),
            handlers: self.handlers,
            writer: Mutex::new(writer),
            reader: Mutex::new(None),
            dir,
            path,
            id,
        };
        if meta.active {
            // A crash may have come between the activation and the removal of older files.
            inner.remove_older()?;
        }
        Ok(SqlView {
            inner: Arc::new(inner),
        })
    }
}

/// A SQL view: see the [module docs](self). Cheap to clone; clones share the runner's
/// progress and the query connection (queries run one at a time per view).
#[derive(Clone)]
pub struct SqlView {
    inner: Arc<SqlInner>,
}

struct SqlInner {
    id: ViewId,
    dir: PathBuf,
    /// This version's file.
    path: PathBuf,
    handlers: Vec<(Filter, SqlHandler)>,
    filter: Filter,
    progress: Progress,
    /// The connection batches are applied through.
    writer: Mutex<Connection>,
    /// The connection queries run on, with the version of the file it has open.
    reader: Mutex<Option<(u64, Connection)>>,
    /// The active version as far as this handle knows (0: none).
    active: AtomicU64,
}

impl std::fmt::Debug for SqlView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlView")
            .field("id", &self.inner.id)
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqlView {
    /// Starts configuring version `version` (from 1) of the view `name`.
    pub fn builder(name: impl Into<String>, version: u64) -> SqlViewBuilder {
        SqlViewBuilder {
            name: name.into(),
            version,
            schema: String::new(),
            handlers: Vec::new(),
            routes: Routes::default(),
        }
    }

    /// The view's name.
    pub fn name(&self) -> &str {
        &self.inner.id.name
    }

    /// This handle's version.
    pub fn version(&self) -> u64 {
        self.inner.id.version
    }

    /// This version's SQLite file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The version queries read: the active one, `None` before any version caught up (then
    /// queries read this version's file).
    pub fn active_version(&self) -> Option<u64> {
        Some(self.inner.active.load(Ordering::SeqCst)).filter(|v| *v != 0)
    }

    /// The first position this version has not applied, as committed.
    pub fn checkpoint(&self) -> Result<Position, ViewError> {
        let writer = lock(&self.inner.writer);
        Ok(read_meta(&writer, &self.inner.id)?.next)
    }

    /// Starts a [`ViewRunner`] applying `adapter`'s log to this version. Call it inside a
    /// Tokio runtime, once per view version.
    pub fn run(&self, adapter: Arc<dyn StorageAdapter>) -> ViewRunner {
        ViewRunner::spawn(self.inner.clone(), adapter)
    }

    /// Waits until this version is active and has applied the event at `position` (see
    /// [read-your-writes](super#read-your-writes)); [`ViewError::Timeout`] after `timeout`,
    /// [`ViewError::NotRunning`] if the runner ends first.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), ViewError> {
        self.inner
            .progress
            .wait_for(&self.inner.id, position, timeout)
            .await
    }

    /// Runs `query` on a read-only connection to the served version's file (the active
    /// version; this one before any is active). It sees only committed batches.
    ///
    /// ```no_run
    /// # fn f(view: annals::view::SqlView) -> Result<(), annals::view::ViewError> {
    /// let names: Vec<String> = view.query(|db| {
    ///     let mut rows = db.prepare("SELECT name FROM names ORDER BY name")?;
    ///     rows.query_map([], |row| row.get(0))?.collect()
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn query<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ViewError> {
        let id = &self.inner.id;
        let served = self.active_version().unwrap_or(id.version);
        let mut reader = lock(&self.inner.reader);
        let stale = reader.as_ref().is_none_or(|(v, _)| *v != served);
        if stale {
            let path = file_path(&self.inner.dir, &id.name, served);
            let conn = connect(&path, false).map_err(sql(id))?;
            conn.pragma_update(None, "query_only", true)
                .map_err(sql(id))?;
            *reader = Some((served, conn));
        }
        match reader.as_ref() {
            Some((_, conn)) => query(conn).map_err(sql(id)),
            None => Err(id.damaged("no query connection")),
        }
    }
}

/// What `annals_view` says.
struct Meta {
    next: Position,
    active: bool,
}

fn file_path(dir: &Path, name: &str, version: u64) -> PathBuf {
    dir.join(format!("{name}.v{version}.sqlite3"))
}

/// Every SQL view version with a file in `dir` (`{name}.v{version}.sqlite3`), ordered by name
/// and version, with its progress as its `annals_view` row records it: what `annals views`
/// lists. A file whose creation never committed (no row) is skipped. Opens each file
/// briefly, beside any running view.
pub fn statuses(dir: impl AsRef<Path>) -> Result<Vec<ViewStatus>, ViewError> {
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(io("list directory", dir))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("list directory", dir))?;
        let file = entry.file_name();
        let Some((name, version)) = file
            .to_str()
            .and_then(|f| f.strip_suffix(".sqlite3")?.rsplit_once(".v"))
            .and_then(|(name, v)| Some((name.to_owned(), v.parse::<u64>().ok()?)))
        else {
            continue;
        };
        let Ok(id) = ViewId::new(name, version) else {
            continue;
        };
        let conn = connect(&file_path(dir, &id.name, version), false).map_err(sql(&id))?;
        if !has_meta(&conn).map_err(sql(&id))? {
            continue;
        }
        let meta = read_meta(&conn, &id)?;
        out.push(ViewStatus {
            name: id.name,
            version,
            next_position: meta.next,
            active: meta.active,
        });
    }
    out.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok(out)
}

/// The versions of view `name` with a file in `dir`.
fn versions_in(dir: &Path, name: &str) -> Result<Vec<u64>, ViewError> {
    let entries = std::fs::read_dir(dir).map_err(io("list directory", dir))?;
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("list directory", dir))?;
        let file = entry.file_name();
        let version = file
            .to_str()
            .and_then(|f| {
                f.strip_prefix(name)?
                    .strip_prefix(".v")?
                    .strip_suffix(".sqlite3")
            })
            .and_then(|v| v.parse::<u64>().ok());
        versions.extend(version);
    }
    Ok(versions)
}

/// The highest active version of the view other than `id`'s own, if any.
fn active_elsewhere(dir: &Path, id: &ViewId) -> Result<Option<u64>, ViewError> {
    let mut top = None;
    for version in versions_in(dir, &id.name)? {
        if version == id.version {
            continue;
        }
        let other = ViewId {
            name: id.name.clone(),
            version,
        };
        let path = file_path(dir, &id.name, version);
        let conn = connect(&path, false).map_err(sql(&other))?;
        // A file without its metadata row is a creation that did not commit: not active.
        let active = has_meta(&conn).map_err(sql(&other))? && read_meta(&conn, &other)?.active;
        if active {
            top = top.max(Some(version));
        }
    }
    Ok(top)
}

/// Opens a connection in WAL mode with full syncs; `create` allows creating the file.
fn connect(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn has_meta(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'annals_view'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Creates the metadata row and the schema if the file is new, in one transaction; returns
/// the metadata.
fn initialise(conn: &mut Connection, id: &ViewId, schema: &str) -> Result<Meta, ViewError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(id))?;
    if !has_meta(&tx).map_err(sql(id))? {
        let version = i64::try_from(id.version).map_err(|_| id.damaged("version out of range"))?;
        tx.execute_batch(META_TABLE).map_err(sql(id))?;
        tx.execute_batch(schema).map_err(sql(id))?;
        tx.execute(
            "INSERT INTO annals_view VALUES (1, ?1, ?2, 1, 0)",
            (&id.name, version),
        )
        .map_err(sql(id))?;
    }
    let meta = read_meta(&tx, id)?;
    tx.commit().map_err(sql(id))?;
    Ok(meta)
}

fn read_meta(conn: &Connection, id: &ViewId) -> Result<Meta, ViewError> {
    let row = conn
        .query_row(
            "SELECT view, version, next_position, active FROM annals_view WHERE id = 1",
            [],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, bool>(3)?,
                ))
            },
        )
        .optional()
        .map_err(sql(id))?;
    let Some((view, version, next, active)) = row else {
        return Err(id.damaged("the annals_view row is missing"));
    };
    if view != id.name || u64::try_from(version).ok() != Some(id.version) {
        return Err(id.damaged(format!("the file belongs to view {view:?} v{version}")));
    }
    let next = Position::try_from(next)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| id.damaged(format!("checkpoint {next} out of range")))?;
    Ok(Meta { next, active })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the connection usable: an open transaction is
    // rolled back when dropped.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sql(id: &ViewId) -> impl Fn(rusqlite::Error) -> ViewError + '_ {
    move |source| ViewError::Sql {
        view: id.name.clone(),
        version: id.version,
        source,
    }
}

fn io<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ViewError + 'a {
    move |source| ViewError::Io {
        operation,
        path: path.to_owned(),
        source,
    }
}

impl SqlInner {
    /// Deletes the files of older versions, then syncs the directory.
    fn remove_older(&self) -> Result<(), ViewError> {
        let older = versions_in(&self.dir, &self.id.name)?;
        for version in older.into_iter().filter(|v| *v < self.id.version) {
            let base = file_path(&self.dir, &self.id.name, version);
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut path = base.clone().into_os_string();
                path.push(suffix);
                let path = PathBuf::from(path);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("remove", &path)(e)),
                }
            }
        }
        let dir = std::fs::File::open(&self.dir).map_err(io("open directory", &self.dir))?;
        dir.sync_all().map_err(io("sync directory", &self.dir))
    }

    fn apply_in(&self, db: &Connection, events: &[LoggedEvent]) -> Result<(), Refused> {
        for (index, event) in events.iter().enumerate() {
            for (filter, handler) in &self.handlers {
                if !filter.admits(event) {
                    continue;
                }
                if let Err(failure) = guarded(|| handler(db, event)) {
                    let error = failure.into_error(&self.id, event);
                    return Err(Refused::Failed { index, error });
                }
            }
        }
        Ok(())
    }
}

impl Backend for SqlInner {
    fn id(&self) -> &ViewId {
        &self.id
    }

    fn filter(&self) -> Filter {
        self.filter.clone()
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    fn start(&self) -> Result<Start, ViewError> {
        if let Some(active) =
            active_elsewhere(&self.dir, &self.id)?.filter(|a| *a > self.id.version)
        {
            return Err(self.id.superseded(active));
        }
        let writer = lock(&self.writer);
        let meta = read_meta(&writer, &self.id)?;
        Ok(Start {
            next: meta.next,
            active: meta.active,
        })
    }

    fn apply(&self, events: &[LoggedEvent], next: Position, activate: bool) -> Result<(), Refused> {
        let id = &self.id;
        // A newer version removes this version's file when it becomes active.
        if !self.path.exists() {
            let active = active_elsewhere(&self.dir, id)?;
            return Err(match active.filter(|a| *a > id.version) {
                Some(active) => id.superseded(active),
                None => id.damaged("the view's file is gone"),
            }
            .into());
        }
        let next_row = i64::try_from(next).map_err(|_| id.damaged("position out of range"))?;
        let mut writer = lock(&self.writer);
        let tx = writer
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(id))?;
        // On failure the transaction is dropped, which rolls it back.
        self.apply_in(&tx, events)?;
        tx.execute(
            "UPDATE annals_view SET next_position = ?1, active = max(active, ?2) WHERE id = 1",
            (next_row, activate),
        )
        .map_err(sql(id))?;
        tx.commit().map_err(sql(id))?;
        drop(writer);
        if activate {
            self.active.store(id.version, Ordering::SeqCst);
            self.remove_older()?;
        }
        Ok(())
    }
}
