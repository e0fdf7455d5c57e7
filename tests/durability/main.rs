//! Acknowledged commits survive `kill -9` of a real process.
//!
//! The parent test re-executes this test binary as a child process that opens a store on the
//! real file system (small segments and frequent index checkpoints, so rollovers and
//! checkpoints happen all the time) and appends single events and event groups from several
//! concurrent tasks as fast as it can, printing one line per acknowledged commit. After a
//! random delay the parent sends SIGKILL, reaps the child, reopens the same directory and
//! checks it: every acknowledged commit is present byte-identical at its reported positions,
//! no commit is partly visible, versions and positions are gap-free, and the next append
//! succeeds. The directory is reused for the next child, so every run also recovers from all
//! the crashes before it. `ANNALS_KILL_RUNS` sets the number of kills (default 100).
//!
//! Beside it: kills during a store's very first open (`first_open`), a view killed mid-batch
//! (`views`), the store's lock held against a second handle even when its `LOCK` file is
//! deleted (`lock`), a live reader following a writer child that appends under load and is
//! killed mid-load (`live_reader`), and a child killed while it compacts the log in a loop
//! beside its appends (`compaction_kill`).

mod compaction_kill;
mod first_open;
mod live_reader;
mod lock;
mod sigkill;
mod views;
mod workload;

/// A generator of kill delays, seeded from the clock.
fn sigkill_rng() -> sigkill::Rng {
    sigkill::Rng::seeded()
}
