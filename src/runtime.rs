//! Process-level setup that glommio needs: the locked-memory limit.

/// Locked memory we ask for per executor, so that io_uring can register
/// glommio's DMA buffer pool (10 MiB) on its three rings with room to spare.
pub const MEMLOCK_BYTES_PER_EXECUTOR: u64 = 64 * 1024 * 1024;

/// Below this, glommio refuses to start an executor at all.
pub const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;

/// Raises `RLIMIT_MEMLOCK` towards `wanted` bytes if it is lower (the soft
/// limit up to the hard one; the hard one too when running with
/// CAP_SYS_RESOURCE). Returns the limit in force afterwards.
///
/// A limit under `wanted` still works: glommio then skips registering its
/// buffers (slightly slower I/O). Only a limit under [`MEMLOCK_BYTES_MIN`],
/// where glommio cannot start, is an error, and its message says what to
/// change.
pub fn ensure_memlock(wanted: u64) -> Result<u64, String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err(format!("getrlimit(RLIMIT_MEMLOCK): {}", std::io::Error::last_os_error()));
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit { rlim_cur: wanted, rlim_max: limit.rlim_max.max(wanted) };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
        return Ok(wanted);
    }
    let soft_only = libc::rlimit { rlim_cur: wanted.min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: as above.
    let in_force = if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft_only) } == 0 {
        soft_only.rlim_cur
    } else {
        limit.rlim_cur
    };
    if in_force < MEMLOCK_BYTES_MIN {
        return Err(format!(
            "RLIMIT_MEMLOCK is {in_force} bytes, under the {MEMLOCK_BYTES_MIN} that io_uring needs, and could \
             not be raised: run as root, set `LimitMEMLOCK=infinity` in the systemd unit, or `ulimit -l unlimited`"
        ));
    }
    if in_force < wanted {
        tracing::warn!(
            limit_bytes = in_force,
            wanted_bytes = wanted,
            "RLIMIT_MEMLOCK is low; io_uring buffer registration may be skipped (raise it with `ulimit -l`)"
        );
    }
    Ok(in_force)
}
