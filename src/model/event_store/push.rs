//! The push path of an [`EventStore`]: one event checked, encoded and appended, then the
//! response and the hook of the push. [Groups](crate::model::group) share all but the append.

use futures::future::BoxFuture;

use crate::model::aggregate::Aggregate;
use crate::model::codec;
use crate::model::error::Error;
use crate::model::event::{EventDetail, Events, NewEvent};
use crate::model::event_store::options::{PushEventOptions, PushEventResponse};
use crate::model::event_store::store::EventStore;
use crate::storage::{AppendEvent, EncodedEvent, Position, Timestamp};

impl<E: Events, S: Clone + Send + Sync + 'static> EventStore<E, S> {
    /// Pushes one event. The timestamp is set to now unless given. Fails with
    /// [`Error::EventAlreadyExists`] when the version is taken and with
    /// [`StorageError::UnexpectedVersion`](crate::storage::StorageError::UnexpectedVersion)
    /// when it is not the next one.
    pub async fn push_event(
        &self,
        event: NewEvent<E>,
        options: PushEventOptions<S>,
    ) -> Result<PushEventResponse<E, S>, Error> {
        let adapter = self.storage_adapter()?;
        self.check_prev_aggregate(&event, options.prev_aggregate.as_ref())?;
        let timestamp = event.timestamp.unwrap_or_else(Timestamp::now);
        let append = self.encode(&event, timestamp)?;
        let position = adapter.push_event(append).await?;
        let response = self.pushed(
            event.into_detail(timestamp),
            position,
            options.prev_aggregate,
        );
        if let Some(hook) = self.hook(&response) {
            hook.await;
        }
        Ok(response)
    }

    /// Encodes an event for the storage adapter.
    pub(crate) fn encode(
        &self,
        event: &NewEvent<E>,
        timestamp: Timestamp,
    ) -> Result<AppendEvent, Error> {
        let encode_error = |e: codec::CodecError| Error::Encode {
            event_store_id: self.event_store_id().to_owned(),
            event_type: event.event.event_type().to_owned(),
            reason: e.0,
        };
        Ok(AppendEvent {
            event_store_id: self.event_store_id().to_owned(),
            event: EncodedEvent {
                aggregate_id: event.aggregate_id.clone(),
                version: event.version,
                timestamp: event.timestamp.unwrap_or(timestamp),
                event_type: event.event.event_type().to_owned(),
                schema_version: E::schema_version(event.event.event_type()),
                payload: event.event.encode_payload().map_err(encode_error)?,
                metadata: codec::encode(&event.metadata).map_err(encode_error)?,
            },
        })
    }

    /// The response to a successful push of `event`.
    pub(crate) fn pushed(
        &self,
        event: EventDetail<E>,
        position: Position,
        prev_aggregate: Option<Aggregate<S>>,
    ) -> PushEventResponse<E, S> {
        let next_aggregate = match prev_aggregate {
            Some(prev) => Some(self.reduce(Some(prev), &event)),
            None if event.version == 1 => Some(self.reduce(None, &event)),
            None => None,
        };
        PushEventResponse {
            event,
            position,
            next_aggregate,
        }
    }

    /// The `on_event_pushed` call for `response`, if the store has a hook.
    pub(crate) fn hook(
        &self,
        response: &PushEventResponse<E, S>,
    ) -> Option<BoxFuture<'static, ()>> {
        self.inner
            .on_event_pushed
            .as_ref()
            .map(|hook| hook(response.clone()))
    }

    /// Checks that `prev`, if given, is the aggregate just before `event`.
    pub(crate) fn check_prev_aggregate(
        &self,
        event: &NewEvent<E>,
        prev: Option<&Aggregate<S>>,
    ) -> Result<(), Error> {
        match prev {
            Some(prev)
                if prev.aggregate_id != event.aggregate_id
                    || prev.version.checked_add(1) != Some(event.version) =>
            {
                Err(Error::PrevAggregateMismatch {
                    event_store_id: self.event_store_id().to_owned(),
                    aggregate_id: event.aggregate_id.clone(),
                    version: event.version,
                    prev_aggregate_id: prev.aggregate_id.clone(),
                    prev_version: prev.version,
                })
            }
            _ => Ok(()),
        }
    }
}
