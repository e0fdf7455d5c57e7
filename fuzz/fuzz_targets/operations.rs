//! `cargo +nightly fuzz run operations`: see `annals::testing::fuzz::operations` for the input format and
//! the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    annals::testing::fuzz::contain_redb_panics();
    annals::testing::fuzz::operations(data);
});
