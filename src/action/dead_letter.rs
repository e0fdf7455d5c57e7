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
//! Stored in the redb table `action_dead_letters`: key `(action name, position)`, value one
//! format byte (`1`) followed by the record in MessagePack.
//!
//! [`RetryPolicy`]: super::RetryPolicy

use std::path::PathBuf;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::state::{StateStore, TxnError};
use crate::storage::{LoggedEvent, Position, StorageError, Timestamp};

const DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("action_dead_letters");

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

/// Every dead letter of `action`, in log order.
pub fn list(state: &StateStore, action: &str) -> Result<Vec<DeadLetter>, StorageError> {
    let rows = state.read(|txn| {
        let table = match txn.open_table(DEAD_LETTERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        table
            .range((action, 0)..=(action, u64::MAX))?
            .map(|row| Ok(row?.1.value().to_vec()))
            .collect::<Result<Vec<_>, TxnError>>()
    })?;
    rows.iter().map(|bytes| decode(bytes)).collect()
}

/// Every dead letter of every action, ordered by action name, then log order: what
/// `annals dead-letters list` shows.
pub fn list_all(state: &StateStore) -> Result<Vec<DeadLetter>, StorageError> {
    let rows = state.read(|txn| {
        let table = match txn.open_table(DEAD_LETTERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        table
            .iter()?
            .map(|row| Ok(row?.1.value().to_vec()))
            .collect::<Result<Vec<_>, TxnError>>()
    })?;
    rows.iter().map(|bytes| decode(bytes)).collect()
}

/// The dead letter of `action` at `position`, if there is one.
pub fn get(
    state: &StateStore,
    action: &str,
    position: Position,
) -> Result<Option<DeadLetter>, StorageError> {
    let bytes = state.read(|txn| {
        let table = match txn.open_table(DEAD_LETTERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get((action, position))?.map(|v| v.value().to_vec()))
    })?;
    bytes.map(|b| decode(&b)).transpose()
}

/// Removes (drops) the dead letter of `action` at `position`: the event will not be handled by
/// the action. Whether there was one.
pub fn remove(state: &StateStore, action: &str, position: Position) -> Result<bool, StorageError> {
    state.write(|txn| {
        Ok(txn
            .open_table(DEAD_LETTERS)?
            .remove((action, position))?
            .is_some())
    })
}

/// Writes `letter` inside `txn` (replacing one at the same action and position).
pub(crate) fn put_in(txn: &redb::WriteTransaction, letter: &DeadLetter) -> Result<(), TxnError> {
    let bytes = encode(letter);
    txn.open_table(DEAD_LETTERS)?
        .insert((letter.action.as_str(), letter.position), bytes.as_slice())?;
    Ok(())
}

fn encode(letter: &DeadLetter) -> Vec<u8> {
    let mut bytes = vec![FORMAT];
    rmp_serde::encode::write_named(&mut bytes, letter)
        .expect("a dead letter has only strings and integers, which always encode");
    bytes
}

fn decode(bytes: &[u8]) -> Result<DeadLetter, StorageError> {
    let damaged = |reason: String| StorageError::Corruption {
        file: PathBuf::from("<state store>"),
        offset: 0,
        reason: format!("table action_dead_letters: {reason}"),
    };
    match bytes.split_first() {
        Some((&FORMAT, record)) => {
            rmp_serde::from_slice(record).map_err(|e| damaged(format!("undecodable record: {e}")))
        }
        Some((format, _)) => Err(damaged(format!("unknown record format {format}"))),
        None => Err(damaged("empty record".to_owned())),
    }
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
    fn a_damaged_record_is_reported_not_trusted() {
        assert!(matches!(decode(&[]), Err(StorageError::Corruption { .. })));
        assert!(matches!(
            decode(&[7, 1]),
            Err(StorageError::Corruption { .. })
        ));
        assert!(matches!(
            decode(&[FORMAT, 0xc1]),
            Err(StorageError::Corruption { .. })
        ));
    }

    impl DeadLetter {
        fn with_time(mut self, failed_at: Timestamp) -> Self {
            self.failed_at = failed_at;
            self
        }
    }
}
