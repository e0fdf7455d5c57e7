//! What every console handler reads: the adapter, the state store and the registered parts,
//! plus the caps that keep each answer bounded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::auth::Token;
use super::error::ApiError;
use super::parts::EntityProbe;
use super::timed::CommitLatency;
use super::typed::TypedStore;
use crate::runtime::queue::Queue;
use crate::runtime::state::StateStore;
use crate::storage::{EventStoreSummary, LogAdapter, Position, StorageAdapter, StorageError};

/// How long a listing of the stores is reused: adapters without an index of their stores
/// (PostgreSQL) count them by reading the whole log, which polling pages must not repeat.
const SUMMARY_REUSE: Duration = Duration::from_secs(5);

/// The console's view of the application.
pub(crate) struct Shared {
    pub(crate) adapter: Arc<dyn StorageAdapter>,
    pub(crate) log: Option<Arc<LogAdapter>>,
    pub(crate) state: Option<Arc<StateStore>>,
    pub(crate) stores: BTreeMap<String, Arc<dyn TypedStore>>,
    pub(crate) queues: BTreeMap<String, Queue>,
    pub(crate) entities: BTreeMap<String, Arc<dyn EntityProbe>>,
    pub(crate) token: Option<Token>,
    /// The commit-latency histogram, when a timed adapter is registered.
    pub(crate) commit_latency: Option<Arc<CommitLatency>>,
    /// Live tails open at once, at most.
    pub(crate) tails: Arc<Semaphore>,
    /// Held while a verification runs, so that they do not pile up.
    pub(crate) verifying: tokio::sync::Mutex<()>,
    summaries: tokio::sync::Mutex<Option<Summaries>>,
}

struct Summaries {
    at: Instant,
    head: Position,
    stores: Vec<EventStoreSummary>,
}

impl Shared {
    pub(crate) fn new(
        adapter: Arc<dyn StorageAdapter>,
        log: Option<Arc<LogAdapter>>,
        state: Option<Arc<StateStore>>,
        token: Option<Token>,
        tails_max: usize,
    ) -> Self {
        Shared {
            adapter,
            log,
            state,
            stores: BTreeMap::new(),
            queues: BTreeMap::new(),
            entities: BTreeMap::new(),
            token,
            commit_latency: None,
            tails: Arc::new(Semaphore::new(tails_max.max(1))),
            verifying: tokio::sync::Mutex::new(()),
            summaries: tokio::sync::Mutex::new(None),
        }
    }

    /// The position of the last committed event (0 when none).
    pub(crate) fn head(&self) -> Position {
        *self.adapter.watch_log().borrow()
    }

    /// Every store with events, with its counts: recomputed when the log moved and the last
    /// listing is older than [`SUMMARY_REUSE`], by one request at a time.
    pub(crate) async fn summaries(&self) -> Result<Vec<EventStoreSummary>, StorageError> {
        let mut cached = self.summaries.lock().await;
        let head = self.head();
        if let Some(c) = cached.as_ref()
            && (c.head == head || c.at.elapsed() < SUMMARY_REUSE)
        {
            return Ok(c.stores.clone());
        }
        let stores = self.adapter.event_store_summaries().await?;
        *cached = Some(Summaries {
            at: Instant::now(),
            head,
            stores: stores.clone(),
        });
        Ok(stores)
    }

    /// Runs `read` on the state store on the blocking pool (the store's calls block on disk);
    /// `None` when the console has no state store.
    pub(crate) async fn with_state<T, E>(
        &self,
        read: impl FnOnce(&StateStore) -> Result<T, E> + Send + 'static,
    ) -> Result<Option<T>, ApiError>
    where
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let Some(state) = self.state.clone() else {
            return Ok(None);
        };
        match tokio::task::spawn_blocking(move || read(&state)).await {
            Ok(Ok(out)) => Ok(Some(out)),
            Ok(Err(e)) => Err(ApiError::Internal(e.to_string())),
            Err(e) => Err(ApiError::Internal(format!(
                "a state store read failed: {e}"
            ))),
        }
    }
}
