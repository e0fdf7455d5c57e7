//! Why a key-value view's table operation failed.

/// An error of a key-value table operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The state store failed; the transaction is aborted.
    #[error("view table {table:?}: {source}")]
    Database {
        /// The table.
        table: String,
        /// The state store's error.
        source: Box<crate::storage::StorageError>,
    },
    /// A value does not encode.
    #[error("view table {table:?}, key {key:?}: the value does not encode: {reason}")]
    Encode {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A stored value does not decode into the type asked for (the view's code changed what
    /// it stores without a new version?).
    #[error("view table {table:?}, key {key:?}: the value does not decode: {reason}")]
    Decode {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}
