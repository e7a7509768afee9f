//! Fuzz target `push_batch`: see `wormdb_fuzz::push_batch` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wormdb_fuzz::push_batch(data);
});
