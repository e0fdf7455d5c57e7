//! Why a state-store transaction was aborted.

use crate::storage::StorageError;

/// An error inside a state-store transaction. Returning one aborts the transaction: nothing of
/// it is committed, and the transaction's caller gets the error as a [`StorageError`].
#[derive(Debug)]
pub struct TxnError(Box<StorageError>);

impl TxnError {
    /// Aborts the transaction for `reason`: what a closure returns to give up its writes. The
    /// caller gets [`StorageError::Database`] with the reason.
    pub fn abort(reason: impl Into<String>) -> Self {
        TxnError(Box::new(StorageError::Database {
            operation: "run a state transaction",
            code: None,
            message: format!("aborted: {}", reason.into()),
        }))
    }

    pub(crate) fn into_storage(self) -> StorageError {
        *self.0
    }
}

impl From<StorageError> for TxnError {
    fn from(e: StorageError) -> Self {
        TxnError(Box::new(e))
    }
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TxnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}
