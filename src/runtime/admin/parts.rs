//! The parts of a running application the console can only see when they are registered:
//! queues (their depth, messages in flight and dead letters) and entities (their live
//! instances, waiting commands and timers).

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::runtime::entity::{Entities, Entity, Timers};
use crate::runtime::queue::Queue;

/// What the console shows of one queue.
pub(crate) fn queue_json(queue: &Queue) -> Value {
    let depth = queue.len().map_err(|e| e.to_string());
    let in_flight = queue.in_flight().map_err(|e| e.to_string());
    let dead = queue.dead_letters().map_err(|e| e.to_string());
    let mut out = json!({ "name": queue.name() });
    match depth {
        Ok(depth) => out["depth"] = json!(depth),
        Err(e) => out["error"] = json!(e),
    }
    match in_flight {
        Ok(in_flight) => out["inFlight"] = json!(in_flight),
        Err(e) => out["error"] = json!(e),
    }
    match dead {
        Ok(dead) => {
            out["deadLetters"] = json!(dead.len());
            out["oldestDeadLetter"] = json!(dead.first().map(|m| m.enqueued_at));
        }
        Err(e) => out["error"] = json!(e),
    }
    out
}

/// One registered entity kind, its types erased.
#[async_trait]
pub(crate) trait EntityProbe: Send + Sync {
    /// The store the entities run on.
    fn event_store_id(&self) -> String;

    /// How many instances are live now.
    fn live_instances(&self) -> usize;

    /// Commands waiting in the live instances' mailboxes.
    fn mailbox_depth(&self) -> usize;

    /// Every pending timer: entity, name, due time, attempts and command as JSON.
    async fn pending_timers(&self) -> Result<Vec<Value>, String>;
}

/// A registered entity kind, with a timer reader of its own.
pub(crate) struct EntityKind<T: Entity> {
    entities: Entities<T>,
    timers: Timers<T>,
}

impl<T> EntityKind<T>
where
    T: Entity,
    T::Command: Serialize + DeserializeOwned + Clone,
{
    pub(crate) fn new(entities: &Entities<T>) -> Self {
        EntityKind {
            entities: entities.clone(),
            timers: Timers::new(entities.clone()),
        }
    }
}

#[async_trait]
impl<T> EntityProbe for EntityKind<T>
where
    T: Entity,
    T::Command: Serialize + DeserializeOwned + Clone + Sync,
{
    fn event_store_id(&self) -> String {
        self.entities.store().event_store_id().to_owned()
    }

    fn live_instances(&self) -> usize {
        self.entities.live_instances()
    }

    fn mailbox_depth(&self) -> usize {
        self.entities.mailbox_depth()
    }

    async fn pending_timers(&self) -> Result<Vec<Value>, String> {
        let pending = self.timers.pending().await.map_err(|e| e.to_string())?;
        Ok(pending
            .into_iter()
            .map(|timer| {
                json!({
                    "aggregateId": timer.aggregate_id,
                    "name": timer.name,
                    "at": timer.at,
                    "attempts": timer.attempts,
                    "command": serde_json::to_value(&timer.command)
                        .unwrap_or_else(|e| json!({ "unserializable": e.to_string() })),
                })
            })
            .collect())
    }
}
