//! The PostgreSQL adapter against a real server: the storage conformance suite unchanged, the
//! gap-free global order under concurrent commits, group commit, subscriptions and consumers,
//! the runtime's state store on PostgreSQL (the behaviour suite of the redb store, queues with
//! competing receivers in two processes, consumer groups over several processes), schema
//! migrations, faults (lost connections, a restarted server, statement timeouts), and the admin
//! console over it (feature `console`).
//!
//! They run against the server named by `ANNALS_POSTGRES_URL` (`eval "$(bash .ci/postgres
//! start)"` starts one and sets it); without it, against a throwaway server this binary starts
//! when PostgreSQL's server binaries are installed (see [`server`]), and stops and deletes when
//! it ends; `ANNALS_POSTGRES_AUTOSTART=0` forbids that. With no server at all the tests are
//! reported *ignored*, with the reason, unless `ANNALS_REQUIRE_POSTGRES=1` (set by CI), which
//! makes them fail. The binary has its own harness ([`harness`], on libtest-mimic) because the
//! built-in one cannot mark a test ignored at run time.

mod fixture;
mod harness;
mod server;

mod actions;
mod conformance;
#[cfg(feature = "console")]
mod console;
mod faults;
mod global_order;
mod group_commit;
mod groups;
mod lifecycle;
#[cfg(feature = "personal")]
mod personal;
mod processes;
mod queue_processes;
mod schema;
mod snapshots;
mod state;
mod subscriptions;

/// The console's trials, when the console is built.
#[cfg(feature = "personal")]
fn personal_trials() -> Vec<libtest_mimic::Trial> {
    personal::trials()
}

#[cfg(not(feature = "personal"))]
fn personal_trials() -> Vec<libtest_mimic::Trial> {
    Vec::new()
}

#[cfg(feature = "console")]
fn console_trials() -> Vec<libtest_mimic::Trial> {
    console::trials()
}

/// No console without its feature.
#[cfg(not(feature = "console"))]
fn console_trials() -> Vec<libtest_mimic::Trial> {
    Vec::new()
}

fn main() -> std::process::ExitCode {
    harness::main(vec![
        conformance::trials(),
        actions::trials(),
        console_trials(),
        faults::trials(),
        global_order::trials(),
        groups::trials(),
        lifecycle::trials(),
        personal_trials(),
        group_commit::trials(),
        processes::trials(),
        queue_processes::trials(),
        schema::trials(),
        snapshots::trials(),
        state::trials(),
        subscriptions::trials(),
    ])
}
