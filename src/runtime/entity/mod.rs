//! Entities as actors: one live instance per aggregate id, commands one at a time, state kept
//! in memory, replies only after the events are durable.
//!
//! An [`Entity`] is one Rust type per entity kind. It names its commands, its events, its state
//! and its typed rejection, and decides with one pure function: state and command in, events or
//! a rejection out. It never folds events itself: the state evolves with the
//! [reducer](crate::model::aggregate::Reducer) of the [`EventStore`](crate::model::event_store::EventStore) the entities run on, so
//! an entity and a plain reader of the store always agree on the state. Deciding cannot do
//! I/O (no `async`, no context): side effects belong to [actions](crate::runtime::action).
//!
//! [`Entities`] runs them. [`Entities::get`] gives an [`EntityHandle`] for one id;
//! [`EntityHandle::send`] delivers a command to the single live instance of that id (a tokio
//! task), starting it if needed. The instance:
//!
//! - loads the aggregate on first use with
//!   [`get_aggregate`](crate::model::event_store::EventStore::get_aggregate) (from a snapshot when the store has a
//!   policy) and keeps it in memory;
//! - decides commands in arrival order, one at a time, each on the state left by the previous;
//! - commits the decided events with one [`push_event_group`](crate::model::group::push_event_group) per
//!   batch and replies only once that commit is durable (an output gate: nobody hears of a
//!   state that could still vanish);
//! - while one commit is in flight, decides the commands queued behind it on the new in-memory
//!   state and commits them together as the next batch, so a hot entity costs one durable write
//!   per batch instead of one per command, with no retry loop;
//! - on a version conflict (someone else appended to the aggregate: a plain push, another
//!   process) reloads the aggregate and decides again every command not yet acknowledged, so no
//!   update is lost or applied on stale state (fencing);
//! - on any other commit failure fails every reply that depended on the batch (including the
//!   one decided behind it) and reloads before its next command;
//! - stops after [`EntityOptions::idle_timeout`] without commands, or when more than
//!   [`EntityOptions::live_instances_max`] instances are live and it is the least recently
//!   used; the next command starts a fresh instance that loads again.
//!
//! An entity sets timers while deciding, with [`CommandContext::schedule`]: a timer is
//! committed in the same event group as the command's events (both are durable or neither
//! is), and [`Timers`] delivers its command to the entity when it is due, at least once, with the
//! attempt count in [`CommandContext::timer`]. The [`timer`] module says where timers are
//! kept: in the store `<store id>.timers`, so [`Entities::new`] refuses a store id longer than
//! [`ENTITY_STORE_ID_BYTES_MAX`] (121 bytes), and no application store may end in `.timers`.
//!
//! Each instance's mailbox holds at most [`EntityOptions::mailbox_capacity`] commands; when it
//! is full, `send` fails at once with [`EntityError::Overloaded`] instead of queueing without
//! limit.
//!
//! ```
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use annals::{Aggregate, EventDetail, EventStore, Timestamp, storage::InMemoryAdapter};
//! use annals::entity::{CommandContext, Entities, Entity, EntityError, EntityOptions};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct Deposited { pub amount: u64 }
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct Withdrawn { pub amount: u64 }
//! annals::events! {
//!     pub enum AccountEvent {
//!         Deposited(Deposited) = "DEPOSITED",
//!         Withdrawn(Withdrawn) = "WITHDRAWN",
//!     }
//! }
//!
//! fn reduce(balance: Option<u64>, event: &EventDetail<AccountEvent>) -> u64 {
//!     match &event.event {
//!         AccountEvent::Deposited(e) => balance.unwrap_or(0) + e.amount,
//!         AccountEvent::Withdrawn(e) => balance.unwrap_or(0) - e.amount,
//!     }
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! pub enum AccountCommand { Deposit(u64), Withdraw(u64), RemindLowBalance }
//! #[derive(Debug, PartialEq)]
//! pub struct InsufficientFunds { pub balance: u64 }
//!
//! struct Account;
//! impl Entity for Account {
//!     type Command = AccountCommand;
//!     type Events = AccountEvent;
//!     type State = u64;
//!     type Rejection = InsufficientFunds;
//!
//!     fn decide(
//!         state: Option<&Aggregate<u64>>,
//!         command: &AccountCommand,
//!         ctx: &mut CommandContext<'_, AccountCommand>,
//!     ) -> Result<Vec<AccountEvent>, InsufficientFunds> {
//!         let balance = state.map_or(0, |account| account.state);
//!         match *command {
//!             AccountCommand::Deposit(amount) => {
//!                 Ok(vec![AccountEvent::Deposited(Deposited { amount })])
//!             }
//!             AccountCommand::Withdraw(amount) if amount > balance => {
//!                 Err(InsufficientFunds { balance })
//!             }
//!             AccountCommand::Withdraw(amount) => {
//!                 if balance - amount < 10 {
//!                     // Committed with the withdrawal, or not at all.
//!                     let tomorrow = ctx.now().unix_millis() + 86_400_000;
//!                     ctx.schedule("low-balance", Timestamp::from_unix_millis(tomorrow),
//!                         &AccountCommand::RemindLowBalance);
//!                 }
//!                 Ok(vec![AccountEvent::Withdrawn(Withdrawn { amount })])
//!             }
//!             AccountCommand::RemindLowBalance => Ok(Vec::new()),
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = EventStore::builder("ACCOUNTS", reduce)
//!     .storage_adapter(Arc::new(InMemoryAdapter::new()))
//!     .build()?;
//! let accounts = Entities::<Account>::new(store, EntityOptions::default())?;
//! let alice = accounts.get("alice");
//! let reply = alice.send(AccountCommand::Deposit(10)).await.unwrap();
//! assert_eq!(reply.version, 1);
//! match alice.send(AccountCommand::Withdraw(25)).await {
//!     Err(EntityError::Rejected(rejection)) => assert_eq!(rejection.balance, 10),
//!     other => panic!("expected a rejection, got {other:?}"),
//! }
//! # Ok::<(), annals::Error>(()) }).unwrap();
//! ```

mod context;
#[cfg(feature = "http")]
pub mod http;
mod instance;
mod runtime;
pub mod timer;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::model::Error;
use crate::model::aggregate::Aggregate;
use crate::model::event::{EventDetail, Events};

pub use context::{CommandContext, FiredTimer};
pub use runtime::{Entities, EntityHandle};
pub use timer::{
    ENTITY_STORE_ID_BYTES_MAX, TIMER_NAME_BYTES_MAX, Timer, TimerError, Timers, timer_store_id,
};

/// One kind of entity: its commands, events, state, rejection, and how it decides.
///
/// `decide` must be pure: the same state, command and context give the same answer. It runs
/// inside the entity's instance, possibly more than once for one command (after a version
/// conflict the command is decided again on the reloaded state, with
/// [`CommandContext::attempt`] one higher), and its events and timers are only kept if they
/// commit.
pub trait Entity: Send + Sync + 'static {
    /// What the entity is asked to do, typically an enum.
    type Command: Send + 'static;
    /// The events it records; the event store's reducer folds them into [`Entity::State`].
    type Events: Events;
    /// The state the event store's reducer builds.
    type State: Clone + Send + Sync + 'static;
    /// Why a command is refused; returned to the sender as [`EntityError::Rejected`].
    type Rejection: Send + fmt::Debug + 'static;

    /// The events `command` records given the current aggregate (`None` before its first
    /// event), or why it is refused. No events is a valid answer: the command changes nothing.
    /// `ctx` tells the decision's time and attempt and the timer that delivered the command,
    /// and takes the timers it sets or cancels (see [`CommandContext`]).
    fn decide(
        state: Option<&Aggregate<Self::State>>,
        command: &Self::Command,
        ctx: &mut CommandContext<'_, Self::Command>,
    ) -> Result<Vec<Self::Events>, Self::Rejection>;
}

/// What [`EntityHandle::send`] answers once the command's events are durable.
#[derive(Clone, Debug)]
pub struct Reply<E: Events> {
    /// The aggregate's version after the command: its last event's version, or, when it
    /// recorded nothing, the version it was decided on (0 for an aggregate with no event).
    pub version: u64,
    /// The events the command recorded, as stored (timestamps set), in version order.
    pub events: Vec<EventDetail<E>>,
}

/// Why [`EntityHandle::send`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EntityError<R: fmt::Debug> {
    /// The entity refused the command; nothing was recorded.
    #[error("the command was rejected: {0:?}")]
    Rejected(R),
    /// The instance's mailbox is full; nothing was recorded. Retry later, or slow down.
    #[error("entity {aggregate_id:?} is overloaded: {capacity} commands already queued")]
    Overloaded {
        /// The entity whose mailbox is full.
        aggregate_id: String,
        /// The mailbox's capacity ([`EntityOptions::mailbox_capacity`]).
        capacity: usize,
    },
    /// Loading the aggregate or committing the batch holding the command failed; the
    /// command's events are not recorded (a commit is all or nothing). The instance reloads
    /// its state before its next command; whether a retry helps depends on the error.
    #[error("entity {aggregate_id:?}: {source}")]
    Store {
        /// The entity.
        aggregate_id: String,
        /// The store's error, shared by every command of the failed batch.
        source: Arc<Error>,
    },
    /// The aggregate kept being appended to by someone else: the command was decided again
    /// on reloaded state [`EntityOptions::conflict_retries`] times and conflicted every time.
    /// Nothing was recorded.
    #[error("entity {aggregate_id:?}: still conflicting after {attempts} attempts")]
    Contended {
        /// The entity.
        aggregate_id: String,
        /// How many times the command was decided.
        attempts: u32,
    },
    /// The command set a timer with an invalid name or a command that does not serialize
    /// (see [`CommandContext::schedule`]); nothing was recorded.
    #[error("entity {aggregate_id:?}: invalid timer {name:?}: {reason}")]
    InvalidTimer {
        /// The entity.
        aggregate_id: String,
        /// The timer's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A timer request ([`Timers`]) found the timer no longer scheduled: it was cancelled,
    /// replaced or already delivered. Nothing was recorded.
    #[error("entity {aggregate_id:?}: no timer {name:?} is scheduled")]
    TimerNotScheduled {
        /// The entity.
        aggregate_id: String,
        /// The timer's name.
        name: String,
    },
    /// The instance stopped before answering (its `decide` panicked, or the runtime shut
    /// down). The command may or may not have been recorded.
    #[error("entity {aggregate_id:?} stopped before answering")]
    Stopped {
        /// The entity.
        aggregate_id: String,
    },
}

/// How [`Entities`] runs instances.
#[derive(Clone, Debug)]
pub struct EntityOptions {
    /// Most commands waiting in one instance's mailbox; beyond it `send` answers
    /// [`EntityError::Overloaded`]. Default 4,096.
    pub mailbox_capacity: usize,
    /// How long an instance stays live without a command before it stops. Default 60 s.
    pub idle_timeout: Duration,
    /// Most live instances; starting one more stops the least recently used. Default 10,000.
    pub live_instances_max: usize,
    /// Most commands decided into one batch (one commit). Default 1,024.
    pub batch_commands_max: usize,
    /// A batch stops taking commands once it holds this many events; keep it below the
    /// adapter's [`group_events_max`](crate::storage::Limits::group_events_max). Default 4,096.
    pub batch_events_max: usize,
    /// How many times a command is decided again after version conflicts before it fails
    /// with [`EntityError::Contended`]. Default 16.
    pub conflict_retries: u32,
}

impl Default for EntityOptions {
    fn default() -> Self {
        EntityOptions {
            mailbox_capacity: 4_096,
            idle_timeout: Duration::from_secs(60),
            live_instances_max: 10_000,
            batch_commands_max: 1_024,
            batch_events_max: 4_096,
            conflict_retries: 16,
        }
    }
}
