//! CPU time per stage, so that stage shares stay meaningful when stages compete
//! for fewer cores than there are threads (wall-clock time would count the time a
//! stage waits for a core as its own).

use std::time::Duration;

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec and the clock ids are supported by Linux.
    let ok = unsafe { libc::clock_gettime(id, &mut ts) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time used by the calling thread so far.
pub fn thread() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time used by the whole process so far.
pub fn process() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time used so far by the live threads whose name starts with `prefix`
/// (from `/proc/self/task`, at the kernel's tick resolution).
pub fn threads_named(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0.0;
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total += (get(11) + get(12)) / ticks;
    }
    Duration::from_secs_f64(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_clock_includes_the_thread_clock() {
        // The thread's clock is read first: the process clock, read after it,
        // includes at least that much (an ordering of two readings, not a timing).
        let t = thread();
        let p = process();
        assert!(p >= t, "{p:?} < {t:?}");
        assert_eq!(threads_named("no-such-thread-"), Duration::ZERO);
    }
}
