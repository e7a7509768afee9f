//! Syslog (DESIGN.md section 11): the TCP framer of RFC 6587 and the
//! message parsers of RFC 5424 and RFC 3164, pure and sans-I/O.
//!
//! The listeners (`crate::syslog`) read bytes into a [`TcpFramer`] (or take
//! one UDP datagram as one message), cut them into frames, [`parse`] each
//! frame into a [`Message`] that borrows from the read buffer, and store a
//! read's worth of messages as one append through [`with_entry_refs`].
//! Nothing is allocated per line on that path but what structured data
//! needs (its `SDID.param` keys): the goal is a million lines a second on
//! two cores.
//!
//! # Framing (RFC 6587), per message
//! - A frame that starts with a digit is octet-counted: `LEN SP MSG`, LEN
//!   decimal without leading zeros, at most [`SYSLOG_MESSAGE_BYTES_MAX`].
//!   A count that is not digits up to a space, or is too large, is a
//!   [`FrameError`]: the listener counts it, logs it and closes the
//!   connection, since nothing tells where the next frame starts.
//! - Any other frame is non-transparent: up to LF (or NUL); a CR before the
//!   LF is dropped. A line that passes [`SYSLOG_MESSAGE_BYTES_MAX`] without
//!   its LF is refused ([`Frame::TooLarge`]) and skipped up to its LF, not
//!   truncated: a truncated line would be stored as if it were whole.
//! - Empty frames (stray LF, CR or NUL between frames) are skipped.
//!
//! # Messages
//! `<PRI>1 ...` is RFC 5424; any other `<PRI>` line is RFC 3164, read as
//! leniently as rsyslog does. Whatever cannot be parsed is stored anyway,
//! at the time of arrival: a syslog server does not throw lines away (see
//! [`parse`] for what exactly).

use std::borrow::Cow;

use crate::codec::block::EntryRef;
use crate::limits::{ENTRY_FIELDS_BYTES_MAX, ENTRY_FIELDS_MAX, FIELD_KEY_BYTES_MAX, FIELD_VALUE_BYTES_MAX};
use crate::limits::{SYSLOG_MESSAGE_BYTES_MAX, SYSLOG_OCTET_COUNT_DIGITS_MAX, SYSLOG_READ_BYTES};
use crate::proto::LogEntry;

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// A stream that can no longer be cut into frames: the connection must be
/// closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// An octet count that is not `DIGITS SP` (a lying or garbled length).
    #[error("bad octet count {0:?}: expected digits and a space (RFC 6587)")]
    BadOctetCount(String),
    /// An octet count over [`SYSLOG_MESSAGE_BYTES_MAX`].
    #[error("octet count {count} is over SYSLOG_MESSAGE_BYTES_MAX ({SYSLOG_MESSAGE_BYTES_MAX})")]
    TooLarge {
        /// The count the sender gave.
        count: u64,
    },
}

/// One step of the framer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message: its byte range in [`TcpFramer::bytes`], framing removed.
    Message(std::ops::Range<usize>),
    /// A non-transparent line over [`SYSLOG_MESSAGE_BYTES_MAX`], refused;
    /// what follows it up to its LF is skipped.
    TooLarge,
}

/// Cuts a TCP byte stream into syslog frames (RFC 6587, both framings,
/// detected per frame). It owns the connection's read buffer: the caller
/// reads into [`TcpFramer::spare`], reports the count with
/// [`TcpFramer::filled`], then takes frames with [`TcpFramer::next_frame`];
/// their ranges index [`TcpFramer::bytes`] until the next `spare`.
#[derive(Debug)]
pub struct TcpFramer {
    buffer: Vec<u8>,
    /// Bytes before this are consumed (framed).
    start: usize,
    /// Bytes before this are filled.
    end: usize,
    /// Where the search for the current non-transparent frame's LF resumes.
    scanned: usize,
    /// Skipping an over-long line up to its LF.
    discarding: bool,
    message_bytes_max: usize,
}

impl Default for TcpFramer {
    fn default() -> Self {
        TcpFramer::new(SYSLOG_MESSAGE_BYTES_MAX)
    }
}

impl TcpFramer {
    /// A framer refusing messages over `message_bytes_max` (at most
    /// [`SYSLOG_MESSAGE_BYTES_MAX`]).
    pub fn new(message_bytes_max: usize) -> TcpFramer {
        assert!(message_bytes_max <= SYSLOG_MESSAGE_BYTES_MAX);
        TcpFramer { buffer: Vec::new(), start: 0, end: 0, scanned: 0, discarding: false, message_bytes_max }
    }

    /// Room to read into (at least 1 byte, usually [`SYSLOG_READ_BYTES`]):
    /// consumed bytes are dropped first, so earlier frame ranges are no
    /// longer valid. The buffer grows only while one message is longer
    /// than a read, and never past a message and its count.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        let want = (self.end + SYSLOG_READ_BYTES).min(self.message_bytes_max + SYSLOG_OCTET_COUNT_DIGITS_MAX + 2);
        let want = want.max(self.end + 1);
        if self.buffer.len() < want {
            self.buffer.resize(want, 0);
        }
        &mut self.buffer[self.end..]
    }

    /// Records that `count` bytes were read into [`TcpFramer::spare`].
    pub fn filled(&mut self, count: usize) {
        assert!(self.end + count <= self.buffer.len());
        self.end += count;
    }

    /// Copies `data` in (tests and benches; the listener reads in place).
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let spare = self.spare();
            let count = spare.len().min(data.len());
            spare[..count].copy_from_slice(&data[..count]);
            self.filled(count);
            data = &data[count..];
        }
    }

    /// The buffer the frames' ranges index.
    pub fn bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// Bytes read but not yet framed.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next frame, `None` when more bytes are needed, or an error after
    /// which the stream cannot be framed (close the connection).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.discarding {
            let found = memchr::memchr2(b'\n', 0, &self.buffer[self.start..self.end]);
            match found {
                Some(at) => {
                    self.start += at + 1;
                    self.discarding = false;
                }
                None => {
                    self.start = self.end;
                    self.scanned = self.end;
                    return Ok(None);
                }
            }
        }
        // Stray delimiters between frames make empty frames: skip them.
        while self.start < self.end && matches!(self.buffer[self.start], b'\n' | b'\r' | 0) {
            self.start += 1;
        }
        self.scanned = self.scanned.max(self.start);
        if self.start == self.end {
            return Ok(None);
        }
        if self.buffer[self.start].is_ascii_digit() {
            return self.octet_counted();
        }
        let window = &self.buffer[self.scanned..self.end];
        match memchr::memchr2(b'\n', 0, window) {
            Some(at) => {
                let line_end = self.scanned + at;
                let mut message_end = line_end;
                if message_end > self.start && self.buffer[message_end - 1] == b'\r' {
                    message_end -= 1;
                }
                let range = self.start..message_end;
                self.start = line_end + 1;
                self.scanned = self.start;
                if range.len() > self.message_bytes_max {
                    return Ok(Some(Frame::TooLarge));
                }
                Ok(Some(Frame::Message(range)))
            }
            None if self.end - self.start > self.message_bytes_max => {
                self.start = self.end;
                self.scanned = self.end;
                self.discarding = true;
                Ok(Some(Frame::TooLarge))
            }
            None => {
                self.scanned = self.end;
                Ok(None)
            }
        }
    }

    fn octet_counted(&mut self) -> Result<Option<Frame>, FrameError> {
        let available = &self.buffer[self.start..self.end];
        let digits = available.iter().take_while(|byte| byte.is_ascii_digit()).count();
        let bad = |available: &[u8]| {
            let shown = &available[..available.len().min(SYSLOG_OCTET_COUNT_DIGITS_MAX + 8)];
            FrameError::BadOctetCount(String::from_utf8_lossy(shown).into_owned())
        };
        if digits > SYSLOG_OCTET_COUNT_DIGITS_MAX {
            let count = parse_decimal(&available[..digits.min(19)]);
            return Err(FrameError::TooLarge { count });
        }
        if digits == available.len() {
            return Ok(None); // the count continues in the next read
        }
        if available[digits] != b' ' || available[0] == b'0' {
            return Err(bad(available));
        }
        let count = parse_decimal(&available[..digits]);
        if count > self.message_bytes_max as u64 {
            return Err(FrameError::TooLarge { count });
        }
        let message_start = self.start + digits + 1;
        let message_end = message_start + count as usize;
        if message_end > self.end {
            return Ok(None);
        }
        self.start = message_end;
        self.scanned = message_end;
        Ok(Some(Frame::Message(message_start..message_end)))
    }
}

fn parse_decimal(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |value, digit| value.saturating_mul(10).saturating_add(u64::from(digit - b'0')))
}

// ---------------------------------------------------------------------------
// Time zones and calendar arithmetic
// ---------------------------------------------------------------------------

/// The zone of RFC 3164 timestamps, which carry none (`--syslog-timezone`):
/// a fixed offset from UTC. IANA names (`Europe/Paris`) are not supported:
/// they would need a time zone database, and a relay that knows its zone
/// better sends RFC 5424.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    /// Seconds east of UTC.
    pub offset_s: i32,
}

impl Zone {
    /// UTC.
    pub const UTC: Zone = Zone { offset_s: 0 };

    /// Parses `UTC`, `Z`, `GMT`, or a fixed offset `+HH:MM`, `-HHMM`, `+HH`.
    pub fn parse(text: &str) -> Result<Zone, String> {
        let text = text.trim();
        if ["UTC", "Z", "GMT"].iter().any(|name| name.eq_ignore_ascii_case(text)) {
            return Ok(Zone::UTC);
        }
        let bad = || {
            format!("--syslog-timezone {text:?}: use UTC or a fixed offset such as +02:00 or -0530 (IANA names are not supported)")
        };
        let bytes = text.as_bytes();
        let sign = match bytes.first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(bad()),
        };
        let digits: Vec<u8> = bytes[1..].iter().copied().filter(|&byte| byte != b':').collect();
        let colons = bytes[1..].iter().filter(|&&byte| byte == b':').count();
        let well_formed = digits.iter().all(u8::is_ascii_digit)
            && match (digits.len(), colons) {
                (2, 0) | (4, 0) => true,
                (4, 1) => bytes.get(3) == Some(&b':'),
                _ => false,
            };
        if !well_formed {
            return Err(bad());
        }
        let hours = i32::from((digits[0] - b'0') * 10 + (digits[1] - b'0'));
        let minutes = if digits.len() == 4 { i32::from((digits[2] - b'0') * 10 + (digits[3] - b'0')) } else { 0 };
        if hours > 23 || minutes > 59 {
            return Err(bad());
        }
        Ok(Zone { offset_s: sign * (hours * 3600 + minutes * 60) })
    }
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The year of a count of days since 1970-01-01.
fn year_of_days(days: i64) -> i64 {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    year_of_era + era * 400 + i64::from(month_index >= 10)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A civil time, checked, as nanoseconds since the epoch; `None` when a
/// field is out of range or the result does not fit an `i64`.
#[allow(clippy::too_many_arguments)]
fn civil_ns(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset_s: i64,
) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - offset_s;
    seconds.checked_mul(NANOS_PER_SECOND)?.checked_add(i64::from(nanos))
}

fn digits_value(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0')))
}

/// Parses an RFC 3339 timestamp as RFC 5424 writes it
/// (`2003-08-24T05:14:15.000003-07:00`, `...Z`; up to 9 fraction digits)
/// at the start of `bytes`; returns it and its length.
fn parse_rfc3339(bytes: &[u8]) -> Option<(i64, usize)> {
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = digits_value(&bytes[0..4])?;
    let month = digits_value(&bytes[5..7])?;
    let day = digits_value(&bytes[8..10])?;
    let hour = digits_value(&bytes[11..13])?;
    let minute = digits_value(&bytes[14..16])?;
    let second = digits_value(&bytes[17..19])?;
    let mut at = 19;
    let mut nanos = 0u32;
    if bytes[at] == b'.' {
        let fraction = bytes[at + 1..].iter().take_while(|byte| byte.is_ascii_digit()).count();
        if fraction == 0 || fraction > 9 {
            return None;
        }
        nanos = digits_value(&bytes[at + 1..at + 1 + fraction])? * 10u32.pow(9 - fraction as u32);
        at += 1 + fraction;
    }
    let offset_s = match bytes.get(at)? {
        b'Z' | b'z' => {
            at += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let zone = bytes.get(at + 1..at + 6)?;
            if zone[2] != b':' {
                return None;
            }
            let (hours, minutes) = (digits_value(&zone[0..2])?, digits_value(&zone[3..5])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            at += 6;
            let offset = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let ns = civil_ns(i64::from(year), month, day, hour, minute, second, nanos, offset_s)?;
    Some((ns, at))
}

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// Parses RFC 3164's `Mmm dd hh:mm:ss` (day space-padded or not) at the
/// start of `bytes`, in `zone`, in the year of `now_ns` there (the year
/// before when that would put it more than a day ahead of `now_ns`: a
/// December line read in January); returns it and its length.
fn parse_rfc3164_time(bytes: &[u8], zone: Zone, now_ns: i64) -> Option<(i64, usize)> {
    let month = MONTHS.iter().position(|name| bytes.get(..3) == Some(&name[..]))? as u32 + 1;
    if bytes.get(3) != Some(&b' ') {
        return None;
    }
    let mut at = 4;
    if bytes.get(at) == Some(&b' ') {
        at += 1;
    }
    let day_digits = bytes[at..].iter().take(2).take_while(|byte| byte.is_ascii_digit()).count();
    let day = digits_value(&bytes[at..at + day_digits])?;
    at += day_digits;
    let clock = bytes.get(at..at + 9)?;
    if clock[0] != b' ' || clock[3] != b':' || clock[6] != b':' {
        return None;
    }
    let (hour, minute, second) =
        (digits_value(&clock[1..3])?, digits_value(&clock[4..6])?, digits_value(&clock[7..9])?);
    at += 9;
    let offset_s = i64::from(zone.offset_s);
    let year = year_of_days((now_ns / NANOS_PER_SECOND + offset_s).div_euclid(SECONDS_PER_DAY));
    let this_year = civil_ns(year, month, day, hour, minute, second, 0, offset_s);
    let ns = match this_year {
        Some(ns) if ns <= now_ns.saturating_add(SECONDS_PER_DAY * NANOS_PER_SECOND) => ns,
        _ => civil_ns(year - 1, month, day, hour, minute, second, 0, offset_s)?,
    };
    Some((ns, at))
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// Facility names, by code (RFC 5424 table 1; 13 to 15 as rsyslog and
/// syslog-ng name them).
pub const FACILITIES: [&str; 24] = [
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

/// Severity names, by code (RFC 5424 table 2), the `level` tag.
pub const SEVERITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

/// Which grammar a message was read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424.
    Rfc5424,
    /// RFC 3164 (BSD syslog).
    Rfc3164,
    /// Neither: stored whole, at the time of arrival.
    Unparsed,
}

/// One syslog message, borrowing from the frame it was parsed from. Every
/// value it holds is within the entry limits (`validate_entry` accepts the
/// entry it makes), so a batch of them is never refused for one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The grammar it was read with.
    pub format: Format,
    /// The message's time, else the time of arrival.
    pub timestamp_ns: i64,
    /// PRI as written (leading zeros dropped).
    pub priority: Option<&'a str>,
    /// `facility * 8 + severity`, when PRI parsed.
    pub priority_value: Option<u8>,
    /// HOSTNAME.
    pub hostname: Option<&'a str>,
    /// APP-NAME (RFC 3164: the TAG).
    pub app_name: Option<&'a str>,
    /// PROCID (RFC 3164: the PID in `TAG[PID]`).
    pub proc_id: Option<&'a str>,
    /// MSGID.
    pub msg_id: Option<&'a str>,
    /// STRUCTURED-DATA as `(SDID.param, value)`, escapes undone; the first
    /// of a repeated key wins.
    pub structured_data: Vec<(String, Cow<'a, str>)>,
    /// MSG (a leading BOM removed), or the whole line when unparsed.
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    fn unparsed(line: &'a [u8], now_ns: i64) -> Message<'a> {
        Message {
            format: Format::Unparsed,
            timestamp_ns: now_ns,
            priority: None,
            priority_value: None,
            hostname: None,
            app_name: None,
            proc_id: None,
            msg_id: None,
            structured_data: Vec::new(),
            body: line,
        }
    }

    /// The `facility` tag.
    pub fn facility(&self) -> Option<&'static str> {
        self.priority_value.map(|value| FACILITIES[usize::from(value >> 3)])
    }

    /// The `level` tag.
    pub fn level(&self) -> Option<&'static str> {
        self.priority_value.map(|value| SEVERITIES[usize::from(value & 7)])
    }

    /// The tags, in a fixed array (no allocation), and how many are set.
    pub fn tags(&self) -> ([(&'a str, &'a str); 4], usize) {
        let mut tags = [("", ""); 4];
        let mut count = 0;
        let candidates = [
            ("hostname", self.hostname),
            ("app_name", self.app_name),
            ("facility", self.facility()),
            ("level", self.level()),
        ];
        for (key, value) in candidates {
            if let Some(value) = value {
                tags[count] = (key, value);
                count += 1;
            }
        }
        (tags, count)
    }

    /// Appends the fields to `out`.
    pub fn fields_into<'b>(&'b self, out: &mut Vec<(&'b str, &'b str)>) {
        let candidates = [("proc_id", self.proc_id), ("msg_id", self.msg_id), ("priority", self.priority)];
        out.extend(candidates.into_iter().filter_map(|(key, value)| Some((key, value?))));
        out.extend(self.structured_data.iter().map(|(key, value)| (key.as_str(), value.as_ref())));
    }

    /// The owned entry (for a tier member, whose writes are proposed).
    pub fn to_log_entry(&self) -> LogEntry {
        let (tags, count) = self.tags();
        let mut fields = Vec::new();
        self.fields_into(&mut fields);
        LogEntry {
            timestamp_ns: self.timestamp_ns,
            tags: tags[..count].iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
            fields: fields.into_iter().map(|(key, value)| (key.to_owned(), value.to_owned())).collect(),
            body: bytes::Bytes::copy_from_slice(self.body),
            ..LogEntry::default()
        }
    }
}

/// What parsing needs beside the line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The zone of RFC 3164 timestamps.
    pub zone: Zone,
}

/// Removes one line end (`\n`, `\r\n`) from a datagram or an
/// octet-counted frame: senders often end them so, and rsyslog drops it too.
pub fn trim_line_end(frame: &[u8]) -> &[u8] {
    let frame = frame.strip_suffix(b"\n").unwrap_or(frame);
    frame.strip_suffix(b"\r").unwrap_or(frame)
}

/// Parses one message (framing removed) received at `now_ns`. Never fails:
/// - `<PRI>1 ...` is RFC 5424; a line whose header breaks that grammar (or
///   whose values pass the entry limits) is stored whole, as unparsed.
/// - Any other valid `<PRI>` is RFC 3164: `Mmm dd hh:mm:ss` (or an RFC 3339
///   time) in `options.zone`, then HOST, then `TAG[PID]:`; what is missing
///   is left out (no time: the time of arrival), the rest is the body.
/// - No valid PRI: the whole line is the body, with no tags, at `now_ns`.
pub fn parse<'a>(line: &'a [u8], now_ns: i64, options: &Options) -> Message<'a> {
    let Some((priority, value, rest)) = parse_priority(line) else {
        return Message::unparsed(line, now_ns);
    };
    if let Some(header) = rest.strip_prefix(b"1 ") {
        return parse_rfc5424(header, priority, value, now_ns).unwrap_or_else(|| Message::unparsed(line, now_ns));
    }
    parse_rfc3164(rest, priority, value, now_ns, options)
}

/// Parses [`parse`] into an owned entry: the decoder's form for callers
/// that want [`LogEntry`]s.
pub fn decode(line: &[u8], now_ns: i64, options: &Options) -> LogEntry {
    parse(line, now_ns, options).to_log_entry()
}

/// `<PRI>`: its digits as written (leading zeros dropped), its value
/// (at most 191), and what follows.
fn parse_priority(line: &[u8]) -> Option<(&str, u8, &[u8])> {
    let rest = line.strip_prefix(b"<")?;
    let digits = rest.iter().take(4).take_while(|byte| byte.is_ascii_digit()).count();
    if digits == 0 || digits > 3 || rest.get(digits) != Some(&b'>') {
        return None;
    }
    let value = digits_value(&rest[..digits])?;
    if value > 191 {
        return None;
    }
    let zeros = rest[..digits - 1].iter().take_while(|&&byte| byte == b'0').count();
    let text = std::str::from_utf8(&rest[zeros..digits]).ok()?;
    Some((text, value as u8, &rest[digits + 1..]))
}

/// The next space-separated header field of RFC 5424 (at most `max`
/// printable ASCII bytes); `None` for NILVALUE, and what follows its space.
fn header_field(bytes: &[u8], max: usize) -> Option<(Option<&str>, &[u8])> {
    let end = memchr::memchr(b' ', bytes)?;
    let field = &bytes[..end];
    if field.is_empty() || field.len() > max || !field.iter().all(|byte| (33..=126).contains(byte)) {
        return None;
    }
    let text = std::str::from_utf8(field).ok()?;
    Some(((text != "-").then_some(text), &bytes[end + 1..]))
}

fn parse_rfc5424<'a>(header: &'a [u8], priority: &'a str, value: u8, now_ns: i64) -> Option<Message<'a>> {
    let (timestamp_ns, rest) = if let Some(rest) = header.strip_prefix(b"- ") {
        (now_ns, rest)
    } else {
        let (ns, length) = parse_rfc3339(header)?;
        (ns, header.get(length..)?.strip_prefix(b" ")?)
    };
    let (hostname, rest) = header_field(rest, 255)?;
    let (app_name, rest) = header_field(rest, 48)?;
    let (proc_id, rest) = header_field(rest, 128)?;
    let (msg_id, rest) = header_field(rest, 32)?;
    let (structured_data, rest) = parse_structured_data(rest)?;
    let body = match rest {
        [] => rest,
        [b' ', body @ ..] => body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body),
        _ => return None,
    };
    Some(Message {
        format: Format::Rfc5424,
        timestamp_ns,
        priority: Some(priority),
        priority_value: Some(value),
        hostname,
        app_name,
        proc_id,
        msg_id,
        structured_data,
        body,
    })
}

/// STRUCTURED-DATA: `-`, or `[SD-ID PARAM="VALUE" ...]...`; the fields it
/// makes must stay within the entry limits (with the three of the header).
#[allow(clippy::type_complexity)]
fn parse_structured_data(bytes: &[u8]) -> Option<(Vec<(String, Cow<'_, str>)>, &[u8])> {
    if let Some(rest) = bytes.strip_prefix(b"-") {
        return Some((Vec::new(), rest));
    }
    let name_byte = |byte: &u8| (33..=126).contains(byte) && !matches!(byte, b'=' | b']' | b'"');
    let mut params: Vec<(String, Cow<'_, str>)> = Vec::new();
    let mut field_bytes = 0usize;
    let mut rest = bytes;
    while let Some(element) = rest.strip_prefix(b"[") {
        let id_length = element.iter().take_while(|byte| name_byte(byte)).count();
        if id_length == 0 || id_length > 32 {
            return None;
        }
        let id = std::str::from_utf8(&element[..id_length]).ok()?;
        rest = &element[id_length..];
        loop {
            match rest {
                [b']', after @ ..] => {
                    rest = after;
                    break;
                }
                [b' ', after @ ..] => {
                    let name_length = after.iter().take_while(|byte| name_byte(byte)).count();
                    if name_length == 0 || name_length > 32 || after.get(name_length..name_length + 2) != Some(b"=\"") {
                        return None;
                    }
                    let name = std::str::from_utf8(&after[..name_length]).ok()?;
                    let (value, after) = param_value(&after[name_length + 2..])?;
                    rest = after;
                    let key_length = id.len() + 1 + name.len();
                    if key_length > FIELD_KEY_BYTES_MAX || value.len() > FIELD_VALUE_BYTES_MAX {
                        return None;
                    }
                    let mut key = String::with_capacity(key_length);
                    key.push_str(id);
                    key.push('.');
                    key.push_str(name);
                    if params.iter().any(|(held, _)| *held == key) {
                        continue; // a repeated parameter: the first wins
                    }
                    field_bytes += key_length + value.len();
                    if params.len() + 3 >= ENTRY_FIELDS_MAX || field_bytes > ENTRY_FIELDS_BYTES_MAX / 2 {
                        return None;
                    }
                    params.push((key, value));
                }
                _ => return None,
            }
        }
    }
    if rest.len() == bytes.len() {
        return None; // neither `-` nor an element
    }
    Some((params, rest))
}

/// A PARAM-VALUE up to its closing quote, with `\"`, `\\` and `\]`
/// undone (a backslash before anything else stays, RFC 5424 section 6.3.3).
fn param_value(bytes: &[u8]) -> Option<(Cow<'_, str>, &[u8])> {
    let mut at = 0;
    let mut escaped = false;
    loop {
        let found = memchr::memchr2(b'"', b'\\', &bytes[at..])?;
        at += found;
        if bytes[at] == b'"' {
            break;
        }
        escaped = true;
        at += 2;
        if at > bytes.len() {
            return None;
        }
    }
    let raw = std::str::from_utf8(&bytes[..at]).ok()?;
    let rest = &bytes[at + 1..];
    if !escaped {
        return Some((Cow::Borrowed(raw), rest));
    }
    let mut value = String::with_capacity(raw.len());
    let mut characters = raw.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            value.push(character);
            continue;
        }
        match characters.next() {
            Some(next @ ('"' | '\\' | ']')) => value.push(next),
            Some(next) => {
                value.push('\\');
                value.push(next);
            }
            None => value.push('\\'),
        }
    }
    Some((Cow::Owned(value), rest))
}

fn parse_rfc3164<'a>(rest: &'a [u8], priority: &'a str, value: u8, now_ns: i64, options: &Options) -> Message<'a> {
    let mut message = Message {
        format: Format::Rfc3164,
        timestamp_ns: now_ns,
        priority: Some(priority),
        priority_value: Some(value),
        hostname: None,
        app_name: None,
        proc_id: None,
        msg_id: None,
        structured_data: Vec::new(),
        body: rest,
    };
    let time = parse_rfc3164_time(rest, options.zone, now_ns).or_else(|| parse_rfc3339(rest));
    let Some((timestamp_ns, length)) = time else {
        return message; // no header: the rest is the message
    };
    let Some(after_time) = rest[length..].strip_prefix(b" ") else {
        return message;
    };
    message.timestamp_ns = timestamp_ns;
    message.body = after_time;
    let mut after_host = after_time;
    // HOST, unless the first word is already the tag (`su[12]:`, `cron:`).
    if let Some(end) = memchr::memchr(b' ', after_time) {
        let word = &after_time[..end];
        let is_tag = word.ends_with(b":") || word.contains(&b'[');
        let printable = word.iter().all(|byte| (33..=126).contains(byte));
        if !is_tag && printable && !word.is_empty() && word.len() <= 255 && word != b"-" {
            message.hostname = std::str::from_utf8(word).ok();
            after_host = &after_time[end + 1..];
            message.body = after_host;
        }
    }
    if let Some((app_name, proc_id, body)) = parse_tag(after_host) {
        message.app_name = Some(app_name);
        message.proc_id = proc_id;
        message.body = body;
    }
    message
}

/// RFC 3164's `TAG[PID]: ` or `TAG: ` at the start of `bytes` (TAG at most
/// 48 bytes, like RFC 5424's APP-NAME); `None` when there is none.
fn parse_tag(bytes: &[u8]) -> Option<(&str, Option<&str>, &[u8])> {
    let tag_length = bytes.iter().take(49).take_while(|byte| !matches!(byte, b':' | b'[' | b' ' | 0..=32)).count();
    if tag_length == 0 || tag_length > 48 {
        return None;
    }
    let tag = std::str::from_utf8(&bytes[..tag_length]).ok()?;
    let mut rest = &bytes[tag_length..];
    let mut proc_id = None;
    if let Some(after) = rest.strip_prefix(b"[") {
        let pid_length = memchr::memchr(b']', &after[..after.len().min(129)])?;
        let pid = &after[..pid_length];
        if pid.is_empty() || !pid.iter().all(|byte| (33..=126).contains(byte)) {
            return None;
        }
        proc_id = Some(std::str::from_utf8(pid).ok()?);
        rest = &after[pid_length + 1..];
    }
    let body = rest.strip_prefix(b":")?;
    Some((tag, proc_id, body.strip_prefix(b" ").unwrap_or(body)))
}

/// Calls `append` with borrowed entries of `messages`: the tags and fields
/// of the whole batch in two allocations, none per message.
pub fn with_entry_refs<T>(messages: &[Message<'_>], append: impl FnOnce(&[EntryRef<'_>]) -> T) -> T {
    let mut tags: Vec<(&str, &str)> = Vec::with_capacity(messages.len() * 4);
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(messages.len() * 3);
    let mut bounds: Vec<(usize, usize)> = Vec::with_capacity(messages.len());
    for message in messages {
        let (message_tags, count) = message.tags();
        tags.extend_from_slice(&message_tags[..count]);
        message.fields_into(&mut fields);
        bounds.push((tags.len(), fields.len()));
    }
    let mut refs = Vec::with_capacity(messages.len());
    let (mut tags_start, mut fields_start) = (0, 0);
    for (message, &(tags_end, fields_end)) in messages.iter().zip(&bounds) {
        refs.push(EntryRef {
            timestamp_ns: message.timestamp_ns,
            tags: &tags[tags_start..tags_end],
            body: message.body,
            fields: &fields[fields_start..fields_end],
        });
        (tags_start, fields_start) = (tags_end, fields_end);
    }
    append(&refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::block::validate_entry;

    /// 2026-12-06T12:00:00Z
    const NOW: i64 = 1_796_558_400 * NANOS_PER_SECOND;

    fn utc() -> Options {
        Options::default()
    }

    fn frames(framer: &mut TcpFramer) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut out = Vec::new();
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(range))) => out.push(Ok(framer.bytes()[range].to_vec())),
                Ok(Some(Frame::TooLarge)) => out.push(Ok(b"<too large>".to_vec())),
                Ok(None) => return out,
                Err(error) => {
                    out.push(Err(error));
                    return out;
                }
            }
        }
    }

    #[test]
    fn the_reference_instant_is_what_it_says() {
        assert_eq!(civil_ns(2026, 12, 6, 12, 0, 0, 0, 0), Some(NOW));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        for days in [-1, 0, 59, 365, 10_957, 20_000, 20_453, 20_819] {
            let year = year_of_days(days);
            assert!(days_from_civil(year, 1, 1) <= days && days < days_from_civil(year + 1, 1, 1), "{days}");
        }
    }

    #[test]
    fn framing_is_detected_per_message_across_reads() {
        let mut framer = TcpFramer::default();
        let stream = b"12 <13>1 - - x\n<14>line two\r\n\n5 abcde<15>three\x00";
        for chunk in stream.chunks(3) {
            framer.feed(chunk);
        }
        let got: Vec<_> = frames(&mut framer).into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            [b"<13>1 - - x\n".to_vec(), b"<14>line two".to_vec(), b"abcde".to_vec(), b"<15>three".to_vec()]
        );
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn frames_split_byte_by_byte_come_out_whole() {
        let mut framer = TcpFramer::default();
        let mut got = Vec::new();
        for &byte in b"8 <13>abcd<14>ef\n12 <15>x" {
            framer.feed(&[byte]);
            got.extend(frames(&mut framer).into_iter().map(Result::unwrap));
        }
        assert_eq!(got, [b"<13>abcd".to_vec(), b"<14>ef".to_vec()]);
        assert_eq!(framer.buffered(), b"12 <15>x".len());
    }

    #[test]
    fn lying_octet_counts_are_errors() {
        for (stream, expected) in [
            (&b"12x <13>hello"[..], "bad octet count"),
            (b"0 <13>", "bad octet count"),
            (b"012 <13>hello world", "bad octet count"),
            (b"99999999 x", "over SYSLOG_MESSAGE_BYTES_MAX"),
            (b"262145 <13>", "over SYSLOG_MESSAGE_BYTES_MAX"),
            (b"12\n<13>hello", "bad octet count"),
        ] {
            let mut framer = TcpFramer::default();
            framer.feed(stream);
            let error = framer.next_frame().unwrap_err().to_string();
            assert!(error.contains(expected), "{stream:?}: {error}");
        }
        let mut framer = TcpFramer::default();
        framer.feed(b"262144 ");
        assert_eq!(framer.next_frame(), Ok(None), "the limit itself is fine; the message is awaited");
    }

    #[test]
    fn an_over_long_line_is_refused_and_the_stream_goes_on() {
        let mut framer = TcpFramer::new(16);
        let mut got = Vec::new();
        for piece in [
            &b"<13>short\n<13>this line is far too long for the limit"[..],
            b" and goes on",
            b" and on\n<13>next\n<13>sixteen-byte\n<13>seventeen-byte\n",
        ] {
            for chunk in piece.chunks(8) {
                framer.feed(chunk);
                got.extend(frames(&mut framer).into_iter().map(Result::unwrap));
            }
            assert!(framer.bytes().len() <= 16 + SYSLOG_OCTET_COUNT_DIGITS_MAX + 2, "the buffer stays bounded");
        }
        let expected: [&[u8]; 5] = [b"<13>short", b"<too large>", b"<13>next", b"<13>sixteen-byte", b"<too large>"];
        assert_eq!(got, expected.map(<[u8]>::to_vec));
    }

    #[test]
    fn rfc5424_maps_every_part() {
        let mut line = br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 8710 ID47 [exampleSDID@32473 iut="3" eventSource="App\"lic\]ation" eventID="1011"][examplePriority@32473 class="high"] "#.to_vec();
        line.extend_from_slice(b"\xEF\xBB\xBFAn application event");
        let message = parse(&line, NOW, &utc());
        assert_eq!(message.format, Format::Rfc5424);
        assert_eq!(message.timestamp_ns, 1_065_910_455_003_000_000);
        let (tags, count) = message.tags();
        assert_eq!(
            tags[..count],
            [
                ("hostname", "mymachine.example.com"),
                ("app_name", "evntslog"),
                ("facility", "local4"),
                ("level", "notice")
            ]
        );
        let mut fields = Vec::new();
        message.fields_into(&mut fields);
        assert_eq!(
            fields,
            [
                ("proc_id", "8710"),
                ("msg_id", "ID47"),
                ("priority", "165"),
                ("exampleSDID@32473.iut", "3"),
                ("exampleSDID@32473.eventSource", "App\"lic]ation"),
                ("exampleSDID@32473.eventID", "1011"),
                ("examplePriority@32473.class", "high"),
            ]
        );
        assert_eq!(message.body, b"An application event");
    }

    #[test]
    fn rfc5424_nil_values_are_left_out() {
        let message = parse(b"<34>1 - - - - - -", NOW, &utc());
        assert_eq!(message.format, Format::Rfc5424);
        assert_eq!(message.timestamp_ns, NOW, "no time: the time of arrival");
        let (tags, count) = message.tags();
        assert_eq!(tags[..count], [("facility", "auth"), ("level", "crit")]);
        let mut fields = Vec::new();
        message.fields_into(&mut fields);
        assert_eq!(fields, [("priority", "34")]);
        assert_eq!(message.body, b"");
    }

    #[test]
    fn rfc5424_timestamps_with_zones_and_fractions() {
        for (text, expected) in [
            ("1985-04-12T23:20:50.52Z", 482_196_050_520_000_000),
            ("1985-04-12T19:20:50.52-04:00", 482_196_050_520_000_000),
            ("2003-08-24T05:14:15.000003-07:00", 1_061_727_255_000_003_000),
            ("2003-08-24T05:14:15.123456789+00:00", 1_061_702_055_123_456_789),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000_000_000),
        ] {
            let line = format!("<13>1 {text} h a p m - body");
            assert_eq!(parse(line.as_bytes(), NOW, &utc()).timestamp_ns, expected, "{text}");
        }
        for bad in ["2003-13-01T00:00:00Z", "2023-02-29T00:00:00Z", "2003-08-24T24:00:00Z", "2003-08-24T05:14:15"] {
            let line = format!("<13>1 {bad} h a p m - body");
            let message = parse(line.as_bytes(), NOW, &utc());
            assert_eq!((message.format, message.body), (Format::Unparsed, line.as_bytes()), "{bad}");
            assert_eq!(message.timestamp_ns, NOW);
        }
    }

    #[test]
    fn rfc3164_with_host_tag_and_pid() {
        let message = parse(b"<38>Dec  6 11:59:58 web-1 sshd[4242]: Accepted publickey for root", NOW, &utc());
        assert_eq!(message.format, Format::Rfc3164);
        assert_eq!(message.timestamp_ns, NOW - 2 * NANOS_PER_SECOND);
        let (tags, count) = message.tags();
        assert_eq!(
            tags[..count],
            [("hostname", "web-1"), ("app_name", "sshd"), ("facility", "auth"), ("level", "info")]
        );
        assert_eq!((message.proc_id, message.msg_id), (Some("4242"), None));
        assert_eq!(message.body, b"Accepted publickey for root");
    }

    #[test]
    fn rfc3164_year_zone_and_missing_parts() {
        let plus_two = Options { zone: Zone::parse("+02:00").unwrap() };
        let message = parse(b"<13>Dec  6 14:00:00 host app: x", NOW, &plus_two);
        assert_eq!(message.timestamp_ns, NOW, "14:00 at +02:00 is 12:00 UTC");
        let message = parse(b"<13>Dec 31 23:00:00 host app: x", NOW, &utc());
        assert_eq!(message.timestamp_ns, civil_ns(2025, 12, 31, 23, 0, 0, 0, 0).unwrap(), "a December line in January");
        let message = parse(b"<13>Dec  6 11:00:00 cron: no host", NOW, &utc());
        assert_eq!((message.hostname, message.app_name, message.body), (None, Some("cron"), &b"no host"[..]));
        let message = parse(b"<13>Dec  6 11:00:00 host just words", NOW, &utc());
        assert_eq!((message.hostname, message.app_name, message.body), (Some("host"), None, &b"just words"[..]));
        let message = parse(b"<13>no header at all", NOW, &utc());
        assert_eq!(
            (message.format, message.timestamp_ns, message.body),
            (Format::Rfc3164, NOW, &b"no header at all"[..])
        );
        assert_eq!(message.level(), Some("notice"));
        let message = parse(b"<13>2024-01-02T03:04:05.5+01:00 h t: rsyslog's high-precision form", NOW, &utc());
        assert_eq!(message.timestamp_ns, civil_ns(2024, 1, 2, 2, 4, 5, 500_000_000, 0).unwrap());
        assert_eq!((message.hostname, message.app_name), (Some("h"), Some("t")));
    }

    #[test]
    fn anything_else_is_stored_whole() {
        for line in [&b"no priority"[..], b"<192>too high", b"<1x>", b"", b"<>", b"<0013>four digits", b"\xff\xfe"] {
            let message = parse(line, NOW, &utc());
            assert_eq!((message.format, message.timestamp_ns, message.body), (Format::Unparsed, NOW, line));
            assert_eq!(message.tags().1, 0);
        }
        assert_eq!(parse(b"<013>x", NOW, &utc()).priority, Some("13"));
        assert_eq!(parse(b"<0>x", NOW, &utc()).priority, Some("0"));
    }

    #[test]
    fn zones_parse_or_say_what_is_accepted() {
        for (text, offset_s) in
            [("UTC", 0), ("z", 0), ("+02:00", 7200), ("-0530", -19_800), ("+05", 18_000), ("-00:30", -1800)]
        {
            assert_eq!(Zone::parse(text), Ok(Zone { offset_s }), "{text}");
        }
        for bad in ["Europe/Paris", "+2", "+24:00", "+02:60", "02:00", "+02:0"] {
            assert!(Zone::parse(bad).unwrap_err().contains("fixed offset"), "{bad}");
        }
    }

    #[test]
    fn repeated_sd_params_keep_the_first_and_limits_make_the_line_unparsed() {
        let message = parse(br#"<13>1 - h a - - [x a="1" a="2"][x a="3"][x.a b="4"][x a.b="5"] m"#, NOW, &utc());
        let expected = [("x.a", "1"), ("x.a.b", "4")].map(|(key, value)| (key.to_string(), Cow::Borrowed(value)));
        assert_eq!(message.structured_data, expected, "the same key from two elements: the first wins");
        let huge = format!("<13>1 - h a - - [x a=\"{}\"] m", "v".repeat(FIELD_VALUE_BYTES_MAX + 1));
        assert_eq!(parse(huge.as_bytes(), NOW, &utc()).format, Format::Unparsed);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Whatever arrives makes an entry the shard accepts: one bad line
        /// never gets a batch refused.
        #[test]
        fn any_line_makes_a_valid_entry(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                                        prefix in proptest::sample::select(vec![&b""[..], b"<13>1 ", b"<13>", b"<13>Dec  6 11:00:00 ", b"<13>1 - h a - - [x "])) {
            let mut bytes = prefix.to_vec();
            bytes.extend_from_slice(&line);
            let message = parse(&bytes, NOW, &utc());
            with_entry_refs(std::slice::from_ref(&message), |refs| {
                validate_entry(&refs[0]).unwrap();
            });
        }

        /// Any stream cut anywhere frames the same as whole.
        #[test]
        fn framing_does_not_depend_on_read_sizes(lines in proptest::collection::vec("[a-z <>0-9]{0,40}", 1..20), cut in 1usize..50, counted in proptest::prelude::any::<u32>()) {
            let mut stream = Vec::new();
            for (index, line) in lines.iter().enumerate() {
                let line = format!("<1>{line}");
                if counted >> (index % 32) & 1 == 1 {
                    stream.extend_from_slice(format!("{} {line}", line.len()).as_bytes());
                } else {
                    stream.extend_from_slice(line.as_bytes());
                    stream.push(b'\n');
                }
            }
            let mut whole = TcpFramer::default();
            whole.feed(&stream);
            let expected = frames(&mut whole);
            let mut pieces = TcpFramer::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                pieces.feed(chunk);
                got.extend(frames(&mut pieces));
            }
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
