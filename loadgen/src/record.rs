//! What a run records (pure): latencies, counters, errors by kind, and the
//! acknowledged seq ranges per shard with a sample of entries, which
//! `--verify` checks against the node.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::pool::{Pool, Rng};

/// Highest latency the histogram tracks (larger values saturate), µs.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant digits of the histogram.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Random (reservoir) samples per executor thread.
pub const SAMPLES_PER_THREAD: usize = 32;
/// Random samples kept in a run.
pub const SAMPLES_MAX: usize = 128;

/// A latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid for hdrhistogram")
}

/// A set of closed seq ranges, merged as they touch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// first → last (inclusive), disjoint and not adjacent.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds `first..=last` (`first <= last`).
    pub fn insert(&mut self, first: u64, last: u64) {
        assert!(first <= last, "a range is ordered: {first}..={last}");
        let (mut first, mut last) = (first, last);
        if let Some((&start, &end)) = self.ranges.range(..=first).next_back() {
            if end.saturating_add(1) >= first {
                first = start;
                last = last.max(end);
                self.ranges.remove(&start);
            }
        }
        // Each round removes one range, so this ends.
        while let Some((&start, &end)) = self.ranges.range(first..).next() {
            if start > last.saturating_add(1) {
                break;
            }
            last = last.max(end);
            self.ranges.remove(&start);
        }
        self.ranges.insert(first, last);
    }

    /// Seqs in the set.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(first, last)| last - first + 1).sum()
    }

    /// The highest seq.
    #[cfg(test)]
    pub fn max(&self) -> Option<u64> {
        self.ranges.values().next_back().copied()
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges.range(..=seq).next_back().is_some_and(|(_, &last)| seq <= last)
    }

    /// The ranges in order.
    pub fn ranges(&self) -> Vec<[u64; 2]> {
        self.ranges.iter().map(|(&first, &last)| [first, last]).collect()
    }

    /// Adds every range of `other`.
    pub fn merge(&mut self, other: &RangeSet) {
        for (&first, &last) in &other.ranges {
            self.insert(first, last);
        }
    }
}

/// An acknowledged request chosen for body checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleRef {
    /// Shard that stored it.
    pub shard: u32,
    /// Seq of its last entry.
    pub seq: u64,
    /// Which pooled request was sent.
    pub pool_index: usize,
    /// Wall clock (Unix ns) when it was sent and when it was acknowledged.
    pub sent_unix_ns: i64,
    /// See `sent_unix_ns`.
    pub acked_unix_ns: i64,
}

/// One acknowledged entry to look up, as written to `--json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sample {
    /// Shard that stored it.
    pub shard: u32,
    /// Its seq.
    pub seq: u64,
    /// Its body as sent.
    pub body: String,
    /// Its first tag (`key`, `value`), if any.
    pub tag: Option<(String, String)>,
    /// Unix ns when the request was sent.
    pub sent_unix_ns: i64,
    /// Unix ns when it was acknowledged.
    pub acked_unix_ns: i64,
}

/// Acknowledged entries of one shard.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardAcks {
    /// The shard.
    pub shard: u32,
    /// Entries acknowledged.
    pub entries: u64,
    /// Acknowledged seqs, as closed ranges.
    pub ranges: Vec<[u64; 2]>,
}

/// Everything `--verify` (or a later `--verify-from`) needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Acknowledged {
    /// `http`, `grpc` or `follower`.
    pub mode: String,
    /// The follower id of a push run.
    pub follower_id: Option<u32>,
    /// Unix ns when the run started and ended.
    pub start_unix_ns: i64,
    /// See `start_unix_ns`.
    pub end_unix_ns: i64,
    /// Per shard.
    pub shards: Vec<ShardAcks>,
    /// Entries to check bodies of: random ones and the newest of each shard.
    pub samples: Vec<Sample>,
}

/// What one executor thread records.
#[derive(Debug)]
pub struct Recorder {
    /// Measured latencies not yet flushed to the shared histogram.
    pub histogram: Histogram<u64>,
    /// Requests sent (both phases).
    pub requests_sent: u64,
    /// Requests acknowledged in the measured phase.
    pub requests_acked: u64,
    /// Entries acknowledged in the measured phase.
    pub entries_acked: u64,
    /// Entries acknowledged during warmup.
    pub warmup_entries_acked: u64,
    /// Requests due before the end that were never sent (their connection
    /// was still busy).
    pub requests_unsent: u64,
    /// Failed requests by kind, with the first message of each kind.
    pub errors: BTreeMap<String, (u64, String)>,
    /// Acknowledged seqs per shard.
    pub acked: BTreeMap<u32, (u64, RangeSet)>,
    /// Random samples (reservoir).
    pub samples: Vec<SampleRef>,
    /// The newest acknowledged request of each shard.
    pub newest: BTreeMap<u32, SampleRef>,
    /// Latest acknowledgement, ns after the start.
    pub last_ack_ns: u128,
    samples_seen: u64,
    rng: Rng,
}

impl Recorder {
    /// An empty recorder; `seed` drives the sampling.
    pub fn new(seed: u64) -> Recorder {
        Recorder {
            histogram: new_histogram(),
            requests_sent: 0,
            requests_acked: 0,
            entries_acked: 0,
            warmup_entries_acked: 0,
            requests_unsent: 0,
            errors: BTreeMap::new(),
            acked: BTreeMap::new(),
            samples: Vec::with_capacity(SAMPLES_PER_THREAD),
            newest: BTreeMap::new(),
            last_ack_ns: 0,
            samples_seen: 0,
            rng: Rng::new(seed),
        }
    }

    /// Records a failed request of `kind`.
    pub fn error(&mut self, kind: &str, message: impl FnOnce() -> String) {
        match self.errors.get_mut(kind) {
            Some((count, _)) => *count += 1,
            None => {
                self.errors.insert(kind.to_string(), (1, message()));
            }
        }
    }

    /// Records an acknowledged request: `sample.seq` is its last seq and it
    /// holds `entries` entries; `latency_us` is `None` during warmup.
    pub fn ack(&mut self, sample: SampleRef, entries: u64, latency_us: Option<u64>, ack_ns: u128) {
        let first = (sample.seq + 1).saturating_sub(entries);
        let (count, ranges) = self.acked.entry(sample.shard).or_default();
        *count += entries;
        ranges.insert(first.max(1), sample.seq);
        match latency_us {
            Some(latency) => {
                self.histogram.saturating_record(latency.max(1));
                self.requests_acked += 1;
                self.entries_acked += entries;
            }
            None => self.warmup_entries_acked += entries,
        }
        self.last_ack_ns = self.last_ack_ns.max(ack_ns);
        let newest = self.newest.entry(sample.shard).or_insert(sample);
        if sample.seq > newest.seq {
            *newest = sample;
        }
        self.samples_seen += 1;
        if self.samples.len() < SAMPLES_PER_THREAD {
            self.samples.push(sample);
        } else {
            let slot = self.rng.below(self.samples_seen) as usize;
            if slot < SAMPLES_PER_THREAD {
                self.samples[slot] = sample;
            }
        }
    }

    /// Records a request acknowledged without seqs (a shipper's
    /// protocol), or written without an acknowledgement (syslog): counted
    /// and timed, but with nothing to look up later.
    pub fn ack_unsequenced(&mut self, entries: u64, latency_us: Option<u64>, ack_ns: u128) {
        match latency_us {
            Some(latency) => {
                self.histogram.saturating_record(latency.max(1));
                self.requests_acked += 1;
                self.entries_acked += entries;
            }
            None => self.warmup_entries_acked += entries,
        }
        self.last_ack_ns = self.last_ack_ns.max(ack_ns);
    }

    /// Adds `other`'s counters, errors and acknowledgements (not its histogram).
    pub fn merge(&mut self, other: &Recorder) {
        self.requests_sent += other.requests_sent;
        self.requests_acked += other.requests_acked;
        self.entries_acked += other.entries_acked;
        self.warmup_entries_acked += other.warmup_entries_acked;
        self.requests_unsent += other.requests_unsent;
        for (kind, (count, message)) in &other.errors {
            self.errors.entry(kind.clone()).or_insert_with(|| (0, message.clone())).0 += count;
        }
        for (shard, (count, ranges)) in &other.acked {
            let (total, merged) = self.acked.entry(*shard).or_default();
            *total += count;
            merged.merge(ranges);
        }
        for (shard, sample) in &other.newest {
            let newest = self.newest.entry(*shard).or_insert(*sample);
            if sample.seq > newest.seq {
                *newest = *sample;
            }
        }
        self.samples.extend(other.samples.iter().copied());
        self.last_ack_ns = self.last_ack_ns.max(other.last_ack_ns);
    }

    /// The acknowledgements in the form `--json` keeps, bodies resolved from `pool`.
    pub fn acknowledged(&self, pool: &Pool, mode: &str, follower_id: Option<u32>, window: (i64, i64)) -> Acknowledged {
        let resolve = |sample: &SampleRef| {
            let request = &pool.requests[sample.pool_index % pool.requests.len()];
            Sample {
                shard: sample.shard,
                seq: sample.seq,
                body: request.last_body.clone(),
                tag: request.last_tag.clone(),
                sent_unix_ns: sample.sent_unix_ns,
                acked_unix_ns: sample.acked_unix_ns,
            }
        };
        let mut samples: Vec<Sample> = self.newest.values().map(resolve).collect();
        // Spread the random picks over the threads' reservoirs.
        let step = (self.samples.len() / SAMPLES_MAX).max(1);
        samples.extend(self.samples.iter().step_by(step).take(SAMPLES_MAX).map(resolve));
        Acknowledged {
            mode: mode.to_string(),
            follower_id,
            start_unix_ns: window.0,
            end_unix_ns: window.1,
            shards: self
                .acked
                .iter()
                .map(|(&shard, (entries, ranges))| ShardAcks { shard, entries: *entries, ranges: ranges.ranges() })
                .collect(),
            samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_when_they_touch() {
        let mut set = RangeSet::default();
        set.insert(11, 20);
        set.insert(1, 5);
        set.insert(30, 30);
        assert_eq!(set.ranges(), vec![[1, 5], [11, 20], [30, 30]]);
        set.insert(6, 10);
        assert_eq!(set.ranges(), vec![[1, 20], [30, 30]]);
        set.insert(15, 29);
        assert_eq!(set.ranges(), vec![[1, 30]]);
        set.insert(2, 3);
        assert_eq!(set.ranges(), vec![[1, 30]]);
        assert_eq!(set.len(), 30);
        assert_eq!(set.max(), Some(30));
        assert!(set.contains(30) && set.contains(1) && !set.contains(31) && !set.contains(0));
        set.insert(40, 50);
        set.insert(35, 60);
        assert_eq!(set.ranges(), vec![[1, 30], [35, 60]]);
    }

    fn sample(shard: u32, seq: u64) -> SampleRef {
        SampleRef { shard, seq, pool_index: seq as usize, sent_unix_ns: 0, acked_unix_ns: 0 }
    }

    #[test]
    fn recorder_counts_phases_and_keeps_the_newest() {
        let mut recorder = Recorder::new(1);
        recorder.ack(sample(0, 10), 10, None, 5);
        recorder.ack(sample(0, 20), 10, Some(1500), 9);
        recorder.ack(sample(1, 10), 10, Some(0), 7);
        recorder.error("http 429", || "busy".into());
        recorder.error("http 429", || unreachable!());
        assert_eq!(recorder.entries_acked, 20);
        assert_eq!(recorder.warmup_entries_acked, 10);
        assert_eq!(recorder.histogram.len(), 2);
        assert_eq!(recorder.errors["http 429"], (2, "busy".to_string()));
        assert_eq!(recorder.newest[&0].seq, 20);
        assert_eq!(recorder.acked[&0].1.ranges(), vec![[1, 20]]);
        let mut total = Recorder::new(2);
        total.merge(&recorder);
        total.merge(&recorder);
        assert_eq!(total.entries_acked, 40);
        assert_eq!(total.acked[&0].0, 40);
        assert_eq!(total.errors["http 429"].0, 4);
        assert_eq!(total.last_ack_ns, 9);
    }

    #[test]
    fn reservoir_stays_bounded() {
        let mut recorder = Recorder::new(3);
        for seq in 1..10_000 {
            recorder.ack(sample((seq % 3) as u32, seq), 1, Some(10), 0);
        }
        assert_eq!(recorder.samples.len(), SAMPLES_PER_THREAD);
        assert!(recorder.samples.iter().any(|sample| sample.seq > 5000), "later acks get picked too");
    }
}
