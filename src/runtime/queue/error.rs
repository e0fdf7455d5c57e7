//! What a queue refused, or failed at.

use crate::storage::StorageError;

/// What a queue refused, or failed at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue holds `length_max` messages already: consume some, or raise the limit.
    #[error("queue {queue:?} is full ({length_max} messages)")]
    Full {
        /// The queue.
        queue: String,
        /// Its limit.
        length_max: u64,
    },
    /// The body is larger than `body_bytes_max`.
    #[error("queue {queue:?}: a {bytes}-byte body is over the {body_bytes_max}-byte limit")]
    TooLarge {
        /// The queue.
        queue: String,
        /// The body's size.
        bytes: usize,
        /// The limit.
        body_bytes_max: usize,
    },
    /// The message could not be encoded as JSON.
    #[error("queue {queue:?}: cannot encode the message as JSON: {reason}")]
    Encode {
        /// The queue.
        queue: String,
        /// What failed.
        reason: String,
    },
    /// The state store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<QueueError> for crate::runtime::state::TxnError {
    /// A queue's refusal inside a transaction aborts it: a storage failure as itself, any other
    /// as [`TxnError::abort`](crate::runtime::state::TxnError::abort) with its message.
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Storage(e) => e.into(),
            other => crate::runtime::state::TxnError::abort(other.to_string()),
        }
    }
}
