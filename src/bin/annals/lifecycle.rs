//! `delete`, `restore`, `truncate` and `retention`: the lifecycle rules of a store's aggregates
//! (see `docs/data-lifecycle.md`). Each opens the store as its writer (never `--read-only`) and
//! records one `$lifecycle` event.

use std::time::Duration;

use annals::storage::{DeleteMode, Position, Retention, StorageError};
use clap::Args;
use serde_json::json;

use crate::error::{CliError, EXIT_INVALID_INPUT};
use crate::open::Target;
use crate::output::Out;

/// `annals delete STORE AGGREGATE [--hard]`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The event store.
    store: String,
    /// The aggregate to delete.
    aggregate: String,
    /// Delete for good: no restore, and the events are removed at the next compaction
    /// (default: a soft delete, undone by `annals restore`).
    #[arg(long)]
    hard: bool,
}

/// `annals restore STORE AGGREGATE`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The event store.
    store: String,
    /// The soft-deleted aggregate to restore.
    aggregate: String,
}

/// `annals truncate STORE AGGREGATE --before V`.
#[derive(Debug, Args)]
pub struct TruncateArgs {
    /// The event store.
    store: String,
    /// The aggregate to truncate.
    aggregate: String,
    /// Hide the versions below this one (removed at the next compaction).
    #[arg(long, value_name = "V")]
    before: u64,
}

/// `annals retention STORE [--max-age AGE] [--max-count N] [--clear]`.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// The event store.
    store: String,
    /// Events older than this expire (with every earlier version of their aggregate):
    /// a number and a unit, `ms`, `s`, `m`, `h` or `d` (`30d`, `12h`).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    max_age: Option<Duration>,
    /// Each aggregate keeps at most its newest N events.
    #[arg(long, value_name = "N")]
    max_count: Option<u64>,
    /// Remove the store's retention rule.
    #[arg(long, conflicts_with_all = ["max_age", "max_count"])]
    clear: bool,
}

/// Parses `30d`, `12h`, `15m`, `45s` or `500ms`.
fn parse_age(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit {other:?} (ms, s, m, h or d)")),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A refusal of the rules (a deleted aggregate, an invalid rule) is invalid input (exit 4).
fn refused(what: impl std::fmt::Display, e: StorageError) -> CliError {
    match e {
        StorageError::AggregateDeleted { .. }
        | StorageError::InvalidRetention { .. }
        | StorageError::Limit(_) => {
            CliError::with_code(EXIT_INVALID_INPUT, format!("cannot {what}: {e}"))
        }
        other => CliError::storage(what, other),
    }
}

fn recorded(
    out: &Out,
    position: Position,
    text: String,
    doc: serde_json::Value,
) -> Result<(), CliError> {
    if out.json {
        let mut doc = doc;
        doc["position"] = json!(position);
        out.json_doc(&doc)
    } else {
        out.line(format!("{text} (lifecycle event at position {position})"))
    }
}

pub async fn delete(target: &Target, out: &Out, args: DeleteArgs) -> Result<(), CliError> {
    let DeleteArgs {
        store: event_store_id,
        aggregate,
        hard,
    } = args;
    let mode = if hard {
        DeleteMode::Hard
    } else {
        DeleteMode::Soft
    };
    let store = target.open().await?;
    let position = store
        .adapter
        .delete_aggregate(&event_store_id, &aggregate, mode)
        .await
        .map_err(|e| refused(format_args!("delete {event_store_id}/{aggregate}"), e))?;
    let how = if hard { "hard" } else { "soft" };
    recorded(
        out,
        position,
        format!("deleted {event_store_id}/{aggregate} ({how})"),
        json!({ "store": event_store_id, "aggregate": aggregate, "hard": hard }),
    )
}

pub async fn restore(target: &Target, out: &Out, args: RestoreArgs) -> Result<(), CliError> {
    let RestoreArgs {
        store: event_store_id,
        aggregate,
    } = args;
    let store = target.open().await?;
    let position = store
        .adapter
        .restore_aggregate(&event_store_id, &aggregate)
        .await
        .map_err(|e| refused(format_args!("restore {event_store_id}/{aggregate}"), e))?;
    recorded(
        out,
        position,
        format!("restored {event_store_id}/{aggregate}"),
        json!({ "store": event_store_id, "aggregate": aggregate }),
    )
}

pub async fn truncate(target: &Target, out: &Out, args: TruncateArgs) -> Result<(), CliError> {
    let TruncateArgs {
        store: event_store_id,
        aggregate,
        before,
    } = args;
    let store = target.open().await?;
    let position = store
        .adapter
        .truncate_before(&event_store_id, &aggregate, before)
        .await
        .map_err(|e| refused(format_args!("truncate {event_store_id}/{aggregate}"), e))?;
    recorded(
        out,
        position,
        format!("truncated {event_store_id}/{aggregate} before version {before}"),
        json!({ "store": event_store_id, "aggregate": aggregate, "before": before }),
    )
}

fn describe(retention: &Retention) -> String {
    let age = retention
        .max_age
        .map(|a| format!("max age {}s", a.as_secs()));
    let count = retention.max_count.map(|c| format!("max count {c}"));
    match (age, count) {
        (None, None) => "no retention rule".to_owned(),
        (a, c) => [a, c].into_iter().flatten().collect::<Vec<_>>().join(", "),
    }
}

fn retention_doc(retention: &Retention) -> serde_json::Value {
    json!({
        "maxAgeMs": retention.max_age.map(|a| a.as_millis() as u64),
        "maxCount": retention.max_count,
    })
}

/// Sets the rule given (replacing the one before), removes it with `--clear`, or shows it.
pub async fn retention(target: &Target, out: &Out, args: RetentionArgs) -> Result<(), CliError> {
    let RetentionArgs {
        store: event_store_id,
        max_age,
        max_count,
        clear,
    } = args;
    let store = target.open().await?;
    let rule = Retention { max_age, max_count };
    if rule.is_none() && !clear {
        let current = store
            .adapter
            .retention(&event_store_id)
            .await
            .map_err(|e| refused(format_args!("read the retention of {event_store_id}"), e))?;
        return if out.json {
            out.json_doc(&json!({ "store": event_store_id, "retention": retention_doc(&current) }))
        } else {
            out.line(format!("{event_store_id}: {}", describe(&current)))
        };
    }
    let position = store
        .adapter
        .set_retention(&event_store_id, rule)
        .await
        .map_err(|e| refused(format_args!("set the retention of {event_store_id}"), e))?;
    recorded(
        out,
        position,
        format!("{event_store_id}: {}", describe(&rule)),
        json!({ "store": event_store_id, "retention": retention_doc(&rule) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_a_number_and_a_unit() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_age("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["30", "d", "3x", "", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }
}
