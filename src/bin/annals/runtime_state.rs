//! The runtime's state: `consumers`, `views`, `dead-letters`.
//!
//! Consumers' checkpoints, key-value views and dead letters live in the runtime's state store:
//! a redb file (`--state FILE`, by default `<dir>/state.redb`), or, with `--postgres URL` and
//! no `--state`, the state tables of the PostgreSQL store (schema `--postgres-schema`). SQL
//! views are SQLite files in a directory of their own (`--views DIR`, by default
//! `<dir>/views`). A state file is held by the application while it runs, so these commands
//! run on it while the application is stopped; the PostgreSQL state is shared, and they run on
//! it at any time, from any machine that reaches the database.
//!
//! The tool cannot run an action (only the application has its code), so `dead-letters retry`
//! marks dead letters for retry in the state store; the application's action runner retries
//! the marked ones when it starts, and then periodically (see `annals::action::dead_letter`).

use std::path::PathBuf;

use annals::action::dead_letter;
use annals::engine::layout;
use annals::storage::Position;
use annals::view::ViewStatus;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::error::{CliError, EXIT_NOT_FOUND};
use crate::open::{Target, open_runtime_state};
use crate::output::{Out, human_time};

#[derive(Debug, Args)]
pub struct StateArgs {
    /// The runtime's state file (default: the PostgreSQL state with --postgres, else
    /// DIR/state.redb).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ViewsArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The directory of SQL views (default: DIR/views).
    #[arg(long, value_name = "DIR")]
    views: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Lists the events actions gave up on.
    List {
        /// Only this action's.
        #[arg(long, value_name = "ACTION")]
        action: Option<String>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Marks dead letters for retry: the action's runner retries them when the application
    /// next starts it.
    Retry {
        /// The action.
        action: String,
        /// The dead letter's log position.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        position: Option<Position>,
        /// Every dead letter of the action.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Gives up on a dead letter: the action will not handle that event.
    Drop {
        /// The action.
        action: String,
        /// The dead letter's log position.
        position: Position,
        #[command(flatten)]
        state: StateArgs,
    },
}

/// The last position of the store, for lags.
async fn last_position(target: &Target) -> Result<Position, CliError> {
    let store = target.open().await?;
    let last = *store.adapter.watch_log().borrow();
    Ok(last)
}

/// Events after `next - 1` up to `last`.
fn lag(next: Position, last: Position) -> u64 {
    last.saturating_sub(next.saturating_sub(1))
}

pub async fn consumers(target: &Target, out: &Out, args: StateArgs) -> Result<(), CliError> {
    let opened = open_runtime_state(target, args.state).await?;
    let checkpoints = opened
        .state
        .checkpoints()
        .map_err(|e| CliError::storage(format_args!("read the consumers of {}", opened.name), e))?;
    let last = last_position(target).await?;
    if out.json {
        let rows: Vec<_> = checkpoints
            .iter()
            .map(|(name, next)| {
                json!({ "name": name, "nextPosition": next, "lag": lag(*next, last) })
            })
            .collect();
        return out.json_doc(&json!({ "lastPosition": last, "consumers": rows }));
    }
    let rows: Vec<Vec<String>> = checkpoints
        .iter()
        .map(|(name, next)| vec![name.clone(), next.to_string(), lag(*next, last).to_string()])
        .collect();
    out.table(
        &["CONSUMER", "NEXT POSITION", "LAG"],
        &[false, true, true],
        &rows,
    )
}

pub async fn views(target: &Target, out: &Out, args: ViewsArgs) -> Result<(), CliError> {
    // On PostgreSQL the key-value views are in the shared state; SQL views stay in a
    // directory, read when one is given or the store has one.
    let on_postgres = target.postgres.is_some() && args.state.state.is_none();
    let state_path = match on_postgres {
        true => None,
        false => Some(target.state_path(args.state.state.clone())?),
    };
    let views_dir = match (args.views, on_postgres) {
        (Some(dir), _) => Some(dir),
        (None, false) => Some(layout::views_dir(target.dir()?)),
        (None, true) => target.dir.as_deref().map(layout::views_dir),
    };
    let mut found: Vec<(&str, ViewStatus)> = Vec::new();
    let has_state = on_postgres || state_path.as_ref().is_some_and(|p| p.is_file());
    if has_state {
        let opened = open_runtime_state(target, args.state.state).await?;
        let kv = annals::view::kv::statuses(&opened.state).map_err(|e| {
            CliError::failed(format!("cannot read the views of {}: {e}", opened.name))
        })?;
        found.extend(kv.into_iter().map(|s| ("kv", s)));
    }
    let views_dir = views_dir.filter(|dir| dir.is_dir());
    if let Some(views_dir) = &views_dir {
        let sql = annals::view::sql::statuses(views_dir).map_err(|e| {
            CliError::failed(format!(
                "cannot read the views in {}: {e}",
                views_dir.display()
            ))
        })?;
        found.extend(sql.into_iter().map(|s| ("sql", s)));
    }
    if let (false, None, Some(state_path)) = (has_state, &views_dir, &state_path) {
        return Err(CliError::with_code(
            EXIT_NOT_FOUND,
            format!(
                "no views: neither {} nor a views directory exists",
                state_path.display(),
            ),
        )
        .hint("pass --state FILE (key-value views) or --views DIR (SQL views)"));
    }
    let last = last_position(target).await?;
    if out.json {
        let rows: Vec<_> = found
            .iter()
            .map(|(kind, s)| {
                json!({ "name": s.name, "version": s.version, "kind": kind,
                    "nextPosition": s.next_position, "lag": lag(s.next_position, last),
                    "active": s.active })
            })
            .collect();
        return out.json_doc(&json!({ "lastPosition": last, "views": rows }));
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|(kind, s)| {
            vec![
                s.name.clone(),
                s.version.to_string(),
                (*kind).to_owned(),
                s.next_position.to_string(),
                lag(s.next_position, last).to_string(),
                if s.active { "active" } else { "building" }.to_owned(),
            ]
        })
        .collect();
    out.table(
        &["VIEW", "VERSION", "KIND", "NEXT POSITION", "LAG", "STATE"],
        &[false, true, false, true, true, false],
        &rows,
    )
}

pub async fn dead_letters(
    target: &Target,
    out: &Out,
    command: DeadLetterCommand,
) -> Result<(), CliError> {
    match command {
        DeadLetterCommand::List { action, state } => list_letters(target, out, action, state).await,
        DeadLetterCommand::Retry {
            action,
            position,
            state,
            ..
        } => retry_letters(target, out, &action, position, state).await,
        DeadLetterCommand::Drop {
            action,
            position,
            state,
        } => drop_letter(target, out, &action, position, state).await,
    }
}

async fn list_letters(
    target: &Target,
    out: &Out,
    action: Option<String>,
    state: StateArgs,
) -> Result<(), CliError> {
    let opened = open_runtime_state(target, state.state).await?;
    let read = match &action {
        Some(action) => dead_letter::list(&opened.state, action),
        None => dead_letter::list_all(&opened.state),
    };
    let letters = read.map_err(|e| {
        CliError::storage(format_args!("read the dead letters of {}", opened.name), e)
    })?;
    if out.json {
        return out.json_doc(&letters);
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|l| {
            vec![
                l.action.clone(),
                l.position.to_string(),
                format!("{}/{} v{}", l.event_store_id, l.aggregate_id, l.version),
                l.event_type.clone(),
                l.attempts.to_string(),
                human_time(l.failed_at),
                l.retry_requested_at
                    .map_or_else(|| "-".to_owned(), human_time),
                l.error.clone(),
            ]
        })
        .collect();
    out.table(
        &[
            "ACTION",
            "POSITION",
            "EVENT",
            "TYPE",
            "ATTEMPTS",
            "FAILED AT",
            "RETRY REQUESTED",
            "ERROR",
        ],
        &[false, true, false, false, true, false, false, false],
        &rows,
    )
}

/// Marks one dead letter (`position`) or all of them (`None`) for retry.
async fn retry_letters(
    target: &Target,
    out: &Out,
    action: &str,
    position: Option<Position>,
    state: StateArgs,
) -> Result<(), CliError> {
    let opened = open_runtime_state(target, state.state).await?;
    let state = &opened.state;
    let what = format!("mark dead letters for retry in {}", opened.name);
    let marked = match position {
        Some(position) => match dead_letter::request_retry(state, action, position) {
            Ok(true) => vec![position],
            Ok(false) => Vec::new(),
            Err(e) => return Err(CliError::storage(&what, e)),
        },
        None => dead_letter::request_retry_all(state, action)
            .map_err(|e| CliError::storage(&what, e))?,
    };
    if marked.is_empty() {
        let message = match position {
            Some(position) => {
                format!("action {action:?} has no dead letter at position {position}")
            }
            None => format!("action {action:?} has no dead letters"),
        };
        return Err(CliError::with_code(EXIT_NOT_FOUND, message)
            .hint("`annals dead-letters list` shows them"));
    }
    if out.json {
        return out.json_doc(&json!({ "action": action, "positions": marked,
            "retryRequested": true }));
    }
    let list = marked
        .iter()
        .map(Position::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let (letters, positions, them) = match marked.len() {
        1 => ("the dead letter".to_owned(), "position", "it"),
        n => (format!("{n} dead letters"), "positions", "them"),
    };
    out.line(format!(
        "marked {letters} of {action:?} at {positions} {list} for retry: the action retries \
         {them} when the application next starts it"
    ))
}

async fn drop_letter(
    target: &Target,
    out: &Out,
    action: &str,
    position: Position,
    state: StateArgs,
) -> Result<(), CliError> {
    let opened = open_runtime_state(target, state.state).await?;
    let removed = dead_letter::remove(&opened.state, action, position)
        .map_err(|e| CliError::storage(format_args!("drop a dead letter in {}", opened.name), e))?;
    if !removed {
        return Err(CliError::with_code(
            EXIT_NOT_FOUND,
            format!("action {action:?} has no dead letter at position {position}"),
        )
        .hint("`annals dead-letters list` shows them"));
    }
    if out.json {
        out.json_doc(&json!({ "action": action, "position": position, "dropped": true }))
    } else {
        out.line(format!(
            "dropped the dead letter of {action:?} at position {position}"
        ))
    }
}
