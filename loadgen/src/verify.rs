//! `--verify`: after a run (or later, from its `--json` file with
//! `--verify-from`), ask the node whether it stores every acknowledged entry.
//!
//! - HTTP: per shard, `/v1/stats` must show `last_seq` at or above the
//!   highest acknowledged seq and at least as many `entries` as were
//!   acknowledged (a shard's seqs are dense and recovery only ever cuts the
//!   tail, so a lost acknowledged entry lowers `last_seq`); then every
//!   sampled entry (the newest of each shard and random ones) is looked up
//!   with `GET /v1/entries` and its body compared with what was sent.
//! - gRPC: the samples through `WormIngest.Query`; and, for runs of up to
//!   [`SCAN_ENTRIES_MAX`] entries, one scan of the run's time window that
//!   counts every acknowledged (shard, seq).
//! - Follower pushes: per shard, `GetWatermark` at or above the highest
//!   acknowledged seq (the archive of a pair is exactly `1..=watermark`),
//!   and each sample read back with `ReplayFrom`.
//!
//! Lookups by time assume the node's clock is within [`CLOCK_SLACK`] of
//! this machine's (the node stamps entries when it stores them).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use wormdb::grpc::status::Status;
use wormdb::grpc::transport::Channel;
use wormdb::proto::{LogEntry, QueryRequest, ReplayRequest, WatermarkRequest, WatermarkResponse};

use crate::cli::Target;
use crate::client::{self, until, HttpClient};
use crate::record::{Acknowledged, RangeSet, Sample};

/// Allowed difference between the node's clock and ours.
pub const CLOCK_SLACK: Duration = Duration::from_secs(1);
/// Entries one sample lookup reads, at most.
pub const SAMPLE_QUERY_LIMIT: u64 = 200_000;
/// Random samples checked (on top of the newest of each shard).
pub const RANDOM_SAMPLES_CHECKED: usize = 32;
/// Largest run whose entries the gRPC check counts one by one.
pub const SCAN_ENTRIES_MAX: u64 = 2_000_000;
/// Time allowed for each verification request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome.
#[derive(Debug, Default)]
pub struct Verdict {
    /// What was checked and passed.
    pub passed: Vec<String>,
    /// Acknowledged entries that are missing or differ.
    pub problems: Vec<String>,
    /// Checks that could not conclude (not failures).
    pub notes: Vec<String>,
    /// Sampled entries found with the body that was sent, and how they were read.
    pub bodies_matched: (usize, &'static str),
}

impl Verdict {
    /// Human-readable.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.passed {
            out.push_str(&format!("  ok       {line}\n"));
        }
        if self.bodies_matched.0 > 0 {
            let (count, how) = self.bodies_matched;
            out.push_str(&format!(
                "  ok       {count} sampled entries read back with the body that was sent ({how})\n"
            ));
        }
        for line in &self.notes {
            out.push_str(&format!("  note     {line}\n"));
        }
        for line in &self.problems {
            out.push_str(&format!("  MISSING  {line}\n"));
        }
        out.push_str(if self.problems.is_empty() {
            "verify: every acknowledged entry checked is stored\n"
        } else {
            "verify: FAILED: acknowledged entries are missing or differ\n"
        });
        out
    }
}

/// Checks `acknowledged` against the node at `target`. `Err` means the
/// check itself could not be made (node unreachable, bad answer).
pub fn verify(target: Target, acknowledged: Acknowledged) -> Result<Verdict, String> {
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("loadgen-verify")
        .spawn(move || async move {
            match acknowledged.mode.as_str() {
                "http" => verify_http(&target, &acknowledged).await,
                "grpc" => verify_grpc(&target, &acknowledged).await,
                "follower" => verify_follower(&target, &acknowledged).await,
                other => Err(format!("unknown mode `{other}` in the acknowledgements")),
            }
        })
        .map_err(|error| format!("starting the verify executor: {error}"))?;
    handle.join().map_err(|error| format!("the verify executor failed: {error}"))?
}

/// The entries the node counted for `protocol` (its
/// `wormdb_protocol_entries_total`, summed over the shards) in `/metrics`.
pub fn parse_protocol_entries(metrics: &str, protocol: &str) -> Option<u64> {
    let label = format!("protocol=\"{protocol}\"");
    let mut total = None;
    for line in metrics.lines() {
        if !line.starts_with("wormdb_protocol_entries_total{") || !line.contains(&label) {
            continue;
        }
        let value: u64 = line.rsplit(' ').next()?.parse().ok()?;
        total = Some(total.unwrap_or(0) + value);
    }
    total
}

/// Reads the node's count of `protocol` entries from `/metrics` at
/// `target` (an HTTP base URL), on an executor of its own.
pub fn protocol_entries(target: Target, protocol: &'static str) -> Result<u64, String> {
    on_executor(move || async move {
        let mut client = HttpClient::connect(&target, Duration::from_secs(5))
            .await
            .map_err(|failure| format!("cannot reach {}: {}", target.authority, failure.message))?;
        read_protocol_entries(&mut client, &target, protocol).await
    })
}

async fn read_protocol_entries(client: &mut HttpClient, target: &Target, protocol: &str) -> Result<u64, String> {
    let text = http_get(client, target, "/metrics").await?;
    parse_protocol_entries(&String::from_utf8_lossy(&text), protocol)
        .ok_or_else(|| format!("/metrics of {} has no wormdb_protocol_entries_total for {protocol}", target.authority))
}

fn on_executor<T: Send + 'static, F: std::future::Future<Output = Result<T, String>> + 'static>(
    make: impl FnOnce() -> F + Send + 'static,
) -> Result<T, String> {
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("loadgen-verify")
        .spawn(make)
        .map_err(|error| format!("starting the verify executor: {error}"))?;
    handle.join().map_err(|error| format!("the verify executor failed: {error}"))?
}

/// `--verify` of a protocol without seqs: the node's count of `protocol`
/// entries must have grown by at least `expected` since `baseline` (the
/// count before the run). The node may still be storing what was written
/// (syslog has no acknowledgement to wait for), so the count is polled for
/// up to `wait`. Bodies are not sampled: nothing names where an entry went.
pub fn verify_counts(
    target: Target,
    protocol: &'static str,
    baseline: u64,
    expected: u64,
    wait: Duration,
) -> Result<Verdict, String> {
    on_executor(move || async move {
        let mut client = HttpClient::connect(&target, Duration::from_secs(5))
            .await
            .map_err(|failure| format!("cannot reach {}: {}", target.authority, failure.message))?;
        let deadline = Instant::now() + wait;
        let mut counted;
        loop {
            counted = read_protocol_entries(&mut client, &target, protocol).await?.saturating_sub(baseline);
            if counted >= expected || Instant::now() >= deadline {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
        Ok(judge_counts(protocol, expected, counted))
    })
}

/// The verdict on `counted` entries the node stored for `protocol` during
/// a run that had `expected` acknowledged (or, for syslog, written).
pub fn judge_counts(protocol: &str, expected: u64, counted: u64) -> Verdict {
    let mut verdict = Verdict::default();
    match counted.cmp(&expected) {
        std::cmp::Ordering::Less => verdict.problems.push(format!(
            "{protocol}: {expected} entries acknowledged or written, the node counted {counted} ({} missing)",
            expected - counted
        )),
        std::cmp::Ordering::Equal => {
            verdict.passed.push(format!("{protocol}: the node counted all {expected} entries of the run"))
        }
        std::cmp::Ordering::Greater => {
            verdict.passed.push(format!("{protocol}: the node counted all {expected} entries of the run"));
            verdict
                .notes
                .push(format!("{protocol}: {} more were counted: another client sent some too", counted - expected));
        }
    }
    verdict.notes.push(format!(
        "{protocol} answers without seqs: entries are counted (wormdb_protocol_entries_total), not looked up one by one"
    ));
    verdict
}

fn samples_to_check(acknowledged: &Acknowledged) -> Vec<&Sample> {
    let newest = acknowledged.shards.len();
    let mut samples: Vec<&Sample> = acknowledged.samples.iter().take(newest).collect();
    let random = &acknowledged.samples[newest.min(acknowledged.samples.len())..];
    let step = (random.len() / RANDOM_SAMPLES_CHECKED).max(1);
    samples.extend(random.iter().step_by(step).take(RANDOM_SAMPLES_CHECKED));
    samples
}

fn ranges_of(acknowledged: &Acknowledged) -> BTreeMap<u32, RangeSet> {
    acknowledged
        .shards
        .iter()
        .map(|shard| {
            let mut set = RangeSet::default();
            for [first, last] in &shard.ranges {
                if first <= last {
                    set.insert(*first, *last);
                }
            }
            (shard.shard, set)
        })
        .collect()
}

fn window(sample: &Sample) -> (i64, i64) {
    let slack = CLOCK_SLACK.as_nanos() as i64;
    (sample.sent_unix_ns.saturating_sub(slack).max(0), sample.acked_unix_ns.saturating_add(slack))
}

/// What a lookup found for one sample.
enum Found {
    Match,
    Differs(String),
    Absent { truncated: bool },
}

fn judge(verdict: &mut Verdict, sample: &Sample, found: Found, how: &'static str) {
    let what = format!("shard {} seq {}", sample.shard, sample.seq);
    match found {
        Found::Match => verdict.bodies_matched = (verdict.bodies_matched.0 + 1, how),
        Found::Differs(body) => verdict.problems.push(format!(
            "{what}: stored body differs: sent {:?}, stored {:?}",
            short(&sample.body),
            short(&body)
        )),
        Found::Absent { truncated: false } => verdict.problems.push(format!("{what}: not found ({how})")),
        Found::Absent { truncated: true } => verdict
            .notes
            .push(format!("{what}: not among the first {SAMPLE_QUERY_LIMIT} entries of its time window; not checked")),
    }
}

fn short(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

async fn http_get(client: &mut HttpClient, target: &Target, path_and_query: &str) -> Result<Bytes, String> {
    let uri: Uri = format!("{}{path_and_query}", target.base_path)
        .parse()
        .map_err(|error| format!("bad URI {path_and_query}: {error}"))?;
    let answer = until(Instant::now() + REQUEST_TIMEOUT, client.request(Method::GET, &uri, None, Bytes::new()))
        .await
        .ok_or_else(|| format!("GET {uri}: no answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|failure| format!("GET {uri}: {}", failure.message))?;
    match answer {
        (StatusCode::OK, body) => Ok(body),
        (status, body) => Err(format!("GET {uri}: {status}: {}", String::from_utf8_lossy(&body))),
    }
}

async fn verify_http(target: &Target, acknowledged: &Acknowledged) -> Result<Verdict, String> {
    let mut client = HttpClient::connect(target, Duration::from_secs(5))
        .await
        .map_err(|failure| format!("cannot reach {}: {}", target.authority, failure.message))?;
    let stats: serde_json::Value = serde_json::from_slice(&http_get(&mut client, target, "/v1/stats").await?)
        .map_err(|error| format!("/v1/stats is not JSON: {error}"))?;
    let node_id = stats["node_id"].as_u64();
    let shards = stats["shards"].as_array().cloned().unwrap_or_default();
    let mut verdict = Verdict::default();
    for acked in &acknowledged.shards {
        let newest = acked.ranges.last().map_or(0, |range| range[1]);
        let Some(stored) = shards.iter().find(|shard| shard["shard"].as_u64() == Some(u64::from(acked.shard))) else {
            verdict.problems.push(format!(
                "shard {}: {} acknowledged entries, but the node has no such shard",
                acked.shard, acked.entries
            ));
            continue;
        };
        let last_seq = stored["last_seq"].as_u64().unwrap_or(0);
        let entries = stored["entries"].as_u64().unwrap_or(0);
        if last_seq < newest {
            verdict.problems.push(format!(
                "shard {}: acknowledged up to seq {newest}, but the node's last_seq is {last_seq} \
                 ({} acknowledged entries missing)",
                acked.shard,
                newest - last_seq
            ));
        } else if entries < acked.entries {
            verdict.problems.push(format!(
                "shard {}: {} entries acknowledged, the node stores {entries}",
                acked.shard, acked.entries
            ));
        } else {
            verdict.passed.push(format!(
                "shard {}: {} acknowledged entries up to seq {newest}; node: last_seq {last_seq}, {entries} entries",
                acked.shard, acked.entries
            ));
        }
    }
    for sample in samples_to_check(acknowledged) {
        let (from, to) = window(sample);
        let mut query = format!("/v1/entries?from={from}&to={to}&limit={SAMPLE_QUERY_LIMIT}");
        if let Some((key, value)) = &sample.tag {
            query.push_str(&format!("&tag={}={}", encode_query(key), encode_query(value)));
        }
        let body = http_get(&mut client, target, &query).await?;
        let needle = format!(",\"shard\":{},\"seq\":{},", sample.shard, sample.seq);
        let mut found = Found::Absent { truncated: false };
        let mut lines = 0u64;
        for line in body.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()) {
            lines += 1;
            if !contains(line, needle.as_bytes()) {
                continue;
            }
            let Ok(entry) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
            if node_id.is_some() && entry["node"].as_u64() != node_id {
                continue;
            }
            let stored = entry["body"].as_str().unwrap_or("").to_string();
            found = if stored == sample.body { Found::Match } else { Found::Differs(stored) };
            break;
        }
        if let Found::Absent { truncated } = &mut found {
            *truncated = lines >= SAMPLE_QUERY_LIMIT;
        }
        judge(&mut verdict, sample, found, "GET /v1/entries");
    }
    Ok(verdict)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Percent-encodes a query parameter value (everything but unreserved characters).
fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn connect_grpc(target: &Target) -> Result<Channel, String> {
    client::grpc_connect(target, Duration::from_secs(5))
        .await
        .map_err(|failure| format!("cannot reach {}: {}", target.authority, failure.message))
}

/// Streams a `Query`, calling `visit` per entry until it returns `false`;
/// returns the entries read.
async fn query_each(
    channel: &Channel,
    request: &QueryRequest,
    mut visit: impl FnMut(&LogEntry) -> bool,
) -> Result<u64, String> {
    let reading = async {
        let mut call = channel.start(client::QUERY, None).await?;
        call.send(request).await?;
        call.close_send().await?;
        let mut read = 0u64;
        // Bounded by the request's limit.
        while let Some(entry) = call.next::<LogEntry>().await? {
            read += 1;
            if !visit(&entry) || read >= u64::from(request.limit) {
                break;
            }
        }
        Ok::<_, Status>(read)
    };
    until(Instant::now() + REQUEST_TIMEOUT, reading)
        .await
        .ok_or_else(|| format!("Query: no answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|status| format!("Query: {} {}", status.code.as_str(), status.message))
}

async fn verify_grpc(target: &Target, acknowledged: &Acknowledged) -> Result<Verdict, String> {
    let channel = connect_grpc(target).await?;
    let mut verdict = Verdict::default();
    let mut node_ids: BTreeMap<u32, u64> = BTreeMap::new();
    for sample in samples_to_check(acknowledged) {
        let (from_ns, to_ns) = window(sample);
        let request = QueryRequest {
            words: Vec::new(),
            contains: String::new(),
            direction: 0,
            fields: Default::default(),
            from_ns,
            to_ns,
            tags: sample.tag.iter().cloned().collect(),
            limit: SAMPLE_QUERY_LIMIT as u32,
        };
        let mut found = Found::Absent { truncated: false };
        let read = query_each(&channel, &request, |entry| {
            if entry.shard != sample.shard || entry.seq != sample.seq {
                return true;
            }
            if entry.body == sample.body.as_bytes() {
                *node_ids.entry(entry.node_id).or_default() += 1;
                found = Found::Match;
                false
            } else {
                // Another node's entry with the same (shard, seq) may
                // follow (archived followers keep their ids): keep looking.
                found = Found::Differs(String::from_utf8_lossy(&entry.body).into_owned());
                true
            }
        })
        .await?;
        if let Found::Absent { truncated } = &mut found {
            *truncated = read >= SAMPLE_QUERY_LIMIT;
        }
        judge(&mut verdict, sample, found, "WormIngest.Query");
    }
    let total: u64 = acknowledged.shards.iter().map(|shard| shard.entries).sum();
    let node_id = node_ids.iter().max_by_key(|(_, count)| **count).map(|(node, _)| *node);
    match node_id {
        _ if total > SCAN_ENTRIES_MAX => verdict.notes.push(format!(
            "{total} acknowledged entries: over {SCAN_ENTRIES_MAX}, so not counted one by one (samples only)"
        )),
        None => verdict.notes.push("no sample matched, so the node id is unknown: entries not counted".into()),
        Some(node_id) => {
            let ranges = ranges_of(acknowledged);
            let mut counted: BTreeMap<u32, u64> = BTreeMap::new();
            let slack = CLOCK_SLACK.as_nanos() as i64;
            let request = QueryRequest {
                words: Vec::new(),
                contains: String::new(),
                direction: 0,
                fields: Default::default(),
                from_ns: acknowledged.start_unix_ns.saturating_sub(slack).max(0),
                to_ns: acknowledged.end_unix_ns.saturating_add(slack),
                tags: Default::default(),
                limit: u32::try_from(
                    (total * 2 + SAMPLE_QUERY_LIMIT).min(wormdb::limits::READ_ENTRIES_MAX as u64 * 10),
                )
                .unwrap_or(u32::MAX),
            };
            query_each(&channel, &request, |entry| {
                if entry.node_id == node_id && ranges.get(&entry.shard).is_some_and(|set| set.contains(entry.seq)) {
                    *counted.entry(entry.shard).or_default() += 1;
                }
                true
            })
            .await?;
            for acked in &acknowledged.shards {
                let found = counted.get(&acked.shard).copied().unwrap_or(0);
                if found < acked.entries {
                    verdict.problems.push(format!(
                        "shard {}: {} entries acknowledged, {found} found by Query ({} missing)",
                        acked.shard,
                        acked.entries,
                        acked.entries - found
                    ));
                } else {
                    verdict.passed.push(format!("shard {}: all {} acknowledged entries found", acked.shard, found));
                }
            }
        }
    }
    Ok(verdict)
}

async fn verify_follower(target: &Target, acknowledged: &Acknowledged) -> Result<Verdict, String> {
    let follower_id = acknowledged.follower_id.ok_or("a follower run without a follower id")?;
    let channel = connect_grpc(target).await?;
    let mut verdict = Verdict::default();
    for acked in &acknowledged.shards {
        let newest = acked.ranges.last().map_or(0, |range| range[1]);
        let request = WatermarkRequest { follower_id, shard: acked.shard };
        let watermark = until(
            Instant::now() + REQUEST_TIMEOUT,
            channel.unary::<_, WatermarkResponse>(client::GET_WATERMARK, &request, Some(REQUEST_TIMEOUT)),
        )
        .await
        .ok_or("GetWatermark: no answer")?
        .map_err(|status| format!("GetWatermark: {} {}", status.code.as_str(), status.message))?
        .acked_seq;
        if watermark < newest {
            verdict.problems.push(format!(
                "follower {follower_id} shard {}: acknowledged up to seq {newest}, the archive's watermark is \
                 {watermark} ({} acknowledged entries missing)",
                acked.shard,
                newest - watermark
            ));
        } else {
            verdict.passed.push(format!(
                "follower {follower_id} shard {}: watermark {watermark} covers the {} acknowledged entries up to {newest}",
                acked.shard, acked.entries
            ));
        }
    }
    for sample in samples_to_check(acknowledged) {
        let request = ReplayRequest { follower_id, shard: sample.shard, from_seq: sample.seq };
        let reading = async {
            let (mut sender, mut receiver) = channel.start(client::REPLAY_FROM, None).await?.split();
            sender.send(&request).await?;
            sender.close_send().await?;
            let first = receiver.next::<LogEntry>().await?;
            // Only the first entry is needed; abandon the rest of the stream.
            sender.cancel();
            Ok::<_, Status>(first)
        };
        let first = until(Instant::now() + REQUEST_TIMEOUT, reading)
            .await
            .ok_or("ReplayFrom: no answer")?
            .map_err(|status| format!("ReplayFrom: {} {}", status.code.as_str(), status.message))?;
        let found = match first {
            Some(entry) if entry.seq == sample.seq && entry.body == sample.body.as_bytes() => Found::Match,
            Some(entry) if entry.seq == sample.seq => Found::Differs(String::from_utf8_lossy(&entry.body).into_owned()),
            _ => Found::Absent { truncated: false },
        };
        judge(&mut verdict, sample, found, "ReplayFrom");
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ShardAcks;

    fn sample(shard: u32, seq: u64) -> Sample {
        Sample { shard, seq, body: format!("b{seq}"), tag: None, sent_unix_ns: 10, acked_unix_ns: 20 }
    }

    #[test]
    fn newest_samples_are_always_checked() {
        let mut samples = vec![sample(0, 100), sample(1, 50)];
        samples.extend((1..=200).map(|seq| sample(0, seq)));
        let acknowledged = Acknowledged {
            mode: "http".into(),
            follower_id: None,
            start_unix_ns: 0,
            end_unix_ns: 0,
            shards: vec![
                ShardAcks { shard: 0, entries: 100, ranges: vec![[1, 100]] },
                ShardAcks { shard: 1, entries: 50, ranges: vec![[1, 50]] },
            ],
            samples,
        };
        let checked = samples_to_check(&acknowledged);
        assert_eq!(checked[0].seq, 100);
        assert_eq!(checked[1].seq, 50);
        assert_eq!(checked.len(), 2 + RANDOM_SAMPLES_CHECKED);
        assert_eq!(ranges_of(&acknowledged)[&1].max(), Some(50));
    }

    #[test]
    fn windows_have_slack() {
        let (from, to) = window(&Sample { sent_unix_ns: 5_000_000_000, acked_unix_ns: 6_000_000_000, ..sample(0, 1) });
        assert_eq!((from, to), (4_000_000_000, 7_000_000_000));
        assert_eq!(window(&sample(0, 1)).0, 0);
    }

    #[test]
    fn protocol_counts_are_summed_over_shards_and_judged() {
        let metrics = "# TYPE wormdb_protocol_entries_total counter\n\
            wormdb_protocol_entries_total{node=\"1\",shard=\"0\",protocol=\"loki\"} 30\n\
            wormdb_protocol_entries_total{node=\"1\",shard=\"1\",protocol=\"loki\"} 12\n\
            wormdb_protocol_entries_total{node=\"1\",shard=\"0\",protocol=\"es-bulk\"} 5\n\
            wormdb_protocol_requests_total{node=\"1\",shard=\"0\",protocol=\"loki\"} 3\n";
        assert_eq!(parse_protocol_entries(metrics, "loki"), Some(42));
        assert_eq!(parse_protocol_entries(metrics, "es-bulk"), Some(5));
        assert_eq!(parse_protocol_entries(metrics, "syslog-tcp"), None);
        assert!(judge_counts("loki", 42, 42).problems.is_empty());
        assert!(judge_counts("loki", 42, 50).problems.is_empty());
        assert!(judge_counts("loki", 42, 40).problems[0].contains("(2 missing)"));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("v1"), "v1");
        assert_eq!(encode_query("a b&c=d"), "a%20b%26c%3Dd");
    }
}
