//! Commands: validate input against current state and push events, retried on version
//! conflicts.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::model::error::Error;
use crate::storage::{EventAlreadyExists, StorageError};

/// An error type a command handler can fail with: it must tell whether the failure is a
/// version conflict (then the handler is run again).
pub trait CommandFailure {
    /// The conflict, if this failure is one.
    fn event_already_exists(&self) -> Option<&EventAlreadyExists>;
}

impl CommandFailure for Error {
    fn event_already_exists(&self) -> Option<&EventAlreadyExists> {
        Error::event_already_exists(self)
    }
}

impl CommandFailure for StorageError {
    fn event_already_exists(&self) -> Option<&EventAlreadyExists> {
        StorageError::event_already_exists(self)
    }
}

/// Where a command stands in its retry loop, passed to `on_event_already_exists`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryContext {
    /// The attempt that just hit the conflict, from 1.
    pub attempt_number: u32,
    /// How many more attempts will be made (0: the conflict is returned to the caller).
    pub retries_left: u32,
}

type ConflictHook = Arc<dyn Fn(&EventAlreadyExists, RetryContext) + Send + Sync>;

/// A command (Castore's `Command`): an id, the event stores it needs, and an async handler
/// `(input, stores, context) -> Result<output, error>`.
///
/// When the handler fails with a version conflict ([`CommandFailure::event_already_exists`]),
/// it is run again from the start with the same input, up to
/// [`event_already_exists_retries`](Command::event_already_exists_retries) more times (default
/// 2); any other error is returned untouched. Handlers should be pure apart from the stores:
/// pass clocks, id generators and clients through the context.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use std::sync::Arc;
/// # #[derive(Debug, Clone, Serialize, Deserialize)] pub struct Appeared { pub name: String }
/// # annals::events! { pub enum PokemonEvent { Appeared(Appeared) = "POKEMON_APPEARED" } }
/// use annals::{Command, EventStore, NewEvent, storage::InMemoryAdapter};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let pokemons = EventStore::builder("POKEMONS", |_, e: &annals::EventDetail<PokemonEvent>| ())
///     .storage_adapter(Arc::new(InMemoryAdapter::new())).build()?;
///
/// let appear = Command::new(
///     "APPEAR",
///     (pokemons,),
///     |name: String, (pokemons,), next_id: u32| async move {
///         let id = format!("pokemon-{next_id}");
///         let event = PokemonEvent::Appeared(Appeared { name });
///         pokemons.push_event(NewEvent::new(&id, 1, event), Default::default()).await?;
///         Ok::<_, annals::Error>(id)
///     },
/// );
/// assert_eq!(appear.handle("Pikachu".to_owned(), 7).await?, "pokemon-7");
/// # Ok::<(), annals::Error>(()) }).unwrap();
/// ```
pub struct Command<S, H> {
    command_id: String,
    required_event_stores: S,
    handler: H,
    event_already_exists_retries: u32,
    on_event_already_exists: Option<ConflictHook>,
}

impl<S: fmt::Debug, H> fmt::Debug for Command<S, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("command_id", &self.command_id)
            .field("required_event_stores", &self.required_event_stores)
            .field(
                "event_already_exists_retries",
                &self.event_already_exists_retries,
            )
            .finish_non_exhaustive()
    }
}

impl<S: Clone, H> Command<S, H> {
    /// A command named `command_id` over `required_event_stores` (a tuple of event stores, in
    /// the order the handler receives them).
    pub fn new<I, C, O, F, Fut>(
        command_id: impl Into<String>,
        required_event_stores: S,
        handler: H,
    ) -> Self
    where
        H: Fn(I, S, C) -> Fut,
        Fut: Future<Output = Result<O, F>>,
    {
        Command {
            command_id: command_id.into(),
            required_event_stores,
            handler,
            event_already_exists_retries: 2,
            on_event_already_exists: None,
        }
    }

    /// Sets how many times the handler is rerun after a version conflict (default 2).
    pub fn event_already_exists_retries(mut self, retries: u32) -> Self {
        self.event_already_exists_retries = retries;
        self
    }

    /// Calls `hook` on every version conflict, before retrying or giving up.
    pub fn on_event_already_exists(
        mut self,
        hook: impl Fn(&EventAlreadyExists, RetryContext) + Send + Sync + 'static,
    ) -> Self {
        self.on_event_already_exists = Some(Arc::new(hook));
        self
    }

    /// The command's id.
    pub fn command_id(&self) -> &str {
        &self.command_id
    }

    /// The stores the handler receives.
    pub fn required_event_stores(&self) -> &S {
        &self.required_event_stores
    }

    /// The configured number of retries.
    pub fn retries(&self) -> u32 {
        self.event_already_exists_retries
    }

    /// Runs the handler with `input` and `context`, retrying on version conflicts.
    pub async fn handle<I, C, O, F, Fut>(&self, input: I, context: C) -> Result<O, F>
    where
        H: Fn(I, S, C) -> Fut,
        Fut: Future<Output = Result<O, F>>,
        I: Clone,
        C: Clone,
        F: CommandFailure,
    {
        let mut attempt_number = 1;
        loop {
            let stores = self.required_event_stores.clone();
            let error = match (self.handler)(input.clone(), stores, context.clone()).await {
                Ok(output) => return Ok(output),
                Err(error) => error,
            };
            let Some(conflict) = error.event_already_exists() else {
                return Err(error);
            };
            let retries_left = self
                .event_already_exists_retries
                .saturating_sub(attempt_number - 1);
            if let Some(hook) = &self.on_event_already_exists {
                hook(
                    conflict,
                    RetryContext {
                        attempt_number,
                        retries_left,
                    },
                );
            }
            if retries_left == 0 {
                return Err(error);
            }
            attempt_number += 1;
        }
    }
}
