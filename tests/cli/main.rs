//! The `annals` command-line tool, driven as a real binary: every command's output (`--json`,
//! checked value by value), export → import round trips, Castore files, bad files that must be
//! refused without a partial batch, the locked-store error and `tail`; and `--url`, through a
//! running application's console (feature `console`).

#[cfg(feature = "console")]
mod console;
mod damaged_store;
mod fixture;
mod import;
mod inspect;
mod lifecycle;
mod maintenance;
#[cfg(feature = "personal")]
mod personal;
mod runtime_state;
mod upgrade;
