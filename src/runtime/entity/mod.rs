//! Entities as actors: one live instance per aggregate id, commands one at a time, state kept
//! in memory, replies only after the events are durable.
//!
//! An [`Entity`] is one Rust type per entity kind. It names its commands, its events, its state
//! and its typed rejection, and decides with one pure function: state and command in, events or
//! a rejection out. It never folds events itself: the state evolves with the
//! [reducer](crate::model::aggregate::Reducer) of the
//! [`EventStore`](crate::model::event_store::EventStore) the entities run on, so
//! an entity and a plain reader of the store always agree on the state. Deciding cannot do
//! I/O (no `async`, no context): side effects belong to [actions](crate::runtime::action).
//!
//! [`Entities`] runs them. [`Entities::get`] gives an [`EntityHandle`] for one id;
//! [`EntityHandle::send`] delivers a command to the single live instance of that id (a tokio
//! task), starting it if needed. The instance:
//!
//! - loads the aggregate on first use with
//!   [`get_aggregate`](crate::model::event_store::EventStore::get_aggregate) (from a snapshot when
//!   the store has a
//!   policy) and keeps it in memory;
//! - decides commands in arrival order, one at a time, each on the state left by the previous;
//! - commits the decided events with one
//!   [`push_event_group`](crate::model::group::push_event_group) per
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
mod error;
#[cfg(feature = "http")]
pub mod http;
mod instance;
mod kind;
mod options;
mod registry;
mod reply;
mod request;
mod runtime;
pub mod timer;

pub use context::{CommandContext, FiredTimer};
pub use error::EntityError;
pub use kind::Entity;
pub use options::EntityOptions;
pub use reply::Reply;
pub use runtime::{Entities, EntityHandle};
pub use timer::{
    ENTITY_STORE_ID_BYTES_MAX, TIMER_NAME_BYTES_MAX, Timer, TimerError, Timers, timer_store_id,
};
