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
//! Dead letters are in the redb table `action_dead_letters`: key `(action name, position)`,
//! value one format byte (`1`) followed by the record in MessagePack. Retry requests are in
//! their own table, `action_dead_letter_retries`: the same key, value the instant of the
//! request (signed milliseconds since the Unix epoch). A state file written before retry
//! requests existed has no such table, which reads as "nothing requested": it opens unchanged.
//!
//! [`RetryPolicy`]: super::RetryPolicy

use std::path::PathBuf;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::runtime::state::{StateStore, TxnError};
use crate::runtime::state_schema::{ACTION_DEAD_LETTERS, ACTION_RETRY_REQUESTS};
use crate::storage::{LoggedEvent, Position, StorageError, Timestamp};

/// The format byte that starts every stored dead letter.
const FORMAT: u8 = 1;

/// An event an action gave up on, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The action that failed.
    pub action: String,
    /// The event's global position (the event stays in the log).
    pub position: Position,
    /// The event's store.
    pub event_store_id: String,
    /// The event's aggregate.
    pub aggregate_id: String,
    /// The event's version within its aggregate.
    pub version: u64,
    /// The event's type.
    pub event_type: String,
    /// The last failure's reason.
    pub error: String,
    /// How many times the action ran on the event, retries of the dead letter included.
    pub attempts: u32,
    /// When the last attempt failed.
    pub failed_at: Timestamp,
    /// When a retry was requested with [`request_retry`] and not yet carried out by the
    /// action's runner; `None` when none is pending.
    #[serde(default)]
    pub retry_requested_at: Option<Timestamp>,
}

impl DeadLetter {
    pub(crate) fn new(action: &str, event: &LoggedEvent, error: String, attempts: u32) -> Self {
        DeadLetter {
            action: action.to_owned(),
            position: event.position,
            event_store_id: event.event_store_id.clone(),
            aggregate_id: event.event.aggregate_id.clone(),
            version: event.event.version,
            event_type: event.event.event_type.clone(),
            error,
            attempts,
            failed_at: Timestamp::now(),
            retry_requested_at: None,
        }
    }
}

/// A dead letter as stored in `action_dead_letters` (format 1): every field of [`DeadLetter`]
/// but the retry request, which has its own table.
#[derive(Serialize, Deserialize)]
struct Record {
    action: String,
    position: Position,
    event_store_id: String,
    aggregate_id: String,
    version: u64,
    event_type: String,
    error: String,
    attempts: u32,
    failed_at: Timestamp,
}

impl Record {
    fn of(letter: &DeadLetter) -> Self {
        Record {
            action: letter.action.clone(),
            position: letter.position,
            event_store_id: letter.event_store_id.clone(),
            aggregate_id: letter.aggregate_id.clone(),
            version: letter.version,
            event_type: letter.event_type.clone(),
            error: letter.error.clone(),
            attempts: letter.attempts,
            failed_at: letter.failed_at,
        }
    }

    fn into_letter(self, retry_requested_at: Option<Timestamp>) -> DeadLetter {
        DeadLetter {
            action: self.action,
            position: self.position,
            event_store_id: self.event_store_id,
            aggregate_id: self.aggregate_id,
            version: self.version,
            event_type: self.event_type,
            error: self.error,
            attempts: self.attempts,
            failed_at: self.failed_at,
            retry_requested_at,
        }
    }
}

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

/// A stored row: the record's bytes and its retry request, if any.
type Row = (Vec<u8>, Option<i64>);

/// Reads the rows of `range` (of one action, or of all) in one read transaction.
fn read_rows<'a>(
    state: &StateStore,
    range: impl redb::KeyRange<(&'static str, u64)> + 'a,
) -> Result<Vec<DeadLetter>, StorageError> {
    let rows = state.read(|txn| {
        let table = match txn.open_table(ACTION_DEAD_LETTERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let requests = match txn.open_table(ACTION_RETRY_REQUESTS) {
            Ok(requests) => Some(requests),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut rows: Vec<Row> = Vec::new();
        for row in table.range(range)? {
            let (key, value) = row?;
            let (action, position) = key.value();
            let requested = match &requests {
                Some(requests) => requests.get((action, position))?.map(|v| v.value()),
                None => None,
            };
            rows.push((value.value().to_vec(), requested));
        }
        Ok::<_, TxnError>(rows)
    })?;
    rows.iter()
        .map(|(bytes, requested)| decode(bytes, *requested))
        .collect()
}

/// Every dead letter of `action`, in log order.
pub fn list(state: &StateStore, action: &str) -> Result<Vec<DeadLetter>, StorageError> {
    read_rows(state, (action, 0)..=(action, u64::MAX))
}

/// Every dead letter of every action, ordered by action name, then log order: what
/// `annals dead-letters list` shows.
pub fn list_all(state: &StateStore) -> Result<Vec<DeadLetter>, StorageError> {
    read_rows(state, ..)
}

/// The dead letter of `action` at `position`, if there is one.
pub fn get(
    state: &StateStore,
    action: &str,
    position: Position,
) -> Result<Option<DeadLetter>, StorageError> {
    Ok(read_rows(state, (action, position)..=(action, position))?
        .into_iter()
        .next())
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
    state.write(|txn| {
        if txn
            .open_table(ACTION_DEAD_LETTERS)?
            .get((action, position))?
            .is_none()
        {
            return Ok(false);
        }
        txn.open_table(ACTION_RETRY_REQUESTS)?
            .insert((action, position), now)?;
        Ok(true)
    })
}

/// Marks every dead letter of `action` for retry, like [`request_retry`], in one transaction.
/// The positions marked, in log order (empty when the action has no dead letters).
pub fn request_retry_all(state: &StateStore, action: &str) -> Result<Vec<Position>, StorageError> {
    let now = Timestamp::now().unix_millis();
    state.write(|txn| {
        let positions = txn
            .open_table(ACTION_DEAD_LETTERS)?
            .range((action, 0)..=(action, u64::MAX))?
            .map(|row| Ok(row?.0.value().1))
            .collect::<Result<Vec<Position>, TxnError>>()?;
        let mut requests = txn.open_table(ACTION_RETRY_REQUESTS)?;
        for &position in &positions {
            requests.insert((action, position), now)?;
        }
        Ok(positions)
    })
}

/// The pending retry requests of `action`: position and the instant of the request, in log
/// order.
pub(crate) fn retry_requests(
    state: &StateStore,
    action: &str,
) -> Result<Vec<(Position, i64)>, StorageError> {
    state.read(|txn| {
        let requests = match txn.open_table(ACTION_RETRY_REQUESTS) {
            Ok(requests) => requests,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        requests
            .range((action, 0)..=(action, u64::MAX))?
            .map(|row| {
                let (key, value) = row?;
                Ok((key.value().1, value.value()))
            })
            .collect()
    })
}

/// Clears the retry request of `action` at `position` inside `txn`, if it is still the one
/// made at `requested_at` (a request made since is left for the next pass).
pub(crate) fn clear_retry_request_in(
    txn: &redb::WriteTransaction,
    action: &str,
    position: Position,
    requested_at: i64,
) -> Result<(), TxnError> {
    let mut requests = txn.open_table(ACTION_RETRY_REQUESTS)?;
    let current = requests.get((action, position))?.map(|v| v.value());
    if current == Some(requested_at) {
        requests.remove((action, position))?;
    }
    Ok(())
}

/// Removes the dead letter of `action` at `position` and its retry request inside `txn`.
/// Whether there was a dead letter.
pub(crate) fn remove_in(
    txn: &redb::WriteTransaction,
    action: &str,
    position: Position,
) -> Result<bool, TxnError> {
    txn.open_table(ACTION_RETRY_REQUESTS)?
        .remove((action, position))?;
    Ok(txn
        .open_table(ACTION_DEAD_LETTERS)?
        .remove((action, position))?
        .is_some())
}

/// Writes `letter` inside `txn` (replacing one at the same action and position). Its retry
/// request, if any, is left as it is: it lives in its own table.
pub(crate) fn put_in(txn: &redb::WriteTransaction, letter: &DeadLetter) -> Result<(), TxnError> {
    let bytes = encode(letter);
    txn.open_table(ACTION_DEAD_LETTERS)?
        .insert((letter.action.as_str(), letter.position), bytes.as_slice())?;
    Ok(())
}

fn encode(letter: &DeadLetter) -> Vec<u8> {
    let mut bytes = vec![FORMAT];
    rmp_serde::encode::write_named(&mut bytes, &Record::of(letter))
        .expect("a dead letter has only strings and integers, which always encode");
    bytes
}

fn decode(bytes: &[u8], retry_requested_at: Option<i64>) -> Result<DeadLetter, StorageError> {
    let damaged = |reason: String| {
        StorageError::corruption(
            PathBuf::from("<state store>"),
            0,
            format!("table action_dead_letters: {reason}"),
        )
    };
    let record: Record = match bytes.split_first() {
        Some((&FORMAT, record)) => rmp_serde::from_slice(record)
            .map_err(|e| damaged(format!("undecodable record: {e}")))?,
        Some((format, _)) => return Err(damaged(format!("unknown record format {format}"))),
        None => return Err(damaged("empty record".to_owned())),
    };
    Ok(record.into_letter(retry_requested_at.map(Timestamp::from_unix_millis)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::EncodedEvent;

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

    #[test]
    fn a_damaged_record_is_reported_not_trusted() {
        assert!(matches!(
            decode(&[], None),
            Err(StorageError::Corruption(_))
        ));
        assert!(matches!(
            decode(&[7, 1], None),
            Err(StorageError::Corruption(_))
        ));
        assert!(matches!(
            decode(&[FORMAT, 0xc1], None),
            Err(StorageError::Corruption(_))
        ));
    }

    impl DeadLetter {
        fn with_time(mut self, failed_at: Timestamp) -> Self {
            self.failed_at = failed_at;
            self
        }
    }
}
