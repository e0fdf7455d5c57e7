//! `annals --url URL <command>`: the read commands (and dead-letter retry and drop) against a
//! running application, through its admin console's JSON API, instead of opening the store
//! (which the running application holds locked).
//!
//! The command line is parsed here, apart from the local commands' (`annals --url ... --help`
//! lists what is available): `stats`, `stores`, `ls`, `events`, `consumers`, `dead-letters`
//! and `tail`. Output has the same two forms: tables for people, `--json` for scripts (the
//! console's own JSON, unchanged).

use std::ffi::OsString;

use clap::{Parser, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::console_client::{Console, encode};
use crate::error::CliError;
use crate::output::{Out, short_json};

/// Whether the command line (or the environment) names a console: then [`run`] handles it.
pub fn requested() -> bool {
    let flag = |arg: &OsString| {
        let arg = arg.to_string_lossy();
        arg == "--url" || arg.starts_with("--url=")
    };
    std::env::args_os().skip(1).any(|arg| flag(&arg))
        || std::env::var_os("ANNALS_URL").is_some_and(|url| !url.is_empty())
}

#[derive(Debug, Parser)]
#[command(
    name = "annals",
    version,
    about = "annals through a running application's console"
)]
struct RemoteCli {
    /// The console's address, `http://HOST:PORT[/PREFIX]`.
    #[arg(long, global = true, env = "ANNALS_URL", value_name = "URL")]
    url: Option<String>,
    /// The console's token, for `dead-letters retry` and `drop`.
    #[arg(
        long,
        global = true,
        env = "ANNALS_CONSOLE_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: RemoteCommand,
}

#[derive(Debug, Subcommand)]
enum RemoteCommand {
    /// The head position and, on the log adapter, its writer's figures.
    Stats,
    /// The event stores with their aggregates and events.
    Stores,
    /// One page of a store's aggregate ids.
    Ls {
        store: String,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
        #[arg(long)]
        reverse: bool,
    },
    /// An aggregate's events from version `--from`.
    Events {
        store: String,
        aggregate_id: String,
        #[arg(long, value_name = "V")]
        from: Option<u64>,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Consumers with their checkpoint and lag.
    Consumers,
    /// The actions' dead letters; retry or drop one.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// New events as they are committed, until interrupted.
    Tail {
        #[arg(long = "store", value_name = "STORE")]
        stores: Vec<String>,
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        #[arg(long, value_name = "P")]
        from_position: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetters {
    /// Every dead letter.
    List,
    /// Asks the action's runner to retry one.
    Retry { action: String, position: u64 },
    /// Drops one.
    Drop { action: String, position: u64 },
}

/// Parses the command line as a console command and runs it; the exit status.
pub async fn run() -> Result<u8, CliError> {
    let cli = match RemoteCli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Ok(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let url = cli.url.unwrap_or_default();
    let console = Console::parse(&url, cli.token)?;
    let out = Out::new(cli.json);
    match cli.command {
        RemoteCommand::Stats => stats(&console, &out).await?,
        RemoteCommand::Stores => stores(&console, &out).await?,
        RemoteCommand::Ls {
            store,
            limit,
            page_token,
            reverse,
        } => {
            let mut query = vec![format!("limit={}", limit.unwrap_or(50))];
            if let Some(token) = page_token {
                query.push(format!("pageToken={}", encode(&token)));
            }
            if reverse {
                query.push("reverse=true".into());
            }
            let path = format!(
                "/api/stores/{}/aggregates?{}",
                encode(&store),
                query.join("&")
            );
            ls(&console, &out, &path).await?
        }
        RemoteCommand::Events {
            store,
            aggregate_id,
            from,
            limit,
        } => {
            let path = format!(
                "/api/stores/{}/aggregates/{}?from={}&limit={}",
                encode(&store),
                encode(&aggregate_id),
                from.unwrap_or(1),
                limit.unwrap_or(100)
            );
            events(&console, &out, &path).await?
        }
        RemoteCommand::Consumers => consumers(&console, &out).await?,
        RemoteCommand::DeadLetters(command) => dead_letters(&console, &out, command).await?,
        RemoteCommand::Tail {
            stores,
            types,
            from_position,
        } => {
            let mut query = Vec::new();
            if !stores.is_empty() {
                query.push(format!("stores={}", encode(&stores.join(","))));
            }
            if !types.is_empty() {
                query.push(format!("types={}", encode(&types.join(","))));
            }
            if let Some(from) = from_position {
                query.push(format!("from={from}"));
            }
            let path = format!("/api/tail?{}", query.join("&"));
            console
                .events(&path, |event| {
                    if out.json {
                        out.json_line(&event)
                    } else {
                        out.line(event_line(&event))
                    }
                })
                .await?
        }
    }
    Ok(0)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

async fn stats(console: &Console, out: &Out) -> Result<(), CliError> {
    let stats = console.get("/api/stats").await?;
    if out.json {
        return out.json_doc(&stats);
    }
    let mut fields = vec![("head position", text(&stats["head"]))];
    if let Some(log) = stats["log"].as_object() {
        for (label, key) in [
            ("commits", "commits"),
            ("events", "events"),
            ("syncs", "syncs"),
            ("bytes written", "bytesWritten"),
            ("segments", "segments"),
            ("segment bytes", "segmentBytes"),
            ("index bytes", "indexBytes"),
            ("unindexed events", "checkpointLag"),
        ] {
            fields.push((label, text(&log[key])));
        }
    }
    out.fields(&fields)
}

async fn stores(console: &Console, out: &Out) -> Result<(), CliError> {
    let stores = console.get("/api/stores").await?;
    if out.json {
        return out.json_doc(&stores);
    }
    let rows: Vec<Vec<String>> = stores["stores"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| vec![text(&s["id"]), text(&s["aggregates"]), text(&s["events"])])
        .collect();
    out.table(
        &["store", "aggregates", "events"],
        &[false, true, true],
        &rows,
    )
}

async fn ls(console: &Console, out: &Out, path: &str) -> Result<(), CliError> {
    let page = console.get(path).await?;
    if out.json {
        return out.json_doc(&page);
    }
    let rows: Vec<Vec<String>> = page["aggregates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| vec![text(&a["aggregateId"]), text(&a["initialEventTimestamp"])])
        .collect();
    out.table(&["aggregate", "first event"], &[false, false], &rows)?;
    if let Some(token) = page["nextPageToken"].as_str() {
        out.line(format!("next page: --page-token '{token}'"))?;
    }
    Ok(())
}

async fn events(console: &Console, out: &Out, path: &str) -> Result<(), CliError> {
    let page = console.get(path).await?;
    if out.json {
        return out.json_doc(&page);
    }
    let rows: Vec<Vec<String>> = page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                text(&e["version"]),
                text(&e["type"]),
                text(&e["timestamp"]),
                text(&e["position"]),
                short_json(&e["payload"], 60),
            ]
        })
        .collect();
    out.table(
        &["version", "type", "timestamp", "position", "payload"],
        &[true, false, false, true, false],
        &rows,
    )?;
    if let Some(next) = page["nextFrom"].as_u64() {
        out.line(format!("more: --from {next}"))?;
    }
    Ok(())
}

async fn consumers(console: &Console, out: &Out) -> Result<(), CliError> {
    let consumers = console.get("/api/consumers").await?;
    if out.json {
        return out.json_doc(&consumers);
    }
    let rows: Vec<Vec<String>> = consumers["consumers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                text(&c["name"]),
                text(&c["checkpoint"]),
                text(&c["lag"]),
                text(&c["oldestUnhandled"]),
            ]
        })
        .collect();
    out.table(
        &["consumer", "checkpoint", "lag", "oldest unhandled"],
        &[false, true, true, false],
        &rows,
    )
}

async fn dead_letters(console: &Console, out: &Out, command: DeadLetters) -> Result<(), CliError> {
    let answer = match command {
        DeadLetters::List => {
            let letters = console.get("/api/dead-letters").await?;
            if out.json {
                return out.json_doc(&letters);
            }
            let rows: Vec<Vec<String>> = letters["deadLetters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    vec![
                        text(&l["action"]),
                        text(&l["position"]),
                        format!("{}/{}", text(&l["eventStoreId"]), text(&l["aggregateId"])),
                        text(&l["type"]),
                        text(&l["attempts"]),
                        text(&l["error"]),
                    ]
                })
                .collect();
            return out.table(
                &[
                    "action",
                    "position",
                    "aggregate",
                    "type",
                    "attempts",
                    "error",
                ],
                &[false, true, false, false, true, false],
                &rows,
            );
        }
        DeadLetters::Retry { action, position } => {
            let path = format!("/api/dead-letters/{}/{position}/retry", encode(&action));
            console.mutate(Method::POST, &path).await?
        }
        DeadLetters::Drop { action, position } => {
            let path = format!("/api/dead-letters/{}/{position}", encode(&action));
            console.mutate(Method::DELETE, &path).await?
        }
    };
    if out.json {
        out.json_doc(&answer)
    } else {
        out.line(short_json(&answer, 200))
    }
}

/// One event of the tail for people: position, store, aggregate, version, type, payload.
fn event_line(event: &Value) -> String {
    format!(
        "{:>8}  {}/{} v{}  {}  {}",
        text(&event["position"]),
        text(&event["eventStoreId"]),
        text(&event["aggregateId"]),
        text(&event["version"]),
        text(&event["type"]),
        short_json(&event["payload"], 80)
    )
}
