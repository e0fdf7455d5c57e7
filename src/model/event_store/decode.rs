//! Decoding a stored event into a typed [`EventDetail`] of an [`EventStore`]: through the
//! store's event-type aliases, and its upcasters for payloads of older schema versions.

use crate::model::codec;
use crate::model::error::Error;
use crate::model::event::{EventDetail, Events, PayloadError};
use crate::model::event_store::store::EventStore;
use crate::storage::{EncodedEvent, StoredEvent};

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// Turns a stored event into a typed one, or a typed error naming it. An event stored
    /// under an alias of a type is read as that type; one stored with an older schema version
    /// is upcast to the current one (see [`upcast`](crate::model::upcast)); one stored with a newer
    /// schema version than the type declares is [`Error::SchemaVersionTooNew`].
    pub fn decode(&self, stored: StoredEvent) -> Result<EventDetail<E>, Error> {
        let EncodedEvent {
            aggregate_id,
            version,
            timestamp,
            event_type,
            schema_version,
            payload,
            metadata,
        } = stored.event;
        let decode_error = |reason: String| Error::Decode {
            event_store_id: self.event_store_id().to_owned(),
            aggregate_id: aggregate_id.clone(),
            version,
            event_type: event_type.clone(),
            reason,
        };
        let current_type = self.inner.evolution.resolve(&event_type);
        let current_schema = E::schema_version(current_type);
        let decoded = if schema_version == current_schema {
            E::decode_payload(current_type, &payload)
        } else if !E::EVENT_TYPES.contains(&current_type) {
            Err(PayloadError::UnknownEventType)
        } else if schema_version > current_schema {
            return Err(Error::SchemaVersionTooNew {
                event_store_id: self.event_store_id().to_owned(),
                aggregate_id,
                version,
                event_type,
                schema_version,
                known_schema_version: current_schema,
            });
        } else {
            let value = codec::to_json(&payload).map_err(|e| decode_error(e.0))?;
            let value = self
                .inner
                .evolution
                .upcast(current_type, schema_version, current_schema, value)
                .map_err(&decode_error)?;
            E::payload_from_json(current_type, value)
        };
        let event = match decoded {
            Ok(event) => event,
            Err(PayloadError::Invalid(reason)) => return Err(decode_error(reason)),
            Err(PayloadError::UnknownEventType) => {
                return Err(Error::UnknownEventType {
                    event_store_id: self.event_store_id().to_owned(),
                    aggregate_id,
                    version,
                    event_type,
                });
            }
        };
        let metadata =
            codec::decode(&metadata).map_err(|e| decode_error(format!("metadata: {e}")))?;
        Ok(EventDetail {
            aggregate_id,
            version,
            timestamp,
            event,
            metadata,
        })
    }
}
