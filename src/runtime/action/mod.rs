//! Actions: stateless async functions that glue an application together. They may call
//! commands and external services; commands never call them.
//!
//! An action is triggered in one of three ways, each with its own module:
//!
//! - **events of the log** — module: [`event`]: [`EventAction`], [`ActionRunner`]; delivery:
//!   at-least-once, in global order, through a durable consumer named after the action; retries
//!   with exponential backoff ([`RetryPolicy`]), then the event goes to the [dead
//!   letters](dead_letter) and later events keep flowing
//! - **HTTP requests** — module: [`http`]: [`HttpActions`](http::HttpActions); delivery: one run
//!   per request, JSON in and out, errors mapped to status codes
//! - **a durable [queue](crate::runtime::queue)** — module: [`queue`]: [`QueueAction`],
//!   [`QueueRunner`]; delivery: at-least-once with acknowledgement, visibility timeout and dead
//!   letters
//!
//! Every run receives an [`ActionContext`]: what triggered it, which attempt it is, and the
//! capabilities of an action — running a [`Command`] and enqueueing a message for a
//! queue-triggered action. An action fails with an [`ActionError`], either retryable (the
//! default for any error converted with `?`) or [permanent](ActionError::permanent) (no retry:
//! dead-lettered at once).
//!
//! # Commands cannot call actions
//!
//! The rule is carried by the types. A command handler receives three things: its input, its
//! event stores and its context, and [`Command::handle`] requires the context to be `Clone`.
//! The handle through which code acts as an action is the [`ActionContext`], and:
//!
//! - it has no public constructor: only annals' runners make one, for one run of an action;
//! - it is not `Clone`, so it cannot be a command's context, nor be copied into one;
//! - it is not `Sync`, so a shared reference to it (or an `Arc` of it) is not `Send`: an action
//!   that hands one to a command and awaits the command no longer compiles, because runners
//!   require `Send` actions;
//! - [`ActionContext::run`], the way actions run commands, requires the command's context to be
//!   `Send + Sync + 'static` and owned by the caller, which an action context cannot be.
//!
//! So a command handler has no way to receive an action context, and without one it cannot
//! run an action or enqueue work for one through annals. (Rust cannot stop a program from
//! deliberately wrapping the context in a lock to smuggle it; nothing in annals does so.)
//!
//! ```compile_fail
//! # use std::sync::Arc;
//! # use annals::action::{ActionContext, ActionError, EventAction};
//! # use annals::{Command, storage::LoggedEvent};
//! // A command whose context would be the action context: refused, `ActionContext` is not
//! // `Clone`, and `Command::handle` requires a `Clone` context.
//! let command = Arc::new(Command::new(
//!     "ESCALATE",
//!     (),
//!     |_: (), (), _ctx: ActionContext| async move { Ok::<_, annals::Error>(()) },
//! ));
//! EventAction::new("escalate", move |_: LoggedEvent, ctx: ActionContext| {
//!     let command = command.clone();
//!     async move {
//!         command.handle((), ctx).await?;
//!         Ok::<(), ActionError>(())
//!     }
//! });
//! ```
//!
//! ```compile_fail
//! # use std::sync::Arc;
//! # use annals::action::{ActionContext, ActionError, EventAction};
//! # use annals::{Command, storage::LoggedEvent};
//! // Sharing it instead: an `Arc<ActionContext>` is `Clone`, but not `Send` (the context is
//! // not `Sync`), so the action's future is not `Send` and cannot be an action.
//! let command = Arc::new(Command::new(
//!     "ESCALATE",
//!     (),
//!     |_: (), (), _ctx: Arc<ActionContext>| async move { Ok::<_, annals::Error>(()) },
//! ));
//! EventAction::new("escalate", move |_: LoggedEvent, ctx: ActionContext| {
//!     let command = command.clone();
//!     async move {
//!         command.handle((), Arc::new(ctx)).await?;
//!         Ok::<(), ActionError>(())
//!     }
//! });
//! ```
//!
//! The same action, running the command through its context with an ordinary command context,
//! compiles:
//!
//! ```
//! # use std::sync::Arc;
//! # use annals::action::{ActionContext, ActionError, EventAction};
//! # use annals::{Command, storage::LoggedEvent};
//! let command = Arc::new(Command::new("ESCALATE", (), |_: (), (), clock: u64| async move {
//!     Ok::<_, annals::Error>(clock)
//! }));
//! EventAction::new("escalate", move |_: LoggedEvent, mut ctx: ActionContext| {
//!     let command = command.clone();
//!     async move {
//!         ctx.run(&command, (), 42_u64).await?;
//!         Ok::<(), ActionError>(())
//!     }
//! });
//! ```
//!
//! [`Command`]: crate::model::command::Command
//! [`Command::handle`]: crate::model::command::Command::handle

mod context;
pub mod dead_letter;
mod error;
pub mod event;
#[cfg(feature = "postgres")]
mod group;
#[cfg(feature = "http")]
pub mod http;
mod panic;
pub mod queue;
mod retry;

pub use context::{ActionContext, Trigger};
pub use dead_letter::DeadLetter;
pub use error::{ActionError, ActionRunError};
pub use event::{ActionRunner, EventAction};
pub use queue::{QueueAction, QueueRunner};
pub use retry::RetryPolicy;
