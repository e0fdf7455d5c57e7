//! Assertions on the typed errors an adapter refuses a commit with.

use crate::storage::{EventAlreadyExists, LimitError, StorageError};

/// Asserts that `result` is a conflict on exactly `(store, aggregate, version)`.
pub(super) fn expect_conflict<T: std::fmt::Debug>(
    check: &str,
    result: Result<T, StorageError>,
    (event_store_id, aggregate_id, version): (&str, &str, u64),
) {
    match result {
        Err(StorageError::EventAlreadyExists(conflict)) => assert_eq!(
            conflict,
            EventAlreadyExists {
                event_store_id: event_store_id.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                version,
            },
            "{check}: the conflict names the event that conflicted"
        ),
        other => panic!(
            "{check}: expected EventAlreadyExists on {event_store_id}/{aggregate_id} \
             v{version}, got {other:?}"
        ),
    }
}

/// Asserts that `result` is `UnexpectedVersion` with exactly these fields.
pub(super) fn expect_unexpected_version<T: std::fmt::Debug>(
    check: &str,
    result: Result<T, StorageError>,
    (event_store_id, aggregate_id, version): (&str, &str, u64),
    expected: Option<u64>,
) {
    match result {
        Err(StorageError::UnexpectedVersion {
            event_store_id: s,
            aggregate_id: a,
            version: v,
            expected: e,
        }) => assert_eq!(
            (s.as_str(), a.as_str(), v, e),
            (event_store_id, aggregate_id, version, expected),
            "{check}: UnexpectedVersion names the refused event and the accepted version"
        ),
        other => panic!(
            "{check}: expected UnexpectedVersion on {event_store_id}/{aggregate_id} \
             v{version}, got {other:?}"
        ),
    }
}

/// Asserts that `result` is a limit error accepted by `is_expected`.
pub(super) fn expect_limit<T: std::fmt::Debug>(
    check: &str,
    what: &str,
    result: Result<T, StorageError>,
    is_expected: impl FnOnce(&LimitError) -> bool,
) {
    match result {
        Err(StorageError::Limit(limit)) => assert!(
            is_expected(&limit),
            "{check}: {what} was refused with the wrong limit error: {limit:?}"
        ),
        other => panic!("{check}: {what} was not refused with a limit error: {other:?}"),
    }
}
