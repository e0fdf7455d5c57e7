//! The registry of live instances: which instance runs each entity id, and the bookkeeping of
//! passivation and least-recently-used eviction that instances and the runtime share.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::kind::Entity;
use super::options::EntityOptions;
use super::request::Envelope;
use super::timer::{TimerBook, TimerEvent};
use crate::model::event_store::EventStore;

/// The registry of the live instances of one entity kind, with the stores and options they
/// run on: what the runtime and its instances share.
pub(crate) struct InstanceRegistry<T: Entity> {
    pub(crate) store: EventStore<T::Events, T::State>,
    /// The store of the entities' timers, without an adapter: instances use it on their
    /// store's adapter.
    pub(crate) timers: EventStore<TimerEvent, TimerBook>,
    pub(crate) options: EntityOptions,
    pub(crate) instances: Mutex<Instances<T>>,
}

/// The live and retiring instances, behind the registry's lock.
pub(crate) struct Instances<T: Entity> {
    pub(crate) live: HashMap<String, Live<T>>,
    /// Evicted instances still finishing what they held; their successor waits for them so
    /// one id never has two instances deciding at once.
    pub(crate) retiring: HashMap<String, (u64, JoinHandle<()>)>,
    pub(crate) clock: u64,
    pub(crate) generations: u64,
}

/// One live instance: its mailbox and task.
pub(crate) struct Live<T: Entity> {
    pub(crate) mailbox: mpsc::Sender<Envelope<T>>,
    pub(crate) last_used: u64,
    pub(crate) generation: u64,
    pub(crate) task: JoinHandle<()>,
}

impl<T: Entity> InstanceRegistry<T> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Instances<T>> {
        // The registry's maps stay consistent across a panic (each update is one insert or
        // remove), so a poisoned lock is still usable.
        self.instances
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called by an idle instance under the registry lock: stops it if no command arrived in
    /// the meantime. `None` means stop; `Some` is a command to handle first.
    pub(crate) fn passivate(
        &self,
        aggregate_id: &str,
        generation: u64,
        inbox: &mut mpsc::Receiver<Envelope<T>>,
    ) -> Option<Envelope<T>> {
        let mut registry = self.lock();
        if let Ok(envelope) = inbox.try_recv() {
            return Some(envelope);
        }
        if registry
            .live
            .get(aggregate_id)
            .is_some_and(|live| live.generation == generation)
        {
            registry.live.remove(aggregate_id);
        }
        None
    }

    /// Called by an instance as it ends: forgets it as a retiring predecessor.
    pub(crate) fn stopped(&self, aggregate_id: &str, generation: u64) {
        let mut registry = self.lock();
        if registry
            .retiring
            .get(aggregate_id)
            .is_some_and(|(retiring, _)| *retiring == generation)
        {
            registry.retiring.remove(aggregate_id);
        }
    }
}

impl<T: Entity> Instances<T> {
    /// Retires the least recently used live instance.
    pub(crate) fn evict_least_recently_used(&mut self) {
        let Some(oldest) = self
            .live
            .iter()
            .min_by_key(|(_, live)| live.last_used)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        if let Some(live) = self.live.remove(&oldest) {
            // Dropping the mailbox's only sender lets the instance answer what it holds and
            // stop.
            drop(live.mailbox);
            self.retiring.insert(oldest, (live.generation, live.task));
        }
    }
}
