//! Fuzz target `recovery_scan`: see `wormdb_fuzz::recovery_scan` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wormdb_fuzz::recovery_scan(data);
});
