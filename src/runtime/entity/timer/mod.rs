//! Durable timers: a command delivered to an entity at a given time, recorded in the event log
//! in the same commit as the events of the command that set it, delivered at least once.
//!
//! # Where timers live
//! The timers of the entities of event store `S` are events of a companion store, `S.timers`
//! ([`timer_store_id`]), one aggregate per entity id. The suffix is reserved:
//! [`EventStoreBuilder::build`](crate::model::event_store::EventStoreBuilder::build) refuses every
//! id ending in
//! [`.timers`](crate::model::event_store::RESERVED_EVENT_STORE_ID_SUFFIX), so no store of the
//! application can be taken for a timer store. Store ids have at most 128 bytes, so entities
//! run on stores of at most [`ENTITY_STORE_ID_BYTES_MAX`] (121) bytes:
//! [`Entities::new`](super::Entities::new) refuses a longer one with a typed error.
//! Scheduling, cancelling, counting a delivery attempt and marking a timer delivered are events
//! of that store, so:
//!
//! - a timer set by [`CommandContext::schedule`](super::CommandContext::schedule) while
//!   deciding a command is committed in the same event group as the command's events: both
//!   are durable, or neither;
//! - a timer's delivery records its command's events and the timer's removal in one commit, so
//!   a timer whose command recorded its events is never delivered again;
//! - they work on every storage adapter, and they follow the entity's instance: its fencing
//!   reloads the timers with the state.
//!
//! # Delivery
//! [`Timers`] follows the log (from its start, when it is created) to know every scheduled
//! timer. For each due timer, [`Timers::fire_due`] first has the entity record the attempt
//! (durably), then delivers the command; the entity decides it with the timer and its attempt
//! count in [`CommandContext::timer`](super::CommandContext::timer). A crash, a failed
//! commit or an overloaded entity leaves the timer scheduled with its attempt counted, to be
//! delivered again by the next call: timers fire at least once. A timer that was cancelled or
//! rescheduled in the meantime is not delivered (the entity checks it, on its own up-to-date
//! state). [`Timers::run`] calls `fire_due` on a fixed tick.

mod book;
mod driver;
mod error;

pub(crate) use book::{Cancelled, Scheduled, TimerBook, TimerEvent, TimerRef, timer_store};
pub use book::{ENTITY_STORE_ID_BYTES_MAX, TIMER_NAME_BYTES_MAX, timer_store_id};
pub use driver::{Timer, Timers};
pub use error::TimerError;
