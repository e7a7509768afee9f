//! Process-level setup: the locked-memory limit glommio needs, the CPUs
//! the executors may use, and the lock that gives one process a data
//! directory ([`lock`]).

pub mod lock;

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

/// The CPUs this process may run on (its affinity mask, as `taskset`,
/// `systemd`'s `CPUAffinity=` or a container's cpuset left it), in
/// ascending order. Never empty: if the mask cannot be read, CPU 0 up to
/// the available parallelism.
///
/// Executors are pinned to these, shard `i` to the `i`-th (modulo their
/// number), and never to CPU numbers counted from 0: glommio's
/// `Placement::Fixed(n)` pins to CPU `n` itself, which under `taskset -c 1`
/// would put shard 0 on CPU 0, outside the mask the operator chose.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most size_of::<cpu_set_t>() bytes
    // into the set we own; pid 0 is the calling thread, which is the main
    // thread here, before any executor starts.
    let read = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    let cpus: Vec<usize> = if read {
        // SAFETY: CPU_ISSET reads the set we own; the index is in range.
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        let count = std::thread::available_parallelism().map(|count| count.get()).unwrap_or(1);
        return (0..count).collect();
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_cpus_follow_the_affinity_mask() {
        // Run on a thread of its own, so that narrowing its mask leaves the
        // test harness alone.
        std::thread::spawn(|| {
            let all = allowed_cpus();
            assert!(!all.is_empty());
            assert!(all.windows(2).all(|pair| pair[0] < pair[1]), "ascending: {all:?}");
            let last = *all.last().expect("not empty");
            // SAFETY: as in allowed_cpus; the set is ours.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(last, &mut set);
                assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
            }
            assert_eq!(allowed_cpus(), vec![last], "the mask a `taskset -c {last}` would set");
        })
        .join()
        .expect("the test thread");
    }
}
