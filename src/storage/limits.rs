//! Named limits on everything a caller can send, and the checks that enforce them.
//!
//! Every adapter runs these checks before it touches storage (see
//! [`StorageAdapter::push_event_group`](super::StorageAdapter::push_event_group)), so a bad
//! input is refused the same way everywhere and nothing is half-written.

use super::limit_error::LimitError;
use super::{AppendEvent, AppendEventRef, StorageError};

/// Event types reserved by Castore's message channels; no event may use them.
pub const RESERVED_EVENT_TYPES: &[&str] = &["__REPLAYED__", "__AGGREGATE_EXISTS__"];

/// Bounds on the size and shape of events, enforced on every append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest event, counting aggregate id, type, payload and metadata bytes.
    pub event_bytes_max: usize,
    /// Most events in one commit (one push or one event group).
    pub group_events_max: usize,
    /// Largest commit, summing [`Limits::event_bytes_max`]'s measure over its events.
    pub group_bytes_max: usize,
    /// Longest aggregate id, in bytes.
    pub aggregate_id_bytes_max: usize,
    /// Longest event store id, in bytes.
    pub event_store_id_bytes_max: usize,
    /// Longest event type, in bytes.
    pub event_type_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            event_bytes_max: 1 << 20,
            group_events_max: 10_000,
            group_bytes_max: 16 << 20,
            aggregate_id_bytes_max: 256,
            event_store_id_bytes_max: 128,
            event_type_bytes_max: 128,
        }
    }
}

impl Limits {
    /// Checks an event store id: 1 to `event_store_id_bytes_max` bytes of `[A-Za-z0-9_.-]`.
    pub fn check_event_store_id(&self, id: &str) -> Result<(), LimitError> {
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > self.event_store_id_bytes_max {
            Some("it is too long")
        } else if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            Some("only ASCII letters, digits, '_', '.' and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(LimitError::InvalidEventStoreId {
                event_store_id: id.to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Checks an aggregate id: 1 to `aggregate_id_bytes_max` bytes, no control characters.
    pub fn check_aggregate_id(&self, id: &str) -> Result<(), LimitError> {
        let reason = if id.is_empty() {
            Some("it is empty")
        } else if id.len() > self.aggregate_id_bytes_max {
            Some("it is too long")
        } else if has_control(id) {
            Some("control characters are not allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(LimitError::InvalidAggregateId {
                aggregate_id: id.to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Checks an event type: 1 to `event_type_bytes_max` bytes, no control characters, not
    /// one of [`RESERVED_EVENT_TYPES`].
    pub fn check_event_type(&self, event_type: &str) -> Result<(), LimitError> {
        let reason = if event_type.is_empty() {
            Some("it is empty")
        } else if event_type.len() > self.event_type_bytes_max {
            Some("it is too long")
        } else if has_control(event_type) {
            Some("control characters are not allowed")
        } else if RESERVED_EVENT_TYPES.contains(&event_type) {
            Some("it is reserved by message channels")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(LimitError::InvalidEventType {
                event_type: event_type.to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Checks a whole commit: its size, and every id, type, size and version in it.
    pub fn check_commit(&self, events: &[AppendEvent]) -> Result<(), StorageError> {
        self.check_events(events.len(), events.iter().map(AppendEvent::as_event_ref))
    }

    /// [`check_commit`](Self::check_commit) of the `count` borrowed events of a commit.
    pub(crate) fn check_events<'e>(
        &self,
        count: usize,
        events: impl IntoIterator<Item = AppendEventRef<'e>>,
    ) -> Result<(), StorageError> {
        if count == 0 {
            return Err(LimitError::EmptyGroup.into());
        }
        if count > self.group_events_max {
            let limit = self.group_events_max;
            return Err(LimitError::TooManyEvents {
                events: count,
                limit,
            }
            .into());
        }
        let mut total = 0usize;
        // The ids and type of the event before, already checked: a commit's events mostly
        // share their store, and often their aggregate and type.
        let mut previous: Option<AppendEventRef<'e>> = None;
        for event in events {
            let same = |f: fn(&AppendEventRef<'e>) -> &'e str| {
                previous.is_some_and(|p| f(&p) == f(&event))
            };
            if !same(|e| e.event_store_id) {
                self.check_event_store_id(event.event_store_id)?;
            }
            if !same(|e| e.aggregate_id) {
                self.check_aggregate_id(event.aggregate_id)?;
            }
            if !same(|e| e.event_type) {
                self.check_event_type(event.event_type)?;
            }
            if event.version == 0 {
                return Err(StorageError::UnexpectedVersion {
                    event_store_id: event.event_store_id.to_owned(),
                    aggregate_id: event.aggregate_id.to_owned(),
                    version: 0,
                    expected: None,
                });
            }
            let bytes = event.data_len();
            if bytes > self.event_bytes_max {
                return Err(LimitError::EventTooLarge {
                    aggregate_id: event.aggregate_id.to_owned(),
                    version: event.version,
                    bytes,
                    limit: self.event_bytes_max,
                }
                .into());
            }
            total += bytes;
            previous = Some(event);
        }
        if total > self.group_bytes_max {
            let limit = self.group_bytes_max;
            return Err(LimitError::GroupTooLarge {
                bytes: total,
                limit,
            }
            .into());
        }
        Ok(())
    }
}

/// Whether `text` holds a control character ([`char::is_control`]); ASCII text, what ids and
/// types mostly are, is checked byte by byte without decoding.
fn has_control(text: &str) -> bool {
    if text.is_ascii() {
        text.bytes().any(|b| b.is_ascii_control())
    } else {
        text.chars().any(char::is_control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ids_allow_only_a_portable_charset() {
        let l = Limits::default();
        assert!(l.check_event_store_id("POKEMONS").is_ok());
        assert!(l.check_event_store_id("team-1.pokemons_v2").is_ok());
        for bad in ["", "with space", "slash/", "é", &"x".repeat(129)] {
            assert!(l.check_event_store_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn aggregate_ids_refuse_control_characters_and_excess_length() {
        let l = Limits::default();
        assert!(l.check_aggregate_id("pikachu-1 é").is_ok());
        for bad in ["", "a\nb", "\0", &"x".repeat(257)] {
            assert!(l.check_aggregate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn control_characters_are_found_in_ascii_and_in_other_text() {
        for (text, control) in [
            ("pikachu", false),
            ("pika\u{7f}chu", true),
            ("pika\nchu", true),
            ("évolution", false),
            ("évolution\u{85}", true),
            ("\u{9f}", true),
            ("ü\t", true),
        ] {
            assert_eq!(has_control(text), control, "{text:?}");
            assert_eq!(text.chars().any(char::is_control), control, "{text:?}");
        }
    }

    #[test]
    fn reserved_event_types_are_refused() {
        let l = Limits::default();
        for t in RESERVED_EVENT_TYPES {
            assert!(l.check_event_type(t).is_err());
        }
        assert!(l.check_event_type("POKEMON_APPEARED").is_ok());
    }
}
