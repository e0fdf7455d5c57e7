//! Why a timer operation failed.

use crate::model::Error;

/// Why a timer operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimerError {
    /// Reading the timers from the log failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// A command does not encode to JSON, or a stored one no longer decodes into the
    /// entity's command type.
    #[error("timer {aggregate_id:?}/{name:?}: the command does not (de)serialize: {reason}")]
    Command {
        /// The timer's entity.
        aggregate_id: String,
        /// The timer's name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// The entity could not take the request: it is overloaded, stopped, kept conflicting,
    /// its store failed, or the timer's name is invalid. Nothing was recorded.
    #[error("timer {aggregate_id:?}/{name:?}: {reason}")]
    Entity {
        /// The timer's entity.
        aggregate_id: String,
        /// The timer's name.
        name: String,
        /// Why, as the entity answered.
        reason: String,
    },
}
