//! The application layer's durable state: consumer checkpoints, and the key-value views, dead
//! letters and queues that are committed together with them.
//!
//! A [`StateStore`] keeps everything the runtime floor must commit atomically with a
//! consumer's checkpoint, so "apply this event and move the checkpoint past it" is one
//! transaction: done exactly once, or not at all, across crashes. It has two backends, with
//! the same behaviour:
//!
//! - **redb** ([`StateStore::open`], [`StateStore::in_memory`]): one redb database, in a file
//!   beside the event log (`state.redb`) or in memory. One process at a time opens it; every
//!   commit is durable (fsync before returning). See `redb_store.rs` and `docs/format.md`.
//! - **PostgreSQL** ([`StateStore::postgres`], feature `postgres`): tables in the schema of a
//!   [`PostgresAdapter`](crate::storage::PostgresAdapter), shared by every process connected
//!   to it: checkpoints, views, dead letters and queues are the same for all of them, and a
//!   queue's messages are handed out to competing receivers one at a time. See
//!   `docs/postgres.md`.
//!
//! Writers run a closure inside one transaction and get a [`StateTxn`]: what they do through
//! it (a view row, a queued message, a dead letter) commits with the checkpoint or not at all,
//! on either backend.

mod ops;
#[cfg(feature = "postgres")]
mod postgres_connections;
#[cfg(feature = "postgres")]
mod postgres_schema;
#[cfg(feature = "postgres")]
mod postgres_store;
#[cfg(feature = "postgres")]
mod postgres_txn;
pub(crate) mod records;
mod redb_records;
mod redb_schema;
mod redb_store;
mod txn_error;
mod wakers;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub(crate) use self::ops::{Letters, StateRead, StateWrite};
pub(crate) use self::records::{Delivery, QueueRecord, Received};
pub(crate) use self::redb_schema::view_checkpoint_name;
use self::redb_store::RedbStore;
pub use self::txn_error::TxnError;
use self::wakers::Wakers;
use crate::runtime::lease::Fence;
use crate::storage::{Position, StorageError};

/// One write transaction of a [`StateStore`], whichever its backend: what
/// [`StateStore::write`] and
/// [`Consumer::commit_with`](crate::runtime::consumer::Consumer::commit_with) hand their
/// closure. Write through the runtime's own types, for instance
/// [`Queue::enqueue_in`](crate::runtime::queue::Queue::enqueue_in); everything commits
/// together, or nothing does.
pub struct StateTxn<'t> {
    ops: &'t dyn StateWrite,
    /// Queue wake-ups to send once the transaction has committed.
    wake: RefCell<Vec<Arc<Notify>>>,
}

impl std::fmt::Debug for StateTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTxn").finish_non_exhaustive()
    }
}

impl StateTxn<'_> {
    /// The backend's operations, inside this transaction.
    pub(crate) fn ops(&self) -> &dyn StateWrite {
        self.ops
    }

    /// Wakes `wake`'s waiters once the transaction has committed (not at all if it aborts).
    pub(crate) fn wake_after_commit(&self, wake: Arc<Notify>) {
        self.wake.borrow_mut().push(wake);
    }
}

enum Backend {
    Redb(RedbStore),
    #[cfg(feature = "postgres")]
    Postgres(Box<postgres_store::PostgresStore>),
}

/// Durable application state on redb or PostgreSQL: see the [module docs](self).
pub struct StateStore {
    backend: Backend,
    wakers: Arc<Wakers>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("StateStore");
        match &self.backend {
            Backend::Redb(redb) => out.field("path", &redb.path()),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => out.field("postgres_schema", &pg.schema()),
        };
        out.finish_non_exhaustive()
    }
}

impl StateStore {
    fn with(backend: Backend) -> Self {
        StateStore {
            backend,
            wakers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Opens (or creates) the redb state file at `path`. A second open of the same file, from
    /// this process or another, fails with [`StorageError::Locked`]; a damaged file with
    /// [`StorageError::Corruption`].
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let state = annals::state::StateStore::open(dir.path().join("state.redb"))?;
    /// assert_eq!(state.checkpoint("pokedex")?, None);
    /// # Ok::<(), annals::StorageError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Ok(Self::with(Backend::Redb(RedbStore::open(path.as_ref())?)))
    }

    /// A state store in memory (redb): nothing survives the process.
    pub fn in_memory() -> Self {
        Self::with(Backend::Redb(RedbStore::in_memory()))
    }

    /// The state store on the PostgreSQL database of `adapter`, in its schema, shared by every
    /// process connected to it (feature `postgres`): creates or migrates the state tables, and
    /// starts a thread that drives the store's connections. Fails with
    /// [`StorageError::InvalidConfiguration`] on a schema migrated by a newer annals.
    ///
    /// Its calls are synchronous, like the redb store's, and work from any thread or runtime;
    /// see `docs/postgres.md` for what is shared between processes.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), annals::StorageError> {
    /// use std::sync::Arc;
    /// use annals::{state::StateStore, storage::PostgresAdapter};
    ///
    /// let adapter = PostgresAdapter::connect("postgres://annals@127.0.0.1/annals").await?;
    /// let state = Arc::new(StateStore::postgres(&adapter).await?);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub async fn postgres(adapter: &crate::storage::PostgresAdapter) -> Result<Self, StorageError> {
        Self::postgres_with_config(adapter.config().clone(), adapter.schema()).await
    }

    /// The state store in schema `schema` of the database `config` names (feature
    /// `postgres`): like [`postgres`](Self::postgres), for a process that has no adapter (the
    /// command-line tool). The schema must be the event adapter's for the state to be shared
    /// with the applications on it.
    ///
    /// A configuration without an `application_name` gets `annals`, and one without a connect
    /// timeout 10 seconds, as the adapter's builder does.
    #[cfg(feature = "postgres")]
    pub async fn postgres_with_config(
        mut config: crate::storage::postgres::tokio_postgres::Config,
        schema: &str,
    ) -> Result<Self, StorageError> {
        if config.get_application_name().is_none() {
            config.application_name("annals");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        let wakers = Arc::new(Mutex::new(HashMap::new()));
        let store =
            postgres_store::PostgresStore::connect(config, schema, Arc::downgrade(&wakers)).await?;
        Ok(StateStore {
            backend: Backend::Postgres(Box::new(store)),
            wakers,
        })
    }

    /// The next position consumer `name` delivers, as last committed; `None` if it never
    /// committed.
    pub fn checkpoint(&self, name: &str) -> Result<Option<Position>, StorageError> {
        self.read(|state| state.checkpoint(name))
    }

    /// Every consumer's checkpoint, by name.
    pub fn checkpoints(&self) -> Result<Vec<(String, Position)>, StorageError> {
        self.read(|state| state.checkpoints())
    }

    /// Runs `apply` in one durable write transaction and, in the same transaction, moves
    /// consumer `name`'s checkpoint to `next`: the writes and the checkpoint commit together
    /// or not at all. What views and actions build on.
    pub fn commit_with_checkpoint<T>(
        &self,
        name: &str,
        next: Position,
        apply: impl FnOnce(&StateTxn<'_>) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        self.try_commit_with_checkpoint(name, next, |txn| apply(txn).map(Ok::<T, TxnError>))?
            .map_err(TxnError::into_storage)
    }

    /// Like [`commit_with_checkpoint`](Self::commit_with_checkpoint), but `apply` may decline:
    /// when it returns `Ok(Err(e))`, nothing of the transaction is committed (neither its
    /// writes nor the checkpoint) and `e` is returned as `Ok(Err(e))`. What lets a view refuse
    /// a batch whose handler failed without losing the reason.
    pub fn try_commit_with_checkpoint<T, E>(
        &self,
        name: &str,
        next: Position,
        apply: impl FnOnce(&StateTxn<'_>) -> Result<Result<T, E>, TxnError>,
    ) -> Result<Result<T, E>, StorageError> {
        self.try_commit_fenced(name, next, None, apply)
    }

    /// [`try_commit_with_checkpoint`](Self::try_commit_with_checkpoint) under a consumer
    /// group's lease: with `fence`, the transaction checks (last, just before the checkpoint
    /// moves, so the lease is held locked for as short a time as can be) that the lease is
    /// still held, and aborts with [`StorageError::LeaseLost`] when it is not.
    pub(crate) fn try_commit_fenced<T, E>(
        &self,
        name: &str,
        next: Position,
        fence: Option<&Fence>,
        apply: impl FnOnce(&StateTxn<'_>) -> Result<Result<T, E>, TxnError>,
    ) -> Result<Result<T, E>, StorageError> {
        self.try_write(|txn| {
            let out = apply(txn)?;
            if out.is_ok() {
                if let Some(fence) = fence {
                    txn.ops().check_fence(fence)?;
                }
                txn.ops().set_checkpoint(name, next)?;
            }
            Ok(out)
        })
    }

    /// The leases of consumer group `group`, by partition (feature `postgres`): who holds each
    /// partition, or last held it, and whether the lease is live. Partitions never leased are
    /// absent; on the redb store there are none.
    #[cfg(feature = "postgres")]
    pub async fn group_leases(
        &self,
        group: &str,
    ) -> Result<Vec<crate::runtime::lease::LeaseStatus>, StorageError> {
        match &self.backend {
            Backend::Redb(_) => Ok(Vec::new()),
            Backend::Postgres(pg) => {
                crate::runtime::lease::leases(pg.config(), pg.schema(), group).await
            }
        }
    }

    /// Joins consumer group `group` as a new member (feature `postgres`): the leases live in
    /// this store's PostgreSQL schema, and commits made under them are fenced by it. Fails with
    /// [`StorageError::InvalidConfiguration`] on the redb store (a group spans processes, and
    /// a redb state file belongs to one), or when the group exists with another partition
    /// count. See [`lease`](crate::lease).
    #[cfg(feature = "postgres")]
    pub async fn join_group(
        &self,
        group: &str,
        options: crate::runtime::lease::GroupOptions,
    ) -> Result<crate::runtime::lease::GroupMember, StorageError> {
        match &self.backend {
            Backend::Redb(_) => Err(StorageError::InvalidConfiguration {
                reason: format!(
                    "consumer group {group:?} needs the PostgreSQL state store; a redb state \
                     file belongs to one process"
                ),
            }),
            Backend::Postgres(pg) => {
                crate::runtime::lease::GroupMember::join(pg.config(), pg.schema(), group, options)
                    .await
            }
        }
    }

    /// Moves consumer `name`'s checkpoint to `next`, durably.
    pub fn set_checkpoint(&self, name: &str, next: Position) -> Result<(), StorageError> {
        self.commit_with_checkpoint(name, next, |_| Ok(()))
    }

    /// Runs `write` in one write transaction and commits it durably; an error aborts it.
    pub fn write<T>(
        &self,
        write: impl FnOnce(&StateTxn<'_>) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        self.try_write(|txn| write(txn).map(Ok::<T, TxnError>))?
            .map_err(TxnError::into_storage)
    }

    /// Runs `read` on the committed state (one consistent snapshot on redb; on PostgreSQL, one
    /// read-only transaction).
    pub(crate) fn read<T>(
        &self,
        read: impl Fn(&dyn StateRead) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        match &self.backend {
            Backend::Redb(redb) => redb.read(read),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.read(read),
        }
    }

    /// Runs `write` in one transaction, committed when it returns `Ok(Ok(_))` and aborted
    /// otherwise; then sends the wake-ups it asked for, if it committed.
    pub(crate) fn try_write<T, E>(
        &self,
        write: impl FnOnce(&StateTxn<'_>) -> Result<Result<T, E>, TxnError>,
    ) -> Result<Result<T, E>, StorageError> {
        let mut wake = Vec::new();
        let run = |ops: &dyn StateWrite| {
            let txn = StateTxn {
                ops,
                wake: RefCell::new(Vec::new()),
            };
            let out = write(&txn);
            wake = txn.wake.take();
            out
        };
        let out = match &self.backend {
            Backend::Redb(redb) => redb.try_write(run)?,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.try_write(run)?,
        };
        if out.is_ok() {
            for waker in wake {
                waker.notify_waiters();
            }
        }
        Ok(out)
    }

    /// The wake-up of queue `name`, shared by every handle on it in this process (and, on
    /// PostgreSQL, sent as well when another process adds a message).
    pub(crate) fn queue_waker(&self, name: &str) -> Arc<Notify> {
        wakers::waker(&self.wakers, name)
    }

    /// How long a receiver waiting for a queue's messages may sleep before it looks again
    /// without having been woken: `None` on redb (only this process changes the queue, and
    /// it wakes receivers itself); on PostgreSQL, a bound that covers a lost notification.
    pub(crate) fn queue_poll_bound(&self) -> Option<std::time::Duration> {
        match &self.backend {
            Backend::Redb(_) => None,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Some(postgres_store::POLL_BOUND),
        }
    }
}
