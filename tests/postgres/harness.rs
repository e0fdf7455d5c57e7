//! The test harness of this binary (`harness = false`, on libtest-mimic): the same command line
//! as the built-in one (filters, `--exact`, `--list`, `--ignored`, `--test-threads`), but a
//! test that needs a server it cannot have is reported *ignored*, with the reason, never
//! passed — or failed under `ANNALS_REQUIRE_POSTGRES=1`.
//!
//! Each module lists its tests with [`trials!`]: plain `async fn name()` run on a
//! multi-threaded tokio runtime of their own, named `module::name` as libtest would.

use std::future::Future;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::server;

/// What a test needs to run.
#[derive(Debug, Clone, Copy)]
pub enum Needs {
    /// The shared server ([`server::shared`]).
    Server,
    /// Servers of its own, started from the PostgreSQL binaries (it restarts them).
    OwnServer,
    /// To be a child process started by another test, which sets `var`: listed as ignored,
    /// and ignored when run without `var` (`--include-ignored`).
    ChildOf { var: &'static str },
}

/// Whether what a test needs is there.
#[derive(Debug, Clone)]
pub enum Availability {
    /// Yes; for a server, its URL.
    Ready(String),
    /// No: the test is reported ignored, for this reason.
    Ignored(String),
    /// No, and that is a failure (a server that did not start, `ANNALS_REQUIRE_POSTGRES=1`).
    Failed(String),
}

impl Needs {
    fn availability(self) -> Availability {
        match self {
            Needs::Server => server::shared(),
            Needs::OwnServer => match server::cannot_start() {
                Some(reason) => {
                    server::unavailable(format!("it starts a server of its own, and {reason}"))
                }
                None => Availability::Ready(String::new()),
            },
            Needs::ChildOf { var } => match std::env::var_os(var) {
                Some(_) => server::shared(),
                None => Availability::Ignored(format!("runs only as a child process ({var})")),
            },
        }
    }
}

/// A test named `name` that runs `body` once what it `needs` is there.
pub fn trial(name: String, needs: Needs, body: impl FnOnce() + Send + 'static) -> Trial {
    Trial::ignorable_test(name, move || match needs.availability() {
        Availability::Ready(_) => {
            body();
            Ok(Completion::Completed)
        }
        Availability::Ignored(reason) => Ok(Completion::ignored_with(reason)),
        Availability::Failed(message) => Err(Failed::from(message)),
    })
    .with_ignored_flag(matches!(needs, Needs::ChildOf { .. }))
}

/// `module::test` for a test of `module_path`, without the crate's name, as libtest names it.
pub fn name(module_path: &str, test: &str) -> String {
    let module = module_path
        .split_once("::")
        .map_or(module_path, |(_, module)| module);
    format!("{module}::{test}")
}

/// Runs `test` on a new multi-threaded runtime of `worker_threads` threads, as
/// `#[tokio::test(flavor = "multi_thread")]` does.
pub fn block_on(worker_threads: usize, test: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .expect("a tokio runtime for the test")
        .block_on(test);
}

/// The trials of the listed `async fn`s of the calling module, each needing `needs` and run
/// on `threads` worker threads.
macro_rules! trials {
    ($needs:expr, threads = $threads:literal; $($test:ident),+ $(,)?) => {
        vec![$(
            crate::harness::trial(
                crate::harness::name(module_path!(), stringify!($test)),
                $needs,
                || crate::harness::block_on($threads, $test()),
            )
        ),+]
    };
}
pub(crate) use trials;

/// Runs the trials as the command line asks, then stops the server this binary started, if
/// any, before exiting.
pub fn main(trials: Vec<Vec<Trial>>) -> ExitCode {
    let mut args = Arguments::from_args();
    // As the built-in harness does.
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|threads| threads.trim().parse().ok())
            .filter(|&threads| threads > 0);
    }
    let conclusion = libtest_mimic::run(&args, trials.into_iter().flatten().collect());
    server::stop_shared();
    conclusion.exit_code()
}
