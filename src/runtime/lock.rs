//! The data directory's lock: one process at a time owns a data directory.
//!
//! `wormdb serve` takes an exclusive `flock` on `DATA/LOCK` before it opens
//! anything in the directory and holds it for its whole life; offline
//! tools that rewrite the directory (`wormdb cluster recover`) take the same
//! lock, so they refuse to run beside a node, and a node refuses to start
//! while they run. Two nodes on one directory would both append to the
//! same segments and Raft logs, and nothing else would stop them.
//!
//! `flock` rather than a pid file: the kernel drops the lock when the
//! process dies however it dies (SIGKILL, a crash), so a stale lock never
//! needs cleaning up by hand. The lock belongs to the open file
//! description, so a second acquisition in the same process is refused as
//! well (the tests rely on it). The file holds the holder's pid, for the
//! refusal's message only.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file, in the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: a node (or a recovery) runs on the
    /// directory.
    #[error(
        "data directory {} is in use{}: {} is locked (is a node still running on it?)",
        dir.display(),
        holder.map(|pid| format!(" by process {pid}")).unwrap_or_default(),
        path.display()
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it (best effort).
        holder: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// An exclusive lock on a data directory, held until dropped (or the
/// process exits).
#[derive(Debug)]
pub struct DataDirLock {
    // Closing the file releases the lock.
    _file: std::fs::File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (which must exist), creating
    /// `data_dir/LOCK` if needed; refuses at once, without waiting, when
    /// another process (or another [`DataDirLock`] in this one) holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held { dir: data_dir.to_path_buf(), path, holder });
            }
            return Err(io(error));
        }
        // Ours now: say who holds it (only for the message above).
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join(LOCK_FILE));
        let refused = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(&refused, LockError::Held { holder: Some(pid), .. } if *pid == std::process::id()));
        let message = refused.to_string();
        assert!(message.contains(&dir.path().display().to_string()), "names the directory: {message}");
        assert!(message.contains("still running"), "{message}");
        drop(first);
        let again = DataDirLock::acquire(dir.path()).unwrap();
        drop(again);
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = DataDirLock::acquire(&missing).unwrap_err();
        assert!(matches!(error, LockError::Io { .. }), "{error}");
    }
}
