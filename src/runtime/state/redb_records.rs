//! How the redb backend stores records in byte values: queue messages (`queue_messages`,
//! `queue_dead_letters`) and action dead letters (`action_dead_letters`). `docs/format.md`
//! describes both.

use serde::{Deserialize, Serialize};

use super::records::{DeadLetter, QueueRecord};
use crate::storage::{Position, Timestamp};

/// The format byte that starts every stored queue message.
const QUEUE_FORMAT: u8 = 1;
/// Bytes before the error text: format, receive count, visible-at, enqueued-at, error length.
const HEADER: usize = 1 + 4 + 8 + 8 + 4;

/// The format byte that starts every stored dead letter.
const LETTER_FORMAT: u8 = 1;

impl QueueRecord {
    /// Format `1`: receive count (u32), visible-at and enqueued-at (i64 Unix ms), the last
    /// error's length (u32) and UTF-8 bytes, then the body; integers little-endian.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let error = self.last_error.as_deref().unwrap_or("").as_bytes();
        let mut out = Vec::with_capacity(HEADER + error.len() + self.body.len());
        out.push(QUEUE_FORMAT);
        out.extend_from_slice(&self.receive_count.to_le_bytes());
        out.extend_from_slice(&self.visible_at.to_le_bytes());
        out.extend_from_slice(&self.enqueued_at.to_le_bytes());
        let error_len = u32::try_from(error.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&error_len.to_le_bytes());
        out.extend_from_slice(&error[..error_len as usize]);
        out.extend_from_slice(&self.body);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<QueueRecord, String> {
        if bytes.len() < HEADER {
            return Err(format!(
                "a {}-byte record is shorter than its header",
                bytes.len()
            ));
        }
        if bytes[0] != QUEUE_FORMAT {
            return Err(format!("unknown record format {}", bytes[0]));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let error_len = u32_at(21) as usize;
        let Some(error) = bytes.get(HEADER..HEADER + error_len) else {
            return Err(format!(
                "an error of {error_len} bytes runs past the record"
            ));
        };
        let error = std::str::from_utf8(error).map_err(|e| format!("error text: {e}"))?;
        Ok(QueueRecord {
            receive_count: u32_at(1),
            visible_at: i64_at(5),
            enqueued_at: i64_at(13),
            last_error: (!error.is_empty()).then(|| error.to_owned()),
            body: bytes[HEADER + error_len..].to_vec(),
        })
    }
}

/// A dead letter as stored in `action_dead_letters` (format 1): every field of [`DeadLetter`]
/// but the retry request, which has its own table.
#[derive(Serialize, Deserialize)]
struct LetterRecord {
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

/// A dead letter's stored bytes: the format byte, then the record in MessagePack with field
/// names.
pub(crate) fn encode_letter(letter: &DeadLetter) -> Vec<u8> {
    let record = LetterRecord {
        action: letter.action.clone(),
        position: letter.position,
        event_store_id: letter.event_store_id.clone(),
        aggregate_id: letter.aggregate_id.clone(),
        version: letter.version,
        event_type: letter.event_type.clone(),
        error: letter.error.clone(),
        attempts: letter.attempts,
        failed_at: letter.failed_at,
    };
    let mut bytes = vec![LETTER_FORMAT];
    rmp_serde::encode::write_named(&mut bytes, &record)
        .expect("a dead letter has only strings and integers, which always encode");
    bytes
}

/// The dead letter stored as `bytes`, with its retry request; why not, when the bytes are not
/// a record.
pub(crate) fn decode_letter(
    bytes: &[u8],
    retry_requested_at: Option<i64>,
) -> Result<DeadLetter, String> {
    let record: LetterRecord = match bytes.split_first() {
        Some((&LETTER_FORMAT, record)) => {
            rmp_serde::from_slice(record).map_err(|e| format!("undecodable record: {e}"))?
        }
        Some((format, _)) => return Err(format!("unknown record format {format}")),
        None => return Err("empty record".to_owned()),
    };
    Ok(DeadLetter {
        action: record.action,
        position: record.position,
        event_store_id: record.event_store_id,
        aggregate_id: record.aggregate_id,
        version: record.version,
        event_type: record.event_type,
        error: record.error,
        attempts: record.attempts,
        failed_at: record.failed_at,
        retry_requested_at: retry_requested_at.map(Timestamp::from_unix_millis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_records_round_trip_and_damage_is_refused() {
        let record = QueueRecord {
            receive_count: 3,
            visible_at: -5,
            enqueued_at: 1_700_000_000_000,
            last_error: Some("timeout".into()),
            body: b"{\"to\":\"ash\"}".to_vec(),
        };
        let bytes = record.encode();
        assert_eq!(QueueRecord::decode(&bytes).unwrap(), record);
        assert!(QueueRecord::decode(&bytes[..HEADER - 1]).is_err());
        let mut long_error = bytes.clone();
        long_error[21..25].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(QueueRecord::decode(&long_error).is_err());
        let mut other_format = bytes;
        other_format[0] = 9;
        assert!(QueueRecord::decode(&other_format).is_err());
    }

    #[test]
    fn a_damaged_dead_letter_is_reported_not_trusted() {
        assert!(decode_letter(&[], None).is_err());
        assert!(decode_letter(&[7, 1], None).is_err());
        assert!(decode_letter(&[LETTER_FORMAT, 0xc1], None).is_err());
    }

    #[test]
    fn dead_letters_round_trip_with_their_retry_request() {
        let letter = DeadLetter {
            action: "mailer".into(),
            position: 9,
            event_store_id: "POKEMONS".into(),
            aggregate_id: "pikachu".into(),
            version: 1,
            event_type: "POKEMON_APPEARED".into(),
            error: "boom".into(),
            attempts: 3,
            failed_at: Timestamp::from_unix_millis(1_700_000_000_000),
            retry_requested_at: Some(Timestamp::from_unix_millis(1_700_000_000_001)),
        };
        let bytes = encode_letter(&letter);
        assert_eq!(
            decode_letter(&bytes, Some(1_700_000_000_001)).unwrap(),
            letter
        );
    }
}
