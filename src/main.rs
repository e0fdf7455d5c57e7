//! The `annals` command-line tool.
//!
//! `annals verify <DIR>` checks a closed store without modifying it and exits with 0 when it
//! is intact, 1 when problems were found, and 2 when the store could not be checked (a usage
//! error, a missing directory, a store held open by another process).

use std::path::PathBuf;
use std::process::ExitCode;

use annals::engine::{EngineError, VerifyReport, verify_dir};
use clap::{Parser, Subcommand};

/// annals — an embedded event store.
#[derive(Debug, Parser)]
#[command(name = "annals", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks a store's integrity: segment headers, frame and entry checksums, gap-free
    /// positions and versions, and the index against the log. Read-only; the store must not
    /// be open elsewhere.
    ///
    /// Exit status: 0 when the store is intact, 1 when problems were found, 2 when it could
    /// not be checked.
    Verify {
        /// The store directory.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are not errors; clap prints them and says which code to use.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Verify { dir, json } => verify(&dir, json),
    }
}

fn verify(dir: &std::path::Path, json: bool) -> ExitCode {
    let report = match verify_dir(dir) {
        Ok(report) => report,
        Err(EngineError::Locked { path }) => {
            eprintln!(
                "annals: the store {} is open in another process (its LOCK is held); \
                 close it, or call verify() on the open store",
                path.display()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("annals: cannot verify {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("annals: cannot encode the report as JSON: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print_report(&report);
    }
    ExitCode::from(if report.is_clean() { 0 } else { 1 })
}

fn print_report(r: &VerifyReport) {
    println!("store        {}", r.dir.display());
    println!(
        "segments     {} ({} bytes in use of {})",
        r.segments, r.bytes, r.file_bytes
    );
    println!("frames       {}", r.frames);
    println!(
        "events       {} (last position {})",
        r.events, r.last_position
    );
    println!("aggregates   {}", r.aggregates);
    match &r.checkpoint {
        Some(c) => println!(
            "checkpoint   segment {}, offset {}, next position {} ({} index entries, {} events \
             replayed on open)",
            c.segment_id, c.offset, c.next_position, r.index_entries, r.unindexed_events
        ),
        None => println!(
            "checkpoint   none ({} events replayed on open)",
            r.unindexed_events
        ),
    }
    if let Some(t) = &r.torn_tail {
        println!(
            "torn tail    {} at offset {}: {} (unacknowledged; opening the store truncates it)",
            t.file.display(),
            t.offset,
            t.reason
        );
    }
    if r.problems.is_empty() {
        println!("result       OK: no problems found");
    } else {
        println!("result       {} problem(s):", r.problems.len());
        for p in &r.problems {
            println!("  - {p}");
        }
    }
}
