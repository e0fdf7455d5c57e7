//! The `$lifecycle` events: their types and MessagePack payloads (see `docs/format.md`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DeleteMode, LIFECYCLE_STORE, Retention};
use crate::storage::{AppendEvent, EncodedEvent, Limits, StorageError, Timestamp};

/// Event type of [`LifecycleRecord::Deleted`].
const DELETED: &str = "aggregate_deleted";
/// Event type of [`LifecycleRecord::Restored`].
const RESTORED: &str = "aggregate_restored";
/// Event type of [`LifecycleRecord::Truncated`].
const TRUNCATED: &str = "aggregate_truncated";
/// Event type of [`LifecycleRecord::RetentionSet`].
const RETENTION_SET: &str = "retention_set";

/// One lifecycle operation, as recorded in the `$lifecycle` event store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LifecycleRecord {
    /// `aggregate_deleted`: `{aggregate_id: str, hard: bool}`.
    Deleted {
        aggregate_id: String,
        mode: DeleteMode,
    },
    /// `aggregate_restored`: `{aggregate_id: str}`.
    Restored { aggregate_id: String },
    /// `aggregate_truncated`: `{aggregate_id: str, before: u64}`.
    Truncated { aggregate_id: String, before: u64 },
    /// `retention_set`: `{max_age_ms: u64 | nil, max_count: u64 | nil}`.
    RetentionSet(Retention),
}

/// A `$lifecycle` event that this version cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RecordError(pub(crate) String);

#[derive(Serialize, Deserialize)]
struct DeletedPayload {
    aggregate_id: String,
    hard: bool,
}

#[derive(Serialize, Deserialize)]
struct RestoredPayload {
    aggregate_id: String,
}

#[derive(Serialize, Deserialize)]
struct TruncatedPayload {
    aggregate_id: String,
    before: u64,
}

#[derive(Serialize, Deserialize)]
struct RetentionPayload {
    max_age_ms: Option<u64>,
    max_count: Option<u64>,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    rmp_serde::encode::write_named(&mut out, value)
        .expect("a map of strings, integers and booleans always encodes");
    out
}

fn decode<'a, T: Deserialize<'a>>(event_type: &str, payload: &'a [u8]) -> Result<T, RecordError> {
    rmp_serde::from_slice(payload)
        .map_err(|e| RecordError(format!("undecodable {event_type} payload: {e}")))
}

impl LifecycleRecord {
    /// A delete of a valid aggregate id of a valid store.
    pub(crate) fn checked_delete(
        limits: &Limits,
        event_store_id: &str,
        aggregate_id: &str,
        mode: DeleteMode,
    ) -> Result<Self, StorageError> {
        limits.check_event_store_id(event_store_id)?;
        limits.check_aggregate_id(aggregate_id)?;
        Ok(LifecycleRecord::Deleted {
            aggregate_id: aggregate_id.to_owned(),
            mode,
        })
    }

    /// A restore of a valid aggregate id of a valid store.
    pub(crate) fn checked_restore(
        limits: &Limits,
        event_store_id: &str,
        aggregate_id: &str,
    ) -> Result<Self, StorageError> {
        limits.check_event_store_id(event_store_id)?;
        limits.check_aggregate_id(aggregate_id)?;
        Ok(LifecycleRecord::Restored {
            aggregate_id: aggregate_id.to_owned(),
        })
    }

    /// A truncation of a valid aggregate id of a valid store.
    pub(crate) fn checked_truncate(
        limits: &Limits,
        event_store_id: &str,
        aggregate_id: &str,
        before: u64,
    ) -> Result<Self, StorageError> {
        limits.check_event_store_id(event_store_id)?;
        limits.check_aggregate_id(aggregate_id)?;
        Ok(LifecycleRecord::Truncated {
            aggregate_id: aggregate_id.to_owned(),
            before,
        })
    }

    /// A retention rule of a valid store.
    pub(crate) fn checked_retention(
        limits: &Limits,
        event_store_id: &str,
        retention: Retention,
    ) -> Result<Self, StorageError> {
        limits.check_event_store_id(event_store_id)?;
        Ok(LifecycleRecord::RetentionSet(retention))
    }

    /// The record as it takes effect: a truncation past the aggregate's last version (given by
    /// `last_version`) hides the events it has, not the ones pushed after it.
    pub(crate) fn clamped(
        self,
        last_version: impl FnOnce(&str) -> Result<u64, StorageError>,
    ) -> Result<Self, StorageError> {
        Ok(match self {
            LifecycleRecord::Truncated {
                aggregate_id,
                before,
            } => {
                let before = before.min(last_version(&aggregate_id)?.saturating_add(1));
                LifecycleRecord::Truncated {
                    aggregate_id,
                    before,
                }
            }
            other => other,
        })
    }

    /// The `$lifecycle` event recording it for `store`, at `version` of that aggregate.
    pub(crate) fn to_event(&self, store: &str, version: u64, timestamp: Timestamp) -> AppendEvent {
        AppendEvent {
            event_store_id: LIFECYCLE_STORE.to_owned(),
            event: EncodedEvent {
                aggregate_id: store.to_owned(),
                version,
                timestamp,
                event_type: self.event_type().to_owned(),
                schema_version: 1,
                payload: self.payload(),
                metadata: Vec::new(),
            },
        }
    }

    /// The event type it is stored under.
    pub(crate) fn event_type(&self) -> &'static str {
        match self {
            LifecycleRecord::Deleted { .. } => DELETED,
            LifecycleRecord::Restored { .. } => RESTORED,
            LifecycleRecord::Truncated { .. } => TRUNCATED,
            LifecycleRecord::RetentionSet(_) => RETENTION_SET,
        }
    }

    /// Its MessagePack payload, a map with field names.
    pub(crate) fn payload(&self) -> Vec<u8> {
        match self {
            LifecycleRecord::Deleted { aggregate_id, mode } => encode(&DeletedPayload {
                aggregate_id: aggregate_id.clone(),
                hard: *mode == DeleteMode::Hard,
            }),
            LifecycleRecord::Restored { aggregate_id } => encode(&RestoredPayload {
                aggregate_id: aggregate_id.clone(),
            }),
            LifecycleRecord::Truncated {
                aggregate_id,
                before,
            } => encode(&TruncatedPayload {
                aggregate_id: aggregate_id.clone(),
                before: *before,
            }),
            LifecycleRecord::RetentionSet(r) => encode(&RetentionPayload {
                // Milliseconds, saturating: an age beyond 584 million years is "forever".
                max_age_ms: r
                    .max_age
                    .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                max_count: r.max_count,
            }),
        }
    }

    /// Reads a `$lifecycle` event back.
    pub(crate) fn decode(event_type: &str, payload: &[u8]) -> Result<Self, RecordError> {
        Ok(match event_type {
            DELETED => {
                let p: DeletedPayload = decode(event_type, payload)?;
                LifecycleRecord::Deleted {
                    aggregate_id: p.aggregate_id,
                    mode: if p.hard {
                        DeleteMode::Hard
                    } else {
                        DeleteMode::Soft
                    },
                }
            }
            RESTORED => {
                let p: RestoredPayload = decode(event_type, payload)?;
                LifecycleRecord::Restored {
                    aggregate_id: p.aggregate_id,
                }
            }
            TRUNCATED => {
                let p: TruncatedPayload = decode(event_type, payload)?;
                LifecycleRecord::Truncated {
                    aggregate_id: p.aggregate_id,
                    before: p.before,
                }
            }
            RETENTION_SET => {
                let p: RetentionPayload = decode(event_type, payload)?;
                LifecycleRecord::RetentionSet(Retention {
                    max_age: p.max_age_ms.map(Duration::from_millis),
                    max_count: p.max_count,
                })
            }
            other => {
                return Err(RecordError(format!(
                    "unknown lifecycle event type {other:?} (written by a newer annals?)"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips_through_its_type_and_payload() {
        let records = [
            LifecycleRecord::Deleted {
                aggregate_id: "pikachu".into(),
                mode: DeleteMode::Hard,
            },
            LifecycleRecord::Deleted {
                aggregate_id: "pikachu".into(),
                mode: DeleteMode::Soft,
            },
            LifecycleRecord::Restored {
                aggregate_id: "pikachu".into(),
            },
            LifecycleRecord::Truncated {
                aggregate_id: "pikachu".into(),
                before: 7,
            },
            LifecycleRecord::RetentionSet(Retention {
                max_age: Some(Duration::from_secs(86_400)),
                max_count: None,
            }),
            LifecycleRecord::RetentionSet(Retention::default()),
        ];
        for record in records {
            let back = LifecycleRecord::decode(record.event_type(), &record.payload());
            assert_eq!(back, Ok(record));
        }
    }

    #[test]
    fn payloads_are_maps_with_field_names() {
        let record = LifecycleRecord::Truncated {
            aggregate_id: "a".into(),
            before: 3,
        };
        // fixmap of 2: "aggregate_id": "a", "before": 3
        let mut expected = vec![0x82, 0xac];
        expected.extend_from_slice(b"aggregate_id");
        expected.extend_from_slice(&[0xa1, b'a', 0xa6]);
        expected.extend_from_slice(b"before");
        expected.push(0x03);
        assert_eq!(record.payload(), expected);
    }

    #[test]
    fn unknown_types_and_bad_payloads_are_typed_errors() {
        assert!(LifecycleRecord::decode("aggregate_exploded", &[0x80]).is_err());
        assert!(LifecycleRecord::decode("aggregate_deleted", &[0xff, 0x00]).is_err());
        assert!(LifecycleRecord::decode("aggregate_truncated", &[0x80]).is_err());
    }
}
