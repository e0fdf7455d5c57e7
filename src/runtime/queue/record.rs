//! How a queue message is stored: its body and its delivery state, in one record.

use super::message::{MessageId, QueueMessage};
use crate::storage::Timestamp;

/// The format byte that starts every stored message.
const FORMAT: u8 = 1;
/// Bytes before the error text: format, receive count, visible-at, enqueued-at, error length.
const HEADER: usize = 1 + 4 + 8 + 8 + 4;

/// A stored message: the body and its delivery state.
pub(crate) struct Record {
    pub(crate) receive_count: u32,
    pub(crate) visible_at: i64,
    pub(crate) enqueued_at: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let error = self.last_error.as_deref().unwrap_or("").as_bytes();
        let mut out = Vec::with_capacity(HEADER + error.len() + self.body.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.receive_count.to_le_bytes());
        out.extend_from_slice(&self.visible_at.to_le_bytes());
        out.extend_from_slice(&self.enqueued_at.to_le_bytes());
        let error_len = u32::try_from(error.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&error_len.to_le_bytes());
        out.extend_from_slice(&error[..error_len as usize]);
        out.extend_from_slice(&self.body);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Record, String> {
        if bytes.len() < HEADER {
            return Err(format!(
                "a {}-byte record is shorter than its header",
                bytes.len()
            ));
        }
        if bytes[0] != FORMAT {
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
        Ok(Record {
            receive_count: u32_at(1),
            visible_at: i64_at(5),
            enqueued_at: i64_at(13),
            last_error: (!error.is_empty()).then(|| error.to_owned()),
            body: bytes[HEADER + error_len..].to_vec(),
        })
    }

    pub(crate) fn message(self, id: MessageId) -> QueueMessage {
        QueueMessage {
            id,
            receive_count: self.receive_count,
            enqueued_at: Timestamp::from_unix_millis(self.enqueued_at),
            last_error: self.last_error,
            body: self.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let record = Record {
            receive_count: 3,
            visible_at: -5,
            enqueued_at: 1_700_000_000_000,
            last_error: Some("timeout".into()),
            body: b"{\"to\":\"ash\"}".to_vec(),
        };
        let bytes = record.encode();
        let back = Record::decode(&bytes).unwrap();
        assert_eq!(
            (back.receive_count, back.visible_at, back.enqueued_at),
            (3, -5, 1_700_000_000_000)
        );
        assert_eq!(
            (back.last_error.as_deref(), back.body),
            (Some("timeout"), record.body)
        );
        assert!(Record::decode(&bytes[..HEADER - 1]).is_err());
        let mut long_error = bytes.clone();
        long_error[21..25].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Record::decode(&long_error).is_err());
        let mut other_format = bytes;
        other_format[0] = 9;
        assert!(Record::decode(&other_format).is_err());
    }
}
