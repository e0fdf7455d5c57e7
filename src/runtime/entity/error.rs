//! Why an entity did not carry out a command.

use std::fmt;
use std::sync::Arc;

use crate::model::Error;

/// Why [`EntityHandle::send`](super::EntityHandle::send) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntityError<R: fmt::Debug> {
    /// The entity refused the command; nothing was recorded.
    #[error("the command was rejected: {0:?}")]
    Rejected(R),
    /// The instance's mailbox is full; nothing was recorded. Retry later, or slow down.
    #[error("entity {aggregate_id:?} is overloaded: {capacity} commands already queued")]
    Overloaded {
        /// The entity whose mailbox is full.
        aggregate_id: String,
        /// The mailbox's capacity
        /// ([`EntityOptions::mailbox_capacity`](super::EntityOptions::mailbox_capacity)).
        capacity: usize,
    },
    /// Loading the aggregate or committing the batch holding the command failed; the
    /// command's events are not recorded (a commit is all or nothing). The instance reloads
    /// its state before its next command; whether a retry helps depends on the error.
    #[error("entity {aggregate_id:?}: {source}")]
    Store {
        /// The entity.
        aggregate_id: String,
        /// The store's error, shared by every command of the failed batch.
        source: Arc<Error>,
    },
    /// The aggregate kept being appended to by someone else: the command was decided again
    /// on reloaded state
    /// [`EntityOptions::conflict_retries`](super::EntityOptions::conflict_retries) times and
    /// conflicted every time.
    /// Nothing was recorded.
    #[error("entity {aggregate_id:?}: still conflicting after {attempts} attempts")]
    Contended {
        /// The entity.
        aggregate_id: String,
        /// How many times the command was decided.
        attempts: u32,
    },
    /// The command set a timer with an invalid name or a command that does not serialize
    /// (see [`CommandContext::schedule`](super::CommandContext::schedule)); nothing was recorded.
    #[error("entity {aggregate_id:?}: invalid timer {name:?}: {reason}")]
    InvalidTimer {
        /// The entity.
        aggregate_id: String,
        /// The timer's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A timer request ([`Timers`](super::Timers)) found the timer no longer scheduled: it was
    /// cancelled,
    /// replaced or already delivered. Nothing was recorded.
    #[error("entity {aggregate_id:?}: no timer {name:?} is scheduled")]
    TimerNotScheduled {
        /// The entity.
        aggregate_id: String,
        /// The timer's name.
        name: String,
    },
    /// The instance stopped before answering (its `decide` panicked, or the runtime shut
    /// down). The command may or may not have been recorded.
    #[error("entity {aggregate_id:?} stopped before answering")]
    Stopped {
        /// The entity.
        aggregate_id: String,
    },
}
