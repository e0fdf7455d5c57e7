//! What an entity's `decide` knows beyond its state and command, and how it sets timers.

use std::marker::PhantomData;

use serde::Serialize;

use super::timer::{TIMER_NAME_BYTES_MAX, TimerBook};
use crate::storage::Timestamp;

/// A timer delivering the command being decided, from [`CommandContext::timer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiredTimer {
    /// The timer's name.
    pub name: String,
    /// When it was due.
    pub at: Timestamp,
    /// Which delivery this is: 1 for the first, more after a crash or a failed delivery.
    pub attempt: u32,
}

/// A change to the entity's timers, committed with the command's events.
#[derive(Clone, Debug)]
pub(crate) enum TimerOp {
    Schedule {
        name: String,
        at: Timestamp,
        command: serde_json::Value,
    },
    Cancel {
        name: String,
    },
}

/// The context of one decision: when it happens, which attempt it is, the timer that
/// delivered the command (if one did), and the timers it sets or cancels.
///
/// Timers set here are committed in the same event group as the command's events: both are
/// durable or neither is, and a rejected command sets none.
///
/// ```
/// # use annals::entity::CommandContext;
/// # use annals::Timestamp;
/// # #[derive(serde::Serialize)] enum Command { Remind }
/// fn plan(ctx: &mut CommandContext<'_, Command>) {
///     let in_an_hour = Timestamp::from_unix_millis(ctx.now().unix_millis() + 3_600_000);
///     ctx.schedule("reminder", in_an_hour, &Command::Remind);
///     ctx.cancel("old-reminder");
/// }
/// ```
pub struct CommandContext<'a, C> {
    now: Timestamp,
    attempt: u32,
    timer: Option<&'a FiredTimer>,
    book: &'a TimerBook,
    pub(crate) ops: Vec<TimerOp>,
    /// The first invalid timer request: its name and why.
    pub(crate) invalid: Option<(String, String)>,
    _command: PhantomData<fn(&C)>,
}

impl<C> std::fmt::Debug for CommandContext<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandContext")
            .field("now", &self.now)
            .field("attempt", &self.attempt)
            .field("timer", &self.timer)
            .field("ops", &self.ops)
            .finish_non_exhaustive()
    }
}

impl<'a, C> CommandContext<'a, C> {
    pub(crate) fn new(
        now: Timestamp,
        attempt: u32,
        timer: Option<&'a FiredTimer>,
        book: &'a TimerBook,
    ) -> Self {
        CommandContext {
            now,
            attempt,
            timer,
            book,
            ops: Vec::new(),
            invalid: None,
            _command: PhantomData,
        }
    }

    /// The timestamp the command's events get. Use it instead of the clock so that the
    /// decision depends only on its inputs.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// How many times this command has been decided: 1, or more when earlier decisions were
    /// discarded because someone else appended to the aggregate first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The timer delivering this command, or `None` for a command sent by
    /// [`EntityHandle::send`](super::EntityHandle::send).
    pub fn timer(&self) -> Option<&FiredTimer> {
        self.timer
    }

    /// When the timer `name` is due, counting what this decision did to it; `None` if it is
    /// not scheduled.
    pub fn scheduled(&self, name: &str) -> Option<Timestamp> {
        for op in self.ops.iter().rev() {
            match op {
                TimerOp::Schedule { name: n, at, .. } if n == name => return Some(*at),
                TimerOp::Cancel { name: n } if n == name => return None,
                _ => {}
            }
        }
        let delivering = self.timer.is_some_and(|timer| timer.name == name);
        match self.book.timers.get(name) {
            Some(pending) if !delivering => Some(Timestamp::from_unix_millis(pending.at_ms)),
            _ => None,
        }
    }

    /// Schedules `command` for this entity at `at` under `name`, replacing a timer of that
    /// name. A name is 1 to 256 bytes; an invalid name or a command that does not serialize
    /// fails the command with [`EntityError::InvalidTimer`](super::EntityError::InvalidTimer).
    pub fn schedule(&mut self, name: impl Into<String>, at: Timestamp, command: &C)
    where
        C: Serialize,
    {
        let name = name.into();
        if !self.check_name(&name) {
            return;
        }
        match serde_json::to_value(command) {
            Ok(command) => self.ops.push(TimerOp::Schedule { name, at, command }),
            Err(e) => self.fail(name, format!("the command does not serialize: {e}")),
        }
    }

    /// Cancels the timer `name`, if it is scheduled.
    pub fn cancel(&mut self, name: impl Into<String>) {
        let name = name.into();
        if self.check_name(&name) {
            self.ops.push(TimerOp::Cancel { name });
        }
    }

    fn check_name(&mut self, name: &str) -> bool {
        let reason = if name.is_empty() {
            "a timer name cannot be empty"
        } else if name.len() > TIMER_NAME_BYTES_MAX {
            "a timer name is at most 256 bytes"
        } else {
            return true;
        };
        self.fail(name.to_owned(), reason.to_owned());
        false
    }

    fn fail(&mut self, name: String, reason: String) {
        if self.invalid.is_none() {
            self.invalid = Some((name, reason));
        }
    }
}
