//! `cargo +nightly fuzz run frame_decoder`: see `annals::testing::fuzz::frame_decoder` for the input format and
//! the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    annals::testing::fuzz::contain_redb_panics();
    annals::testing::fuzz::frame_decoder(data);
});
