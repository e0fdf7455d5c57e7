//! Decoding a stored event into a typed [`EventDetail`] of an [`EventStore`]: through the
//! store's event-type aliases, and its upcasters for payloads of older schema versions.
//!
//! Decoding reads the stored bytes where they are ([`EventRef`]): the payload and metadata are
//! deserialized straight from the adapter's buffer, and only what the typed values own is
//! allocated.

use std::sync::Arc;

use crate::model::codec;
use crate::model::error::Error;
use crate::model::event::{EventDetail, Events, PayloadError};
use crate::model::event_store::store::EventStore;
use crate::storage::{EventRef, StorageAdapter, StoredEvent};

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// Turns a stored event into a typed one, or a typed error naming it. An event stored
    /// under an alias of a type is read as that type; one stored with an older schema version
    /// is upcast to the current one (see [`upcast`](crate::model::upcast)); one stored with a newer
    /// schema version than the type declares is [`Error::SchemaVersionTooNew`].
    ///
    /// With the feature `personal`, personal values are decrypted with the keys of the store's
    /// adapter.
    pub fn decode(&self, stored: StoredEvent) -> Result<EventDetail<E>, Error> {
        let event = stored.as_event_ref();
        let (typed, metadata) = self.decode_parts_with(None, &event)?;
        Ok(EventDetail {
            aggregate_id: stored.event.aggregate_id,
            version: stored.event.version,
            timestamp: stored.event.timestamp,
            event: typed,
            metadata,
        })
    }

    /// [`decode`](Self::decode) of a borrowed event (as
    /// [`StorageAdapter::visit_events`](crate::storage::StorageAdapter::visit_events) hands
    /// them out): the payload and metadata are decoded from the adapter's bytes, without an
    /// owned copy of them.
    pub fn decode_ref(&self, event: &EventRef<'_>) -> Result<EventDetail<E>, Error> {
        self.decode_ref_with(None, event)
    }

    /// [`decode_ref`](Self::decode_ref) with `adapter`'s keys (the store's adapter's when
    /// `None`).
    pub(super) fn decode_ref_with(
        &self,
        adapter: Option<&Arc<dyn StorageAdapter>>,
        event: &EventRef<'_>,
    ) -> Result<EventDetail<E>, Error> {
        let (typed, metadata) = self.decode_parts_with(adapter, event)?;
        Ok(EventDetail {
            aggregate_id: event.aggregate_id.to_owned(),
            version: event.version,
            timestamp: event.timestamp,
            event: typed,
            metadata,
        })
    }

    /// Decodes into `detail`, reusing its aggregate id's allocation: what a fold does for each
    /// event of one aggregate, so that nothing is allocated per event beyond the typed values.
    pub(super) fn decode_into(
        &self,
        adapter: &Arc<dyn StorageAdapter>,
        event: &EventRef<'_>,
        aggregate_id: String,
    ) -> Result<EventDetail<E>, Error> {
        let (typed, metadata) = self.decode_parts_with(Some(adapter), event)?;
        let mut aggregate_id = aggregate_id;
        if aggregate_id != event.aggregate_id {
            aggregate_id.clear();
            aggregate_id.push_str(event.aggregate_id);
        }
        Ok(EventDetail {
            aggregate_id,
            version: event.version,
            timestamp: event.timestamp,
            event: typed,
            metadata,
        })
    }

    /// [`decode_parts`](Self::decode_parts) with `adapter`'s keys (the store's adapter's when
    /// `None`) for personal values (feature `personal`), once the store has met one; a failure
    /// of the key store fails the decode.
    fn decode_parts_with(
        &self,
        adapter: Option<&Arc<dyn StorageAdapter>>,
        stored: &EventRef<'_>,
    ) -> Result<(E, E::Metadata), Error> {
        #[cfg(feature = "personal")]
        {
            let (decoded, outcome) = crate::model::personal::scoped(
                &self.inner.personal_seen,
                || adapter.cloned().or_else(|| self.storage_adapter().ok()),
                || self.decode_parts(stored),
            );
            match outcome.failure {
                Some(failure) => Err(Error::Storage(failure)),
                None => decoded,
            }
        }
        #[cfg(not(feature = "personal"))]
        {
            let _ = adapter;
            self.decode_parts(stored)
        }
    }

    /// The typed event and metadata of a stored event.
    fn decode_parts(&self, stored: &EventRef<'_>) -> Result<(E, E::Metadata), Error> {
        let event_type = stored.event_type;
        let decode_error = |reason: String| Error::Decode {
            event_store_id: self.event_store_id().to_owned(),
            aggregate_id: stored.aggregate_id.to_owned(),
            version: stored.version,
            event_type: event_type.to_owned(),
            reason,
        };
        let current_type = self.inner.evolution.resolve(event_type);
        let current_schema = E::schema_version(current_type);
        let schema_version = stored.schema_version;
        let decoded = if schema_version == current_schema {
            E::decode_payload(current_type, stored.payload)
        } else if !E::EVENT_TYPES.contains(&current_type) {
            Err(PayloadError::UnknownEventType)
        } else if schema_version > current_schema {
            return Err(Error::SchemaVersionTooNew {
                event_store_id: self.event_store_id().to_owned(),
                aggregate_id: stored.aggregate_id.to_owned(),
                version: stored.version,
                event_type: event_type.to_owned(),
                schema_version,
                known_schema_version: current_schema,
            });
        } else {
            let value = codec::to_json(stored.payload).map_err(|e| decode_error(e.0))?;
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
                    aggregate_id: stored.aggregate_id.to_owned(),
                    version: stored.version,
                    event_type: event_type.to_owned(),
                });
            }
        };
        let metadata =
            codec::decode(stored.metadata).map_err(|e| decode_error(format!("metadata: {e}")))?;
        Ok((event, metadata))
    }
}
