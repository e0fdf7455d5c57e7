//! What a command fails with: a message naming what failed, a suggested fix, and a stable
//! exit status.

use std::process::ExitCode;

use annals::StorageError;

/// Exit status: usage error or failure.
pub const EXIT_FAILURE: u8 = 2;
/// Exit status: the store (or state file) is held by another process.
pub const EXIT_LOCKED: u8 = 3;
/// Exit status: the input (an import file, a conflicting event) is invalid.
pub const EXIT_INVALID_INPUT: u8 = 4;
/// Exit status: what was asked for does not exist.
pub const EXIT_NOT_FOUND: u8 = 5;

/// A failed command.
#[derive(Debug)]
pub enum CliError {
    /// Report `message` (and `hint`) on stderr and exit with `code`.
    Failed {
        code: u8,
        message: String,
        hint: Option<String>,
    },
    /// stdout was closed by its reader (`annals tail | head`): stop quietly.
    BrokenPipe,
}

impl CliError {
    /// A failure with exit status 2.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::with_code(EXIT_FAILURE, message)
    }

    /// A failure with exit status `code`.
    pub fn with_code(code: u8, message: impl Into<String>) -> Self {
        CliError::Failed {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds the suggested fix.
    pub fn hint(self, hint: impl Into<String>) -> Self {
        match self {
            CliError::Failed { code, message, .. } => CliError::Failed {
                code,
                message,
                hint: Some(hint.into()),
            },
            CliError::BrokenPipe => CliError::BrokenPipe,
        }
    }

    /// A storage error met while trying to `what` (e.g. "open the store /srv/x").
    pub fn storage(what: impl std::fmt::Display, e: StorageError) -> Self {
        match e {
            StorageError::Locked { path } => CliError::with_code(
                EXIT_LOCKED,
                format!(
                    "cannot {what}: {} is locked by another process",
                    path.display()
                ),
            )
            .hint(
                "stop the program that has it open (only one process opens a store at a time), \
                 then run the command again",
            ),
            StorageError::Corruption(_) => CliError::failed(format!("cannot {what}: {e}")).hint(
                "nothing was changed; run `annals verify` for a full report. `annals \
                     rebuild-index` repairs a damaged index.redb, never missing or truncated \
                     log segments: restore those from a backup",
            ),
            other => CliError::failed(format!("cannot {what}: {other}")),
        }
    }

    /// Prints the error and returns its exit status.
    pub fn report(self) -> ExitCode {
        match self {
            CliError::BrokenPipe => ExitCode::SUCCESS,
            CliError::Failed {
                code,
                message,
                hint,
            } => {
                eprintln!("annals: {message}");
                if let Some(hint) = hint {
                    eprintln!("hint: {hint}");
                }
                ExitCode::from(code)
            }
        }
    }
}

impl From<std::io::Error> for CliError {
    /// Errors writing the output: a closed pipe ends the command quietly.
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::failed(format!("cannot write the output: {e}"))
        }
    }
}
