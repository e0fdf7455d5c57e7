//! Dead letters: the events an event-triggered action gave up on.
//!
//! When an action has failed on an event as many times as its [`RetryPolicy`] allows (or once,
//! with a [permanent](super::ActionError::permanent) error), its runner records a
//! [`DeadLetter`] and moves its checkpoint past the event **in one transaction** of the
//! [`StateStore`]: after a crash either both happened or neither did (then the event is
//! delivered again), so an event is never lost nor dead-lettered twice. Later events keep
//! flowing.
//!
//! A dead letter names the event by its global position; the event itself stays in the log.
//! List them with [`list`], run the action on one again with
//! [`EventAction::retry_dead_letter`](super::EventAction::retry_dead_letter) (removed on
//! success), or give up on one with [`remove`].
//!
//! # Retry requests
//!
//! Retrying runs the action's code, which only the application that declares the action has.
//! Whoever holds the state file without that code (the `annals` command-line tool, while the
//! application is stopped) can instead *request* a retry: [`request_retry`] and
//! [`request_retry_all`] durably mark dead letters, and the action's
//! [`ActionRunner`](super::ActionRunner) retries the marked ones when it starts and then every
//! [`retry_requests_interval`](super::EventAction::retry_requests_interval). Each marked letter
//! goes through the action's normal path, with its retry policy: on success the dead letter is
//! removed; on failure it stays, with the new error and attempts counted, and its mark is
//! cleared so that it is not retried again until asked. [`DeadLetter::retry_requested_at`]
//! tells whether a letter is marked.
//!
//! # Storage
//!
//! In the [`StateStore`]: on redb, the table `action_dead_letters` (key `(action name,
//! position)`, value one format byte (`1`) followed by the record in MessagePack) and the
//! retry requests in their own table, `action_dead_letter_retries` (the same key, value the
//! instant of the request in signed milliseconds since the Unix epoch); a state file written
//! before retry requests existed has no such table, which reads as "nothing requested". On
//! PostgreSQL, the table `action_dead_letters`, one column per field, the retry request
//! included. Dead letters on PostgreSQL are shared: every process (and `annals dead-letters
//! --postgres`) sees the same ones.
//!
//! [`RetryPolicy`]: super::RetryPolicy

use crate::runtime::state::{Letters, StateStore, StateTxn, TxnError};
use crate::storage::{Position, StorageError, Timestamp};

pub use crate::runtime::state::records::DeadLetter;

/// Why [`EventAction::retry_dead_letter`](super::EventAction::retry_dead_letter) did not
/// clear a dead letter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryDeadLetterError {
    /// The action has no dead letter at this position (retried and cleared already, or
    /// dropped).
    #[error("no dead letter at position {position}")]
    NotFound {
        /// The position asked for.
        position: Position,
    },
    /// The log has no event at the dead letter's position: the log is not the one the action
    /// ran on.
    #[error("the log has no event at dead letter position {position}")]
    EventNotInLog {
        /// The dead letter's position.
        position: Position,
    },
    /// The action failed again; the dead letter stays, with this error.
    #[error("the action failed again: {0}")]
    Failed(super::ActionError),
    /// Reading the log or the state store, or updating it, failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Every dead letter of `action`, in log order.
pub fn list(state: &StateStore, action: &str) -> Result<Vec<DeadLetter>, StorageError> {
    state.read(|state| state.dead_letters(Letters::Of(action)))
}

/// Every dead letter of every action, ordered by action name, then log order: what
/// `annals dead-letters list` shows.
pub fn list_all(state: &StateStore) -> Result<Vec<DeadLetter>, StorageError> {
    state.read(|state| state.dead_letters(Letters::All))
}

/// The dead letter of `action` at `position`, if there is one.
pub fn get(
    state: &StateStore,
    action: &str,
    position: Position,
) -> Result<Option<DeadLetter>, StorageError> {
    let letters = state.read(|state| state.dead_letters(Letters::At(action, position)))?;
    Ok(letters.into_iter().next())
}

/// Removes (drops) the dead letter of `action` at `position`, and its retry request: the event
/// will not be handled by the action. Whether there was one.
pub fn remove(state: &StateStore, action: &str, position: Position) -> Result<bool, StorageError> {
    state.write(|txn| remove_in(txn, action, position))
}

/// Marks the dead letter of `action` at `position` for retry, durably: the action's runner
/// retries it when it next starts, or within its
/// [`retry_requests_interval`](super::EventAction::retry_requests_interval) if it is running
/// (see the [module docs](self)). Whether there is such a dead letter (nothing is marked when
/// there is not). Marking a letter again moves its request's time.
pub fn request_retry(
    state: &StateStore,
    action: &str,
    position: Position,
) -> Result<bool, StorageError> {
    let now = Timestamp::now().unix_millis();
    let marked = state.write(|txn| txn.ops().request_retry(action, Some(position), now))?;
    Ok(!marked.is_empty())
}

/// Marks every dead letter of `action` for retry, like [`request_retry`], in one transaction.
/// The positions marked, in log order (empty when the action has no dead letters).
pub fn request_retry_all(state: &StateStore, action: &str) -> Result<Vec<Position>, StorageError> {
    let now = Timestamp::now().unix_millis();
    state.write(|txn| txn.ops().request_retry(action, None, now))
}

/// The pending retry requests of `action`: position and the instant of the request, in log
/// order.
pub(crate) fn retry_requests(
    state: &StateStore,
    action: &str,
) -> Result<Vec<(Position, i64)>, StorageError> {
    state.read(|state| state.retry_requests(action))
}

/// Clears the retry request of `action` at `position` inside `txn`, if it is still the one
/// made at `requested_at` (a request made since is left for the next pass).
pub(crate) fn clear_retry_request_in(
    txn: &StateTxn<'_>,
    action: &str,
    position: Position,
    requested_at: i64,
) -> Result<(), TxnError> {
    txn.ops()
        .clear_retry_request(action, position, requested_at)
}

/// Removes the dead letter of `action` at `position` and its retry request inside `txn`.
/// Whether there was a dead letter.
pub(crate) fn remove_in(
    txn: &StateTxn<'_>,
    action: &str,
    position: Position,
) -> Result<bool, TxnError> {
    txn.ops().remove_dead_letter(action, position)
}

/// Writes `letter` inside `txn` (replacing one at the same action and position). Its retry
/// request, if any, is left as it is.
pub(crate) fn put_in(txn: &StateTxn<'_>, letter: &DeadLetter) -> Result<(), TxnError> {
    txn.ops().put_dead_letter(letter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{EncodedEvent, LoggedEvent};

    fn letter(action: &str, position: Position) -> DeadLetter {
        let event = LoggedEvent {
            event_store_id: "POKEMONS".into(),
            position,
            event: EncodedEvent {
                aggregate_id: "pikachu".into(),
                version: 1,
                timestamp: Timestamp::from_unix_millis(0),
                event_type: "POKEMON_APPEARED".into(),
                schema_version: 1,
                payload: vec![],
                metadata: vec![],
            },
        };
        DeadLetter::new(action, &event, "boom".into(), 3)
    }

    #[test]
    fn dead_letters_are_listed_per_action_in_position_order() {
        let state = StateStore::in_memory();
        state
            .write(|txn| {
                put_in(txn, &letter("mailer", 9))?;
                put_in(txn, &letter("mailer", 2))?;
                put_in(txn, &letter("ocr", 5))
            })
            .unwrap();
        let mailer: Vec<_> = list(&state, "mailer").unwrap();
        assert_eq!(
            mailer.iter().map(|l| l.position).collect::<Vec<_>>(),
            [2, 9]
        );
        assert_eq!(
            mailer[0],
            letter("mailer", 2).with_time(mailer[0].failed_at)
        );
        assert!(remove(&state, "mailer", 2).unwrap());
        assert!(!remove(&state, "mailer", 2).unwrap());
        assert_eq!(get(&state, "mailer", 2).unwrap(), None);
        assert_eq!(list(&state, "ocr").unwrap().len(), 1);
    }

    #[test]
    fn retry_requests_mark_existing_letters_and_go_with_them() {
        let state = StateStore::in_memory();
        state
            .write(|txn| {
                put_in(txn, &letter("mailer", 2))?;
                put_in(txn, &letter("mailer", 9))?;
                put_in(txn, &letter("ocr", 5))
            })
            .unwrap();
        // No request table yet (a state file from before retry requests): nothing is marked.
        assert!(
            list_all(&state)
                .unwrap()
                .iter()
                .all(|l| l.retry_requested_at.is_none())
        );
        assert!(retry_requests(&state, "mailer").unwrap().is_empty());

        assert!(request_retry(&state, "mailer", 9).unwrap());
        assert!(!request_retry(&state, "mailer", 3).unwrap());
        assert!(!request_retry(&state, "nobody", 9).unwrap());
        let marked: Vec<_> = list(&state, "mailer")
            .unwrap()
            .iter()
            .map(|l| (l.position, l.retry_requested_at.is_some()))
            .collect();
        assert_eq!(marked, [(2, false), (9, true)]);
        assert_eq!(
            retry_requests(&state, "mailer")
                .unwrap()
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            [9]
        );

        assert_eq!(request_retry_all(&state, "mailer").unwrap(), [2, 9]);
        assert_eq!(
            request_retry_all(&state, "nobody").unwrap(),
            Vec::<u64>::new()
        );
        assert!(
            get(&state, "ocr", 5)
                .unwrap()
                .unwrap()
                .retry_requested_at
                .is_none()
        );

        // Dropping a letter drops its request.
        assert!(remove(&state, "mailer", 2).unwrap());
        assert_eq!(retry_requests(&state, "mailer").unwrap().len(), 1);
    }

    #[test]
    fn clearing_a_request_spares_a_newer_one() {
        let state = StateStore::in_memory();
        state
            .write(|txn| put_in(txn, &letter("mailer", 2)))
            .unwrap();
        assert!(request_retry(&state, "mailer", 2).unwrap());
        let (_, requested_at) = retry_requests(&state, "mailer").unwrap()[0];
        state
            .write(|txn| clear_retry_request_in(txn, "mailer", 2, requested_at - 1))
            .unwrap();
        assert_eq!(retry_requests(&state, "mailer").unwrap().len(), 1);
        state
            .write(|txn| clear_retry_request_in(txn, "mailer", 2, requested_at))
            .unwrap();
        assert!(retry_requests(&state, "mailer").unwrap().is_empty());
        assert!(get(&state, "mailer", 2).unwrap().is_some());
    }

    impl DeadLetter {
        fn with_time(mut self, failed_at: Timestamp) -> Self {
            self.failed_at = failed_at;
            self
        }
    }
}
