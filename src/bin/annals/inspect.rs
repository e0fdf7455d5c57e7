//! Reading a store: `stats`, `stores`, `ls`, `events`, `get`, `tail`.

use annals::storage::{GetEventsOptions, ListAggregateIdsOptions, Position};
use annals::subscription::{Filter, Subscription};
use annals::{StorageError, Timestamp};
use clap::Args;
use serde_json::json;

use crate::error::{CliError, EXIT_NOT_FOUND};
use crate::export::EventLine;
use crate::json::Json;
use crate::open::{Store, Target};
use crate::output::{Out, human_bytes, human_time, short_json};

/// Aggregate ids per page of `ls` when neither `--limit` nor `--page-token` says otherwise.
const LS_LIMIT_DEFAULT: usize = 50;

/// Widest payload shown in a table cell.
const PAYLOAD_CELL_CHARS: usize = 60;

pub async fn stats(target: &Target, out: &Out) -> Result<(), CliError> {
    let store = target.open_to_read(false).await?;
    let summaries = summaries(&store).await?;
    let aggregates: u64 = summaries.iter().map(|s| s.aggregates).sum();
    let events: u64 = summaries.iter().map(|s| s.events).sum();
    let last_position = *store.adapter.watch_log().borrow();
    let mut doc = json!({
        "store": store.name,
        "eventStores": summaries.len(),
        "aggregates": aggregates,
        "events": events,
        "lastPosition": last_position,
    });
    let mut fields = vec![
        ("store", store.name.clone()),
        ("event stores", summaries.len().to_string()),
        ("aggregates", aggregates.to_string()),
        ("events", events.to_string()),
        ("last position", last_position.to_string()),
    ];
    if let Some(log) = &store.log {
        let err =
            |what: &str, e| CliError::storage(format_args!("read the {what} of {}", store.name), e);
        let engine = log.stats();
        let index = log.index_stats().map_err(|e| err("index", e))?;
        let snapshots = log.snapshot_stats().map_err(|e| err("snapshots", e))?;
        let total = engine.segment_bytes + index.file_bytes + snapshots.file_bytes;
        doc["bytesOnDisk"] = json!({
            "segments": engine.segment_bytes,
            "index": index.file_bytes,
            "snapshots": snapshots.file_bytes,
            "total": total,
        });
        doc["segments"] = json!(engine.segments);
        doc["index"] = json!({
            "indexedThrough": index.indexed_through,
            "unindexedEvents": index.unindexed_events,
        });
        doc["snapshots"] = json!({ "records": snapshots.records });
        fields.push((
            "bytes on disk",
            format!(
                "{} (segments: {} in {}, index: {}, snapshots: {})",
                human_bytes(total),
                human_bytes(engine.segment_bytes),
                engine.segments,
                human_bytes(index.file_bytes),
                human_bytes(snapshots.file_bytes)
            ),
        ));
        fields.push((
            "index",
            format!(
                "persisted through position {}, {} more in memory (replayed from the log on open)",
                index.indexed_through, index.unindexed_events
            ),
        ));
        fields.push(("snapshots", format!("{} records", snapshots.records)));
    }
    if let Some(reader) = &store.reader {
        let read = reader.stats();
        doc["bytesOnDisk"] = json!({ "segments": read.segment_bytes });
        doc["segments"] = json!(read.segments);
        doc["live"] = json!(true);
        fields.push((
            "bytes on disk",
            format!(
                "segments: {} in {}",
                human_bytes(read.segment_bytes),
                read.segments
            ),
        ));
        fields.push((
            "read",
            "live and read-only, from the segments (the index and snapshots are the writer's)"
                .to_owned(),
        ));
    }
    if out.json {
        out.json_doc(&doc)
    } else {
        out.fields(&fields)
    }
}

async fn summaries(store: &Store) -> Result<Vec<annals::storage::EventStoreSummary>, CliError> {
    store
        .adapter
        .event_store_summaries()
        .await
        .map_err(|e| CliError::storage(format_args!("list the event stores of {}", store.name), e))
}

pub async fn stores(target: &Target, out: &Out) -> Result<(), CliError> {
    let store = target.open_to_read(false).await?;
    let summaries = summaries(&store).await?;
    if out.json {
        let rows: Vec<_> = summaries
            .iter()
            .map(|s| {
                json!({ "eventStoreId": s.event_store_id, "aggregates": s.aggregates,
                    "events": s.events })
            })
            .collect();
        return out.json_doc(&rows);
    }
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            vec![
                s.event_store_id.clone(),
                s.aggregates.to_string(),
                s.events.to_string(),
            ]
        })
        .collect();
    out.table(
        &["EVENT STORE", "AGGREGATES", "EVENTS"],
        &[false, true, true],
        &rows,
    )
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// The event store.
    store: String,
    /// Aggregate ids per page [default: 50, or, with --page-token, the page size the token
    /// was made with].
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Continue from a previous page (its `next page` token), with the same filters and page
    /// size unless given again.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Only aggregates created at or after this instant (ISO 8601).
    #[arg(long, value_name = "TIMESTAMP")]
    after: Option<Timestamp>,
    /// Only aggregates created at or before this instant (ISO 8601).
    #[arg(long, value_name = "TIMESTAMP")]
    before: Option<Timestamp>,
    /// Newest first.
    #[arg(long)]
    reverse: bool,
}

pub async fn ls(target: &Target, out: &Out, args: LsArgs) -> Result<(), CliError> {
    let store = target.open_to_read(false).await?;
    // A token carries the page size of the listing it continues (as in Castore, where
    // `{ pageToken }` alone continues a listing): the default applies only to a first page.
    let limit = match (&args.page_token, args.limit) {
        (_, Some(limit)) => Some(limit),
        (None, None) => Some(LS_LIMIT_DEFAULT),
        (Some(_), None) => None,
    };
    let options = ListAggregateIdsOptions {
        limit,
        initial_event_after: args.after,
        initial_event_before: args.before,
        reverse: args.reverse.then_some(true),
        page_token: args.page_token,
    };
    let page = store
        .adapter
        .list_aggregate_ids(&args.store, &options)
        .await
        .map_err(|e| {
            CliError::storage(
                format_args!("list the aggregates of store {:?}", args.store),
                e,
            )
        })?;
    if out.json {
        let ids: Vec<_> = page
            .aggregate_ids
            .iter()
            .map(|e| {
                json!({ "aggregateId": e.aggregate_id,
                    "initialEventTimestamp": e.initial_event_timestamp })
            })
            .collect();
        return out
            .json_doc(&json!({ "aggregateIds": ids, "nextPageToken": page.next_page_token }));
    }
    let rows: Vec<Vec<String>> = page
        .aggregate_ids
        .iter()
        .map(|e| {
            vec![
                e.aggregate_id.clone(),
                human_time(e.initial_event_timestamp),
            ]
        })
        .collect();
    out.table(&["AGGREGATE ID", "CREATED"], &[false, false], &rows)?;
    if let Some(token) = page.next_page_token {
        out.line(format!("next page: --page-token '{token}'"))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The event store.
    store: String,
    /// The aggregate id.
    aggregate_id: String,
    /// From this version (inclusive).
    #[arg(long, value_name = "V")]
    from: Option<u64>,
    /// Up to this version (inclusive).
    #[arg(long, value_name = "V")]
    to: Option<u64>,
    /// Newest first.
    #[arg(long)]
    reverse: bool,
    /// At most N events (the newest with --reverse).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

pub async fn events(target: &Target, out: &Out, args: EventsArgs) -> Result<(), CliError> {
    let store = target.open_to_read(false).await?;
    let options = GetEventsOptions {
        min_version: args.from,
        max_version: args.to,
        limit: args.limit,
        reverse: args.reverse,
    };
    let (s, id) = (&args.store, &args.aggregate_id);
    let events = store
        .adapter
        .get_events(s, id, &options)
        .await
        .map_err(|e| CliError::storage(format_args!("read aggregate {id:?} of store {s:?}"), e))?;
    if events.is_empty() && options == GetEventsOptions::default() {
        return Err(CliError::with_code(
            EXIT_NOT_FOUND,
            format!("store {s:?} has no aggregate {id:?} in {}", store.name),
        )
        .hint(format!(
            "`annals ls {s}` lists its aggregates; `annals stores` lists the stores"
        )));
    }
    let lines = events
        .iter()
        .map(|e| EventLine::of_event(&e.event, e.position, s)?.forgetting(store.adapter.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    if out.json {
        return out.json_doc(&lines);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .zip(&lines)
        .map(|(e, line)| {
            vec![
                e.event.version.to_string(),
                human_time(e.event.timestamp),
                e.event.event_type.clone(),
                e.position.to_string(),
                payload_cell(line),
            ]
        })
        .collect();
    out.table(
        &["VERSION", "TIMESTAMP", "TYPE", "POSITION", "PAYLOAD"],
        &[true, false, false, true, false],
        &rows,
    )
}

fn payload_cell(line: &EventLine) -> String {
    line.payload
        .as_ref()
        .map_or_else(|| "-".to_owned(), |p| short_json(p, PAYLOAD_CELL_CHARS))
}

pub async fn get(target: &Target, out: &Out, position: Position) -> Result<(), CliError> {
    let store = target.open_to_read(false).await?;
    let found = store
        .adapter
        .read_log(position, 1)
        .await
        .map_err(|e| CliError::storage(format_args!("read the log of {}", store.name), e))?;
    let Some(event) = found
        .into_iter()
        .next()
        .filter(|e| e.position == position && position > 0)
    else {
        let last = *store.adapter.watch_log().borrow();
        return Err(CliError::with_code(
            EXIT_NOT_FOUND,
            format!("there is no event at position {position} in {}", store.name),
        )
        .hint(format!("positions run from 1 to {last}")));
    };
    let line = EventLine::of(&event)?.forgetting(store.adapter.as_ref())?;
    if out.json {
        return out.json_doc(&line);
    }
    let pretty = |v: &Option<Json>| {
        v.as_ref().map_or_else(
            || "-".to_owned(),
            |v| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_text()),
        )
    };
    let mut fields = vec![
        ("position", position.to_string()),
        ("event store", event.event_store_id.clone()),
        ("aggregate id", event.event.aggregate_id.clone()),
        ("version", event.event.version.to_string()),
        ("timestamp", human_time(event.event.timestamp)),
        ("type", event.event.event_type.clone()),
    ];
    if event.event.schema_version != 1 {
        fields.push(("schema version", event.event.schema_version.to_string()));
    }
    fields.push(("payload", pretty(&line.payload)));
    fields.push(("metadata", pretty(&line.metadata)));
    out.fields(&fields)
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Only events of this event store (repeatable).
    #[arg(long = "store", value_name = "STORE")]
    stores: Vec<String>,
    /// Only events of this type (repeatable).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Start at this position instead of after the last event.
    #[arg(long, value_name = "P")]
    from_position: Option<Position>,
}

pub async fn tail(target: &Target, out: &Out, args: TailArgs) -> Result<(), CliError> {
    let store = target.open_to_read(true).await?;
    let mut filter = Filter::all();
    if !args.stores.is_empty() {
        filter = filter.stores(args.stores);
    }
    if !args.types.is_empty() {
        filter = filter.event_types(args.types);
    }
    let from = args
        .from_position
        .unwrap_or_else(|| *store.adapter.watch_log().borrow() + 1);
    let mut subscription = Subscription::new(store.adapter.clone(), from, filter);
    if !out.json {
        eprintln!(
            "following {} from position {from} (Ctrl-C to stop)",
            store.name
        );
    }
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = subscription.next() => event.map_err(|e| {
                // A live reader that stops following says why when asked to read again.
                let e = match (&store.reader, e) {
                    (Some(reader), StorageError::Closed) => {
                        reader.refresh().err().unwrap_or(StorageError::Closed)
                    }
                    (_, e) => e,
                };
                CliError::storage(format_args!("follow the log of {}", store.name), e)
            })?,
        };
        let line = EventLine::of(&event)?.forgetting(store.adapter.as_ref())?;
        if out.json {
            out.json_line(&line)?;
        } else {
            out.line(format!(
                "{}  #{}  {}/{} v{}  {}  {}",
                human_time(event.event.timestamp),
                event.position,
                event.event_store_id,
                event.event.aggregate_id,
                event.event.version,
                event.event.event_type,
                payload_cell(&line)
            ))?;
        }
    }
}
