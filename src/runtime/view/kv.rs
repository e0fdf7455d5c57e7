//! Key-value views: tables of string keys and serde values in a [`StateStore`] (redb or
//! PostgreSQL), committed with the view's checkpoint.
//!
//! Each view version owns its tables (on redb, the tables named
//! `view:{name}:v{version}:{table}`; on PostgreSQL, rows of `view_rows` keyed by view, version
//! and table); its checkpoint is the consumer checkpoint `view:{name}:v{version}`; the view
//! versions table maps a view name to its active version. Values are MessagePack ([`codec`]).
//! Keys order as Rust orders strings (byte-wise) on both backends.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::{sync::Arc, time::Duration};
//! use annals::{EventDetail, EventStore, NewEvent, state::StateStore, storage::InMemoryAdapter};
//! use annals::view::{KvTables, KvView, KvError};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Appeared { pub name: String }
//! # annals::events! { pub enum PokemonEvent { Appeared(Appeared) = "POKEMON_APPEARED" } }
//!
//! let adapter = Arc::new(InMemoryAdapter::new());
//! let pokemons = EventStore::builder("POKEMONS", |_, _: &EventDetail<PokemonEvent>| ())
//!     .storage_adapter(adapter.clone())
//!     .build()?;
//! let names = KvView::builder("pokemon-names", 1)
//!     .on(&pokemons, |tables: &mut KvTables<'_>, event: &EventDetail<PokemonEvent>| {
//!         let PokemonEvent::Appeared(appeared) = &event.event;
//!         tables.put("names", &event.aggregate_id, &appeared.name)
//!     })
//!     .build(Arc::new(StateStore::in_memory()))?;
//! let runner = names.run(adapter);
//!
//! let appeared = PokemonEvent::Appeared(Appeared { name: "Pikachu".into() });
//! let pushed = pokemons.push_event(NewEvent::new("p1", 1, appeared), Default::default()).await?;
//! names.wait_for(pushed.position, Duration::from_secs(10)).await?; // read-your-writes
//! assert_eq!(names.get::<String>("names", "p1")?.as_deref(), Some("Pikachu"));
//! runner.stop().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{BoxError, ViewError};
use super::handler::{Deletes, Failure, Routes, decoder, guarded};
use super::id::ViewId;
use super::kv_error::KvError;
use super::progress::Progress;
use super::runner::{Backend, Refused, Start, ViewRunner};
use super::status::ViewStatus;
use crate::model::codec;
use crate::model::event::{EventDetail, Events};
use crate::model::event_store::EventStore;
use crate::runtime::lease::Fence;
use crate::runtime::state::{StateStore, StateTxn, TxnError, view_checkpoint_name};
use crate::runtime::subscription::Filter;
use crate::storage::{DeleteMode, LIFECYCLE_STORE, LoggedEvent, Position, StorageAdapter};

fn database(table: &str) -> impl FnOnce(TxnError) -> KvError + '_ {
    move |e| KvError::Database {
        table: table.to_owned(),
        source: Box::new(e.into_storage()),
    }
}

fn decode<T: DeserializeOwned>(table: &str, key: &str, bytes: &[u8]) -> Result<T, KvError> {
    codec::decode(bytes).map_err(|e| KvError::Decode {
        table: table.to_owned(),
        key: key.to_owned(),
        reason: e.0,
    })
}

/// The tables of one view version inside the transaction applying a batch: what handlers
/// write to. Nothing is visible to queries before the batch commits.
pub struct KvTables<'t> {
    txn: &'t StateTxn<'t>,
    view: &'t ViewId,
}

impl std::fmt::Debug for KvTables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvTables")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

impl KvTables<'_> {
    /// The value at `key` in `table`, if any.
    pub fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>, KvError> {
        let (view, version) = (&self.view.name, self.view.version);
        let bytes = self
            .txn
            .ops()
            .view_get(view, version, table, key)
            .map_err(database(table))?;
        bytes.map(|b| decode(table, key, &b)).transpose()
    }

    /// Sets `key` in `table` to `value` (the table is created if missing).
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        table: &str,
        key: &str,
        value: &T,
    ) -> Result<(), KvError> {
        let bytes = codec::encode(value).map_err(|e| KvError::Encode {
            table: table.to_owned(),
            key: key.to_owned(),
            reason: e.0,
        })?;
        let (view, version) = (&self.view.name, self.view.version);
        self.txn
            .ops()
            .view_put(view, version, table, key, &bytes)
            .map_err(database(table))
    }

    /// Removes `key` from `table`; whether it was there.
    pub fn remove(&mut self, table: &str, key: &str) -> Result<bool, KvError> {
        let (view, version) = (&self.view.name, self.view.version);
        self.txn
            .ops()
            .view_remove(view, version, table, key)
            .map_err(database(table))
    }

    /// The rows of `table` whose keys start with `prefix`, in key order.
    pub fn scan_prefix<T: DeserializeOwned>(
        &self,
        table: &str,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, KvError> {
        let (view, version) = (&self.view.name, self.view.version);
        let rows = self
            .txn
            .ops()
            .view_scan(view, version, table, prefix)
            .map_err(database(table))?;
        rows.into_iter()
            .map(|(k, v)| {
                let value = decode(table, &k, &v)?;
                Ok((k, value))
            })
            .collect()
    }
}

type KvHandler = Box<dyn Fn(&mut KvTables<'_>, &LoggedEvent) -> Result<(), Failure> + Send + Sync>;

/// Configures a [`KvView`]: its handlers, then [`build`](Self::build).
pub struct KvViewBuilder {
    name: String,
    version: u64,
    handlers: Vec<(Filter, KvHandler)>,
    routes: Routes,
}

impl std::fmt::Debug for KvViewBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvViewBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("handlers", &self.handlers.len())
            .finish_non_exhaustive()
    }
}

impl KvViewBuilder {
    /// Handles every event of `store`, decoded (and upcast) into its typed form.
    pub fn on<E, S, H, Err>(mut self, store: &EventStore<E, S>, handler: H) -> Self
    where
        E: Events,
        S: Clone + Send + Sync + 'static,
        H: Fn(&mut KvTables<'_>, &EventDetail<E>) -> Result<(), Err> + Send + Sync + 'static,
        Err: Into<BoxError>,
    {
        let decode = decoder(store);
        self.routes.add_store(store.event_store_id());
        let filter = Filter::all().stores([store.event_store_id()]);
        let handler: KvHandler = Box::new(move |tables, logged| {
            let event = decode(logged)?;
            handler(tables, &event).map_err(|e| Failure::Handler(e.into()))
        });
        self.handlers.push((filter, handler));
        self
    }

    /// Handles the deletion of an aggregate of `store` (the `aggregate_deleted` event of the
    /// `$lifecycle` store, see
    /// [`EventStore::delete_aggregate`](crate::model::event_store::EventStore::delete_aggregate)):
    /// `handler` gets the aggregate id and the [`DeleteMode`], in the transaction of the view's
    /// batch, so it can remove the aggregate's rows with the checkpoint that passes the delete.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// use std::{sync::Arc, time::Duration};
    /// use annals::{EventDetail, EventStore, NewEvent, state::StateStore};
    /// use annals::storage::{DeleteMode, InMemoryAdapter};
    /// use annals::view::{KvError, KvTables, KvView};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Appeared { pub name: String }
    /// # annals::events! { pub enum PokemonEvent { Appeared(Appeared) = "POKEMON_APPEARED" } }
    ///
    /// let adapter = Arc::new(InMemoryAdapter::new());
    /// let pokemons = EventStore::builder("POKEMONS", |_, _: &EventDetail<PokemonEvent>| ())
    ///     .storage_adapter(adapter.clone())
    ///     .build()?;
    /// let names = KvView::builder("pokemon-names", 1)
    ///     .on(&pokemons, |tables: &mut KvTables<'_>, event: &EventDetail<PokemonEvent>| {
    ///         let PokemonEvent::Appeared(appeared) = &event.event;
    ///         tables.put("names", &event.aggregate_id, &appeared.name)
    ///     })
    ///     .on_deleted(&pokemons, |tables: &mut KvTables<'_>, id: &str, _: DeleteMode| {
    ///         tables.remove("names", id).map(drop)
    ///     })
    ///     .build(Arc::new(StateStore::in_memory()))?;
    /// let runner = names.run(adapter);
    ///
    /// let appeared = PokemonEvent::Appeared(Appeared { name: "Pikachu".into() });
    /// pokemons.push_event(NewEvent::new("p1", 1, appeared), Default::default()).await?;
    /// let deleted = pokemons.delete_aggregate("p1", DeleteMode::Hard).await?;
    /// names.wait_for(deleted, Duration::from_secs(10)).await?;
    /// assert_eq!(names.get::<String>("names", "p1")?, None);
    /// runner.stop().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub fn on_deleted<E, S, H, Err>(mut self, store: &EventStore<E, S>, handler: H) -> Self
    where
        E: Events,
        S: Clone + Send + Sync + 'static,
        H: Fn(&mut KvTables<'_>, &str, DeleteMode) -> Result<(), Err> + Send + Sync + 'static,
        Err: Into<BoxError>,
    {
        self.routes.add_store(LIFECYCLE_STORE);
        let deletes = Deletes::of(store.event_store_id());
        let filter = deletes.filter();
        let handler: KvHandler = Box::new(move |tables, logged| match deletes.read(logged)? {
            Some((aggregate_id, mode)) => {
                handler(tables, &aggregate_id, mode).map_err(|e| Failure::Handler(e.into()))
            }
            None => Ok(()),
        });
        self.handlers.push((filter, handler));
        self
    }

    /// Handles every event `filter` admits, as stored (no decoding).
    pub fn on_logged<H, Err>(mut self, filter: Filter, handler: H) -> Self
    where
        H: Fn(&mut KvTables<'_>, &LoggedEvent) -> Result<(), Err> + Send + Sync + 'static,
        Err: Into<BoxError>,
    {
        self.routes.add_any();
        let handler: KvHandler = Box::new(move |tables, logged| {
            handler(tables, logged).map_err(|e| Failure::Handler(e.into()))
        });
        self.handlers.push((filter, handler));
        self
    }

    /// The view, with its tables and checkpoint in `state`. Fails on an invalid name or
    /// version, and with [`ViewError::Superseded`] when a newer version is active.
    pub fn build(self, state: Arc<StateStore>) -> Result<KvView, ViewError> {
        let id = ViewId::new(self.name, self.version)?;
        let checkpoint = view_checkpoint_name(&id.name, id.version);
        let next = state.checkpoint(&checkpoint)?.unwrap_or(1);
        let active = active_version(&state, &id.name)?;
        if let Some(active) = active.filter(|a| *a > id.version) {
            return Err(id.superseded(active));
        }
        let inner = KvInner {
            checkpoint,
            progress: Progress::new(next, active == Some(id.version)),
            filter: self.routes.filter(),
            handlers: self.handlers,
            state,
            id,
        };
        Ok(KvView {
            inner: Arc::new(inner),
        })
    }
}

/// Every key-value view version that has a checkpoint in `state`, ordered by name and version,
/// with its progress: what `annals views` lists. Needs no handler, so any process holding
/// the state store can ask.
pub fn statuses(state: &StateStore) -> Result<Vec<ViewStatus>, ViewError> {
    let mut out = Vec::new();
    for (consumer, next_position) in state.checkpoints()? {
        let Some((name, version)) = consumer
            .strip_prefix("view:")
            .and_then(|rest| rest.rsplit_once(":v"))
            .and_then(|(name, v)| Some((name.to_owned(), v.parse::<u64>().ok()?)))
        else {
            continue;
        };
        let active = active_version(state, &name)? == Some(version);
        out.push(ViewStatus {
            name,
            version,
            next_position,
            active,
        });
    }
    out.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok(out)
}

fn active_version(state: &StateStore, name: &str) -> Result<Option<u64>, ViewError> {
    Ok(state.read(|state| state.view_version(name))?)
}

/// A key-value view: see the [module docs](self). Cheap to clone; clones share the runner's
/// progress.
#[derive(Clone)]
pub struct KvView {
    inner: Arc<KvInner>,
}

pub(super) struct KvInner {
    id: ViewId,
    /// The consumer checkpoint of this version.
    checkpoint: String,
    state: Arc<StateStore>,
    handlers: Vec<(Filter, KvHandler)>,
    filter: Filter,
    progress: Progress,
}

impl std::fmt::Debug for KvView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvView")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl KvView {
    /// Starts configuring version `version` (from 1) of the view `name`.
    pub fn builder(name: impl Into<String>, version: u64) -> KvViewBuilder {
        KvViewBuilder {
            name: name.into(),
            version,
            handlers: Vec::new(),
            routes: Routes::default(),
        }
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) fn inner(&self) -> Arc<KvInner> {
        self.inner.clone()
    }

    /// The view's name.
    pub fn name(&self) -> &str {
        &self.inner.id.name
    }

    /// This handle's version.
    pub fn version(&self) -> u64 {
        self.inner.id.version
    }

    /// The version queries read: the active one, `None` before any version caught up.
    pub fn active_version(&self) -> Result<Option<u64>, ViewError> {
        active_version(&self.inner.state, &self.inner.id.name)
    }

    /// The first position this version has not applied, as committed.
    pub fn checkpoint(&self) -> Result<Position, ViewError> {
        Ok(self
            .inner
            .state
            .checkpoint(&self.inner.checkpoint)?
            .unwrap_or(1))
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

    /// The value at `key` in `table` of the served version (the active one; this version
    /// before any is active).
    pub fn get<T: DeserializeOwned>(&self, table: &str, key: &str) -> Result<Option<T>, ViewError> {
        let bytes = self.read_rows(table, key, true)?;
        Ok(bytes
            .into_iter()
            .next()
            .map(|(k, v)| decode(table, &k, &v))
            .transpose()?)
    }

    /// Every row of `table` of the served version, in key order.
    pub fn scan<T: DeserializeOwned>(&self, table: &str) -> Result<Vec<(String, T)>, ViewError> {
        self.scan_prefix(table, "")
    }

    /// The rows of `table` of the served version whose keys start with `prefix`, in key
    /// order.
    pub fn scan_prefix<T: DeserializeOwned>(
        &self,
        table: &str,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, ViewError> {
        let rows = self.read_rows(table, prefix, false)?;
        let decoded: Result<Vec<_>, KvError> = rows
            .into_iter()
            .map(|(k, v)| Ok((k.clone(), decode(table, &k, &v)?)))
            .collect();
        Ok(decoded?)
    }

    /// Raw rows of `table` in the served version: the row at `key` when `exact`, else the rows
    /// whose keys start with it.
    fn read_rows(
        &self,
        table: &str,
        key: &str,
        exact: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, ViewError> {
        let id = &self.inner.id;
        let read = self.inner.state.read(|state| {
            let served = state.view_version(&id.name)?.unwrap_or(id.version);
            if served > id.version {
                return Ok(Err(served));
            }
            if exact {
                let row = state.view_get(&id.name, served, table, key)?;
                return Ok(Ok(row.map(|v| (key.to_owned(), v)).into_iter().collect()));
            }
            Ok(Ok(state.view_scan(&id.name, served, table, key)?))
        })?;
        read.map_err(|active| id.superseded(active))
    }
}

impl KvInner {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) fn checkpoint_name(&self) -> &str {
        &self.checkpoint
    }

    fn apply_in(
        &self,
        txn: &StateTxn<'_>,
        events: &[LoggedEvent],
    ) -> Result<Result<(), Refused>, TxnError> {
        let active = txn.ops().view_version(&self.id.name)?;
        if let Some(active) = active.filter(|a| *a > self.id.version) {
            return Ok(Err(Refused::Other(self.id.superseded(active))));
        }
        let mut tables = KvTables {
            txn,
            view: &self.id,
        };
        for (index, event) in events.iter().enumerate() {
            for (filter, handler) in &self.handlers {
                if !filter.admits(event) {
                    continue;
                }
                if let Err(failure) = guarded(|| handler(&mut tables, event)) {
                    let error = failure.into_error(&self.id, event);
                    return Ok(Err(Refused::Failed { index, error }));
                }
            }
        }
        Ok(Ok(()))
    }

    /// Makes this version active and drops the tables and checkpoints of older versions.
    fn activate_in(&self, txn: &StateTxn<'_>, older: &[String]) -> Result<(), TxnError> {
        let ops = txn.ops();
        ops.set_view_version(&self.id.name, self.id.version)?;
        ops.drop_view_versions_before(&self.id.name, self.id.version)?;
        for checkpoint in older {
            ops.remove_checkpoint(checkpoint)?;
        }
        Ok(())
    }

    /// The checkpoints of this view's older versions.
    fn older_checkpoints(&self) -> Result<Vec<String>, ViewError> {
        let prefix = format!("view:{}:v", self.id.name);
        Ok(self
            .state
            .checkpoints()?
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| {
                name.strip_prefix(&prefix)
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v < self.id.version)
            })
            .collect())
    }
}

impl Backend for KvInner {
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
        let active = active_version(&self.state, &self.id.name)?;
        if let Some(active) = active.filter(|a| *a > self.id.version) {
            return Err(self.id.superseded(active));
        }
        let next = self.state.checkpoint(&self.checkpoint)?.unwrap_or(1);
        Ok(Start {
            next,
            active: active == Some(self.id.version),
        })
    }

    fn apply(&self, events: &[LoggedEvent], next: Position, activate: bool) -> Result<(), Refused> {
        self.apply_fenced(events, next, activate, None)
    }
}

impl KvInner {
    /// [`Backend::apply`], under a consumer group's lease when `fence` is given: the commit is
    /// refused with [`StorageError::LeaseLost`](crate::storage::StorageError::LeaseLost) once
    /// the lease is lost.
    pub(super) fn apply_fenced(
        &self,
        events: &[LoggedEvent],
        next: Position,
        activate: bool,
        fence: Option<&Fence>,
    ) -> Result<(), Refused> {
        let older = if activate {
            self.older_checkpoints()?
        } else {
            Vec::new()
        };
        self.state
            .try_commit_fenced(&self.checkpoint, next, fence, |txn| {
                let applied = self.apply_in(txn, events)?;
                if applied.is_ok() && activate {
                    self.activate_in(txn, &older)?;
                }
                Ok(applied)
            })
            .map_err(ViewError::from)?
    }
}
