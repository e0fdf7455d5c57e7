//! What an application defines to run entities: the [`Entity`] trait.

use std::fmt;

use super::context::CommandContext;
use crate::model::aggregate::Aggregate;
use crate::model::event::Events;

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
    /// They are recorded with default metadata.
    type Events: Events<Metadata: Default>;
    /// The state the event store's reducer builds.
    type State: Clone + Send + Sync + 'static;
    /// Why a command is refused; returned to the sender as
    /// [`EntityError::Rejected`](super::EntityError::Rejected).
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
