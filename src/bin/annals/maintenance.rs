//! Keeping a store healthy: `verify`, `rebuild-index`, `upgrade`, `snapshots prune`.

use std::path::PathBuf;
use std::time::Instant;

use annals::engine::{
    CompactionPhase, EngineError, FileUpgrade, VerifyReport, upgrade_dir, verify_dir,
};
use annals::storage::{ListAggregateIdsOptions, LogAdapter};
use clap::Subcommand;
use serde_json::json;

use crate::error::{CliError, EXIT_FAILURE};
use crate::open::{Target, is_store};
use crate::output::Out;
use crate::progress;

/// Aggregate ids listed per page while pruning.
const PRUNE_PAGE_IDS: usize = 1000;

#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// Removes all but the newest snapshots of every aggregate.
    Prune {
        /// Snapshots kept per aggregate (0 removes them all).
        #[arg(long, value_name = "N", default_value_t = 1)]
        keep: usize,
        /// Only this event store's aggregates (repeatable).
        #[arg(long = "store", value_name = "STORE")]
        stores: Vec<String>,
    },
}

/// `annals verify`: 0 intact, 1 problems found, 2 could not check (every error).
pub fn verify(target: &Target, store: Option<PathBuf>, out: &Out) -> Result<u8, CliError> {
    if target.postgres.is_some() {
        return Err(
            CliError::failed("`annals verify` checks a store directory only")
                .hint("PostgreSQL checks its own pages; pass --dir DIR for a store directory"),
        );
    }
    let dir = match store {
        Some(dir) => dir,
        None => target.dir()?.to_owned(),
    };
    if !is_store(&dir) {
        // Every failure of verify exits 2, as it always has.
        return Err(CliError::with_code(
            EXIT_FAILURE,
            format!(
                "cannot verify {}: it is not an annals store (no log/ directory)",
                dir.display()
            ),
        ));
    }
    let spinner = progress::spinner("verifying");
    let report = verify_dir(&dir);
    spinner.finish_and_clear();
    let report = match report {
        Ok(report) => report,
        Err(EngineError::Locked { path }) => {
            return Err(CliError::with_code(
                EXIT_FAILURE,
                format!(
                    "the store {} is open in another process (its LOCK is held)",
                    path.display()
                ),
            )
            .hint("close it, or call verify() on the open store"));
        }
        Err(e) => {
            return Err(CliError::with_code(
                EXIT_FAILURE,
                format!("cannot verify {}: {e}", dir.display()),
            ));
        }
    };
    if out.json {
        out.json_doc(&report)?;
    } else {
        print_report(out, &report)?;
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}

fn print_report(out: &Out, r: &VerifyReport) -> Result<(), CliError> {
    let mut lines = vec![
        format!("store        {}", r.dir.display()),
        format!(
            "segments     {} ({} bytes in use of {})",
            r.segments, r.bytes, r.file_bytes
        ),
        format!("frames       {}", r.frames),
        format!(
            "events       {} (last position {})",
            r.events, r.last_position
        ),
        format!("aggregates   {}", r.aggregates),
    ];
    lines.push(match &r.checkpoint {
        Some(c) => format!(
            "checkpoint   segment {}, offset {}, next position {} ({} index entries, {} events \
             replayed on open)",
            c.segment_id, c.offset, c.next_position, r.index_entries, r.unindexed_events
        ),
        None => format!(
            "checkpoint   none ({} events replayed on open)",
            r.unindexed_events
        ),
    });
    if let Some(t) = &r.torn_tail {
        lines.push(format!(
            "torn tail    {} at offset {}: {} (unacknowledged; opening the store truncates it)",
            t.file.display(),
            t.offset,
            t.reason
        ));
    }
    if r.problems.is_empty() {
        lines.push("result       OK: no problems found".to_owned());
    } else {
        lines.push(format!("result       {} problem(s):", r.problems.len()));
        lines.extend(r.problems.iter().map(|p| format!("  - {p}")));
    }
    out.line(lines.join("\n"))
}

/// `annals rebuild-index`: reopens the store with its index discarded and rebuilt.
pub fn rebuild_index(target: &Target, out: &Out) -> Result<(), CliError> {
    if target.postgres.is_some() {
        return Err(CliError::failed(
            "`annals rebuild-index` works on a store directory only",
        ));
    }
    let dir = target.dir()?;
    if !is_store(dir) {
        return Err(CliError::with_code(
            crate::error::EXIT_NOT_FOUND,
            format!(
                "{} is not an annals store (no log/ directory)",
                dir.display()
            ),
        ));
    }
    let started = Instant::now();
    let spinner = progress::spinner("rebuilding the index");
    let opened = LogAdapter::builder(dir).rebuild_index().open();
    let log = opened.map_err(|e| {
        CliError::storage(format_args!("rebuild the index of {}", dir.display()), e)
    })?;
    let events = log.last_position();
    // Closing checkpoints the rebuilt index, so the next open does not replay the log.
    log.close();
    spinner.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if out.json {
        out.json_doc(&json!({ "store": dir, "events": events, "seconds": seconds }))
    } else {
        out.line(format!(
            "rebuilt the index of {} from {events} events in {seconds:.2} s",
            dir.display()
        ))
    }
}

/// `annals compact`: opens the store and rewrites its sealed segments without the events the
/// data lifecycle's rules let go, with a progress bar over the segments.
pub async fn compact(target: &Target, store: Option<PathBuf>, out: &Out) -> Result<(), CliError> {
    if target.postgres.is_some() {
        return Err(CliError::failed(
            "`annals compact` works on a store directory only",
        ));
    }
    let dir = match &store {
        Some(dir) => dir.as_path(),
        None => target.dir()?,
    };
    if !is_store(dir) {
        return Err(CliError::with_code(
            crate::error::EXIT_NOT_FOUND,
            format!(
                "{} is not an annals store (no log/ directory)",
                dir.display()
            ),
        ));
    }
    let started = Instant::now();
    let log = LogAdapter::builder(dir)
        .open()
        .map_err(|e| CliError::storage(format_args!("open {}", dir.display()), e))?;
    let bar = progress::bar(0, "compacting", false);
    let shown = bar.clone();
    let report = log
        .compact_reporting(move |p| {
            shown.set_message(match p.phase {
                CompactionPhase::Scanning => "scanning segments",
                CompactionPhase::Rewriting => "rewriting segments",
            });
            shown.set_length(p.segments_total);
            shown.set_position(p.segments_done);
        })
        .await
        .map_err(|e| CliError::storage(format_args!("compact {}", dir.display()), e))?;
    log.close();
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if out.json {
        out.json_doc(&json!({ "store": dir, "report": report, "seconds": seconds }))
    } else {
        out.line(format!(
            "compacted {}: {} of {} sealed segment(s) rewritten, {} event(s) removed, {} bytes \
             reclaimed ({} -> {}) in {seconds:.2} s",
            dir.display(),
            report.segments_rewritten,
            report.segments_scanned,
            report.events_removed,
            report.bytes_reclaimed(),
            report.bytes_before,
            report.bytes_after,
        ))
    }
}

/// `annals upgrade`: converts the store's database files from redb's older file format.
pub fn upgrade(target: &Target, store: Option<PathBuf>, out: &Out) -> Result<(), CliError> {
    if target.postgres.is_some() {
        return Err(CliError::failed(
            "`annals upgrade` works on a store directory only",
        ));
    }
    let dir = match store {
        Some(dir) => dir,
        None => target.dir()?.to_owned(),
    };
    if !is_store(&dir) {
        return Err(CliError::with_code(
            crate::error::EXIT_NOT_FOUND,
            format!(
                "{} is not an annals store (no log/ directory)",
                dir.display()
            ),
        ));
    }
    let report = upgrade_dir(&dir).map_err(|e| match e {
        EngineError::Locked { path } => CliError::with_code(
            crate::error::EXIT_LOCKED,
            format!(
                "cannot upgrade {}: {} is open in another process",
                dir.display(),
                path.display()
            ),
        )
        .hint("close it, then run the command again"),
        e => CliError::failed(format!("cannot upgrade {}: {e}", dir.display()))
            .hint("files not yet converted were left as they were; the command can be rerun"),
    })?;
    let done = |d: FileUpgrade| match d {
        FileUpgrade::Upgraded => "upgraded",
        FileUpgrade::Unchanged => "already current",
        FileUpgrade::Missing => "absent",
        _ => "unknown",
    };
    if out.json {
        let files: Vec<_> = report
            .files
            .iter()
            .map(|(file, d)| json!({ "file": file, "result": done(*d) }))
            .collect();
        return out
            .json_doc(&json!({ "store": dir, "upgraded": report.upgraded(), "files": files }));
    }
    let mut lines: Vec<String> = report
        .files
        .iter()
        .map(|(file, d)| format!("{:<16} {}", done(*d), file.display()))
        .collect();
    lines.push(format!(
        "{} file(s) converted; {} is ready for this version of annals",
        report.upgraded(),
        dir.display()
    ));
    out.line(lines.join("\n"))
}

pub async fn snapshots(
    target: &Target,
    out: &Out,
    command: SnapshotsCommand,
) -> Result<(), CliError> {
    let SnapshotsCommand::Prune { keep, stores } = command;
    let store = target.open().await?;
    let Some(snapshots) = store.adapter.snapshots() else {
        return Err(CliError::failed(format!(
            "{} keeps no snapshots",
            store.name
        )));
    };
    let stores = if stores.is_empty() {
        let summaries = store.adapter.event_store_summaries().await.map_err(|e| {
            CliError::storage(format_args!("list the event stores of {}", store.name), e)
        })?;
        summaries.into_iter().map(|s| s.event_store_id).collect()
    } else {
        stores
    };
    let mut removed = 0;
    let mut aggregates = 0u64;
    for event_store_id in &stores {
        let err = |e| {
            CliError::storage(
                format_args!("prune the snapshots of store {event_store_id:?}"),
                e,
            )
        };
        let mut options = ListAggregateIdsOptions {
            limit: Some(PRUNE_PAGE_IDS),
            ..Default::default()
        };
        loop {
            let page = store
                .adapter
                .list_aggregate_ids(event_store_id, &options)
                .await
                .map_err(err)?;
            for entry in &page.aggregate_ids {
                removed += snapshots
                    .prune(event_store_id, &entry.aggregate_id, keep)
                    .map_err(err)?;
                aggregates += 1;
            }
            match page.next_page_token {
                Some(token) => options.page_token = Some(token),
                None => break,
            }
        }
    }
    if out.json {
        out.json_doc(&json!({ "removed": removed, "aggregates": aggregates, "keep": keep }))
    } else {
        out.line(format!(
            "removed {removed} snapshots of {aggregates} aggregates (kept at most {keep} each)"
        ))
    }
}
