//! `cargo +nightly fuzz run index_decoder`: see `annals::testing::fuzz::index_decoder` for the input format and
//! the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    annals::testing::fuzz::contain_redb_panics();
    annals::testing::fuzz::index_decoder(data);
});
