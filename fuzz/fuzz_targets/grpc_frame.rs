//! Fuzz target `grpc_frame`: see `wormdb_fuzz::grpc_frame` for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wormdb_fuzz::grpc_frame(data);
});
