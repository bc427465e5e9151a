//! CPU time per stage, so that stage shares stay meaningful when stages compete
//! for fewer cores than there are threads (wall-clock time would count the time a
//! stage waits for a core as its own).
//!
//! The calling thread's and the process's clocks come from the cpu-time crate, and
//! the named threads' times from the procfs crate (issue 17: it parses
//! `/proc/self/task` as the hand-written code did, a little faster, and without libc).

use std::time::Duration;

/// CPU time used by the calling thread so far.
pub fn thread() -> Duration {
    ::cpu_time::ThreadTime::try_now().map_or(Duration::ZERO, |t| t.as_duration())
}

/// CPU time used by the whole process so far.
pub fn process() -> Duration {
    ::cpu_time::ProcessTime::try_now().map_or(Duration::ZERO, |t| t.as_duration())
}

/// CPU time used so far by the live threads whose name starts with `prefix`
/// (from `/proc/self/task`, at the kernel's tick resolution).
pub fn threads_named(prefix: &str) -> Duration {
    let Ok(tasks) = procfs::process::Process::myself().and_then(|p| p.tasks()) else {
        return Duration::ZERO;
    };
    let ticks: u64 = tasks
        .flatten()
        .filter_map(|task| task.stat().ok())
        .filter(|stat| stat.comm.starts_with(prefix))
        .map(|stat| stat.utime + stat.stime)
        .sum();
    Duration::from_secs_f64(ticks as f64 / procfs::ticks_per_second().max(1) as f64)
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

    #[test]
    fn a_named_thread_is_counted_while_it_lives() {
        // The thread spins until its own clock shows 100 ms, then waits to be let go,
        // so that it is still listed when its name is looked up.
        let (spun, done) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("cpu-time-test-spin".into())
            .spawn(move || {
                while thread() < Duration::from_millis(100) {
                    std::hint::black_box(0u64);
                }
                spun.send(thread()).unwrap();
                let _ = released.recv();
            })
            .unwrap();
        let own = done.recv().unwrap();
        let named = threads_named("cpu-time-test-");
        release.send(()).unwrap();
        worker.join().unwrap();
        assert!(
            named > Duration::ZERO && named <= own + Duration::from_millis(50),
            "{named:?} against the thread's own {own:?}"
        );
    }
}
