//! Fuzz target `index_file_decode`: see `wormdb_fuzz::index_file_decode` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wormdb_fuzz::index_file_decode(data);
});
