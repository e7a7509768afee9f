//! Fuzz target `otlp_decode`: see `wormdb_fuzz::otlp_decode` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wormdb_fuzz::otlp_decode(data);
});
