//! Fuzz target `syslog`: see `wormdb_fuzz::syslog` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wormdb_fuzz::syslog(data);
});
