//! What handles and the timer driver ask an entity's instance, and how it answers: the
//! messages of an instance's mailbox.

use tokio::sync::oneshot;

use super::error::EntityError;
use super::kind::Entity;
use super::reply::Reply;
use super::timer::TimerRef;
use crate::storage::Timestamp;

/// What an instance answers a request with.
pub(crate) type Answer<T> =
    Result<Reply<<T as Entity>::Events>, EntityError<<T as Entity>::Rejection>>;

/// What an instance is asked to do.
pub(crate) enum Request<T: Entity> {
    /// Decide a command sent by [`EntityHandle::send`](super::EntityHandle::send).
    Command(T::Command),
    /// Schedule a timer from outside the entity ([`Timers::schedule`](super::Timers)).
    Schedule {
        name: String,
        at: Timestamp,
        command: serde_json::Value,
    },
    /// Cancel a timer from outside the entity; answered with
    /// [`EntityError::TimerNotScheduled`] when there is none.
    Cancel { name: String },
    /// Count one more delivery attempt of a timer still scheduled.
    TimerAttempt(TimerRef),
    /// Deliver a due timer's command, if the timer is still scheduled.
    TimerFire {
        timer: TimerRef,
        command: T::Command,
    },
}

/// A request in a mailbox or a batch, with where to send its answer.
pub(crate) struct Envelope<T: Entity> {
    pub(crate) request: Request<T>,
    pub(crate) reply: oneshot::Sender<Answer<T>>,
    /// How many times the command has been decided.
    pub(crate) attempts: u32,
    pub(crate) outcome: Outcome<T::Rejection>,
}

/// What deciding a command gave, kept until its batch is durable.
pub(crate) enum Outcome<R> {
    /// Not decided yet.
    Undecided,
    /// The next `count` events of its batch; the aggregate ends at `version`.
    Events { count: usize, version: u64 },
    /// No event; decided on the aggregate at `version`.
    Unchanged { version: u64 },
    /// Refused.
    Rejected(R),
    /// A timer request found no such timer scheduled.
    TimerNotScheduled(String),
    /// The decision set an invalid timer.
    InvalidTimer { name: String, reason: String },
}
