//! The registry of live instances: handles, delivery into mailboxes, passivation and
//! least-recently-used eviction.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::error::EntityError;
use super::instance::Instance;
use super::kind::Entity;
use super::options::EntityOptions;
use super::registry::{InstanceRegistry, Instances, Live};
use super::reply::Reply;
use super::request::{Envelope, Outcome, Request};
use super::timer::{TimerBook, TimerEvent, timer_store};
use crate::model::Error;
use crate::model::event_store::EventStore;

/// Runs the entities of one kind `T` over one event store: one live instance per id at most,
/// started on demand. Cheap to clone; instances stop when every clone is dropped (after
/// answering what they already hold). See the [module documentation](super).
pub struct Entities<T: Entity> {
    shared: Arc<InstanceRegistry<T>>,
}

impl<T: Entity> Clone for Entities<T> {
    fn clone(&self) -> Self {
        Entities {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: Entity> fmt::Debug for Entities<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entities")
            .field("store", &self.shared.store)
            .field("options", &self.shared.options)
            .field("live", &self.live_instances())
            .finish()
    }
}

impl<T: Entity> Entities<T> {
    /// Runs entities of kind `T` on `store` (its adapter, reducer and snapshot policy).
    /// Instances are tokio tasks: call `send` inside a tokio runtime.
    ///
    /// The entities' timers live in the store `<store id>.timers` (see [`timer`](super::timer)),
    /// whose id must fit the limit of store ids too: a store id longer than
    /// [`ENTITY_STORE_ID_BYTES_MAX`](super::timer::ENTITY_STORE_ID_BYTES_MAX) (121 bytes, or
    /// less when the store's adapter has a lower [limit](crate::storage::Limits)) is refused
    /// with [`Error::Storage`] holding a
    /// [`LimitError::InvalidEventStoreId`](crate::storage::LimitError::InvalidEventStoreId)
    /// that names the store.
    pub fn new(
        store: EventStore<T::Events, T::State>,
        options: EntityOptions,
    ) -> Result<Self, Error> {
        let adapter_limits = store
            .storage_adapter()
            .ok()
            .map(|adapter| *adapter.limits());
        let timers = timer_store(store.event_store_id(), adapter_limits)?;
        Ok(Entities {
            shared: Arc::new(InstanceRegistry {
                store,
                timers,
                options,
                instances: Mutex::new(Instances {
                    live: HashMap::new(),
                    retiring: HashMap::new(),
                    clock: 0,
                    generations: 0,
                }),
            }),
        })
    }

    /// A handle on the entity `aggregate_id`. Nothing starts until the first command.
    pub fn get(&self, aggregate_id: impl Into<String>) -> EntityHandle<T> {
        EntityHandle {
            entities: self.clone(),
            aggregate_id: aggregate_id.into(),
        }
    }

    /// The event store the entities run on.
    pub fn store(&self) -> &EventStore<T::Events, T::State> {
        &self.shared.store
    }

    /// The store of the entities' timers (no adapter set).
    pub(crate) fn timer_store(&self) -> &EventStore<TimerEvent, TimerBook> {
        &self.shared.timers
    }

    /// How many instances are live now (started and not stopped or evicted).
    pub fn live_instances(&self) -> usize {
        self.shared.lock().live.len()
    }

    /// Commands waiting in the mailboxes of the live instances now (not counting the one each
    /// instance may be deciding): how far the entities are behind their callers.
    pub fn mailbox_depth(&self) -> usize {
        self.shared
            .lock()
            .live
            .values()
            .map(|live| live.mailbox.max_capacity() - live.mailbox.capacity())
            .sum()
    }

    /// Whether `aggregate_id` has a live instance now.
    pub fn is_live(&self, aggregate_id: &str) -> bool {
        self.shared.lock().live.contains_key(aggregate_id)
    }
}

impl<T: Entity> InstanceRegistry<T> {
    /// Puts `envelope` in the mailbox of `aggregate_id`'s instance, starting one if needed.
    /// Delivery happens under the registry lock, so an instance that stops (which also takes
    /// the lock) never leaves a command behind in its mailbox.
    pub(crate) fn deliver(
        self: &Arc<Self>,
        aggregate_id: &str,
        mut envelope: Envelope<T>,
    ) -> Result<(), EntityError<T::Rejection>> {
        let mut registry = self.lock();
        registry.clock += 1;
        let now = registry.clock;
        if let Some(live) = registry.live.get_mut(aggregate_id) {
            live.last_used = now;
            match live.mailbox.try_send(envelope) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(EntityError::Overloaded {
                        aggregate_id: aggregate_id.to_owned(),
                        capacity: self.options.mailbox_capacity,
                    });
                }
                // The instance died (its decide panicked): start a new one.
                Err(mpsc::error::TrySendError::Closed(returned)) => {
                    envelope = returned;
                    registry.live.remove(aggregate_id);
                }
            }
        }
        if registry.live.len() >= self.options.live_instances_max.max(1) {
            registry.evict_least_recently_used();
        }
        let (mailbox, inbox) = mpsc::channel(self.options.mailbox_capacity.max(1));
        registry.generations += 1;
        let generation = registry.generations;
        let predecessor = registry.retiring.remove(aggregate_id).map(|(_, task)| task);
        let instance = Instance::new(aggregate_id.to_owned(), generation, self, inbox);
        let task = tokio::spawn(instance.run(predecessor));
        mailbox
            .try_send(envelope)
            .expect("a new mailbox with capacity of at least 1 takes its first command");
        registry.live.insert(
            aggregate_id.to_owned(),
            Live {
                mailbox,
                last_used: now,
                generation,
                task,
            },
        );
        Ok(())
    }
}

/// A handle on one entity, from [`Entities::get`]. Cheap to clone.
pub struct EntityHandle<T: Entity> {
    entities: Entities<T>,
    aggregate_id: String,
}

impl<T: Entity> Clone for EntityHandle<T> {
    fn clone(&self) -> Self {
        EntityHandle {
            entities: self.entities.clone(),
            aggregate_id: self.aggregate_id.clone(),
        }
    }
}

impl<T: Entity> fmt::Debug for EntityHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityHandle")
            .field("aggregate_id", &self.aggregate_id)
            .finish_non_exhaustive()
    }
}

impl<T: Entity> EntityHandle<T> {
    /// The entity's aggregate id.
    pub fn aggregate_id(&self) -> &str {
        &self.aggregate_id
    }

    /// Sends `command` to the entity and waits for the answer: its events once they are
    /// durable, or why not. Commands sent to one id are decided in the order `send` is called.
    /// Fails at once with [`EntityError::Overloaded`] when the mailbox is full.
    pub async fn send(
        &self,
        command: T::Command,
    ) -> Result<Reply<T::Events>, EntityError<T::Rejection>> {
        self.request(Request::Command(command)).await
    }

    /// Sends any request to the entity's instance and waits for its answer.
    pub(crate) async fn request(
        &self,
        request: Request<T>,
    ) -> Result<Reply<T::Events>, EntityError<T::Rejection>> {
        let (reply, answer) = oneshot::channel();
        self.entities.shared.deliver(
            &self.aggregate_id,
            Envelope {
                request,
                reply,
                attempts: 0,
                outcome: Outcome::Undecided,
            },
        )?;
        answer.await.unwrap_or_else(|_| {
            Err(EntityError::Stopped {
                aggregate_id: self.aggregate_id.clone(),
            })
        })
    }
}
