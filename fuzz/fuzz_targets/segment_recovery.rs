//! `cargo +nightly fuzz run segment_recovery`: see `annals::testing::fuzz::segment_recovery` for the input format and
//! the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    annals::testing::fuzz::contain_redb_panics();
    annals::testing::fuzz::segment_recovery(data);
});
