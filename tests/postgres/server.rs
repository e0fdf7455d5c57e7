//! Where the tests' PostgreSQL server comes from: the one named by `ANNALS_POSTGRES_URL`, or
//! else a throwaway server this binary starts from the PostgreSQL binaries installed on the
//! machine, or else none, and the tests that need one are reported ignored.
//!
//! A throwaway server is started by `.ci/postgres serve` (the script CI starts its server
//! with): a new temporary data directory, loopback only, a free port, and as the `postgres`
//! user when we run as root. The script holds the server for as long as its standard input
//! stays open; this binary holds the other end of that pipe. Dropping the [`Server`] closes it
//! and waits until the server is stopped and its directory deleted; if this binary dies
//! instead (`kill -9`, an abort), the kernel closes the pipe and the script cleans up all the
//! same. (A failing or panicking test does not end the binary: the harness catches it.) The script runs in a process group of its own, so a Ctrl-C on the tests does not kill
//! it before it has cleaned up.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use crate::harness::Availability;

/// The variable naming a running server to test against.
pub const URL_VAR: &str = "ANNALS_POSTGRES_URL";
/// `ANNALS_POSTGRES_AUTOSTART=0`: never start a server, even with the binaries installed.
pub const AUTOSTART_VAR: &str = "ANNALS_POSTGRES_AUTOSTART";
/// `ANNALS_REQUIRE_POSTGRES=1` (CI): a test that cannot have its server fails, never skips.
pub const REQUIRE_VAR: &str = "ANNALS_REQUIRE_POSTGRES";

/// How to get a server, for the messages of ignored and failed tests.
pub const HOW_TO_RUN: &str = "install PostgreSQL's server binaries (Debian/Ubuntu: \
     `apt-get install postgresql`) and the tests start a throwaway server of their own, or name \
     a running one with ANNALS_POSTGRES_URL (`eval \"$(bash .ci/postgres start)\"` starts one \
     and sets it)";

/// How often a start is tried when the server could not bind its port: another process may
/// take the free port we picked before the server binds it.
const START_ATTEMPTS: usize = 3;

fn script() -> String {
    format!("{}/.ci/postgres", env!("CARGO_MANIFEST_DIR"))
}

fn env_is(var: &str, value: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.trim() == value)
}

/// Whether a missing server must fail the tests (`ANNALS_REQUIRE_POSTGRES=1`).
pub fn required() -> bool {
    env_is(REQUIRE_VAR, "1")
}

/// The server URL given in the environment, if any.
pub fn given_url() -> Option<String> {
    std::env::var(URL_VAR)
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Why no throwaway server can be started (`ANNALS_POSTGRES_AUTOSTART=0`, or no binaries),
/// or `None` when one can. Asks `.ci/postgres bin`, once, so that the tests and the script
/// agree on where the binaries are.
pub fn cannot_start() -> Option<String> {
    static BINARIES: OnceLock<Result<String, String>> = OnceLock::new();
    if env_is(AUTOSTART_VAR, "0") {
        return Some(format!("{AUTOSTART_VAR}=0"));
    }
    let binaries = BINARIES.get_or_init(|| {
        let output = Command::new("bash")
            .arg(script())
            .arg("bin")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bash {}: {e}", script()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(
                "no PostgreSQL server binaries (initdb, pg_ctl) were found on PATH or under \
                 /usr/lib/postgresql/<version>/bin"
                    .to_owned(),
            )
        }
    });
    binaries.as_ref().err().cloned()
}

/// Turns "there is no server because `reason`" into an ignored test, or a failed one under
/// `ANNALS_REQUIRE_POSTGRES=1`.
pub fn unavailable(reason: String) -> Availability {
    if required() {
        Availability::Failed(format!(
            "{REQUIRE_VAR}=1, but there is no PostgreSQL server: {reason}; {HOW_TO_RUN}"
        ))
    } else {
        Availability::Ignored(reason)
    }
}

/// A throwaway PostgreSQL server, stopped and deleted when dropped.
pub struct Server {
    url: String,
    child: Child,
    /// The script serves while this stays open.
    commands: Option<ChildStdin>,
    answers: BufReader<ChildStdout>,
    /// What the script wrote to its standard error, for error messages.
    log: Arc<Mutex<String>>,
    log_reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts one: initdb in a new temporary directory, then the server on a free port of
    /// 127.0.0.1, with a database `annals` and trust authentication.
    pub fn start() -> Result<Server, String> {
        let mut attempt = 1;
        loop {
            match Server::start_once() {
                Err(e) if attempt < START_ATTEMPTS && e.contains("could not bind") => {
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    fn start_once() -> Result<Server, String> {
        // A port the kernel just found free; the script moves to the next one if it is taken.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
            .port();
        let mut child = Command::new("bash")
            .arg(script())
            .arg("serve")
            .env("ANNALS_POSTGRES_PORT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run bash {} serve: {e}", script()))?;
        let (Some(commands), Some(answers), Some(mut errors)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three were piped")
        };
        let log = Arc::new(Mutex::new(String::new()));
        let log_reader = std::thread::spawn({
            let log = Arc::clone(&log);
            move || {
                let mut chunk = [0; 4096];
                while let Ok(n @ 1..) = errors.read(&mut chunk) {
                    let text = String::from_utf8_lossy(&chunk[..n]);
                    log.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_str(&text);
                }
            }
        });
        let mut server = Server {
            url: String::new(),
            child,
            commands: Some(commands),
            answers: BufReader::new(answers),
            log,
            log_reader: Some(log_reader),
        };
        // The first line is `export ANNALS_POSTGRES_URL=... ANNALS_POSTGRES_DATA=...`, once the
        // server accepts connections.
        let mut line = String::new();
        let read = server.answers.read_line(&mut line);
        let url = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("ANNALS_POSTGRES_URL="));
        match (read, url) {
            (Ok(_), Some(url)) => {
                server.url = url.to_owned();
                Ok(server)
            }
            (read, _) => {
                let log = server.stop();
                Err(format!(
                    "`bash .ci/postgres serve` started no server (read: {read:?}, \
                     first line: {line:?}):\n{log}"
                ))
            }
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Restarts the server (`pg_ctl restart -m fast`) on the same port and data directory.
    pub fn restart(&mut self) -> Result<(), String> {
        let Some(commands) = self.commands.as_mut() else {
            return Err("the server is stopped".to_owned());
        };
        writeln!(commands, "restart")
            .and_then(|()| commands.flush())
            .map_err(|e| format!("cannot ask the script to restart the server: {e}"))?;
        let mut answer = String::new();
        self.answers
            .read_line(&mut answer)
            .map_err(|e| format!("no answer from the script: {e}"))?;
        if answer.trim() == "restarted" {
            Ok(())
        } else {
            let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            Err(format!("the restart failed ({answer:?}):\n{log}"))
        }
    }

    /// Closes the script's input, waits until it has stopped the server and deleted its
    /// directory, and returns what it wrote to standard error.
    fn stop(&mut self) -> String {
        drop(self.commands.take());
        let status = self.child.wait();
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        match status {
            Ok(status) if status.success() => log.clone(),
            status => format!("{log}(the script ended: {status:?})"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.commands.is_some() {
            self.stop();
        }
    }
}

/// The server the tests share, decided on first use.
enum Shared {
    /// Named by `ANNALS_POSTGRES_URL`.
    Given(String),
    /// Started by this binary; stopped by [`stop_shared`].
    Started(Server),
    /// None, and why.
    Unavailable(Availability),
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

/// The shared server: the one named by `ANNALS_POSTGRES_URL`, or a throwaway one started on
/// the first call (later calls wait for it and share it). Without either, why not.
pub fn shared() -> Availability {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    let shared = shared.get_or_insert_with(|| {
        if let Some(url) = given_url() {
            return Shared::Given(url);
        }
        if let Some(reason) = cannot_start() {
            let reason = format!("{URL_VAR} is not set and {reason}");
            // Once, past the per-test reason, with the way out.
            let _ = writeln!(
                std::io::stderr(),
                "\ntests/postgres: no PostgreSQL server: {reason}; {HOW_TO_RUN}\n"
            );
            return Shared::Unavailable(unavailable(reason));
        }
        match Server::start() {
            Ok(server) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "tests/postgres: started a throwaway PostgreSQL server at {} \
                     (stopped and deleted when the tests end)",
                    server.url()
                );
                Shared::Started(server)
            }
            Err(e) => Shared::Unavailable(Availability::Failed(format!(
                "{URL_VAR} is not set, and the throwaway PostgreSQL server did not start: {e}\n\
                 Name a running server with {URL_VAR}, or set {AUTOSTART_VAR}=0 to skip \
                 these tests."
            ))),
        }
    });
    match shared {
        Shared::Given(url) => Availability::Ready(url.clone()),
        Shared::Started(server) => Availability::Ready(server.url().to_owned()),
        Shared::Unavailable(why) => why.clone(),
    }
}

/// Stops the shared server if this binary started it. Called once every test is over.
pub fn stop_shared() {
    let shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(shared);
}
