//! Stores the application registers with the console: their events are shown with their own
//! types (upcasters and aliases applied) and their aggregates' state as their reducer folds it.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use super::render::Decoded;
use crate::model::event::Events;
use crate::model::event_store::{EventStore, GetAggregateOptions};
use crate::storage::{EventRef, StorageAdapter, StoredEvent};

/// One registered store, its types erased.
#[async_trait]
pub(crate) trait TypedStore: Send + Sync {
    /// The event types the store declares.
    fn event_types(&self) -> &'static [&'static str];

    /// The event's payload and metadata decoded with the store's types.
    fn decode(&self, event: &EventRef<'_>) -> Decoded;

    /// The state after each of `events` (consecutive versions of one aggregate, oldest first),
    /// folded from the state before the first of them. An event that does not decode, and
    /// every one after it, has the reason instead.
    async fn states_after(
        &self,
        aggregate_id: &str,
        events: &[StoredEvent],
    ) -> Result<Vec<Result<Value, String>>, crate::model::Error>;
}

/// A registered `EventStore`.
pub(crate) struct Registered<E: Events, S> {
    store: EventStore<E, S>,
}

impl<E, S> Registered<E, S>
where
    E: Events,
    S: Serialize + Clone + Send + Sync + 'static,
{
    /// `store`, reading through `adapter` when it has none of its own.
    pub(crate) fn new(store: &EventStore<E, S>, adapter: &Arc<dyn StorageAdapter>) -> Self {
        let store = match store.storage_adapter() {
            Ok(_) => store.clone(),
            Err(_) => store.with_storage_adapter(adapter.clone()),
        };
        Registered { store }
    }
}

#[async_trait]
impl<E, S> TypedStore for Registered<E, S>
where
    E: Events,
    S: Serialize + Clone + Send + Sync + 'static,
{
    fn event_types(&self) -> &'static [&'static str] {
        E::EVENT_TYPES
    }

    fn decode(&self, event: &EventRef<'_>) -> Decoded {
        let detail = match self.store.decode_ref(event) {
            Ok(detail) => detail,
            Err(e) => return Decoded::Failed(e.to_string()),
        };
        match serde_json::to_value(&detail) {
            Ok(Value::Object(mut fields)) => Decoded::Typed {
                payload: fields.remove("payload").unwrap_or(Value::Null),
                metadata: fields.remove("metadata").unwrap_or(Value::Null),
            },
            Ok(_) => Decoded::Failed("the event does not serialize as a JSON object".into()),
            Err(e) => Decoded::Failed(format!("the event does not serialize as JSON: {e}")),
        }
    }

    async fn states_after(
        &self,
        aggregate_id: &str,
        events: &[StoredEvent],
    ) -> Result<Vec<Result<Value, String>>, crate::model::Error> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let before = first.event.version.saturating_sub(1);
        let mut aggregate = if before == 0 {
            None
        } else {
            let options = GetAggregateOptions {
                max_version: Some(before),
            };
            self.store
                .get_aggregate_state(aggregate_id, options)
                .await?
                .aggregate
        };
        let mut out = Vec::with_capacity(events.len());
        let mut broken: Option<String> = None;
        for stored in events {
            if let Some(reason) = &broken {
                out.push(Err(reason.clone()));
                continue;
            }
            match self.store.decode_ref(&stored.as_event_ref()) {
                Ok(detail) => {
                    let next = self.store.reduce(aggregate.take(), &detail);
                    out.push(serde_json::to_value(&next.state).map_err(|e| e.to_string()));
                    aggregate = Some(next);
                }
                Err(e) => {
                    let reason = format!("no state from version {}: {e}", stored.event.version);
                    out.push(Err(reason.clone()));
                    broken = Some(reason);
                }
            }
        }
        Ok(out)
    }
}
