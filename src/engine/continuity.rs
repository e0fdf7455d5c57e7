//! The versions read for an aggregate are exactly the ones it has.
//!
//! The index finds an aggregate's events through its runs; nothing in a run's own bytes says
//! that no run is missing beside it. A damaged index page (a flipped bit in a key, say) can
//! hide a run, or file it under another version, while every page still decodes. So each read
//! checks what it assembled against the aggregate's latest version, which the index keeps
//! apart from the runs: runs that skip, repeat or stop short of a version are `Corruption`,
//! never a shorter history.

use std::path::Path;

use super::error::EngineError;
use super::index::Run;

/// Checks that `runs` cover versions `min..=max.min(last)` of the aggregate exactly, in order,
/// where `last` is its latest version (0 for none). `index` is the index file, for the error.
pub(crate) fn check(
    runs: &[Run],
    min: u64,
    max: u64,
    last: u64,
    index: &Path,
    aggregate: (&str, &str),
) -> Result<(), EngineError> {
    let min = min.max(1);
    let end = max.min(last);
    let mut next = min;
    for run in runs {
        if run.first_version != next {
            return Err(gap(index, aggregate, next, run.first_version, last));
        }
        next = run.last_version() + 1;
    }
    if min <= end && next != end + 1 {
        return Err(gap(index, aggregate, next, end + 1, last));
    }
    if min > end && !runs.is_empty() {
        return Err(gap(index, aggregate, min, min, last));
    }
    Ok(())
}

fn gap(
    index: &Path,
    (store, aggregate): (&str, &str),
    expected: u64,
    found: u64,
    last: u64,
) -> EngineError {
    EngineError::corruption(
        index.to_owned(),
        0,
        format!(
            "the index's runs of {store:?}/{aggregate:?} do not match its latest version \
             {last}: expected version {expected} next, found {found}"
        ),
    )
}
