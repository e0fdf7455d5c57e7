//! How client, pool and server errors become typed [`StorageError`]s.

use tokio_postgres::error::SqlState;

use crate::storage::StorageError;

/// Maps a client or server error met while trying to `operation`.
///
/// - a cancelled statement (SQLSTATE 57014, what `statement_timeout` raises) is a
///   [`StorageError::Timeout`];
/// - a lost or refused connection (a closed client, SQLSTATE class 08, an administrator's
///   shutdown or termination: 57P01 to 57P03), and every error the server did not send (I/O,
///   connecting), is [`StorageError::Unavailable`];
/// - anything else the server refused is [`StorageError::Database`] with its SQLSTATE.
pub(crate) fn from_client(operation: &'static str, error: tokio_postgres::Error) -> StorageError {
    if error.is_closed() {
        return unavailable(operation, error);
    }
    let Some(db) = error.as_db_error() else {
        return unavailable(operation, error);
    };
    let code = db.code();
    if *code == SqlState::QUERY_CANCELED {
        return StorageError::Timeout {
            operation,
            reason: db.message().to_owned(),
        };
    }
    if code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code)
    {
        return StorageError::Unavailable {
            operation,
            reason: db.message().to_owned(),
        };
    }
    StorageError::Database {
        operation,
        code: Some(code.code().to_owned()),
        message: db.message().to_owned(),
    }
}

fn unavailable(operation: &'static str, error: tokio_postgres::Error) -> StorageError {
    // The top-level message of a client error is terse ("error connecting to server"); its
    // source says why.
    let reason = match std::error::Error::source(&error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    };
    StorageError::Unavailable { operation, reason }
}

/// Maps a failure to get a pooled connection.
pub(crate) fn from_pool(
    operation: &'static str,
    error: deadpool_postgres::PoolError,
) -> StorageError {
    use deadpool_postgres::PoolError;
    match error {
        PoolError::Backend(e) => from_client(operation, e),
        PoolError::Closed => StorageError::Closed,
        PoolError::Timeout(kind) => StorageError::Unavailable {
            operation,
            reason: format!("timed out getting a pooled connection ({kind:?})"),
        },
        other => StorageError::Unavailable {
            operation,
            reason: other.to_string(),
        },
    }
}

/// A row the server sent that this adapter cannot read (a negative version, a missing column).
pub(crate) fn bad_row(operation: &'static str, message: impl Into<String>) -> StorageError {
    StorageError::Database {
        operation,
        code: None,
        message: message.into(),
    }
}

/// Whether an error is the unique violation of a duplicate (store, aggregate, version).
pub(crate) fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Whether retrying a read on a fresh connection may help: the connection was lost.
pub(crate) fn is_connection_lost(error: &StorageError) -> bool {
    matches!(error, StorageError::Unavailable { .. })
}
