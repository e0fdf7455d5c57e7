//! `annals export`: the global log as JSON lines, and the line shape `import` reads back.
//!
//! One event per line, in Castore's event-detail shape (`aggregateId`, `version`, `timestamp`,
//! `type`, `payload`, `metadata`) plus `eventStoreId` and `position`, in that order. Payload
//! and metadata are stored as MessagePack and rendered as JSON in their stored order (see
//! [`json`](crate::json)). An event stored without a payload or metadata (no bytes: imported
//! from a line without the key) has no such key, like Castore's; a `null` one (MessagePack
//! nil, also what a typed store writes for `()`) is written `null`. `schemaVersion` appears
//! only on events whose schema version is not 1, so that upcasters still apply after an
//! import.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use annals::codec;
use annals::storage::{EncodedEvent, LoggedEvent, Position};
use clap::Args;
use serde::Serialize;

use crate::error::CliError;
use crate::json::Json;
use crate::open::Target;
use crate::output::Out;
use crate::progress;

/// Events read from the log per call.
pub const READ_BATCH_EVENTS: usize = 1000;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only the events of this event store (repeatable). Without it, every store but
    /// `$lifecycle`, whose events record deletes and retention rules, not events to import.
    #[arg(long = "store", value_name = "STORE")]
    stores: Vec<String>,
    /// Start at this global position.
    #[arg(long, value_name = "P", default_value_t = 1)]
    from_position: Position,
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// One event as a JSON line: see the [module docs](self). Fields serialize in this order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    pub aggregate_id: String,
    pub version: u64,
    pub timestamp: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `None`: stored without a payload (no key); `Some(Json::Null)`: a `null` payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Json>,
    /// Like `payload`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_store_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
}

/// The stored form of a payload or metadata: no bytes when absent, MessagePack otherwise.
pub fn encode_part(value: Option<&Json>) -> Result<Vec<u8>, codec::CodecError> {
    value.map_or(Ok(Vec::new()), codec::encode)
}

/// A stored payload or metadata as JSON: `None` when absent (no bytes).
pub fn decode_part(bytes: &[u8]) -> Result<Option<Json>, codec::CodecError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    codec::decode(bytes).map(Some)
}

impl EventLine {
    /// The line with every encrypted personal value whose key `adapter` no longer holds shown
    /// as forgotten (feature `personal`; unchanged when the adapter keeps no keys).
    #[cfg(feature = "personal")]
    pub fn forgetting(
        mut self,
        adapter: &dyn annals::storage::StorageAdapter,
    ) -> Result<Self, CliError> {
        if let Some(keys) = adapter.keys() {
            for part in [&mut self.payload, &mut self.metadata]
                .into_iter()
                .flatten()
            {
                part.mark_forgotten(keys)
                    .map_err(|e| CliError::storage("read the store's keys", e))?;
            }
        }
        Ok(self)
    }

    /// The line as it is: without the feature `personal`, payloads hold no personal values.
    #[cfg(not(feature = "personal"))]
    pub fn forgetting(
        self,
        _adapter: &dyn annals::storage::StorageAdapter,
    ) -> Result<Self, CliError> {
        Ok(self)
    }

    /// The line of a logged event.
    pub fn of(logged: &LoggedEvent) -> Result<Self, CliError> {
        let mut line = Self::of_event(&logged.event, logged.position, &logged.event_store_id)?;
        line.position = Some(logged.position);
        Ok(line)
    }

    /// The line of an event of store `store` at `position`.
    pub fn of_event(
        event: &EncodedEvent,
        position: Position,
        store: &str,
    ) -> Result<Self, CliError> {
        let decode = |bytes: &[u8], part: &str| -> Result<Option<Json>, CliError> {
            decode_part(bytes).map_err(|e| {
                CliError::failed(format!(
                    "the {part} of the event at position {position} (store {store:?}, aggregate \
                     {:?}, version {}) is not MessagePack of a JSON value: {e}",
                    event.aggregate_id, event.version
                ))
            })
        };
        Ok(EventLine {
            aggregate_id: event.aggregate_id.clone(),
            version: event.version,
            timestamp: event.timestamp.to_string(),
            event_type: event.event_type.clone(),
            payload: decode(&event.payload, "payload")?,
            metadata: decode(&event.metadata, "metadata")?,
            event_store_id: Some(store.to_owned()),
            position: Some(position),
            schema_version: Some(event.schema_version).filter(|v| *v != 1),
        })
    }
}

pub async fn export(target: &Target, out: &Out, args: ExportArgs) -> Result<(), CliError> {
    let store = target.open_to_read(false).await?;
    let adapter = &store.adapter;
    let end = *adapter.watch_log().borrow();
    let from = args.from_position.max(1);
    let mut sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(File::create(path).map_err(|e| {
            CliError::failed(format!("cannot create {}: {e}", path.display()))
        })?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let bar = progress::bar(end.saturating_sub(from - 1), "exporting", false);
    let mut next = from;
    let mut written = 0u64;
    while next <= end {
        let batch = adapter
            .read_log(next, READ_BATCH_EVENTS)
            .await
            .map_err(|e| CliError::storage(format_args!("read the log of {}", store.name), e))?;
        let Some(last) = batch.last() else { break };
        let last = last.position;
        for logged in batch.iter().filter(|e| e.position <= end) {
            let wanted = if args.stores.is_empty() {
                logged.event_store_id != annals::storage::LIFECYCLE_STORE
            } else {
                args.stores.contains(&logged.event_store_id)
            };
            if !wanted {
                continue;
            }
            let line = serde_json::to_string(&EventLine::of(logged)?.forgetting(adapter.as_ref())?)
                .map_err(|e| CliError::failed(format!("cannot encode an event as JSON: {e}")))?;
            sink.write_all(line.as_bytes())?;
            sink.write_all(b"\n")?;
            written += 1;
        }
        bar.set_position(last.min(end) + 1 - from);
        next = last + 1;
    }
    sink.flush()?;
    bar.finish_and_clear();
    if let Some(path) = &args.output {
        let summary = serde_json::json!({ "events": written, "file": path, "lastPosition": end });
        if out.json {
            out.json_doc(&summary)?;
        } else {
            eprintln!(
                "exported {written} events to {} (up to position {end})",
                path.display()
            );
        }
    }
    Ok(())
}
