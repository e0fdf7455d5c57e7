//! Durable consumers: named subscriptions that remember how far they got.
//!
//! A [`Consumer`] is a [`Subscription`] whose position is stored in a [`StateStore`] under the
//! consumer's name. It resumes from there after a restart or a crash, so delivery is
//! **at-least-once**: an event delivered but not yet [committed](Consumer::commit) is
//! delivered again. Work that must happen exactly once commits its own writes together with the
//! checkpoint ([`Consumer::commit_with`]), in one transaction.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use annals::consumer::Consumer;
//! use annals::state::StateStore;
//! use annals::storage::{InMemoryAdapter, StorageAdapter};
//! use annals::subscription::Filter;
//!
//! let adapter: Arc<dyn StorageAdapter> = Arc::new(InMemoryAdapter::new());
//! let state = Arc::new(StateStore::in_memory());
//! let consumer = Consumer::open("mailer", adapter, state.clone(), Filter::all())?;
//! assert_eq!(consumer.position(), 1); // a new consumer starts at the beginning of the log
//! # Ok::<(), annals::StorageError>(()) }).unwrap();
//! ```

use std::sync::Arc;

use crate::runtime::lease::Fence;
use crate::runtime::state::{StateStore, StateTxn, TxnError};
use crate::runtime::subscription::{Filter, Subscription};
use crate::storage::{LoggedEvent, Position, StorageAdapter, StorageError};

/// A named, durable subscription: see the [module docs](self).
#[derive(Debug)]
pub struct Consumer {
    name: String,
    subscription: Subscription,
    state: Arc<StateStore>,
    /// The consumer-group lease this consumer works under, if any: checked before each event
    /// is handed out and inside each commit.
    fence: Option<Fence>,
}

impl Consumer {
    /// Opens consumer `name`: it continues from its committed checkpoint, or from the first
    /// position of the log if it never committed.
    pub fn open(
        name: impl Into<String>,
        adapter: Arc<dyn StorageAdapter>,
        state: Arc<StateStore>,
        filter: Filter,
    ) -> Result<Self, StorageError> {
        let name = name.into();
        let from = state.checkpoint(&name)?.unwrap_or(1);
        Ok(Consumer::open_from(name, adapter, state, filter, from))
    }

    /// Consumer `name` starting at `from` whatever its checkpoint says (the caller read it).
    pub(crate) fn open_from(
        name: String,
        adapter: Arc<dyn StorageAdapter>,
        state: Arc<StateStore>,
        filter: Filter,
        from: Position,
    ) -> Self {
        Consumer {
            subscription: Subscription::new(adapter, from, filter),
            name,
            state,
            fence: None,
        }
    }

    /// This consumer under a consumer group's lease: it hands out no event once the lease is
    /// lost by the process's clock, and its commits are fenced by the database (see
    /// [`lease`](crate::runtime::lease)); either fails with [`StorageError::LeaseLost`].
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn fenced(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Fails with [`StorageError::LeaseLost`] once the lease this consumer works under is lost.
    fn check_lease(&self) -> Result<(), StorageError> {
        match &self.fence {
            Some(fence) => fence.check_local(),
            None => Ok(()),
        }
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position after the last event delivered (what [`commit`](Self::commit) stores).
    pub fn position(&self) -> Position {
        self.subscription.position()
    }

    /// The next event, waiting for a commit when caught up.
    pub async fn next(&mut self) -> Result<LoggedEvent, StorageError> {
        self.check_lease()?;
        let event = self.subscription.next().await?;
        // The wait may have been long: the lease is checked again before the event goes out.
        self.check_lease()?;
        Ok(event)
    }

    /// The next event if one is committed, without waiting.
    pub async fn try_next(&mut self) -> Result<Option<LoggedEvent>, StorageError> {
        self.check_lease()?;
        self.subscription.try_next().await
    }

    /// Durably records that every event delivered so far is handled.
    pub fn commit(&self) -> Result<(), StorageError> {
        self.commit_with(|_| Ok(()))
    }

    /// Runs `apply` and records the checkpoint in the same durable transaction, so its writes
    /// (a message through [`Queue::enqueue_in`](crate::runtime::queue::Queue::enqueue_in), on
    /// either backend of the state store) and the checkpoint survive a crash together or not
    /// at all (exactly-once effects). An error `apply` returns ([`TxnError::abort`], or a
    /// queue's refusal) aborts the transaction.
    pub fn commit_with<T>(
        &self,
        apply: impl FnOnce(&StateTxn<'_>) -> Result<T, TxnError>,
    ) -> Result<T, StorageError> {
        let fence = self.fence.as_ref();
        self.state
            .try_commit_fenced(&self.name, self.position(), fence, |txn| {
                apply(txn).map(Ok::<T, TxnError>)
            })?
            .map_err(TxnError::into_storage)
    }
}
