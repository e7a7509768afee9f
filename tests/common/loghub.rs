//! LogHub sample logs (<https://github.com/logpai/loghub>): the one way that
//! integration tests, benches (through `tests/common`) and the library's unit
//! tests (through a `#[path]` module in `src/lib.rs`) find real log text.
//!
//! The full samples (`NAME_2k.log`, 2,000 lines each) are read from
//! `../shared/data/loghub/` beside the repository when that directory exists;
//! otherwise from the subset vendored in `tests/data/loghub/` (the first
//! [`SUBSET_LINES`] lines of each, see its README and LICENSE), so that a
//! fresh clone tests on its own. A test must therefore pass with either: it
//! may count on [`SUBSET_LINES`] lines per sample and no more.
//!
//! Plain std, no dependency: the library's unit tests include this file too.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The eight samples, as `NAME` of `NAME_2k.log`.
pub const SOURCES: [&str; 8] = ["Android", "Apache", "HDFS", "Hadoop", "Linux", "OpenSSH", "Spark", "Zookeeper"];

/// Lines of each sample in the vendored subset: the fewest a test can get.
pub const SUBSET_LINES: usize = 300;

/// The full samples beside the repository (not part of it).
pub fn full_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/loghub")
}

/// The subset vendored in the repository.
pub fn subset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/loghub")
}

/// Where the samples are read from: [`full_dir`] if it exists, else [`subset_dir`].
pub fn dir() -> PathBuf {
    let full = full_dir();
    if full.is_dir() {
        full
    } else {
        subset_dir()
    }
}

/// Which samples [`dir`] gives, for the conditions a bench prints.
pub fn describe() -> String {
    if full_dir().is_dir() {
        "full samples, 2,000 lines each, from ../shared/data/loghub".to_string()
    } else {
        format!("vendored subset, the first {SUBSET_LINES} lines of each, from tests/data/loghub")
    }
}

/// Path of sample `name` (one of [`SOURCES`]).
pub fn path(name: &str) -> PathBuf {
    dir().join(format!("{name}_2k.log"))
}

/// The bytes of sample `name`, line ends included.
pub fn bytes(name: &str) -> Vec<u8> {
    let path = path(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("LogHub sample {} cannot be read: {error}", path.display()))
}

/// The lines of sample `name`, without their line ends (`\n` or `\r\n`).
pub fn lines(name: &str) -> Vec<String> {
    let bytes = bytes(name);
    let text = std::str::from_utf8(&bytes).unwrap_or_else(|error| panic!("LogHub sample {name} is not UTF-8: {error}"));
    text.lines().map(str::to_owned).collect()
}

/// The `level` tag the tests give a LogHub line, guessed from its text.
pub fn level_of(line: &str) -> &'static str {
    if line.contains("ERROR") || line.contains("error") {
        "error"
    } else if line.contains("WARN") || line.contains("warn") {
        "warn"
    } else {
        "info"
    }
}
