//! The writer half of the SIGKILL tests: appenders that print each
//! acknowledged append, so the parent knows what must survive the kill.

use std::io::Write;
use std::rc::Rc;
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
