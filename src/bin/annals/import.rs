//! `annals import FILE`: pushes the events of a JSON-lines file (an `annals export`, or any
//! file of Castore event details) into a store.
//!
//! Two passes over the file. The first checks every line without touching the store: valid
//! JSON (read by [`json`](crate::json), which keeps member order, `null`s and 64-bit integers,
//! and refuses duplicate keys) with every field of Castore's event detail and no key an event
//! line does not have (see [`KEYS`]; an unknown key is refused rather than dropped), a
//! parseable timestamp, ids and types within the store's limits, payloads that encode, and
//! versions of each aggregate that follow one another within the file. Nothing is written if
//! any line fails.
//!
//! A line without `payload` (or `metadata`) is stored with no bytes for it, and one with
//! `"payload": null` with MessagePack nil, so that an export writes each line back as it was.
//!
//! The second pushes the events in batches of at most `--batch` events (and within the
//! store's commit limits), each one atomic group: it is wholly written or not at all. Before a
//! batch is pushed, each of its events is checked against the store like a push: an event
//! at the aggregate's next version is added; one at a version the store already has is
//! skipped when it is identical (so re-running an import resumes it) and is an error naming
//! the line otherwise; any other version is a gap, also an error naming the line. A failed
//! batch writes nothing; the batches before it stay.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use annals::Timestamp;
use annals::storage::{AppendEvent, EncodedEvent, GetEventsOptions, Limits, StorageAdapter};
use clap::Args;

use crate::error::{CliError, EXIT_INVALID_INPUT};
use crate::export::{decode_part, encode_part};
use crate::json::{self, Json};
use crate::open::Target;
use crate::output::Out;
use crate::progress;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSON-lines file to read (`-` for stdin is not supported: the file is read twice).
    file: PathBuf,
    /// The event store of lines that have no `eventStoreId` (Castore's own event details).
    #[arg(long = "store", value_name = "STORE")]
    store: Option<String>,
    /// Most events pushed in one atomic batch.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    batch: usize,
}

/// One checked line, ready to push.
struct Pending {
    line: usize,
    event: AppendEvent,
}

type Key = (String, String);

#[derive(Default)]
struct Totals {
    imported: u64,
    skipped: u64,
    batches: u64,
}

pub async fn import(target: &Target, out: &Out, args: ImportArgs) -> Result<(), CliError> {
    if args.batch == 0 {
        return Err(CliError::failed("--batch must be at least 1"));
    }
    let limits = Limits::default();
    let lines = check_file(&args, &limits)?;
    let store = target.open_with(true).await?;
    let adapter = store.adapter.as_ref();
    let batch_max = args.batch.min(adapter.limits().group_events_max);
    let bytes_max = adapter.limits().group_bytes_max;
    let bar = progress::bar(lines, "importing", false);
    let mut known: HashMap<Key, u64> = HashMap::new();
    let mut totals = Totals::default();
    let mut batch: Vec<Pending> = Vec::new();
    let mut batch_bytes = 0usize;
    for pending in read_file(&args, &limits)? {
        let pending = pending?;
        let bytes = pending.event.event.data_len();
        if !batch.is_empty() && (batch.len() >= batch_max || batch_bytes + bytes > bytes_max) {
            push_batch(
                adapter,
                &args.file,
                std::mem::take(&mut batch),
                &mut known,
                &mut totals,
            )
            .await?;
            batch_bytes = 0;
            bar.set_position(totals.imported + totals.skipped);
        }
        batch_bytes += bytes;
        batch.push(pending);
    }
    if !batch.is_empty() {
        push_batch(adapter, &args.file, batch, &mut known, &mut totals).await?;
    }
    bar.finish_and_clear();
    let Totals {
        imported,
        skipped,
        batches,
    } = totals;
    if out.json {
        out.json_doc(&serde_json::json!({
            "file": args.file,
            "imported": imported,
            "skipped": skipped,
            "batches": batches,
        }))
    } else {
        out.line(format!(
            "imported {imported} events ({batches} atomic batches) from {} into {}; {skipped} \
             already present, skipped",
            args.file.display(),
            store.name
        ))
    }
}

/// First pass: checks every line; returns how many events the file holds.
fn check_file(args: &ImportArgs, limits: &Limits) -> Result<u64, CliError> {
    let mut last: HashMap<Key, (u64, usize)> = HashMap::new();
    let mut count = 0;
    for pending in read_file(args, limits)? {
        let Pending { line, event } = pending?;
        let key = (event.event_store_id, event.event.aggregate_id);
        let version = event.event.version;
        if let Some(&(previous, previous_line)) = last.get(&key)
            && version != previous + 1
        {
            return Err(invalid(
                &args.file,
                line,
                format!(
                    "store {:?}, aggregate {:?}: version {version} does not follow version \
                         {previous} (line {previous_line}); versions of an aggregate must \
                         increase by one, in file order",
                    key.0, key.1
                ),
            ));
        }
        last.insert(key, (version, line));
        count += 1;
    }
    Ok(count)
}

/// Reads and checks the lines of the file, one event each (blank lines are skipped).
fn read_file<'a>(
    args: &'a ImportArgs,
    limits: &'a Limits,
) -> Result<impl Iterator<Item = Result<Pending, CliError>> + 'a, CliError> {
    let file = File::open(&args.file).map_err(|e| {
        CliError::with_code(
            crate::error::EXIT_NOT_FOUND,
            format!("cannot open {}: {e}", args.file.display()),
        )
    })?;
    let reader = BufReader::new(file);
    Ok(reader.lines().enumerate().filter_map(move |(i, text)| {
        let line = i + 1;
        match text {
            Err(e) => Some(Err(invalid(&args.file, line, format!("cannot read: {e}")))),
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(parse_line(args, limits, line, &text)),
        }
    }))
}

fn parse_line(
    args: &ImportArgs,
    limits: &Limits,
    line: usize,
    text: &str,
) -> Result<Pending, CliError> {
    let file = &args.file;
    let value = json::parse(text).map_err(|e| invalid(file, line, format!("invalid JSON: {e}")))?;
    let parsed = LineFields::of(value).map_err(|e| {
        let hint = match &e {
            FieldError::UnknownKey(_) => Some(format!(
                "an event line holds only {}; an import refuses what it would have to drop",
                KEYS.join(", ")
            )),
            FieldError::Other(_) => None,
        };
        let error = invalid(file, line, format!("not a Castore event detail: {e}"));
        match hint {
            Some(hint) => error.hint(hint),
            None => error,
        }
    })?;
    let event_store_id = parsed
        .event_store_id
        .clone()
        .or_else(|| args.store.clone())
        .ok_or_else(|| {
            invalid(file, line, "the event has no eventStoreId".to_owned())
                .hint("pass --store STORE for files of Castore event details, which have none")
        })?;
    let timestamp: Timestamp = parsed
        .timestamp
        .parse()
        .map_err(|e| invalid(file, line, format!("{e}")))?;
    if parsed.version == 0 {
        return Err(invalid(
            file,
            line,
            "version 0: versions start at 1".to_owned(),
        ));
    }
    limits
        .check_event_store_id(&event_store_id)
        .and_then(|()| limits.check_aggregate_id(&parsed.aggregate_id))
        .and_then(|()| limits.check_event_type(&parsed.event_type))
        .map_err(|e| invalid(file, line, e.to_string()))?;
    // An absent payload or metadata is stored as no bytes, `null` as MessagePack nil, so that
    // an export gives back the line as it was.
    let encode = |value: &Option<Json>, part: &str| {
        encode_part(value.as_ref())
            .map_err(|e| invalid(file, line, format!("the {part} does not encode: {e}")))
    };
    let event = EncodedEvent {
        aggregate_id: parsed.aggregate_id,
        version: parsed.version,
        timestamp,
        event_type: parsed.event_type,
        schema_version: parsed.schema_version.unwrap_or(1),
        payload: encode(&parsed.payload, "payload")?,
        metadata: encode(&parsed.metadata, "metadata")?,
    };
    if event.data_len() > limits.event_bytes_max {
        return Err(invalid(
            file,
            line,
            format!(
                "the event is {} bytes; a store takes at most {}",
                event.data_len(),
                limits.event_bytes_max
            ),
        ));
    }
    Ok(Pending {
        line,
        event: AppendEvent {
            event_store_id,
            event,
        },
    })
}

/// Checks a batch against the store and pushes what is new, as one atomic group.
async fn push_batch(
    adapter: &dyn StorageAdapter,
    file: &Path,
    batch: Vec<Pending>,
    known: &mut HashMap<Key, u64>,
    totals: &mut Totals,
) -> Result<(), CliError> {
    let (first_line, last_line) = (batch[0].line, batch[batch.len() - 1].line);
    let mut local: HashMap<Key, u64> = HashMap::new();
    let mut new = Vec::new();
    let mut skipped = 0;
    for Pending { line, event } in batch {
        let key = (
            event.event_store_id.clone(),
            event.event.aggregate_id.clone(),
        );
        let stored = match known.get(&key) {
            Some(v) => *v,
            None => {
                let v = last_version(adapter, &key).await?;
                known.insert(key.clone(), v);
                v
            }
        };
        let version = event.event.version;
        let expected = local.get(&key).copied().unwrap_or(stored) + 1;
        if version <= stored {
            check_identical(adapter, file, line, &event).await?;
            skipped += 1;
        } else if version == expected {
            local.insert(key, version);
            new.push(event);
        } else {
            return Err(invalid(
                file,
                line,
                format!(
                    "store {:?}, aggregate {:?}: version {version} leaves a gap; the store's next \
                     version is {expected}",
                    key.0, key.1
                ),
            )
            .hint("import the missing events first (an aggregate's versions are 1, 2, 3, …)"));
        }
    }
    if !new.is_empty() {
        let count = new.len() as u64;
        adapter.push_event_group(new).await.map_err(|e| {
            CliError::storage(
                format_args!(
                    "push the batch of lines {first_line}–{last_line} of {} (nothing of it was \
                     written)",
                    file.display()
                ),
                e,
            )
        })?;
        totals.imported += count;
        totals.batches += 1;
        known.extend(local);
    }
    totals.skipped += skipped;
    Ok(())
}

async fn last_version(
    adapter: &dyn StorageAdapter,
    (store, aggregate): &Key,
) -> Result<u64, CliError> {
    let options = GetEventsOptions {
        limit: Some(1),
        reverse: true,
        ..Default::default()
    };
    let events = adapter
        .get_events(store, aggregate, &options)
        .await
        .map_err(|e| {
            CliError::storage(format_args!("read aggregate {aggregate:?} of {store:?}"), e)
        })?;
    Ok(events.first().map_or(0, |e| e.event.version))
}

/// An event the store already has at this version: identical (skip) or an error.
async fn check_identical(
    adapter: &dyn StorageAdapter,
    file: &Path,
    line: usize,
    new: &AppendEvent,
) -> Result<(), CliError> {
    let (store, event) = (&new.event_store_id, &new.event);
    let options = GetEventsOptions {
        min_version: Some(event.version),
        max_version: Some(event.version),
        ..Default::default()
    };
    let stored = adapter
        .get_events(store, &event.aggregate_id, &options)
        .await
        .map_err(|e| {
            CliError::storage(
                format_args!("read aggregate {:?} of {store:?}", event.aggregate_id),
                e,
            )
        })?;
    let Some(stored) = stored.into_iter().next() else {
        return Err(CliError::failed(format!(
            "store {store:?}, aggregate {:?}: version {} vanished while importing",
            event.aggregate_id, event.version
        )));
    };
    let differs = differences(&stored.event, event);
    if differs.is_empty() {
        return Ok(());
    }
    Err(invalid(
        file,
        line,
        format!(
            "store {store:?}, aggregate {:?}, version {} already exists (position {}) with a \
             different {}",
            event.aggregate_id,
            event.version,
            stored.position,
            differs.join(", ")
        ),
    )
    .hint("an import only adds events; this file disagrees with the store at that version"))
}

/// Which parts of two events at the same version differ. Payloads and metadata compare as
/// bytes, or, when the bytes differ (MessagePack has several encodings of one value), as the
/// JSON an export writes for them: member order counts, and an absent part differs from `null`.
fn differences(stored: &EncodedEvent, new: &EncodedEvent) -> Vec<&'static str> {
    let same_value = |a: &[u8], b: &[u8]| {
        a == b || matches!((exported(a), exported(b)), (Some(x), Some(y)) if x == y)
    };
    let mut differs = Vec::new();
    if stored.timestamp != new.timestamp {
        differs.push("timestamp");
    }
    if stored.event_type != new.event_type {
        differs.push("type");
    }
    if stored.schema_version != new.schema_version {
        differs.push("schema version");
    }
    if !same_value(&stored.payload, &new.payload) {
        differs.push("payload");
    }
    if !same_value(&stored.metadata, &new.metadata) {
        differs.push("metadata");
    }
    differs
}

/// A payload or metadata as an export writes it (`Some(None)` when absent), or `None` when it
/// has no JSON form.
fn exported(bytes: &[u8]) -> Option<Option<String>> {
    decode_part(bytes)
        .ok()
        .map(|part| part.map(|json| json.to_text()))
}

/// The keys of an event line, in the order an export writes them.
const KEYS: [&str; 9] = [
    "aggregateId",
    "version",
    "timestamp",
    "type",
    "payload",
    "metadata",
    "eventStoreId",
    "position",
    "schemaVersion",
];

/// The members of one line.
struct LineFields {
    aggregate_id: String,
    version: u64,
    timestamp: String,
    event_type: String,
    /// `None` when the line has no `payload` key; `Some(Json::Null)` for `"payload": null`.
    payload: Option<Json>,
    metadata: Option<Json>,
    event_store_id: Option<String>,
    schema_version: Option<u32>,
}

/// Why a JSON line is not an event line.
#[derive(Debug)]
enum FieldError {
    /// A key outside [`KEYS`].
    UnknownKey(String),
    /// A missing member or one of the wrong kind.
    Other(String),
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldError::UnknownKey(key) => write!(f, "unknown key {key:?}"),
            FieldError::Other(reason) => f.write_str(reason),
        }
    }
}

impl LineFields {
    /// Takes the members of a parsed line: every key known (`position` is read and not kept:
    /// the destination assigns its own), each of the right kind; `null` stands for an absent
    /// `eventStoreId`, `position` or `schemaVersion`.
    fn of(value: Json) -> Result<Self, FieldError> {
        let Json::Object(members) = value else {
            return Err(FieldError::Other(format!(
                "a line must be a JSON object, not {}",
                value.kind()
            )));
        };
        let wrong = |key: &str, what: &str, value: &Json| {
            FieldError::Other(format!(
                "invalid type: `{key}` must be {what}, not {}",
                value.kind()
            ))
        };
        let string = |key: &str, value: Json| match value {
            Json::String(s) => Ok(s),
            other => Err(wrong(key, "a string", &other)),
        };
        let unsigned = |key: &str, value: Json| match value {
            Json::Unsigned(n) => Ok(n),
            other => Err(wrong(key, "a non-negative integer", &other)),
        };
        let (mut aggregate_id, mut version, mut timestamp, mut event_type) =
            (None, None, None, None);
        let (mut payload, mut metadata, mut event_store_id, mut schema_version) =
            (None, None, None, None);
        for (key, value) in members {
            match key.as_str() {
                "aggregateId" => aggregate_id = Some(string(&key, value)?),
                "version" => version = Some(unsigned(&key, value)?),
                "timestamp" => timestamp = Some(string(&key, value)?),
                "type" => event_type = Some(string(&key, value)?),
                "payload" => payload = Some(value),
                "metadata" => metadata = Some(value),
                "eventStoreId" if value == Json::Null => {}
                "eventStoreId" => event_store_id = Some(string(&key, value)?),
                "position" if value == Json::Null => {}
                "position" => {
                    unsigned(&key, value)?;
                }
                "schemaVersion" if value == Json::Null => {}
                "schemaVersion" => {
                    let n = unsigned(&key, value)?;
                    let n = u32::try_from(n).map_err(|_| {
                        FieldError::Other(format!("`schemaVersion` {n} is above {}", u32::MAX))
                    })?;
                    schema_version = Some(n);
                }
                _ => return Err(FieldError::UnknownKey(key)),
            }
        }
        let missing = |key: &str| FieldError::Other(format!("missing field `{key}`"));
        Ok(LineFields {
            aggregate_id: aggregate_id.ok_or_else(|| missing("aggregateId"))?,
            version: version.ok_or_else(|| missing("version"))?,
            timestamp: timestamp.ok_or_else(|| missing("timestamp"))?,
            event_type: event_type.ok_or_else(|| missing("type"))?,
            payload,
            metadata,
            event_store_id,
            schema_version,
        })
    }
}

fn invalid(file: &Path, line: usize, message: String) -> CliError {
    CliError::with_code(
        EXIT_INVALID_INPUT,
        format!("{}:{line}: {message}", file.display()),
    )
}
