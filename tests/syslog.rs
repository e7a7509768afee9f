//! Syslog ingest (DESIGN.md section 11) with real senders: util-linux
//! `logger` (RFC 5424 and 3164, TCP with both framings, UDP), rsyslog
//! forwarding over TCP (`omfwd`, octet-counted) and syslog-ng's `network()`
//! destination. Each sends LogHub lines; the test reads back body, tags,
//! fields and time exactly, from what the sender says it sent (`logger -s`
//! prints each message, rsyslog and syslog-ng also write it to a file with
//! the same template). Plus malformed streams, and backpressure: TCP stops
//! reading and loses nothing, UDP counts its drops.
//!
//! The senders are installed by `scripts/test-deps.sh`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::node::{get, TestNode};
use serde_json::{json, Value};

/// A node with both syslog listeners, and their ports.
struct SyslogNode {
    node: TestNode,
    tcp: u16,
    udp: u16,
    _dir: tempfile::TempDir,
}

fn start(extra: &[&str]) -> SyslogNode {
    start_on(None, extra)
}

/// [`start`], on a gRPC port chosen beforehand when given (a tier member).
fn start_on(grpc_port: Option<u16>, extra: &[&str]) -> SyslogNode {
    let dir = common::durable_temp_dir();
    let mut args = vec!["--shards", "2", "--syslog-tcp-addr", "127.0.0.1:0", "--syslog-udp-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let node = match grpc_port {
        Some(port) => TestNode::start_on(dir.path(), port, &args),
        None => TestNode::start(dir.path(), &args),
    };
    let port = |marker: &str| -> u16 {
        let log = node.log_text();
        let line = log.lines().find(|line| line.contains(marker)).unwrap_or_else(|| panic!("no {marker:?}:\n{log}"));
        let addr = line.split(marker).nth(1).unwrap().split_whitespace().next().unwrap();
        addr.rsplit(':').next().unwrap().parse().unwrap()
    };
    let (tcp, udp) = (port("syslog tcp listening on "), port("syslog udp listening on "));
    SyslogNode { node, tcp, udp, _dir: dir }
}

/// Entries with tag `key=value`, once there are `count` of them (bounded wait).
fn wait_entries(node: &TestNode, key: &str, value: &str, count: usize) -> Vec<Value> {
    let url = node.url(&format!("/v1/entries?tag={key}={value}&limit={}", count + 10));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let entries = get(&url).lines();
        if entries.len() >= count || Instant::now() > deadline {
            assert_eq!(entries.len(), count, "entries with {key}={value}");
            return entries;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sum over shards of a `wormdb_protocol_*` counter.
fn metric(node: &TestNode, name: &str, protocol: &str, reason: Option<&str>) -> u64 {
    let text = get(&node.url("/metrics")).body;
    let protocol = format!("protocol=\"{protocol}\"");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(&protocol))
        .filter(|line| reason.is_none_or(|reason| line.contains(&format!("reason=\"{reason}\""))))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn healthy(node: &TestNode) {
    assert_eq!(get(&node.url("/healthz")).status, 200);
}

/// What a query answers, reduced to what the test checks.
fn seen(entries: &[Value]) -> Vec<Value> {
    let mut seen: Vec<Value> = entries
        .iter()
        .map(|entry| {
            json!({ "ts": entry["ts"], "tags": entry["tags"], "fields": entry.get("fields").cloned().unwrap_or(json!({})), "body": entry["body"] })
        })
        .collect();
    seen.sort_by_key(|entry| (entry["ts"].as_i64(), entry["body"].as_str().map(str::to_owned)));
    seen
}

fn sorted(mut expected: Vec<Value>) -> Vec<Value> {
    expected.sort_by_key(|entry| (entry["ts"].as_i64(), entry["body"].as_str().map(str::to_owned)));
    expected
}

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const LEVELS: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

/// A message as a sender printed it, split into what wormdb must store.
/// Written independently of the server's parser: only the shapes these
/// senders use.
fn expected_from_sent(sent: &str) -> Value {
    expected_from_sent_in(sent, 0)
}

/// [`expected_from_sent`] for a sender whose RFC 3164 times are
/// `offset_s` seconds east of UTC.
fn expected_from_sent_in(sent: &str, offset_s: i64) -> Value {
    // `logger -s --octet-count` prints the count too.
    let sent = match sent.split_once(' ') {
        Some((count, message)) if count.bytes().all(|byte| byte.is_ascii_digit()) => message,
        _ => sent,
    };
    let (priority, rest) = sent.strip_prefix('<').unwrap().split_once('>').unwrap();
    let value: usize = priority.parse().unwrap();
    let mut tags = BTreeMap::from([
        ("facility".to_string(), FACILITIES[value / 8].to_string()),
        ("level".to_string(), LEVELS[value % 8].to_string()),
    ]);
    let mut fields = BTreeMap::from([("priority".to_string(), priority.to_string())]);
    let (ts, body);
    if let Some(rest) = rest.strip_prefix("1 ") {
        // <PRI>1 TS HOST APP PROCID MSGID SD MSG
        let parts: Vec<&str> = rest.splitn(6, ' ').collect();
        ts = time::OffsetDateTime::parse(parts[0], &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp_nanos() as i64;
        for (key, part) in [("hostname", parts[1]), ("app_name", parts[2])] {
            if part != "-" {
                tags.insert(key.into(), part.into());
            }
        }
        for (key, part) in [("proc_id", parts[3]), ("msg_id", parts[4])] {
            if part != "-" {
                fields.insert(key.into(), part.into());
            }
        }
        let mut sd_and_msg = parts[5];
        if let Some(after) = sd_and_msg.strip_prefix("- ") {
            sd_and_msg = after;
        } else {
            // [ID k="v" ...][ID k="v"] MSG (values without escapes here)
            while let Some(element) = sd_and_msg.strip_prefix('[') {
                let end = element.find(']').unwrap();
                let mut words = element[..end].split(' ');
                let id = words.next().unwrap();
                for param in words {
                    let (name, quoted) = param.split_once('=').unwrap();
                    fields.insert(format!("{id}.{name}"), quoted.trim_matches('"').to_string());
                }
                sd_and_msg = &element[end + 1..];
            }
            sd_and_msg = sd_and_msg.strip_prefix(' ').unwrap_or(sd_and_msg);
        }
        body = sd_and_msg.to_string();
    } else {
        // <PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG, in UTC, this year
        let (stamp, rest) = rest.split_at(15);
        let year = time::OffsetDateTime::now_utc().year();
        let format = time::format_description::parse_borrowed::<2>(
            "[year] [month repr:short] [day padding:space] [hour]:[minute]:[second]",
        )
        .unwrap();
        ts = time::PrimitiveDateTime::parse(&format!("{year} {stamp}"), &format)
            .unwrap()
            .assume_utc()
            .unix_timestamp_nanos() as i64
            - offset_s * 1_000_000_000;
        let (host, rest) = rest.trim_start().split_once(' ').unwrap();
        tags.insert("hostname".into(), host.into());
        let (tag, message) = rest.split_once(": ").unwrap();
        match tag.split_once('[') {
            Some((app, pid)) => {
                tags.insert("app_name".into(), app.into());
                fields.insert("proc_id".into(), pid.trim_end_matches(']').into());
            }
            None => {
                tags.insert("app_name".into(), tag.into());
            }
        }
        body = message.to_string();
    }
    json!({ "ts": ts, "tags": tags, "fields": fields, "body": body })
}

/// LogHub lines for a test: `count` of `sample`, without blank ones.
fn lines(sample: &str, count: usize) -> Vec<String> {
    let lines: Vec<String> =
        common::loghub_lines(sample).into_iter().filter(|line| !line.trim().is_empty()).take(count).collect();
    assert!(lines.len() >= count.min(common::loghub::SUBSET_LINES - 10), "{sample}: {} lines", lines.len());
    lines
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.iter().map(|line| format!("{line}\n")).collect::<String>()).unwrap();
    path
}

/// Runs `logger ARGS -s -f FILE` in zone `tz` and returns the messages it
/// printed, one per line sent.
fn logger(args: &[&str], file: &Path, tz: &str) -> Vec<String> {
    let output = Command::new("logger")
        .args(args)
        .args(["-s", "--size", "65536", "-f"])
        .arg(file)
        .env("TZ", tz)
        .output()
        .expect("logger runs (scripts/test-deps.sh installs bsdutils)");
    assert!(output.status.success(), "logger failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stderr).unwrap().lines().map(str::to_owned).collect()
}

fn check_logger(node: &SyslogNode, sample: &str, app: &str, args: &[&str]) {
    check_logger_in(node, sample, app, args, ("UTC", 0));
}

/// [`check_logger`] with `logger` in zone `tz`, `offset_s` east of UTC.
fn check_logger_in(node: &SyslogNode, sample: &str, app: &str, args: &[&str], (tz, offset_s): (&str, i64)) {
    let dir = tempfile::tempdir().unwrap();
    let lines = lines(sample, 200);
    let file = write_lines(dir.path(), "lines.txt", &lines);
    let sent = logger(args, &file, tz);
    assert_eq!(sent.len(), lines.len(), "logger sent one message a line");
    let expected: Vec<Value> = sent.iter().map(|sent| expected_from_sent_in(sent, offset_s)).collect();
    let bodies: Vec<&str> = expected.iter().map(|entry| entry["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, lines, "the bodies are the LogHub lines");
    let entries = wait_entries(&node.node, "app_name", app, lines.len());
    assert_eq!(seen(&entries), sorted(expected));
}

#[test]
fn logger_rfc5424_over_tcp_both_framings_and_udp() {
    let node = start(&[]);
    let (tcp, udp) = (node.tcp.to_string(), node.udp.to_string());
    let server = ["--server", "127.0.0.1"];
    // Non-transparent framing (LF), with structured data and a facility.
    let sd = ["--sd-id", "loghub@32473", "--sd-param", "source=\"HDFS\"", "--sd-param", "shard=\"a\""];
    let mut args = vec![server[0], server[1], "--port", &tcp, "--tcp", "-t", "hdfs-5424", "-p", "local3.warning"];
    args.extend_from_slice(&sd);
    check_logger(&node, "HDFS", "hdfs-5424", &args);
    // Octet counting, a message id and a pid.
    let args = [
        server[0],
        server[1],
        "--port",
        &tcp,
        "--tcp",
        "--octet-count",
        "-t",
        "spark-5424",
        "-p",
        "daemon.err",
        "--msgid",
        "ID47",
        "-i",
    ];
    check_logger(&node, "Spark", "spark-5424", &args);
    // UDP.
    let args = [server[0], server[1], "--port", &udp, "--udp", "-t", "linux-5424", "-p", "auth.info"];
    check_logger(&node, "Linux", "linux-5424", &args);
    assert!(metric(&node.node, "wormdb_protocol_entries_total", "syslog-tcp", None) >= 400);
    assert!(metric(&node.node, "wormdb_protocol_entries_total", "syslog-udp", None) >= 200);
    healthy(&node.node);
}

#[test]
fn logger_rfc3164_over_tcp_both_framings_and_udp() {
    let node = start(&[]);
    let (tcp, udp) = (node.tcp.to_string(), node.udp.to_string());
    let base = ["--server", "127.0.0.1", "--rfc3164"];
    let args = [base[0], base[1], base[2], "--port", &tcp, "--tcp", "-t", "openssh", "-p", "authpriv.notice", "-i"];
    check_logger(&node, "OpenSSH", "openssh", &args);
    let args =
        [base[0], base[1], base[2], "--port", &tcp, "--tcp", "--octet-count", "-t", "zookeeper", "-p", "local7.debug"];
    check_logger(&node, "Zookeeper", "zookeeper", &args);
    let args = [base[0], base[1], base[2], "--port", &udp, "--udp", "-t", "android", "-p", "user.crit"];
    check_logger(&node, "Android", "android", &args);
    healthy(&node.node);
}

#[test]
fn rfc3164_times_are_read_in_the_syslog_timezone() {
    let node = start(&["--syslog-timezone", "+02:00"]);
    let tcp = node.tcp.to_string();
    let args =
        ["--server", "127.0.0.1", "--rfc3164", "--port", &tcp, "--tcp", "-t", "apache-east", "-p", "local1.info"];
    // A POSIX TZ (no zone database needed) counts west: UTC-2 is +02:00.
    check_logger_in(&node, "Apache", "apache-east", &args, ("UTC-2", 7200));
    // RFC 5424 carries its own offset: the flag does not apply.
    let args = ["--server", "127.0.0.1", "--port", &tcp, "--tcp", "-t", "apache-5424-east"];
    check_logger_in(&node, "Apache", "apache-5424-east", &args, ("UTC-2", 0));
}

#[test]
fn a_tier_member_stores_syslog_through_its_groups() {
    let port = common::node::free_port();
    let peers = format!("1=127.0.0.1:{port}");
    let node = start_on(Some(port), &["--node-id", "1", "--peers", &peers]);
    let (tcp, udp) = (node.tcp.to_string(), node.udp.to_string());
    // Until the groups elect their leader, batches wait and are retried.
    let args =
        ["--server", "127.0.0.1", "--port", &tcp, "--tcp", "--octet-count", "-t", "tier-tcp", "-p", "local0.info"];
    check_logger(&node, "OpenSSH", "tier-tcp", &args);
    // UDP syslog is lossy by contract: a datagram that comes while a group
    // has no leader (a re-election on a loaded machine) is counted as
    // dropped, not retried. So send until one is stored, each line its own.
    let args = ["--server", "127.0.0.1", "--port", &udp, "--udp", "-t", "tier-udp"];
    let dir = tempfile::tempdir().unwrap();
    let url = node.node.url("/v1/entries?tag=app_name=tier-udp&limit=100");
    let mut sent = Vec::new();
    let entries = 'sent: {
        for attempt in 0..20 {
            let file = write_lines(dir.path(), "one.txt", &[format!("line {attempt} over UDP")]);
            sent.extend(logger(&args, &file, "UTC"));
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                let entries = get(&url).lines();
                if !entries.is_empty() {
                    break 'sent entries;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("none of {} UDP lines was stored", sent.len());
    };
    let expected: Vec<Value> = sent.iter().map(|line| expected_from_sent(line)).collect();
    for entry in seen(&entries) {
        assert!(expected.contains(&entry), "{entry} is none of the lines sent: {expected:?}");
    }
    assert_eq!(entries[0]["node"], 0, "stored by the tier: ids (0, group, seq)");
}

/// A sender run as a foreground child, stopped when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.0.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.0.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The lines `path` holds once it has `count` of them (bounded wait).
fn wait_file_lines(path: &Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= count || Instant::now() > deadline {
            assert_eq!(lines.len(), count, "{} has every line", path.display());
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rsyslog_forwards_over_tcp_octet_counted() {
    let node = start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("apache.log");
    let sent = dir.path().join("sent.log");
    let config = dir.path().join("rsyslog.conf");
    std::fs::write(&input, "").unwrap();
    std::fs::write(
        &config,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imfile")
input(type="imfile" file="{input}" tag="apache" facility="local5" severity="info")
template(name="wire" type="string" string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% %STRUCTURED-DATA% %msg%\n")
action(type="omfile" file="{sent}" template="wire")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="octet-counted" template="wire")
"#,
            dir = dir.path().display(),
            input = input.display(),
            sent = sent.display(),
            port = node.tcp,
        ),
    )
    .unwrap();
    let daemon = Daemon(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd runs (scripts/test-deps.sh installs rsyslog)"),
    );
    let lines = lines("Apache", 200);
    // Written after rsyslog watches the file: imfile reads what is appended.
    std::thread::sleep(Duration::from_millis(500));
    let mut file = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    for line in &lines {
        writeln!(file, "{line}").unwrap();
    }
    drop(file);
    let sent = wait_file_lines(&sent, lines.len());
    let expected: Vec<Value> = sent.iter().map(|sent| expected_from_sent(sent)).collect();
    let entries = wait_entries(&node.node, "app_name", "apache", lines.len());
    drop(daemon);
    let bodies: Vec<&str> = expected.iter().map(|entry| entry["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, lines);
    assert_eq!(seen(&entries), sorted(expected));
    assert!(entries.iter().all(|entry| entry["tags"]["facility"] == "local5" && entry["tags"]["level"] == "info"));
}

/// syslog-ng: on the PATH, or unpacked into target/syslog-ng by
/// scripts/test-deps.sh (its package conflicts with rsyslog's).
fn syslog_ng() -> (PathBuf, Vec<String>, Vec<(String, String)>) {
    if let Ok(output) = Command::new("sh").args(["-c", "command -v syslog-ng"]).output() {
        if output.status.success() {
            let path = String::from_utf8(output.stdout).unwrap().trim().to_string();
            return (PathBuf::from(path), Vec::new(), Vec::new());
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/syslog-ng");
    let binary = root.join("usr/sbin/syslog-ng");
    assert!(binary.exists(), "syslog-ng is missing: run scripts/test-deps.sh");
    let libraries = root.join("usr/lib/syslog-ng");
    let modules = std::fs::read_dir(&libraries)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.is_dir())
        .expect("the syslog-ng modules directory");
    (
        binary,
        vec![format!("--module-path={}", modules.display())],
        vec![("LD_LIBRARY_PATH".to_string(), libraries.display().to_string())],
    )
}

#[test]
fn syslog_ng_network_destination() {
    let node = start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hadoop.log");
    let sent = dir.path().join("sent.log");
    let config = dir.path().join("syslog-ng.conf");
    let lines = lines("Hadoop", 200);
    write_lines(dir.path(), "hadoop.log", &lines);
    // network() sends its own default (RFC 3164) format; the file gets the
    // same message in that format, so the test knows what was sent.
    std::fs::write(
        &config,
        format!(
            r#"@version: 3.38
options {{ keep-hostname(no); }};
source s_file {{ file("{input}" follow-freq(0.1) flags(no-parse) program-override("hadoop") default-facility(local2) default-priority(warning)); }};
destination d_wormdb {{ network("127.0.0.1" port({port}) transport("tcp")); }};
destination d_sent {{ file("{sent}" template("<${{PRI}}>${{DATE}} ${{HOST}} ${{MSGHDR}}${{MSG}}\n")); }};
log {{ source(s_file); destination(d_wormdb); destination(d_sent); }};
"#,
            input = input.display(),
            sent = sent.display(),
            port = node.tcp,
        ),
    )
    .unwrap();
    let (binary, args, env) = syslog_ng();
    let daemon = Daemon(
        Command::new(binary)
            .arg("-F")
            .arg("-f")
            .arg(&config)
            .args(args)
            .arg(format!("--persist-file={}", dir.path().join("persist").display()))
            .arg(format!("--pidfile={}", dir.path().join("pid").display()))
            .arg(format!("--control={}", dir.path().join("ctl").display()))
            .envs(env)
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sent = wait_file_lines(&sent, lines.len());
    let expected: Vec<Value> = sent.iter().map(|sent| expected_from_sent(sent)).collect();
    let entries = wait_entries(&node.node, "app_name", "hadoop", lines.len());
    drop(daemon);
    let bodies: Vec<&str> = expected.iter().map(|entry| entry["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, lines);
    assert_eq!(seen(&entries), sorted(expected));
}

/// Sends `bytes` on a new connection; whether the server closed it.
fn send_raw(port: u16, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(bytes).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    matches!(stream.read_to_end(&mut rest), Ok(0))
}

#[test]
fn malformed_streams_store_nothing_bad_and_are_counted() {
    let node = start(&[]);
    let all = |node: &TestNode| get(&node.url("/v1/entries?limit=100")).lines();
    // A lying octet count: the connection is closed, what came after is
    // not stored, what came before is.
    let stream = b"26 <13>1 - h lie - - - before12x <13>1 - h lie - - - never\n<13>1 - h lie - - - after\n";
    assert!(send_raw(node.tcp, stream));
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&node.node, "wormdb_protocol_refused_total", "syslog-tcp", Some("malformed")) < 1 {
        assert!(Instant::now() < deadline, "the lying count is counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A count over the limit closes the connection too.
    assert!(send_raw(node.tcp, b"99999999 <13>1 - h lie - - - huge\n"));
    // An over-long line is refused; the line after it is stored.
    let mut long = b"<13>1 - h big - - - ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 300 * 1024));
    long.extend_from_slice(b"\n<13>1 - h big - - - after the long line\n");
    send_raw(node.tcp, &long);
    let after = wait_entries(&node.node, "app_name", "big", 1);
    assert_eq!(after[0]["body"], "after the long line");
    assert_eq!(wait_entries(&node.node, "app_name", "lie", 1)[0]["body"], "before");
    // Garbage is not thrown away: stored whole, untagged, at arrival.
    let before = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    send_raw(node.tcp, b"\x01\x02 not syslog at all\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let garbage = loop {
        let entries = all(&node.node);
        if let Some(entry) = entries.iter().find(|entry| entry["body"] == "\u{1}\u{2} not syslog at all") {
            break entry.clone();
        }
        assert!(Instant::now() < deadline, "garbage stored: {entries:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let after = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    assert_eq!(garbage["tags"], json!({}));
    assert!((before..=after).contains(&garbage["ts"].as_i64().unwrap()));
    assert_eq!(all(&node.node).len(), 3, "before, after the long line, the garbage: nothing else");
    assert_eq!(metric(&node.node, "wormdb_protocol_refused_total", "syslog-tcp", Some("malformed")), 2);
    assert_eq!(metric(&node.node, "wormdb_protocol_refused_total", "syslog-tcp", Some("too_large")), 1);
    healthy(&node.node);
}

#[test]
fn tcp_backpressure_stops_reading_and_loses_nothing() {
    // One append may wait for a commit per shard: concurrent senders are
    // refused by the shard time and again, and must wait, not drop.
    let node = start(&["--max-pending-appends", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let base = lines("HDFS", 2000);
    let senders = 4;
    let per_sender = 3000;
    let children: Vec<_> = (0..senders)
        .map(|sender| {
            let lines: Vec<String> =
                (0..per_sender).map(|index| format!("{sender}-{index} {}", base[index % base.len()])).collect();
            let file = write_lines(dir.path(), &format!("lines-{sender}.txt"), &lines);
            let port = node.tcp.to_string();
            Command::new("logger")
                .args(["--server", "127.0.0.1", "--port", &port, "--tcp", "--octet-count", "-t", "pressure"])
                .args(["--size", "65536", "-f"])
                .arg(file)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let entries = wait_entries(&node.node, "app_name", "pressure", senders * per_sender);
    let mut bodies: Vec<&str> = entries.iter().map(|entry| entry["body"].as_str().unwrap()).collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), senders * per_sender, "every line, once");
    let paused = metric(&node.node, "wormdb_protocol_refused_total", "syslog-tcp", Some("backpressure"));
    assert!(paused > 0, "the shard pushed back ({paused} pauses) and nothing was lost");
    healthy(&node.node);
}

#[test]
fn udp_drops_under_backpressure_are_counted() {
    let node = start(&["--max-pending-appends", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let base = lines("Linux", 2000);
    let lines: Vec<String> = (0..20_000).map(|index| format!("{index} {}", base[index % base.len()])).collect();
    let file = write_lines(dir.path(), "lines.txt", &lines);
    let port = node.udp.to_string();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new("logger")
                .args(["--server", "127.0.0.1", "--port", &port, "--udp", "-t", "flood", "--size", "65536", "-f"])
                .arg(&file)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let sent = 4 * lines.len() as u64;
    // Datagrams the kernel dropped (a full socket buffer) are counted
    // nowhere: wait until the counts settle rather than for all of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u64::MAX, u64::MAX);
    let mut steady = 0;
    let (stored, dropped) = loop {
        let stored = metric(&node.node, "wormdb_protocol_entries_total", "syslog-udp", None);
        let dropped = metric(&node.node, "wormdb_protocol_dropped_total", "syslog-udp", None);
        steady = if (stored, dropped) == last { steady + 1 } else { 0 };
        last = (stored, dropped);
        if stored + dropped >= sent || steady >= 5 || Instant::now() > deadline {
            break (stored, dropped);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(dropped > 0, "a backpressured shard drops datagrams and counts them ({stored} stored)");
    assert!(stored > 0 && stored + dropped <= sent, "{stored} + {dropped} of {sent}");
    let entries = get(&node.node.url(&format!("/v1/entries?tag=app_name=flood&limit={sent}"))).lines();
    assert_eq!(entries.len() as u64, stored, "what is counted stored can be read");
    healthy(&node.node);
}
