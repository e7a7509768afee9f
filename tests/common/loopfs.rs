//! A small ext4 filesystem on a loop device, for real ENOSPC. Needs root
//! and loop devices (as CI has); fails loudly rather than skipping.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted loop filesystem, unmounted on drop.
pub struct LoopMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

impl LoopMount {
    /// Makes and mounts a `bytes`-sized ext4 image under `root`.
    pub fn new(root: &Path, bytes: u64) -> LoopMount {
        let image = root.join("fs.img");
        let mount_point = root.join("mnt");
        std::fs::create_dir_all(&mount_point).unwrap();
        std::fs::File::create(&image).unwrap().set_len(bytes).unwrap();
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            let status = Command::new(program).args(args).status();
            let ok = status.as_ref().is_ok_and(|status| status.success());
            assert!(ok, "`{program}` failed ({status:?}): this test needs root, mkfs.ext4 and loop devices");
        };
        run("mkfs.ext4", &["-q".as_ref(), "-F".as_ref(), image.as_os_str()]);
        run("mount", &["-o".as_ref(), "loop".as_ref(), image.as_os_str(), mount_point.as_os_str()]);
        LoopMount { mount_point }
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        // io_uring tears a ring down asynchronously after its process or
        // thread is gone, holding the files it used until then, so the
        // first umount can find the filesystem busy: retry, then detach it.
        for _ in 0..50 {
            let unmounted = Command::new("umount")
                .arg(&self.mount_point)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if unmounted {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
    }
}

/// Bytes available to unprivileged writers on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> u64 {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the struct we own from a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) }, 0);
    stat.f_bavail * stat.f_frsize
}
