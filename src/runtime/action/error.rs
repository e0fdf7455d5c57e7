//! How an action fails, and how a runner stops.

use std::fmt;

use crate::runtime::queue::QueueError;
use crate::storage::StorageError;

/// Why one run of an action failed.
///
/// Any error converts into a *retryable* one with `?` (the runner tries again after a backoff);
/// an error that no retry can fix — a malformed message, an event the action cannot handle —
/// should be [`permanent`](Self::permanent): it goes to the dead letters at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    reason: String,
    permanent: bool,
}

impl ActionError {
    /// A failure worth retrying (a timeout, a service down, a version conflict).
    pub fn retryable(reason: impl fmt::Display) -> Self {
        ActionError {
            reason: reason.to_string(),
            permanent: false,
        }
    }

    /// A failure no retry can fix: no further attempt is made.
    pub fn permanent(reason: impl fmt::Display) -> Self {
        ActionError {
            reason: reason.to_string(),
            permanent: true,
        }
    }

    /// What went wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Any error is a retryable action failure, so `?` works in actions. (`ActionError` is not a
/// `std::error::Error` itself, which is what lets this conversion exist.)
impl<E: std::error::Error> From<E> for ActionError {
    fn from(e: E) -> Self {
        ActionError::retryable(e)
    }
}

/// Why an action runner stopped on its own: its state or its log failed. The runner's
/// checkpoint is where it was; restart the runner once the cause is fixed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionRunError {
    /// Reading the log, or committing a checkpoint, a dead letter or a queue change, failed.
    #[error("action {action:?}: {source}")]
    Storage {
        /// The action whose runner stopped.
        action: String,
        /// The failure.
        #[source]
        source: StorageError,
    },
    /// The runner's task ended abnormally (it panicked outside of the action, or the runtime
    /// shut down).
    #[error("action {action:?}: the runner task ended abnormally: {reason}")]
    Aborted {
        /// The action whose runner stopped.
        action: String,
        /// What the task reported.
        reason: String,
    },
    /// A queue refused what a queue action's runner asked of it (a storage failure of the
    /// queue is reported as [`Storage`](Self::Storage)).
    #[error("action {action:?}: {source}")]
    Queue {
        /// The action whose runner stopped.
        action: String,
        /// The queue's error.
        #[source]
        source: QueueError,
    },
}

impl ActionRunError {
    /// The error that stops queue action `action`'s runner on `error`.
    pub(crate) fn from_queue(action: String, error: QueueError) -> Self {
        match error {
            QueueError::Storage(source) => ActionRunError::Storage { action, source },
            source => ActionRunError::Queue { action, source },
        }
    }
}
