//! NDJSON ingest parsing (`http::ndjson::parse_ndjson`) on one core, with no
//! executor and no socket: the CPU work of an HTTP ingest request between
//! receiving its body and appending to the shard.
//!
//! Bodies of [`ENTRIES`] entries built from LogHub samples
//! (<https://github.com/logpai/loghub>):
//!
//! - `loghub_lines`: one entry per line, lines interleaved across the eight
//!   samples, `ts` as integer nanoseconds, 3 tags (`source`, `level`,
//!   `host`), the line as `body` (JSON-escaped by serde_json, so lines with
//!   quotes or backslashes take the decoding path).
//! - `http_payload`: the body that `benches/http/run.sh` and
//!   `benches/compare.sh` POST (`benches/http/make_payload.py 1000 256`):
//!   no `ts`, 3 tags, 256 B bodies of consecutive lines. Skipped, with a
//!   note, if `python3` cannot run the script.
//!
//! Measured: `parse` (`parse_ndjson`, which validates every entry) and
//! `parse_entry_refs` (plus `Batch::entry_refs`, which the HTTP handler
//! calls before `Shard::append`). Throughput is in body bytes; the summary
//! also gives entries per second.
//!
//! Run with `cargo bench --bench ndjson`; `WORMDB_BENCH_QUICK=1` takes fewer,
//! shorter samples.
#![allow(clippy::unwrap_used)]

mod support;

use std::hint::black_box;
use std::path::Path;

use criterion::Throughput;
use support::{Samples, Settings};
use wormdb::http::ndjson::parse_ndjson;
use wormdb::limits::HTTP_ENTRIES_PER_REQUEST_MAX as ENTRIES_PER_REQUEST_MAX;

/// Entries per request body.
const ENTRIES: usize = 1000;
/// Body bytes of `make_payload.py`'s entries, as in the HTTP benches.
const PAYLOAD_BODY_BYTES: usize = 256;

/// One entry per LogHub line, with `ts` and 3 tags.
fn loghub_lines_body() -> Vec<u8> {
    let mut body = Vec::new();
    for entry in support::loghub_entries().iter().take(ENTRIES) {
        let tags: serde_json::Map<String, serde_json::Value> =
            entry.tags.iter().map(|&(key, value)| (key.to_string(), value.into())).collect();
        let line = serde_json::json!({
            "ts": entry.timestamp_ns,
            "tags": tags,
            "body": std::str::from_utf8(entry.body).unwrap(),
        });
        serde_json::to_writer(&mut body, &line).unwrap();
        body.push(b'\n');
    }
    body
}

/// The HTTP benches' payload, from their own generator.
fn http_payload_body() -> Result<Vec<u8>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/http/make_payload.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .args([ENTRIES.to_string(), PAYLOAD_BODY_BYTES.to_string()])
        .output()
        .map_err(|error| format!("cannot run python3 {}: {error}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr)));
    }
    Ok(output.stdout)
}

fn main() {
    let settings = Settings::from_env();
    let mut bodies = vec![("loghub_lines", loghub_lines_body())];
    match http_payload_body() {
        Ok(body) => bodies.push(("http_payload", body)),
        Err(why) => println!("http_payload skipped: {why}"),
    }
    for (name, body) in &bodies {
        assert_eq!(parse_ndjson(body, ENTRIES_PER_REQUEST_MAX).unwrap().len(), ENTRIES, "{name} parses whole");
    }

    support::print_machine("ndjson");
    for (name, body) in &bodies {
        let escaped = body.split(|&byte| byte == b'\n').filter(|line| line.contains(&b'\\')).count();
        println!(
            "{name:<14} {ENTRIES} entries, {} bytes ({:.0} B per line; {escaped} lines with a JSON escape)",
            body.len(),
            body.len() as f64 / ENTRIES as f64
        );
    }
    println!(
        "data: LogHub *_2k.log (8 files, https://github.com/logpai/loghub; {}); 3 tags per entry",
        support::common::loghub::describe()
    );
    println!("{}; throughput in body bytes", settings.describe());
    println!();

    let mut criterion = settings.criterion();
    let parse_samples: Vec<Samples> = bodies.iter().map(|_| Samples::default()).collect();
    let refs_samples: Vec<Samples> = bodies.iter().map(|_| Samples::default()).collect();
    {
        let mut group = criterion.benchmark_group("ndjson");
        for (((name, body), parse), refs) in bodies.iter().zip(&parse_samples).zip(&refs_samples) {
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_function(format!("parse/{name}"), |bencher| {
                bencher.iter_custom(|iterations| {
                    parse.time(iterations, || {
                        black_box(parse_ndjson(black_box(body), ENTRIES_PER_REQUEST_MAX).unwrap());
                    })
                })
            });
            group.bench_function(format!("parse_entry_refs/{name}"), |bencher| {
                bencher.iter_custom(|iterations| {
                    refs.time(iterations, || {
                        let batch = parse_ndjson(black_box(body), ENTRIES_PER_REQUEST_MAX).unwrap();
                        // A fresh tag buffer per request, as the handler has.
                        let mut tags = Vec::new();
                        black_box(batch.entry_refs(&mut tags).len());
                    })
                })
            });
        }
        group.finish();
    }
    criterion.final_summary();

    println!();
    println!("== ndjson: summary (median of criterion's last {} samples; MB = 10^6 bytes) ==", settings.sample_size);
    for (((name, body), parse), refs) in bodies.iter().zip(&parse_samples).zip(&refs_samples) {
        for (what, samples) in [("parse", parse), ("parse_entry_refs", refs)] {
            let label = format!("{what}/{name}");
            let (Some(bytes), Some(entries)) = (
                samples.rates(body.len() as f64, settings.sample_size),
                samples.rates(ENTRIES as f64, settings.sample_size),
            ) else {
                println!("{label:<30} not measured (filtered out or test mode)");
                continue;
            };
            println!("{label:<30} {}  = {:.3} M entries/s", bytes.describe(1e6, "MB/s"), entries.median / 1e6);
        }
    }
    support::print_load_at_end();
}
