//! The `annals` command-line tool: inspect, export, import and maintain a store.
//!
//! The tool is a client of the library like any other: it opens the store through
//! [`annals::open`] (or the PostgreSQL adapter) and uses only public API. One module per
//! command group:
//!
//! | module | commands |
//! |---|---|
//! | [`inspect`] | `stats`, `stores`, `ls`, `events`, `get`, `tail` |
//! | [`export`] | `export` (and the JSON-lines event shape shared with import) |
//! | [`import`] | `import` |
//! | [`runtime_state`] | `consumers`, `views`, `dead-letters` |
//! | [`maintenance`] | `verify`, `rebuild-index`, `compact`, `snapshots prune` |
//! | [`lifecycle`] | `delete`, `restore`, `truncate`, `retention` |
//! | [`remote`] | `--url`: the read commands through a running application's console |
//!
//! Exit status (stable, see `docs/cli.md`): 0 success; 1 `verify` found problems; 2 usage
//! error or failure; 3 the store is locked by another process; 4 the input is invalid (an
//! import file, a conflicting event); 5 what was asked for does not exist. `verify` keeps
//! 0/1/2 only.

mod console_client;
mod error;
mod export;
mod import;
mod inspect;
mod json;
mod lifecycle;
mod maintenance;
mod open;
mod output;
mod progress;
mod remote;
mod runtime_state;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use error::CliError;
use open::Target;

/// annals — an embedded event store: inspect, export, import and maintain a store.
#[derive(Debug, Parser)]
#[command(name = "annals", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
struct Global {
    /// The store directory.
    #[arg(short, long, global = true, env = "ANNALS_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Use the PostgreSQL store at this URL instead of a directory (needs a binary built with
    /// the `postgres` feature).
    #[arg(long, global = true, env = "ANNALS_POSTGRES", value_name = "URL")]
    postgres: Option<String>,
    /// The PostgreSQL schema of the store and of the runtime's state (with --postgres).
    #[arg(
        long,
        global = true,
        env = "ANNALS_POSTGRES_SCHEMA",
        value_name = "SCHEMA",
        default_value = "annals"
    )]
    postgres_schema: String,
    /// Print JSON instead of tables (one document, or one object per line for streams).
    #[arg(long, global = true)]
    json: bool,
    /// Read the store as a live reader, as when another process holds it: no lock is taken
    /// and nothing is changed (commands that only read; they do this by themselves when the
    /// store is held elsewhere).
    #[arg(long, global = true)]
    read_only: bool,
    /// Read through a running application's admin console instead of opening the store:
    /// `http://HOST:PORT` (commands: stats, stores, ls, events, consumers, dead-letters, tail).
    #[arg(long, global = true, env = "ANNALS_URL", value_name = "URL")]
    url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Event stores, aggregates, events, bytes on disk, last position, index and snapshots.
    Stats,
    /// Every event store with its number of aggregates and events.
    Stores,
    /// Aggregate ids of a store, by the timestamp of their first event, one page at a time.
    Ls(inspect::LsArgs),
    /// The events of one aggregate.
    Events(inspect::EventsArgs),
    /// The event at a global position.
    Get {
        /// The global position (from 1).
        position: u64,
    },
    /// Follows new events live (Ctrl-C to stop).
    Tail(inspect::TailArgs),
    /// Writes events as JSON lines in Castore's event-detail shape.
    Export(export::ExportArgs),
    /// Pushes events from JSON lines (annals or Castore exports), resumably.
    Import(import::ImportArgs),
    /// Durable consumers: position and lag.
    Consumers(runtime_state::StateArgs),
    /// Views: position, lag, and whether queries read them.
    Views(runtime_state::ViewsArgs),
    /// Dead letters of event actions: list, retry, drop.
    #[command(subcommand)]
    DeadLetters(runtime_state::DeadLetterCommand),
    /// Checks the store's integrity (read-only; the store must not be open elsewhere). Exit
    /// status: 0 intact, 1 problems found, 2 could not check.
    Verify {
        /// The store directory (or `--dir`).
        store: Option<PathBuf>,
    },
    /// Discards the per-aggregate index and rebuilds it from the log.
    RebuildIndex,
    /// Reclaims disk space: rewrites sealed log segments without the events the data
    /// lifecycle's rules let go (the store must not be open elsewhere).
    Compact {
        /// The store directory (or `--dir`).
        store: Option<PathBuf>,
    },
    /// Converts a store written by annals 0.1 (redb 2 database files) to the current file
    /// format, file by file, each replaced only once converted and synced. The store must not
    /// be open elsewhere.
    Upgrade {
        /// The store directory (or `--dir`).
        store: Option<PathBuf>,
    },
    /// Aggregate snapshots.
    #[command(subcommand)]
    Snapshots(maintenance::SnapshotsCommand),
    /// Deletes an aggregate: hidden from reads, pushes refused (soft, or for good with
    /// --hard).
    Delete(lifecycle::DeleteArgs),
    /// Restores a soft-deleted aggregate.
    Restore(lifecycle::RestoreArgs),
    /// Hides the versions of an aggregate below a version.
    Truncate(lifecycle::TruncateArgs),
    /// Shows, sets or removes the retention rule of an event store.
    Retention(lifecycle::RetentionArgs),
}

fn main() -> ExitCode {
    // `--url`: the commands go to a running application's console, parsed there (`remote`).
    let remote = remote::requested();
    let cli = match Cli::try_parse() {
        _ if remote => None,
        Ok(cli) => Some(cli),
        Err(e) => {
            // Help and version are not errors; clap says which stream to use.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("annals: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli {
        Some(cli) => runtime.block_on(run(cli)),
        None => runtime.block_on(remote::run()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => e.report(),
    }
}

/// Runs one command; `Ok` carries the exit status (0, or 1 when `verify` found problems).
async fn run(cli: Cli) -> Result<u8, CliError> {
    let Global {
        dir,
        postgres,
        postgres_schema,
        json,
        read_only,
        url: _,
    } = cli.global;
    let target = Target {
        dir,
        postgres,
        postgres_schema,
        read_only,
    };
    let out = output::Out::new(json);
    let only_reads = matches!(
        cli.command,
        Command::Stats
            | Command::Stores
            | Command::Ls(_)
            | Command::Events(_)
            | Command::Get { .. }
            | Command::Tail(_)
            | Command::Export(_)
    );
    if target.read_only && !only_reads {
        return Err(CliError::failed(
            "--read-only is for commands that only read: stats, stores, ls, events, get, tail, \
             export",
        ));
    }
    match cli.command {
        Command::Stats => inspect::stats(&target, &out).await?,
        Command::Stores => inspect::stores(&target, &out).await?,
        Command::Ls(args) => inspect::ls(&target, &out, args).await?,
        Command::Events(args) => inspect::events(&target, &out, args).await?,
        Command::Get { position } => inspect::get(&target, &out, position).await?,
        Command::Tail(args) => inspect::tail(&target, &out, args).await?,
        Command::Export(args) => export::export(&target, &out, args).await?,
        Command::Import(args) => import::import(&target, &out, args).await?,
        Command::Consumers(args) => runtime_state::consumers(&target, &out, args).await?,
        Command::Views(args) => runtime_state::views(&target, &out, args).await?,
        Command::DeadLetters(command) => {
            runtime_state::dead_letters(&target, &out, command).await?
        }
        Command::Verify { store } => return maintenance::verify(&target, store, &out),
        Command::RebuildIndex => maintenance::rebuild_index(&target, &out)?,
        Command::Compact { store } => maintenance::compact(&target, store, &out).await?,
        Command::Upgrade { store } => maintenance::upgrade(&target, store, &out)?,
        Command::Snapshots(command) => maintenance::snapshots(&target, &out, command).await?,
        Command::Delete(args) => lifecycle::delete(&target, &out, args).await?,
        Command::Restore(args) => lifecycle::restore(&target, &out, args).await?,
        Command::Truncate(args) => lifecycle::truncate(&target, &out, args).await?,
        Command::Retention(args) => lifecycle::retention(&target, &out, args).await?,
    }
    Ok(0)
}
