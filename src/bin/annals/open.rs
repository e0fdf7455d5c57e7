//! Choosing and opening the store a command works on: a directory (the log adapter) or, with
//! `--postgres URL`, a PostgreSQL database. Every command opens its store here, as an
//! `Arc<dyn StorageAdapter>`, so each works on any adapter unless it needs the log's own
//! facts (bytes on disk, the index, `verify`).
//!
//! Commands that only read open a directory store as its writer would when no process holds
//! it, and as a live reader ([`LogReader`]: read-only, no lock taken) when one does, or when
//! `--read-only` asks for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use annals::StorageError;
use annals::engine::layout;
use annals::state::StateStore;
use annals::storage::{LogAdapter, LogReader, StorageAdapter};

use crate::error::{CliError, EXIT_NOT_FOUND};

/// Where the store is, as given on the command line.
#[derive(Debug)]
pub struct Target {
    pub dir: Option<PathBuf>,
    pub postgres: Option<String>,
    /// The PostgreSQL schema (`--postgres-schema`, default `annals`).
    pub postgres_schema: String,
    /// Read a directory store as a live reader even when no process holds it.
    pub read_only: bool,
}

/// An open store.
pub struct Store {
    /// The store, as every adapter is used.
    pub adapter: Arc<dyn StorageAdapter>,
    /// The same store when it is a directory opened as its writer: what log-only commands
    /// need.
    pub log: Option<Arc<LogAdapter>>,
    /// The same store when it is a directory read live, beside the process that holds it.
    pub reader: Option<Arc<LogReader>>,
    /// How messages name the store.
    pub name: String,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Checkpoints the index and releases the lock at once, not when the last task ends.
        if let Some(log) = &self.log {
            log.close();
        }
        if let Some(reader) = &self.reader {
            reader.close();
        }
    }
}

impl Target {
    /// The store directory, or an error asking for one.
    pub fn dir(&self) -> Result<&Path, CliError> {
        self.dir.as_deref().ok_or_else(|| {
            CliError::failed("no store given").hint(
                "pass the store directory with --dir DIR (or set ANNALS_DIR), or a PostgreSQL \
                 URL with --postgres URL",
            )
        })
    }

    /// Opens an existing store.
    pub async fn open(&self) -> Result<Store, CliError> {
        self.open_with(false).await
    }

    /// Opens an existing store for a command that only reads: as its writer would when no
    /// process holds it, as a live reader when one does or when `--read-only` was given.
    /// `follow`: the reader looks for new commits every 10 ms (for `tail`).
    pub async fn open_to_read(&self, follow: bool) -> Result<Store, CliError> {
        if self.postgres.is_some() {
            return self.open().await;
        }
        let dir = self.dir()?;
        if !is_store(dir) {
            return Err(not_a_store(dir));
        }
        if !self.read_only {
            match LogAdapter::builder(dir).open() {
                Ok(log) => return Ok(writer_store(dir, log)),
                Err(StorageError::Locked { .. }) => {
                    eprintln!(
                        "annals: {} is open in another process: reading it live, read-only",
                        dir.display()
                    );
                }
                Err(e) => {
                    return Err(CliError::storage(
                        format_args!("open the store {}", dir.display()),
                        e,
                    ));
                }
            }
        }
        let builder = LogReader::builder(dir);
        let builder = if follow {
            builder
        } else {
            builder.manual_refresh()
        };
        let reader = builder
            .open()
            .map_err(|e| CliError::storage(format_args!("read the store {}", dir.display()), e))?;
        let reader = Arc::new(reader);
        Ok(Store {
            adapter: reader.clone(),
            name: dir.display().to_string(),
            log: None,
            reader: Some(reader),
        })
    }

    /// Opens the store, creating a directory store when `create` (import into a new store).
    pub async fn open_with(&self, create: bool) -> Result<Store, CliError> {
        if let Some(url) = &self.postgres {
            return open_postgres(url, &self.postgres_schema).await;
        }
        // Commands that write never get here with --read-only (see `run`).
        debug_assert!(!self.read_only, "--read-only reached a command that writes");
        let dir = self.dir()?;
        if !create && !is_store(dir) {
            return Err(not_a_store(dir));
        }
        let log = LogAdapter::builder(dir)
            .open()
            .map_err(|e| CliError::storage(format_args!("open the store {}", dir.display()), e))?;
        Ok(writer_store(dir, log))
    }

    /// The runtime's state file: `state`, or `<dir>/state.redb`.
    pub fn state_path(&self, state: Option<PathBuf>) -> Result<PathBuf, CliError> {
        match state {
            Some(path) => Ok(path),
            None => Ok(self
                .dir()
                .map_err(|e| e.hint("pass --state FILE, or --dir DIR for DIR/state.redb"))?
                .join(layout::STATE_FILE)),
        }
    }
}

/// The store in `dir`, opened as its writer.
fn writer_store(dir: &Path, log: LogAdapter) -> Store {
    let log = Arc::new(log);
    Store {
        adapter: log.clone(),
        name: dir.display().to_string(),
        log: Some(log),
        reader: None,
    }
}

/// Whether `dir` holds a store (never create one by mistake when inspecting).
pub fn is_store(dir: &Path) -> bool {
    layout::log_dir(dir).is_dir()
}

fn not_a_store(dir: &Path) -> CliError {
    let message = if dir.exists() {
        format!(
            "{} is not an annals store (it has no log/ directory)",
            dir.display()
        )
    } else {
        format!("the store directory {} does not exist", dir.display())
    };
    CliError::with_code(EXIT_NOT_FOUND, message)
        .hint("check --dir; `annals import FILE --dir DIR` creates a store")
}

/// Opens the runtime's state store at `path`, which must exist.
pub fn open_state(path: &Path) -> Result<Arc<StateStore>, CliError> {
    if !path.is_file() {
        return Err(CliError::with_code(
            EXIT_NOT_FOUND,
            format!("there is no state file at {}", path.display()),
        )
        .hint("pass the runtime's state file with --state FILE"));
    }
    StateStore::open(path).map(Arc::new).map_err(|e| match e {
        annals::StorageError::Locked { .. } => CliError::with_code(
            crate::error::EXIT_LOCKED,
            format!(
                "the state file {} is open in another process",
                path.display()
            ),
        )
        .hint("stop the application that runs the consumers, views and actions, then retry"),
        other => CliError::storage(
            format_args!("open the state file {}", path.display()),
            other,
        ),
    })
}

/// The runtime's state store a command works on, and how messages name it.
pub struct RuntimeState {
    pub state: Arc<StateStore>,
    pub name: String,
}

/// Opens the runtime's state store: the redb file `state` when given; else, with
/// `--postgres`, the state tables of the PostgreSQL store (shared by every process on it);
/// else `<dir>/state.redb`.
pub async fn open_runtime_state(
    target: &Target,
    state: Option<PathBuf>,
) -> Result<RuntimeState, CliError> {
    if let (None, Some(url)) = (&state, &target.postgres) {
        let state = open_postgres_state(url, &target.postgres_schema).await?;
        return Ok(RuntimeState {
            state,
            name: format!("the PostgreSQL state (schema {})", target.postgres_schema),
        });
    }
    let path = target.state_path(state)?;
    Ok(RuntimeState {
        state: open_state(&path)?,
        name: path.display().to_string(),
    })
}

#[cfg(not(feature = "postgres"))]
fn no_postgres() -> CliError {
    CliError::failed("this annals binary was built without PostgreSQL support").hint(
        "rebuild it with `cargo install --path . --features cli,postgres` (or `cargo build \
         --features cli,postgres`), or pass --dir DIR for a store directory",
    )
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str, _schema: &str) -> Result<Store, CliError> {
    Err(no_postgres())
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres_state(_url: &str, _schema: &str) -> Result<Arc<StateStore>, CliError> {
    Err(no_postgres())
}

#[cfg(feature = "postgres")]
async fn open_postgres_state(url: &str, schema: &str) -> Result<Arc<StateStore>, CliError> {
    let what = "connect to the runtime's state in PostgreSQL";
    let config = url
        .parse::<annals::storage::postgres::tokio_postgres::Config>()
        .map_err(|e| CliError::failed(format!("invalid PostgreSQL connection string: {e}")))?;
    StateStore::postgres_with_config(config, schema)
        .await
        .map(Arc::new)
        .map_err(|e| CliError::storage(what, e))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, schema: &str) -> Result<Store, CliError> {
    let adapter = annals::storage::PostgresAdapter::builder(url)
        .schema(schema)
        .connect()
        .await
        .map_err(|e| CliError::storage("connect to the PostgreSQL store", e))?;
    Ok(Store {
        adapter: Arc::new(adapter),
        log: None,
        reader: None,
        // The URL may hold a password: name the store without it.
        name: "the PostgreSQL store".to_owned(),
    })
}
