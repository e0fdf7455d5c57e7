//! Compaction of the log by the data lifecycle's rules: the predicate the engine's compaction
//! is handed, and the thread that runs it in the background
//! ([`LogAdapterBuilder::compact_every`](super::LogAdapterBuilder::compact_every)).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::lifecycle::Lifecycle;
use super::log_lifecycle::LogIndexFacts;
use super::timestamp::Timestamp;
use crate::engine::{CompactEntry, CompactionProgress, CompactionReport, Engine, EngineError};

/// Compacts the sealed segments of `engine` without what `rules` let go, as of now. The
/// predicate reads the index (last versions, timestamps) from the calling thread.
pub(super) fn compact_by_rules(
    engine: &Engine,
    rules: &Lifecycle,
    progress: &dyn Fn(CompactionProgress),
) -> Result<CompactionReport, EngineError> {
    let facts = LogIndexFacts(engine);
    let compaction = rules.compaction(Timestamp::now(), &facts);
    let keep = |e: &CompactEntry<'_>| {
        let timestamp = Timestamp::from_unix_millis(e.timestamp_ms);
        compaction.retains(e.store, e.aggregate, e.version, timestamp)
    };
    crate::engine::compact(&engine.state(), &keep, progress)
}

/// The background compaction: a thread that wakes every interval and compacts the log when a
/// lifecycle rule is in force, until stopped. Dropping it stops it.
#[derive(Debug)]
pub(super) struct Compactor {
    /// `true` once stopped; the thread waits on the condition variable between passes.
    stopped: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Compactor {
    /// Starts the thread. It holds the engine, so the adapter stops it before the engine can
    /// be closed for good.
    pub(super) fn start(
        engine: Arc<Engine>,
        rules: Arc<tokio::sync::RwLock<Lifecycle>>,
        interval: Duration,
    ) -> std::io::Result<Compactor> {
        let stopped = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stopped);
        let thread = std::thread::Builder::new()
            .name("annals-compactor".into())
            .spawn(move || run(&engine, &rules, interval, &signal))?;
        Ok(Compactor {
            stopped,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Tells the thread to stop after the pass under way, if any; [`Compactor::stop`] waits.
    /// A pass under way ends at its next segment once the engine closes.
    pub(super) fn signal(&self) {
        let (flag, wake) = &*self.stopped;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(&self) {
        self.signal();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread's loop: wait an interval (or the stop), compact when a rule is in force.
fn run(
    engine: &Engine,
    rules: &tokio::sync::RwLock<Lifecycle>,
    interval: Duration,
    stopped: &(Mutex<bool>, Condvar),
) {
    let (flag, wake) = stopped;
    loop {
        let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = wake
            .wait_timeout_while(guard, interval, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        if *guard {
            return;
        }
        drop(guard);
        // The rules in force at the start of the pass decide (see `LogAdapter::compact`).
        let rules = rules.blocking_read().clone();
        if !rules.has_any_rule() {
            continue;
        }
        match compact_by_rules(engine, &rules, &|_| {}) {
            Ok(report) if report.events_removed > 0 => tracing::info!(
                events_removed = report.events_removed,
                bytes_reclaimed = report.bytes_reclaimed(),
                segments_rewritten = report.segments_rewritten,
                "background compaction"
            ),
            Ok(_) => {}
            // A closed engine ends the thread; any other failure is retried next interval
            // (compaction is crash-safe at every step, so a failed pass leaves the log whole).
            Err(EngineError::Closed) => return,
            Err(error) => tracing::warn!(%error, "background compaction failed"),
        }
    }
}
