//! The context of one run of an action: what triggered it, and what an action may do.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::model::command::{Command, CommandFailure};
use crate::runtime::queue::{MessageId, Queue, QueueError};
use crate::runtime::state::StateStore;
use crate::storage::Position;

/// What started a run of an action.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// An event of the log (also when a dead letter is retried).
    Event {
        /// The event's global position.
        position: Position,
        /// The store the event belongs to.
        event_store_id: String,
        /// The event's aggregate.
        aggregate_id: String,
        /// The event's version within its aggregate.
        version: u64,
        /// The event's type.
        event_type: String,
    },
    /// An HTTP request.
    Http {
        /// The request method, e.g. `POST`.
        method: String,
        /// The request path, e.g. `/pokemons/catch`.
        path: String,
    },
    /// A message received from a queue.
    Queue {
        /// The queue's name.
        queue: String,
        /// The message's id in its queue.
        message_id: MessageId,
        /// How many times the message has been received, this time included.
        receive_count: u32,
    },
}

/// The handle an action runs with: see [Commands cannot call
/// actions](super#commands-cannot-call-actions).
///
/// It is made by annals for one run of one action and moved into it. It is deliberately neither
/// `Clone` nor `Sync`; its capabilities take `&mut self`, so an action can use them across
/// `.await`s and stay `Send`.
pub struct ActionContext {
    action: Arc<str>,
    trigger: Trigger,
    attempt: u32,
    state: Arc<StateStore>,
    /// Makes the context `!Sync` (so `&ActionContext` and `Arc<ActionContext>` are `!Send`).
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for ActionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionContext")
            .field("action", &self.action)
            .field("trigger", &self.trigger)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl ActionContext {
    pub(crate) fn new(
        action: Arc<str>,
        trigger: Trigger,
        attempt: u32,
        state: Arc<StateStore>,
    ) -> Self {
        ActionContext {
            action,
            trigger,
            attempt,
            state,
            _not_sync: PhantomData,
        }
    }

    /// The name of the running action.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// What started this run.
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// Which attempt this is for the same trigger, from 1 (event actions retry; a queue
    /// message's attempt is its receive count; an HTTP request has one attempt).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Runs `command` with `input` and `context`, with the command's own retries on version
    /// conflicts ([`Command::handle`]).
    ///
    /// The command's context must be owned, `Send + Sync + 'static` and `Clone`: plain data
    /// or clients, never this action context. That is half of what keeps commands from
    /// calling actions; the [module docs](super#commands-cannot-call-actions) tell the rest.
    pub async fn run<S, H, I, C, O, F, Fut>(
        &mut self,
        command: &Command<S, H>,
        input: I,
        context: C,
    ) -> Result<O, F>
    where
        S: Clone,
        H: Fn(I, S, C) -> Fut,
        Fut: Future<Output = Result<O, F>>,
        I: Clone,
        C: Clone + Send + Sync + 'static,
        F: CommandFailure,
    {
        tracing::debug!(action = %self.action, command = command.command_id(), "running command");
        command.handle(input, context).await
    }

    /// Enqueues `body` on queue `queue` of this action's state store: at-least-once work for
    /// a [queue-triggered action](super::QueueAction). The message is durable when
    /// this returns.
    pub fn enqueue(
        &mut self,
        queue: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<MessageId, QueueError> {
        Queue::open(self.state.clone(), queue).enqueue(body)
    }

    /// Enqueues `message` encoded as JSON; see [`enqueue`](Self::enqueue).
    pub fn enqueue_json<T: serde::Serialize>(
        &mut self,
        queue: &str,
        message: &T,
    ) -> Result<MessageId, QueueError> {
        Queue::open(self.state.clone(), queue).enqueue_json(message)
    }
}
