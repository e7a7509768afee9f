//! Both halves of the SIGKILL tests. The child: appenders that print each
//! acknowledged append, so the parent knows what must survive the kill.
//! The parent: runs the child, kills it, and checks every acknowledged
//! entry after the reopen.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wormdb::shard::{EntryRef, Shard};

/// The body of entry `index` of round `round` of `appender` in run `run`.
pub type Body = fn(&[String], u64, u64, u64, u64) -> String;

/// Spawns 8 appenders on `shard` that append batches of 1 to 40 entries
/// (tag `run=sigkill`, bodies from `body`) until 30 s after `started`,
/// printing `ACK first last appender round` on stdout after each durable
/// append; backpressure is waited out.
pub fn spawn_acking_appenders(
    shard: &Shard,
    lines: &Rc<Vec<String>>,
    body: Body,
    run: u64,
    started: Instant,
) -> Vec<glommio::Task<()>> {
    (0..8u64)
        .map(|appender| {
            let shard = shard.clone();
            let lines = lines.clone();
            glommio::spawn_local(async move {
                let mut round = 0u64;
                while started.elapsed() < Duration::from_secs(30) {
                    let count = 1 + (appender * 13 + round * 7) % 40;
                    let bodies: Vec<String> =
                        (0..count).map(|index| body(&lines, run, appender, round, index)).collect();
                    let tags = [("run", "sigkill")];
                    let entries: Vec<EntryRef<'_>> = bodies
                        .iter()
                        .map(|text| EntryRef {
                            fields: &[],
                            timestamp_ns: 1 + round as i64,
                            tags: &tags,
                            body: text.as_bytes(),
                        })
                        .collect();
                    match shard.append(&entries) {
                        Ok(wait) => {
                            let range = wait.durable().await.unwrap();
                            let mut stdout = std::io::stdout().lock();
                            writeln!(stdout, "ACK {} {} {appender} {round}", range.first, range.last).unwrap();
                            stdout.flush().unwrap();
                            round += 1;
                        }
                        Err(wormdb::shard::Error::Backpressure { .. }) => {
                            glommio::timer::sleep(Duration::from_millis(1)).await
                        }
                        Err(error) => panic!("append failed: {error}"),
                    }
                }
            })
        })
        .collect()
}

/// One `ACK first last appender round` line of a child run `run`.
pub struct Ack {
    pub run: u64,
    pub first: u64,
    pub last: u64,
    pub appender: u64,
    pub round: u64,
}

impl Ack {
    /// Parses an `ACK` line the appenders print; `None` for any other line.
    pub fn parse(line: &str, run: u64) -> Option<Ack> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() != Some(&"ACK") || fields.len() != 5 {
            return None;
        }
        let number = |index: usize| fields[index].parse::<u64>().unwrap();
        Some(Ack { run, first: number(1), last: number(2), appender: number(3), round: number(4) })
    }
}

/// One run of a child writer: this test binary run again with only its
/// child test, whose acknowledgements a thread collects.
pub struct ChildRun {
    run: u64,
    child: Child,
    reader: JoinHandle<Vec<Ack>>,
}

impl ChildRun {
    /// Starts the test `test` of this binary (an exact name) with `env` set,
    /// as run `run`; sends `()` on `ready` for each line of its stdout that
    /// `ready_on` accepts.
    pub fn spawn<'a>(
        test: &str,
        env: impl IntoIterator<Item = (&'a str, &'a OsStr)>,
        run: u64,
        ready: Sender<()>,
        ready_on: fn(&str) -> bool,
    ) -> ChildRun {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if ready_on(&line) {
                    let _ = ready.send(());
                }
                acks.extend(Ack::parse(&line, run));
            }
            acks
        });
        ChildRun { run, child, reader }
    }

    /// SIGKILLs the child and returns what it acknowledged before, which
    /// must be something.
    pub fn kill(mut self) -> Vec<Ack> {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        let acks = self.reader.join().unwrap();
        assert!(!acks.is_empty(), "run {}: the child acknowledged nothing before the kill", self.run);
        acks
    }
}

/// The body each acknowledged seq was given.
pub fn expected_bodies(acks: &[Ack], lines: &[String], body: Body) -> HashMap<u64, String> {
    acks.iter()
        .flat_map(|ack| {
            (ack.first..=ack.last).map(move |seq| (seq, body(lines, ack.run, ack.appender, ack.round, seq - ack.first)))
        })
        .collect()
}

/// Reads `shard` from seq 1 up to its durable seq, which must reach every
/// acknowledged one: seqs dense, each acknowledged entry whole, with the
/// body it was given. Returns the durable seq.
pub async fn check_acknowledged(shard: &Shard, expected: &HashMap<u64, String>, run: u64) -> u64 {
    let durable = shard.durable_seq();
    let acked_max = expected.keys().copied().max().unwrap_or(0);
    assert!(durable >= acked_max, "run {run}: recovered up to {durable}, but {acked_max} was acknowledged");
    // Read back in pages (a read returns at most READ_ENTRIES_MAX).
    let mut next = 1;
    while next <= durable {
        let entries = shard.read_from(next, 200_000).await.unwrap();
        assert!(!entries.is_empty(), "run {run}: nothing at seq {next} of {durable}");
        for entry in &entries {
            assert_eq!(entry.seq, next, "run {run}: seqs are dense");
            if let Some(text) = expected.get(&entry.seq) {
                assert_eq!(std::str::from_utf8(&entry.body).unwrap(), text.as_str(), "run {run}: seq {next}");
            }
            next += 1;
        }
    }
    assert_eq!(next, durable + 1);
    durable
}
