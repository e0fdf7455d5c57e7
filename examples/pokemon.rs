//! The Pokémon domain from Castore's documentation, end to end on annals.
//!
//! Two event stores, `POKEMONS` and `TRAINERS`, each with its events, aggregate state and
//! reducer; four commands (`APPEAR_POKEMON`, `CREATE_TRAINER`, `LEVEL_UP`, `CATCH_POKEMON`);
//! and a scenario that pushes events, builds aggregates, lists aggregate ids page by page,
//! shows a typed rejection, and races three trainers for one wild Pokémon.
//!
//! ```text
//! cargo run --all-features --example pokemon -- [DIR] [--console]
//! ```
//!
//! The events are kept in `DIR` (default `target/pokemon-store`) by annals' embedded log
//! adapter: every acknowledged push is on disk before the command continues, and running the
//! example again adds to the same store (ids are unique per run). [`open_storage`] is the one
//! place that chooses the adapter.
//!
//! Then the runtime floor: Pikachu as an actor (an entity) taking twenty concurrent training
//! sessions, a SQL view (a Pokédex per trainer, a join of two tables) kept up to
//! date from the log, an event-triggered action that queues a notification for each catch, a
//! queue-triggered action that delivers them, and an HTTP endpoint, `POST /pokemons/catch`,
//! served on loopback and called with a real HTTP client. Their state (`state.redb`, `views/`)
//! lives beside the events.
//!
//! Last, the admin console (`annals::admin`) is served on its own loopback address, which the
//! example prints, and read through its JSON API. With `--console` the example keeps it open,
//! with the runners live, until Ctrl-C: open the printed address in a browser. Set
//! `ANNALS_CONSOLE_TOKEN` (16 bytes or more) to allow retrying and dropping dead letters from
//! the page.
//!
//! `CATCH_POKEMON` writes to two aggregates of two stores (`CAUGHT_BY_TRAINER` on the Pokémon,
//! `POKEMON_CAUGHT` on the trainer) through [`annals::push_event_group`], so both events are
//! committed or neither is. When two trainers race, the loser's group fails with
//! `EventAlreadyExists` on the Pokémon's next version; the command reruns its handler, which
//! now reads the Pokémon as caught and rejects the catch with a typed error.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use annals::action::QueueAction;
use annals::action::http::{HttpActions, HttpError, Reply, serve_until};
use annals::action::{ActionContext, ActionError, EventAction};
use annals::admin::{Console, TimedAdapter};
use annals::engine::layout;
use annals::entity::{CommandContext, Entities, Entity, EntityOptions, Timers};
use annals::queue::Queue;
use annals::state::StateStore;
use annals::storage::LogAdapter;
use annals::view::SqlView;
use annals::{
    Aggregate, Command, CommandFailure, EventAlreadyExists, EventDetail, EventStore, Events,
    GetAggregateOptions, ListAggregateIdsOptions, NewEvent, RetryContext, StorageAdapter,
    Timestamp, push_event_group,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// POKEMONS: events, aggregate state, reducer
// ---------------------------------------------------------------------------------------------

/// Payload of `POKEMON_APPEARED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PokemonAppeared {
    /// The species, e.g. `Pikachu`.
    pub name: String,
    /// The level it appeared at.
    pub level: u32,
}

/// Payload of `CAUGHT_BY_TRAINER`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaughtByTrainer {
    /// The trainer who caught the Pokémon.
    pub trainer_id: String,
}

/// Payload of `POKEMON_LEVELED_UP` (the event itself is the whole fact).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PokemonLeveledUp {}

/// What made a Pokémon appear: Castore's `{ trigger?: 'random' | 'scripted' }` metadata.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// Met in the tall grass.
    Random,
    /// Placed by the story.
    Scripted,
}

/// Metadata of every `POKEMONS` event.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PokemonMetadata {
    /// Set on `POKEMON_APPEARED`, absent on the other events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

annals::events! {
    /// Everything that can happen to a Pokémon.
    pub enum PokemonEvent {
        type Metadata = PokemonMetadata;
        Appeared(PokemonAppeared) = "POKEMON_APPEARED",
        CaughtByTrainer(CaughtByTrainer) = "CAUGHT_BY_TRAINER",
        LeveledUp(PokemonLeveledUp) = "POKEMON_LEVELED_UP",
    }
}

/// Whether a Pokémon is still wild.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Nobody owns it.
    #[default]
    Wild,
    /// Owned by a trainer.
    Caught {
        /// The owner.
        trainer_id: String,
    },
}

/// A Pokémon's state: what the data would look like in a CRUD table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pokemon {
    /// The species.
    pub name: String,
    /// The current level.
    pub level: u32,
    /// Wild or caught, and by whom.
    pub status: Status,
}

/// The level no Pokémon grows beyond.
const LEVEL_MAX: u32 = 100;

/// Folds one `POKEMONS` event into a Pokémon.
///
/// Commands push other events only after `POKEMON_APPEARED`, so `state` is `None` only for
/// that event; starting from the default keeps the reducer total all the same.
fn reduce_pokemon(state: Option<Pokemon>, event: &EventDetail<PokemonEvent>) -> Pokemon {
    let pokemon = state.unwrap_or_default();
    match &event.event {
        PokemonEvent::Appeared(e) => Pokemon {
            name: e.name.clone(),
            level: e.level,
            status: Status::Wild,
        },
        PokemonEvent::CaughtByTrainer(e) => Pokemon {
            status: Status::Caught {
                trainer_id: e.trainer_id.clone(),
            },
            ..pokemon
        },
        PokemonEvent::LeveledUp(_) => Pokemon {
            level: pokemon.level + 1,
            ..pokemon
        },
    }
}

// ---------------------------------------------------------------------------------------------
// TRAINERS: events, aggregate state, reducer
// ---------------------------------------------------------------------------------------------

/// Payload of `TRAINER_CREATED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerCreated {
    /// The trainer's name.
    pub name: String,
}

/// Payload of `POKEMON_CAUGHT`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PokemonCaught {
    /// The Pokémon added to the trainer's pokédex.
    pub pokemon_id: String,
}

annals::events! {
    /// Everything that can happen to a trainer.
    pub enum TrainerEvent {
        Created(TrainerCreated) = "TRAINER_CREATED",
        PokemonCaught(PokemonCaught) = "POKEMON_CAUGHT",
    }
}

/// A trainer's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trainer {
    /// The trainer's name.
    pub name: String,
    /// Ids of the Pokémon the trainer caught, oldest first.
    pub pokedex: Vec<String>,
}

/// Folds one `TRAINERS` event into a trainer.
fn reduce_trainer(state: Option<Trainer>, event: &EventDetail<TrainerEvent>) -> Trainer {
    let mut trainer = state.unwrap_or_default();
    match &event.event {
        TrainerEvent::Created(e) => trainer.name = e.name.clone(),
        TrainerEvent::PokemonCaught(e) => trainer.pokedex.push(e.pokemon_id.clone()),
    }
    trainer
}

/// The `POKEMONS` event store.
pub type Pokemons = EventStore<PokemonEvent, Pokemon>;
/// The `TRAINERS` event store.
pub type Trainers = EventStore<TrainerEvent, Trainer>;

/// Builds both stores on one storage adapter (required for atomic event groups), with a hook
/// that prints every pushed event.
fn event_stores(adapter: Arc<dyn StorageAdapter>) -> Result<(Pokemons, Trainers), annals::Error> {
    let pokemons = EventStore::builder("POKEMONS", reduce_pokemon)
        .storage_adapter(Arc::clone(&adapter))
        .on_event_pushed(|pushed| async move {
            print_pushed("POKEMONS", pushed.position, &pushed.event)
        })
        .build()?;
    let trainers = EventStore::builder("TRAINERS", reduce_trainer)
        .storage_adapter(adapter)
        .on_event_pushed(|pushed| async move {
            print_pushed("TRAINERS", pushed.position, &pushed.event)
        })
        .build()?;
    Ok((pokemons, trainers))
}

// ---------------------------------------------------------------------------------------------
// Command context: everything impure the handlers use
// ---------------------------------------------------------------------------------------------

/// Makes ids unique across runs: `{kind}-{run}-{n}`.
#[derive(Debug)]
pub struct IdGenerator {
    run: String,
    next: AtomicU64,
}

impl IdGenerator {
    /// A generator whose ids are tagged with `run`.
    pub fn new(run: impl Into<String>) -> Self {
        IdGenerator {
            run: run.into(),
            next: AtomicU64::new(1),
        }
    }

    /// The next id for an aggregate of `kind`.
    pub fn generate(&self, kind: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{kind}-{}-{n}", self.run)
    }
}

/// Where events get their timestamps from.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(Arc::new(Timestamp::now))
    }

    /// The current time according to this clock.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

/// Holds the first `parties` runs of a handler at one point until all of them arrived (or a
/// second passed), so that concurrent commands all read the same state before any of them
/// writes. Later runs, such as retries, pass straight through.
///
/// Real races are timing accidents; the demo uses this to make one happen every time.
#[derive(Debug)]
pub struct StartingLine {
    barrier: tokio::sync::Barrier,
    arrivals: AtomicUsize,
    parties: usize,
}

impl StartingLine {
    /// A starting line for `parties` concurrent handlers.
    pub fn new(parties: usize) -> Self {
        StartingLine {
            barrier: tokio::sync::Barrier::new(parties),
            arrivals: AtomicUsize::new(0),
            parties,
        }
    }

    /// Waits for the other parties, once per party.
    pub async fn wait(&self) {
        if self.arrivals.fetch_add(1, Ordering::SeqCst) < self.parties {
            // The timeout only matters if a party never arrives; then the others go on.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.barrier.wait()).await;
        }
    }
}

/// The context every command receives: id generation, time, and the demo's starting line.
#[derive(Clone)]
pub struct Context {
    /// Generates aggregate ids.
    pub ids: Arc<IdGenerator>,
    /// Stamps events.
    pub clock: Clock,
    /// When set, `CATCH_POKEMON` waits here after reading state (see [`StartingLine`]).
    pub starting_line: Option<Arc<StartingLine>>,
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// Why a command refused to run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No Pokémon has this id.
    #[error("no pokemon {pokemon_id:?}")]
    PokemonNotFound {
        /// The unknown id.
        pokemon_id: String,
    },
    /// No trainer has this id.
    #[error("no trainer {trainer_id:?}")]
    TrainerNotFound {
        /// The unknown id.
        trainer_id: String,
    },
    /// The Pokémon already belongs to a trainer.
    #[error("{name} ({pokemon_id}) is already caught by {trainer_id}")]
    AlreadyCaught {
        /// The Pokémon.
        pokemon_id: String,
        /// Its species.
        name: String,
        /// Its owner.
        trainer_id: String,
    },
    /// The Pokémon is at [`LEVEL_MAX`].
    #[error("{name} ({pokemon_id}) is already at level {LEVEL_MAX}")]
    LevelMax {
        /// The Pokémon.
        pokemon_id: String,
        /// Its species.
        name: String,
    },
    /// The event store failed (a version conflict among others).
    #[error(transparent)]
    Store(#[from] annals::Error),
}

impl CommandFailure for CommandError {
    fn event_already_exists(&self) -> Option<&EventAlreadyExists> {
        match self {
            CommandError::Store(e) => e.event_already_exists(),
            _ => None,
        }
    }
}

/// A command handler as a plain function pointer, so that commands have nameable types and
/// can live in a struct.
type Handler<I, S, O> = fn(I, S, Context) -> BoxFuture<'static, Result<O, CommandError>>;

/// A command over stores `S` taking `I` and returning `O`.
type AppCommand<S, I, O> = Command<S, Handler<I, S, O>>;

/// Input of `APPEAR_POKEMON`.
#[derive(Debug, Clone)]
pub struct AppearPokemon {
    /// The species.
    pub name: String,
    /// The level it appears at.
    pub level: u32,
    /// What made it appear.
    pub trigger: Trigger,
}

/// Input of `CATCH_POKEMON` (also the JSON body of `POST /pokemons/catch`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatchPokemon {
    /// The Pokémon to catch.
    pub pokemon_id: String,
    /// The trainer throwing the ball.
    pub trainer_id: String,
}

/// Output of `CATCH_POKEMON`: both aggregates after the catch.
#[derive(Debug, Clone)]
pub struct Catch {
    /// The Pokémon, now caught.
    pub pokemon: Aggregate<Pokemon>,
    /// The trainer, with the Pokémon in the pokédex.
    pub trainer: Aggregate<Trainer>,
}

/// The application's commands.
pub struct Commands {
    /// `APPEAR_POKEMON`: a wild Pokémon appears; returns its id.
    pub appear_pokemon: AppCommand<(Pokemons,), AppearPokemon, String>,
    /// `CREATE_TRAINER`: a trainer with this name starts; returns the trainer's id.
    pub create_trainer: AppCommand<(Trainers,), String, String>,
    /// `LEVEL_UP`: a Pokémon gains a level; returns the new aggregate.
    pub level_up: AppCommand<(Pokemons,), String, Aggregate<Pokemon>>,
    /// `CATCH_POKEMON`: a trainer catches a wild Pokémon, atomically on both aggregates.
    pub catch_pokemon: AppCommand<(Pokemons, Trainers), CatchPokemon, Catch>,
}

impl Commands {
    /// The commands over these stores.
    pub fn new(pokemons: &Pokemons, trainers: &Trainers) -> Self {
        let appear: Handler<_, _, _> =
            |input, stores, ctx| Box::pin(appear_pokemon(input, stores, ctx));
        let create: Handler<_, _, _> =
            |input, stores, ctx| Box::pin(create_trainer(input, stores, ctx));
        let level: Handler<_, _, _> = |input, stores, ctx| Box::pin(level_up(input, stores, ctx));
        let catch: Handler<_, _, _> =
            |input, stores, ctx| Box::pin(catch_pokemon(input, stores, ctx));
        Commands {
            appear_pokemon: Command::new("APPEAR_POKEMON", (pokemons.clone(),), appear),
            create_trainer: Command::new("CREATE_TRAINER", (trainers.clone(),), create),
            level_up: Command::new("LEVEL_UP", (pokemons.clone(),), level),
            catch_pokemon: Command::new(
                "CATCH_POKEMON",
                (pokemons.clone(), trainers.clone()),
                catch,
            )
            .event_already_exists_retries(3)
            .on_event_already_exists(print_conflict),
        }
    }
}

/// `APPEAR_POKEMON`: pushes `POKEMON_APPEARED` as version 1 of a new aggregate.
async fn appear_pokemon(
    input: AppearPokemon,
    (pokemons,): (Pokemons,),
    ctx: Context,
) -> Result<String, CommandError> {
    let pokemon_id = ctx.ids.generate("pokemon");
    let appeared = PokemonEvent::Appeared(PokemonAppeared {
        name: input.name,
        level: input.level,
    });
    let event = NewEvent::new(&pokemon_id, 1, appeared)
        .with_metadata(PokemonMetadata {
            trigger: Some(input.trigger),
        })
        .with_timestamp(ctx.clock.now());
    pokemons.push_event(event, Default::default()).await?;
    Ok(pokemon_id)
}

/// `CREATE_TRAINER`: pushes `TRAINER_CREATED` as version 1 of a new aggregate.
async fn create_trainer(
    name: String,
    (trainers,): (Trainers,),
    ctx: Context,
) -> Result<String, CommandError> {
    let trainer_id = ctx.ids.generate("trainer");
    let created = TrainerEvent::Created(TrainerCreated { name });
    let event = NewEvent::new(&trainer_id, 1, created).with_timestamp(ctx.clock.now());
    trainers.push_event(event, Default::default()).await?;
    Ok(trainer_id)
}

/// `LEVEL_UP`: checks the Pokémon exists and is below [`LEVEL_MAX`], then pushes
/// `POKEMON_LEVELED_UP` at the next version.
async fn level_up(
    pokemon_id: String,
    (pokemons,): (Pokemons,),
    ctx: Context,
) -> Result<Aggregate<Pokemon>, CommandError> {
    let Some(pokemon) = pokemons
        .get_aggregate(&pokemon_id, Default::default())
        .await?
        .aggregate
    else {
        return Err(CommandError::PokemonNotFound { pokemon_id });
    };
    if pokemon.level >= LEVEL_MAX {
        let name = pokemon.name.clone();
        return Err(CommandError::LevelMax { pokemon_id, name });
    }
    let leveled_up = PokemonEvent::LeveledUp(PokemonLeveledUp {});
    let event =
        NewEvent::new(&pokemon_id, pokemon.version + 1, leveled_up).with_timestamp(ctx.clock.now());
    let pushed = pokemons.push_event(event, Default::default()).await?;
    Ok(pokemons.reduce(Some(pokemon), &pushed.event))
}

/// `CATCH_POKEMON`: checks the Pokémon exists and is wild and the trainer exists, then pushes
/// `CAUGHT_BY_TRAINER` and `POKEMON_CAUGHT` as one atomic group.
async fn catch_pokemon(
    input: CatchPokemon,
    (pokemons, trainers): (Pokemons, Trainers),
    ctx: Context,
) -> Result<Catch, CommandError> {
    let CatchPokemon {
        pokemon_id,
        trainer_id,
    } = input;
    let pokemon = pokemons
        .get_aggregate(&pokemon_id, Default::default())
        .await?
        .aggregate;
    let trainer = trainers
        .get_aggregate(&trainer_id, Default::default())
        .await?
        .aggregate;
    if let Some(line) = &ctx.starting_line {
        line.wait().await;
    }
    let Some(pokemon) = pokemon else {
        return Err(CommandError::PokemonNotFound { pokemon_id });
    };
    let Some(trainer) = trainer else {
        return Err(CommandError::TrainerNotFound { trainer_id });
    };
    if let Status::Caught { trainer_id } = &pokemon.status {
        return Err(CommandError::AlreadyCaught {
            pokemon_id,
            name: pokemon.name.clone(),
            trainer_id: trainer_id.clone(),
        });
    }

    let now = ctx.clock.now();
    let caught = PokemonEvent::CaughtByTrainer(CaughtByTrainer {
        trainer_id: trainer_id.clone(),
    });
    let added = TrainerEvent::PokemonCaught(PokemonCaught {
        pokemon_id: pokemon_id.clone(),
    });
    let (caught, added) = push_event_group((
        pokemons.group_event(
            NewEvent::new(&pokemon_id, pokemon.version + 1, caught).with_timestamp(now),
            Default::default(),
        )?,
        trainers.group_event(
            NewEvent::new(&trainer_id, trainer.version + 1, added).with_timestamp(now),
            Default::default(),
        )?,
    ))
    .await?;
    Ok(Catch {
        pokemon: pokemons.reduce(Some(pokemon), &caught.event),
        trainer: trainers.reduce(Some(trainer), &added.event),
    })
}

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------

/// Opens the storage adapter both event stores share.
///
/// The embedded log adapter in `dir`, durable on every acknowledged push.
fn open_storage(dir: &Path) -> DemoResult<Arc<LogAdapter>> {
    let adapter = annals::open(dir)?;
    println!(
        "storage: annals log in {} (last position before this run: {})",
        dir.display(),
        adapter.last_position()
    );
    Ok(adapter)
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// Prints one pushed event: global position, store, aggregate, version, type and payload.
fn print_pushed<E: Events>(store: &str, position: u64, event: &EventDetail<E>) {
    let payload = serde_json::to_string(&Payload(&event.event))
        .unwrap_or_else(|e| format!("<payload not printable: {e}>"));
    println!(
        "  + #{position:<3} {store}/{} v{} {} {payload}",
        event.aggregate_id,
        event.version,
        event.event_type()
    );
}

/// An event's payload alone, serialized as in Castore's JSON form of the event.
struct Payload<'a, E>(&'a E);

impl<E: Events> Serialize for Payload<'_, E> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.0.serialize_payload(serializer)
    }
}

/// `CATCH_POKEMON`'s conflict hook: reports the conflict before the handler reruns.
fn print_conflict(conflict: &EventAlreadyExists, retry: RetryContext) {
    println!(
        "  ! conflict: {}/{} v{} was taken (attempt {}, {} retries left)",
        conflict.event_store_id,
        conflict.aggregate_id,
        conflict.version,
        retry.attempt_number,
        retry.retries_left
    );
}

impl fmt::Display for Pokemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lvl {}", self.name, self.level)?;
        match &self.status {
            Status::Wild => write!(f, ", wild"),
            Status::Caught { trainer_id } => write!(f, ", caught by {trainer_id}"),
        }
    }
}

impl fmt::Display for Trainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, pokedex [{}]", self.name, self.pokedex.join(", "))
    }
}

/// Prints a section heading.
fn heading(title: &str) {
    println!("\n== {title}");
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// What the scenario fails with: a command or store error, or a broken expectation.
type DemoResult<T> = Result<T, Box<dyn StdError + Send + Sync>>;

/// The demo's stores, commands and context.
struct App {
    pokemons: Pokemons,
    trainers: Trainers,
    commands: Arc<Commands>,
    ctx: Context,
    /// The adapter the stores push through, timing each commit for the console's metrics.
    timed: Arc<TimedAdapter>,
}

/// Ids created by the first steps of the scenario.
struct Cast {
    pikachu: String,
    mewtwo: String,
    ash: String,
    misty: String,
    /// `(name, trainer id)` of the trainers racing for Mewtwo.
    contestants: Vec<(String, String)>,
}

impl App {
    /// Pokémon appear and trainers start.
    async fn populate(&self) -> DemoResult<Cast> {
        heading("APPEAR_POKEMON and CREATE_TRAINER");
        let appear = |name: &str, level, trigger| AppearPokemon {
            name: name.to_owned(),
            level,
            trigger,
        };
        let commands = &self.commands;
        let pikachu = commands
            .appear_pokemon
            .handle(appear("Pikachu", 5, Trigger::Random), self.ctx.clone())
            .await?;
        for (name, level) in [("Bulbasaur", 3), ("Charmander", 4), ("Squirtle", 4)] {
            let input = appear(name, level, Trigger::Random);
            commands
                .appear_pokemon
                .handle(input, self.ctx.clone())
                .await?;
        }
        let mewtwo = commands
            .appear_pokemon
            .handle(appear("Mewtwo", 70, Trigger::Scripted), self.ctx.clone())
            .await?;
        let create = |name: &str| {
            let input = name.to_owned();
            async move {
                commands
                    .create_trainer
                    .handle(input, self.ctx.clone())
                    .await
            }
        };
        let ash = create("Ash").await?;
        let misty = create("Misty").await?;
        let mut contestants = vec![("Misty".to_owned(), misty.clone())];
        for name in ["Brock", "Gary"] {
            contestants.push((name.to_owned(), create(name).await?));
        }
        Ok(Cast {
            pikachu,
            mewtwo,
            ash,
            misty,
            contestants,
        })
    }

    /// Ash catches Pikachu, which then levels up twice.
    async fn catch_and_train(&self, cast: &Cast) -> DemoResult<()> {
        heading("CATCH_POKEMON (two events, two stores, one atomic group)");
        let input = CatchPokemon {
            pokemon_id: cast.pikachu.clone(),
            trainer_id: cast.ash.clone(),
        };
        let catch = self
            .commands
            .catch_pokemon
            .handle(input, self.ctx.clone())
            .await?;
        println!(
            "  pokemon {} v{}: {}",
            catch.pokemon.aggregate_id, catch.pokemon.version, *catch.pokemon
        );
        println!(
            "  trainer {} v{}: {}",
            catch.trainer.aggregate_id, catch.trainer.version, *catch.trainer
        );

        heading("LEVEL_UP x2");
        for _ in 0..2 {
            let pikachu = self
                .commands
                .level_up
                .handle(cast.pikachu.clone(), self.ctx.clone())
                .await?;
            println!(
                "  {} v{}: {}",
                pikachu.aggregate_id, pikachu.version, *pikachu
            );
        }

        heading("Aggregates, rebuilt from their events");
        let pikachu = self
            .pokemons
            .get_existing_aggregate(&cast.pikachu, Default::default())
            .await?;
        for event in &pikachu.events {
            println!(
                "  v{} {} at {}",
                event.version,
                event.event_type(),
                event.timestamp
            );
        }
        println!(
            "  => {} v{}: {}",
            pikachu.aggregate.aggregate_id, pikachu.aggregate.version, *pikachu.aggregate
        );
        let before = GetAggregateOptions {
            max_version: Some(1),
        };
        if let Some(young) = self
            .pokemons
            .get_aggregate(&cast.pikachu, before)
            .await?
            .aggregate
        {
            println!("  as of v1: {}", *young);
        }
        let ash = self
            .trainers
            .get_existing_aggregate(&cast.ash, Default::default())
            .await?;
        println!(
            "  => {} v{}: {}",
            ash.aggregate.aggregate_id, ash.aggregate.version, *ash.aggregate
        );
        Ok(())
    }

    /// Misty tries to catch Ash's Pikachu: the command refuses with a typed error.
    async fn rejection(&self, cast: &Cast) -> DemoResult<()> {
        heading("Typed rejection: catching a caught Pokemon");
        let input = CatchPokemon {
            pokemon_id: cast.pikachu.clone(),
            trainer_id: cast.misty.clone(),
        };
        match self
            .commands
            .catch_pokemon
            .handle(input, self.ctx.clone())
            .await
        {
            Err(e @ CommandError::AlreadyCaught { .. }) => println!("  rejected: {e}"),
            Err(other) => return Err(other.into()),
            Ok(catch) => {
                let owner = &catch.pokemon.status;
                return Err(format!("a caught Pokemon was caught again: {owner:?}").into());
            }
        }
        Ok(())
    }

    /// Three trainers throw a ball at Mewtwo at the same time; exactly one catches it.
    async fn race(&self, cast: &Cast) -> DemoResult<()> {
        heading("Race: three trainers, one Mewtwo, CATCH_POKEMON at once");
        let ctx = Context {
            starting_line: Some(Arc::new(StartingLine::new(cast.contestants.len()))),
            ..self.ctx.clone()
        };
        let mut throws = tokio::task::JoinSet::new();
        for (name, trainer_id) in &cast.contestants {
            let commands = Arc::clone(&self.commands);
            let input = CatchPokemon {
                pokemon_id: cast.mewtwo.clone(),
                trainer_id: trainer_id.clone(),
            };
            let (name, ctx) = (name.clone(), ctx.clone());
            throws.spawn(async move { (name, commands.catch_pokemon.handle(input, ctx).await) });
        }
        let mut winners = Vec::new();
        while let Some(joined) = throws.join_next().await {
            match joined? {
                (name, Ok(catch)) => {
                    println!("  {name}: caught {}", *catch.pokemon);
                    winners.push((name, catch.trainer.aggregate_id));
                }
                (name, Err(e @ CommandError::AlreadyCaught { .. })) => {
                    println!("  {name}: rejected, {e}");
                }
                (_, Err(other)) => return Err(other.into()),
            }
        }
        let mewtwo = self
            .pokemons
            .get_existing_aggregate(&cast.mewtwo, Default::default())
            .await?;
        let [(winner_name, winner)] = winners.as_slice() else {
            return Err(format!(
                "{} trainers caught Mewtwo, expected exactly one",
                winners.len()
            )
            .into());
        };
        match &mewtwo.aggregate.status {
            Status::Caught { trainer_id } if trainer_id == winner => {}
            status => {
                return Err(format!("Mewtwo is {status:?}, expected caught by {winner}").into());
            }
        }
        for (_, trainer_id) in &cast.contestants {
            let trainer = self
                .trainers
                .get_existing_aggregate(trainer_id, Default::default())
                .await?;
            let has_mewtwo = trainer.aggregate.pokedex.contains(&cast.mewtwo);
            if has_mewtwo != (trainer_id == winner) {
                return Err(format!("{trainer_id}'s pokedex disagrees with Mewtwo's owner").into());
            }
        }
        println!(
            "  => exactly one winner: {winner_name}; Mewtwo v{}, {}",
            mewtwo.aggregate.version, *mewtwo.aggregate
        );
        Ok(())
    }

    /// Lists every Pokémon, two per page, oldest first.
    async fn listing(&self) -> DemoResult<()> {
        heading("list_aggregate_ids on POKEMONS, 2 per page");
        let mut options = ListAggregateIdsOptions {
            limit: Some(2),
            ..Default::default()
        };
        for page_number in 1.. {
            let page = self.pokemons.list_aggregate_ids(options).await?;
            println!("  page {page_number}:");
            for entry in &page.aggregate_ids {
                let pokemon = self
                    .pokemons
                    .get_existing_aggregate(&entry.aggregate_id, Default::default())
                    .await?;
                println!(
                    "    {:<24} appeared {}  {}",
                    entry.aggregate_id, entry.initial_event_timestamp, *pokemon.aggregate
                );
            }
            // The token carries the limit (and every other option) of the first request.
            let Some(token) = page.next_page_token else {
                break;
            };
            options = ListAggregateIdsOptions {
                page_token: Some(token),
                ..Default::default()
            };
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Views and actions
// ---------------------------------------------------------------------------------------------

/// A Pokémon as an actor: one live instance per id decides its training sessions in order,
/// on its in-memory state, and answers once the events are durable.
pub struct Training;

/// A command of the [`Training`] entity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TrainingCommand {
    /// One session: one level more.
    Session,
    /// Books one more session `after_ms` from now: a durable timer, committed like an event.
    Book { after_ms: i64 },
}

impl Entity for Training {
    type Command = TrainingCommand;
    type Events = PokemonEvent;
    type State = Pokemon;
    type Rejection = String;

    fn decide(
        state: Option<&Aggregate<Pokemon>>,
        command: &TrainingCommand,
        ctx: &mut CommandContext<'_, TrainingCommand>,
    ) -> Result<Vec<PokemonEvent>, String> {
        let Some(pokemon) = state else {
            return Err("no such pokemon".into());
        };
        match command {
            TrainingCommand::Session if pokemon.level >= LEVEL_MAX => {
                Err(format!("{} is already at level {LEVEL_MAX}", pokemon.name))
            }
            TrainingCommand::Session => Ok(vec![PokemonEvent::LeveledUp(PokemonLeveledUp {})]),
            TrainingCommand::Book { after_ms } => {
                let at = Timestamp::from_unix_millis(ctx.now().unix_millis() + after_ms);
                ctx.schedule("next-session", at, &TrainingCommand::Session);
                Ok(Vec::new())
            }
        }
    }
}

/// The Pokédex: trainers and Pokémon in two SQL tables, joined by queries.
fn pokedex_view(pokemons: &Pokemons, trainers: &Trainers, dir: &Path) -> DemoResult<SqlView> {
    let view = SqlView::builder("pokedex", 1)
        .schema("CREATE TABLE trainers (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
        .schema(
            "CREATE TABLE pokemons (id TEXT PRIMARY KEY, name TEXT NOT NULL, \
             level INTEGER NOT NULL, trainer_id TEXT)",
        )
        .on(
            trainers,
            |db: &rusqlite::Connection, event: &EventDetail<TrainerEvent>| {
                if let TrainerEvent::Created(trainer) = &event.event {
                    db.execute(
                        "INSERT INTO trainers (id, name) VALUES (?1, ?2)",
                        (&event.aggregate_id, &trainer.name),
                    )?;
                }
                Ok::<(), rusqlite::Error>(())
            },
        )
        .on(
            pokemons,
            |db: &rusqlite::Connection, event: &EventDetail<PokemonEvent>| {
                let id = &event.aggregate_id;
                match &event.event {
                    PokemonEvent::Appeared(p) => db.execute(
                        "INSERT INTO pokemons (id, name, level) VALUES (?1, ?2, ?3)",
                        (id, &p.name, p.level),
                    )?,
                    PokemonEvent::CaughtByTrainer(c) => db.execute(
                        "UPDATE pokemons SET trainer_id = ?2 WHERE id = ?1",
                        (id, &c.trainer_id),
                    )?,
                    PokemonEvent::LeveledUp(_) => {
                        db.execute("UPDATE pokemons SET level = level + 1 WHERE id = ?1", [id])?
                    }
                };
                Ok::<(), rusqlite::Error>(())
            },
        )
        .open(layout::views_dir(dir))?;
    Ok(view)
}

/// A command's refusal as an HTTP answer.
fn http_error(e: CommandError) -> HttpError {
    match e {
        CommandError::PokemonNotFound { .. } | CommandError::TrainerNotFound { .. } => {
            HttpError::NotFound(e.to_string())
        }
        CommandError::AlreadyCaught { .. } | CommandError::LevelMax { .. } => {
            HttpError::Conflict(e.to_string())
        }
        CommandError::Store(e) => e.into(),
    }
}

impl App {
    /// Twenty training sessions sent at once to one Pokémon's actor: decided one by one on its
    /// live state, committed in batches, each answered after its event is durable.
    async fn training(&self, cast: &Cast) -> DemoResult<()> {
        heading("entities as actors: 20 concurrent training sessions for Pikachu");
        let entities = Entities::<Training>::new(self.pokemons.clone(), EntityOptions::default())?;
        let pikachu = entities.get(cast.pikachu.clone());
        let sessions = (0..20).map(|_| pikachu.send(TrainingCommand::Session));
        let replies = futures::future::join_all(sessions).await;
        let mut versions = Vec::with_capacity(replies.len());
        for reply in replies {
            versions.push(reply.map_err(|e| e.to_string())?.version);
        }
        versions.sort_unstable();
        let pokemon = self
            .pokemons
            .get_existing_aggregate(&cast.pikachu, Default::default())
            .await?;
        println!(
            "  versions {}..={} (each once), now {}",
            versions[0],
            versions[versions.len() - 1],
            *pokemon.aggregate
        );

        // A durable timer: booked by a command, delivered to the actor when due.
        const HOUR_MS: i64 = 3_600_000;
        pikachu
            .send(TrainingCommand::Book { after_ms: HOUR_MS })
            .await
            .map_err(|e| e.to_string())?;
        let timers = Timers::new(entities.clone());
        let pending = timers.pending().await?;
        for timer in &pending {
            println!(
                "  timer {:?} booked for {} ({:?})",
                timer.name, timer.at, timer.command
            );
        }
        let an_hour_later = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + HOUR_MS);
        let delivered = timers.fire_due(an_hour_later).await?;
        let pokemon = self
            .pokemons
            .get_existing_aggregate(&cast.pikachu, Default::default())
            .await?;
        println!(
            "  an hour later: {delivered} timer delivered, now {}",
            *pokemon.aggregate
        );
        Ok(())
    }

    /// The runtime floor around the stores: a view, an event action feeding a queue, a queue
    /// action, and an HTTP endpoint.
    async fn views_and_actions(
        &self,
        dir: &Path,
        log: Arc<LogAdapter>,
        cast: &Cast,
        keep_console: bool,
    ) -> DemoResult<()> {
        heading("views and actions: a SQL view, an event action, a queue, HTTP");
        let adapter: Arc<dyn StorageAdapter> = log.clone();
        let state = Arc::new(StateStore::open(layout::state_file(dir))?);
        let pokedex = pokedex_view(&self.pokemons, &self.trainers, dir)?;
        let view = pokedex.run(Arc::clone(&adapter));

        // Each catch queues a notification (at least once, through a durable consumer)...
        let notify = EventAction::typed(
            "notify-trainer",
            &self.pokemons,
            |event: EventDetail<PokemonEvent>, mut ctx: ActionContext| async move {
                if let PokemonEvent::CaughtByTrainer(caught) = &event.event {
                    let text = format!("{} caught {}", caught.trainer_id, event.aggregate_id);
                    ctx.enqueue_json("notifications", &text)?;
                }
                Ok::<(), ActionError>(())
            },
        )
        .spawn(Arc::clone(&adapter), Arc::clone(&state))?;
        // ... and the queue's action delivers them.
        let notifications = Queue::open(Arc::clone(&state), "notifications");
        let delivered = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&delivered);
        let deliver = QueueAction::new(
            "deliver-notification",
            notifications.clone(),
            move |message, _ctx| {
                let count = Arc::clone(&count);
                async move {
                    let text: String = serde_json::from_slice(&message.body)?;
                    println!("  notification: {text}");
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), ActionError>(())
                }
            },
        )
        .spawn();

        // POST /pokemons/catch runs CATCH_POKEMON.
        let commands = Arc::clone(&self.commands);
        let app_ctx = self.ctx.clone();
        let router = HttpActions::new(Arc::clone(&state))
            .post(
                "/pokemons/catch",
                move |input: CatchPokemon, mut ctx: ActionContext| {
                    let (commands, app_ctx) = (Arc::clone(&commands), app_ctx.clone());
                    async move {
                        let catch = ctx
                            .run(&commands.catch_pokemon, input, app_ctx)
                            .await
                            .map_err(http_error)?;
                        Ok::<_, HttpError>(Reply::created(serde_json::json!({
                            "pokemonId": catch.pokemon.aggregate_id,
                            "version": catch.pokemon.version,
                        })))
                    }
                },
            )
            .router()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/pokemons/catch", listener.local_addr()?);
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_until(listener, router, async {
            let _ = stopped.await;
        }));
        let eevee = self
            .commands
            .appear_pokemon
            .handle(
                AppearPokemon {
                    name: "Eevee".into(),
                    level: 8,
                    trigger: Trigger::Random,
                },
                self.ctx.clone(),
            )
            .await?;
        let client = reqwest::Client::new();
        for trainer_id in [&cast.ash, &cast.misty] {
            let body = CatchPokemon {
                pokemon_id: eevee.clone(),
                trainer_id: trainer_id.clone(),
            };
            let response = client.post(&url).json(&body).send().await?;
            let status = response.status();
            println!(
                "  POST /pokemons/catch by {trainer_id}: {status} {}",
                response.text().await?
            );
        }
        let _ = stop_server.send(());
        server.await??;

        // Read-your-writes: wait until the view has applied everything pushed so far.
        let last = *adapter.watch_log().borrow();
        pokedex.wait_for(last, Duration::from_secs(10)).await?;
        let rows = pokedex.query(|db| {
            let mut query = db.prepare(
                "SELECT t.name, group_concat(p.name || ' (lv ' || p.level || ')', ', ') \
                 FROM trainers t JOIN pokemons p ON p.trainer_id = t.id \
                 WHERE t.id IN (?1, ?2) GROUP BY t.id ORDER BY t.name",
            )?;
            let rows: Vec<(String, String)> = query
                .query_map([&cast.ash, &cast.misty], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })?;
        println!("  pokedex view (trainers JOIN pokemons):");
        for (trainer, pokemons) in rows {
            println!("    {trainer:<6} {pokemons}");
        }

        notify.wait_past(last).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while notifications.len()? > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "  {} notification(s) delivered this run",
            delivered.load(Ordering::SeqCst)
        );

        self.console(log, &state, &notifications, keep_console)
            .await?;
        deliver.stop().await?;
        notify.stop().await?;
        view.stop().await?;
        Ok(())
    }
}

impl App {
    /// The admin console on its own loopback address (never on a public one: it shows every
    /// event), read once through its JSON API; kept open until Ctrl-C with `--console`.
    async fn console(
        &self,
        log: Arc<LogAdapter>,
        state: &Arc<StateStore>,
        notifications: &Queue,
        keep_console: bool,
    ) -> DemoResult<()> {
        heading("the admin console: the page, a JSON API and /metrics");
        let training = Entities::<Training>::new(self.pokemons.clone(), EntityOptions::default())?;
        let mut console = Console::for_log(log)
            .state(Arc::clone(state))
            .store(&self.pokemons)
            .store(&self.trainers)
            .queue(notifications.clone())
            .entities("training", &training)
            .commit_latency(&self.timed);
        // Retrying and dropping dead letters need a token; without one they are refused.
        if let Ok(token) = std::env::var("ANNALS_CONSOLE_TOKEN") {
            console = console.token(token);
        }
        let router = console.router()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_until(listener, router, async {
            let _ = stopped.await;
        }));
        println!("  admin console at {url}");

        let client = reqwest::Client::new();
        let stores: serde_json::Value = client
            .get(format!("{url}api/stores"))
            .send()
            .await?
            .json()
            .await?;
        for store in stores["stores"].as_array().into_iter().flatten() {
            println!(
                "  {}: {} aggregates, {} events",
                store["id"].as_str().unwrap_or("?"),
                store["aggregates"],
                store["events"]
            );
        }
        let consumers: serde_json::Value = client
            .get(format!("{url}api/consumers"))
            .send()
            .await?
            .json()
            .await?;
        for consumer in consumers["consumers"].as_array().into_iter().flatten() {
            println!(
                "  consumer {}: checkpoint {}, {} event(s) behind",
                consumer["name"].as_str().unwrap_or("?"),
                consumer["checkpoint"],
                consumer["lag"]
            );
        }
        let metrics = client
            .get(format!("{url}metrics"))
            .send()
            .await?
            .text()
            .await?;
        let samples = metrics.lines().filter(|l| l.starts_with("annals_")).count();
        let commits = metrics
            .lines()
            .find_map(|l| l.strip_prefix("annals_commit_seconds_count "))
            .unwrap_or("?");
        println!("  {url}metrics: {samples} samples, {commits} commits timed");

        if keep_console {
            println!("  open {url} in a browser; Ctrl-C to stop");
            tokio::signal::ctrl_c().await?;
        }
        let _ = stop.send(());
        server.await??;
        Ok(())
    }
}

const USAGE: &str = "usage: cargo run --all-features --example pokemon -- [DIR] [--console]";

/// Reads `[DIR] [--console]` from the command line.
fn parse_args() -> DemoResult<(Option<PathBuf>, bool)> {
    let mut dir = None;
    let mut keep_console = false;
    for arg in std::env::args_os().skip(1) {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        } else if arg == "--console" {
            keep_console = true;
        } else if dir.is_none() {
            dir = Some(PathBuf::from(arg));
        } else {
            return Err(USAGE.into());
        }
    }
    Ok((dir, keep_console))
}

/// Runs the scenario against the storage named on the command line.
async fn run() -> DemoResult<()> {
    let (dir, keep_console) = parse_args()?;
    let dir = dir.unwrap_or_else(|| PathBuf::from("target/pokemon-store"));
    let log = open_storage(&dir)?;
    let timed = Arc::new(TimedAdapter::new(log.clone()));
    let (pokemons, trainers) = event_stores(timed.clone())?;
    let commands = Arc::new(Commands::new(&pokemons, &trainers));
    // Unique per run, so that runs sharing a directory never reuse an aggregate id.
    let run = format!("{:06x}", Timestamp::now().unix_millis().rem_euclid(1 << 24));
    let ctx = Context {
        ids: Arc::new(IdGenerator::new(run)),
        clock: Clock::system(),
        starting_line: None,
    };
    let app = App {
        pokemons,
        trainers,
        commands,
        ctx,
        timed,
    };
    let cast = app.populate().await?;
    app.catch_and_train(&cast).await?;
    app.rejection(&cast).await?;
    app.race(&cast).await?;
    app.listing().await?;
    app.training(&cast).await?;
    #[cfg(feature = "personal")]
    gdpr::forget_a_trainer(app.timed.clone(), &cast.misty).await?;
    app.views_and_actions(&dir, log, &cast, keep_console)
        .await?;
    println!("\ndone");
    Ok(())
}

/// A GDPR erasure request (feature `personal`): a trainer's contact details are personal data,
/// encrypted with a key of the trainer's own; forgetting the trainer destroys the key, and the
/// events, which stay, read the details as forgotten.
#[cfg(feature = "personal")]
mod gdpr {
    use std::sync::Arc;

    use annals::storage::{GetEventsOptions, StorageAdapter};
    use annals::{EventDetail, EventStore, Personal};
    use serde::{Deserialize, Serialize};

    use super::{DemoResult, heading};

    /// Payload of `CONTACT_REGISTERED`: how to reach a trainer.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ContactRegistered {
        /// The trainer's full name (personal data of the trainer).
        pub name: Personal<String>,
        /// The trainer's email address (personal data of the trainer).
        pub email: Personal<String>,
        /// The trainer's home region (not personal: it stays readable).
        pub region: String,
    }

    annals::events! {
        /// Contact details of trainers.
        pub enum ContactEvent {
            Registered(ContactRegistered) = "CONTACT_REGISTERED",
        }
    }

    /// What a contact reads as: the value, or why there is none.
    fn shown(value: &Personal<String>) -> String {
        match value {
            Personal::Known { value, .. } => value.clone(),
            Personal::Forgotten { .. } => "(forgotten)".to_owned(),
            Personal::Unreadable { .. } => "(unreadable)".to_owned(),
        }
    }

    /// Misty registers her contact details, then asks to be forgotten.
    pub async fn forget_a_trainer(
        adapter: Arc<dyn StorageAdapter>,
        trainer_id: &str,
    ) -> DemoResult<()> {
        heading("GDPR: a trainer asks to be forgotten (crypto-shredding)");
        let contacts = EventStore::builder("CONTACTS", |_, _: &EventDetail<ContactEvent>| ())
            .storage_adapter(adapter.clone())
            .build()?;
        let registered = ContactEvent::Registered(ContactRegistered {
            name: Personal::new(trainer_id, "Misty Waterflower".to_owned()),
            email: Personal::new(trainer_id, "misty@cerulean.gym".to_owned()),
            region: "Kanto".to_owned(),
        });
        contacts
            .push_events(trainer_id, 0, [registered], &())
            .await?;
        let print = |when: &str, events: &[EventDetail<ContactEvent>]| {
            for event in events {
                let ContactEvent::Registered(c) = &event.event;
                println!(
                    "  {when}: name {}, email {}, region {}",
                    shown(&c.name),
                    shown(&c.email),
                    c.region
                );
            }
        };
        print(
            "before",
            &contacts.get_events(trainer_id, Default::default()).await?,
        );
        contacts.forget(trainer_id).await?;
        print(
            "after ",
            &contacts.get_events(trainer_id, Default::default()).await?,
        );
        let stored = adapter
            .get_events("CONTACTS", trainer_id, &GetEventsOptions::default())
            .await?;
        let mut untyped = annals::codec::to_json(&stored[0].event.payload)?;
        if let Some(keys) = adapter.keys() {
            annals::personal::mark_forgotten(&mut untyped, keys)?;
        }
        println!("  as `annals export` shows it: {untyped}");
        Ok(())
    }
}

/// What `main` fails with. Rust prints a failed `main`'s error with `Debug`; this one prints
/// the error's message and its causes rather than its structure.
struct Failure(Box<dyn StdError + Send + Sync>);

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    // annals reports what no caller sees through `tracing`: an HTTP action's 500 (its details
    // are logged, not sent), a failed accept, an action's retries and dead letters, a repaired
    // log tail. Without a subscriber these are lost; this one prints them on stderr.
    // `RUST_LOG` chooses what is shown (default `warn`: warnings and errors only).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    run().await.map_err(Failure)
}
