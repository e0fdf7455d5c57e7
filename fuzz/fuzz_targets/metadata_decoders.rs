//! `cargo +nightly fuzz run metadata_decoders`: see `annals::testing::fuzz::metadata_decoders` for the input format and
//! the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    annals::testing::fuzz::contain_redb_panics();
    annals::testing::fuzz::metadata_decoders(data);
});
