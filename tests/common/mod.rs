//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod certs;
pub mod loghub;
pub mod loopfs;
pub mod node;
pub mod not_leader;
pub mod sigkill;
pub mod tier;

use std::future::Future;
use std::path::{Path, PathBuf};

/// The Python of the tests' virtualenv (`target/test-venv`), where
/// `scripts/test-deps.sh` installs the pinned real clients.
pub fn test_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/test-deps.sh (scripts/test.sh does)", python.display());
    python
}

/// Runs `make()` on a fresh glommio executor and returns its output.
pub fn run<F, T>(make: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    wormdb::runtime::ensure_memlock(wormdb::runtime::MEMLOCK_BYTES_PER_EXECUTOR).unwrap();
    glommio::LocalExecutorBuilder::default().spawn(make).unwrap().join().unwrap()
}

/// A temporary directory on a filesystem that honours O_DIRECT (never
/// tmpfs, where glommio silently falls back to buffered I/O and durability
/// tests would prove nothing).
pub fn durable_temp_dir() -> tempfile::TempDir {
    let base = std::env::var_os("WORMDB_TEST_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).unwrap();
    assert_not_tmpfs(dir.path());
    dir
}

fn assert_not_tmpfs(path: &Path) {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs fills the struct we own from a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c_path.as_ptr(), &mut stat) }, 0);
    assert_ne!(
        stat.f_type as i64,
        TMPFS_MAGIC,
        "{} is on tmpfs: set WORMDB_TEST_DIR to an ext4/xfs directory",
        path.display()
    );
}

/// Lines of the LogHub sample `name` (see [`loghub`] for where it is read from).
pub fn loghub_lines(name: &str) -> Vec<String> {
    loghub::lines(name)
}

/// All eight LogHub samples, tagged with their source.
pub fn loghub_all() -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    for name in loghub::SOURCES {
        lines.extend(loghub_lines(name).into_iter().map(|line| (name, line)));
    }
    lines
}
