//! Fuzz target `segment_header`: see `wormdb_fuzz::segment_header` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wormdb_fuzz::segment_header(data);
});
