//! The conformance suite of every adapter, one test per check, each on a fresh schema. The
//! suite's own macro (`annals::conformance_tests!`) writes `#[test]` functions, which a
//! `harness = false` binary does not have, so the trials are made from the suite's list of
//! checks ([`conformance::checks`]), the same list the macro expands: a check added to the suite
//! runs here too.

use annals::testing::conformance;
use libtest_mimic::Trial;

use crate::fixture;
use crate::harness::{Needs, name, trial};

/// One trial per check of the suite, in the suite's order.
pub fn trials() -> Vec<Trial> {
    conformance::checks()
        .into_iter()
        .map(|check| {
            trial(name(module_path!(), check.name), Needs::Server, move || {
                conformance::run(fixture::conformance, check.run)
            })
        })
        .collect()
}
