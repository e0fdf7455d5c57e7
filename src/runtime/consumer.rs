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

use crate::runtime::state::{StateStore, StateTxn, TxnError};
use crate::runtime::subscription::{Filter, Subscription};
use crate::storage::{LoggedEvent, Position, StorageAdapter, StorageError};

/// A named, durable subscription: see the [module docs](self).
#[derive(Debug)]
pub struct Consumer {
    name: String,
    subscription: Subscription,
    state: Arc<StateStore>,
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
        Ok(Consumer {
            subscription: Subscription::new(adapter, from, filter),
            name,
            state,
        })
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
        self.subscription.next().await
    }

    /// The next event if one is committed, without waiting.
    pub async fn try_next(&mut self) -> Result<Option<LoggedEvent>, StorageError> {
        self.subscription.try_next().await
    }

    /// Durably records that every event delivered so far is handled.
    pub fn commit(&self) -> Result<(), StorageError> {
        self.state.set_checkpoint(&self.name, self.position())
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
        self.state
            .commit_with_checkpoint(&self.name, self.position(), apply)
    }
}
