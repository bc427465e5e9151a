//! The thread pool of vpipe's CPU kernels.
//!
//! A network runs one short parallel loop per layer, a few hundred per image. On
//! rayon's pool each such loop sends the calling thread to sleep and wakes it again
//! when the workers are done: on two cores the kernel's scheduler then took about a
//! quarter of MobileViT-XXS's CPU time. This pool works the way ONNX Runtime's does:
//!
//! - the calling thread takes part in its loop, so a pool of `n` threads starts
//!   `n - 1` workers and nothing is handed over when `n` is 1;
//! - between loops the workers spin for a short while ([`SPIN`]) before they sleep,
//!   so the next layer's loop starts without a system call;
//! - the items of a loop are claimed one at a time from a shared counter, so uneven
//!   items balance out.
//!
//! One loop runs at a time. A loop started while another runs (from a second
//! thread, or from inside an item) runs its items on the calling thread alone.
//! The pool has as many threads as rayon's global pool, which
//! [`crate::device::set_cpu_threads`] sizes.

use std::cell::{Cell, UnsafeCell};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::device::CPU_THREAD_PREFIX;

/// How long an idle worker (or a caller waiting for the workers) spins before it
/// sleeps (yields, for the caller). Long enough to bridge the gap between two
/// layers; longer spins (500 µs was tried) took cores from a pipeline's decoding and
/// encoding threads after each frame: `pipelines/detect.yaml` on `assets/street.mp4`
/// ran at 72-84 fps with 500 µs and 82-91 fps with 50 µs.
pub const SPIN: Duration = Duration::from_micros(50);

thread_local! {
    /// Whether this thread is running items of a loop (a worker always is).
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// The loop being run: its body and item count.
#[derive(Clone, Copy)]
struct Job {
    body: *const (dyn Fn(usize) + Sync),
    count: usize,
}

struct Pool {
    /// Worker threads running (the caller is one more).
    workers: AtomicUsize,
    /// Bumped for each loop; workers wait for it to change.
    epoch: AtomicUsize,
    /// The current loop, written before `epoch` is bumped.
    job: UnsafeCell<Job>,
    /// The next item to claim.
    next: AtomicUsize,
    /// Workers done with the current loop.
    finished: AtomicUsize,
    /// Whether an item of the current loop panicked.
    panicked: AtomicBool,
    /// Workers asleep on `wake`.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// Held by the thread whose loop runs.
    running: Mutex<()>,
}

// SAFETY: `job` is written only by the thread holding `running`, before the epoch
// bump that publishes it, and read by workers only after they saw that bump; the
// body it points to is `Sync` and outlives the loop (the caller waits for every
// worker before it returns).
unsafe impl Sync for Pool {}
// SAFETY: as above.
unsafe impl Send for Pool {}

/// The body of the loop before the first.
const NO_LOOP: &(dyn Fn(usize) + Sync) = &|_| {};

static POOL: OnceLock<&'static Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let workers = crate::device::cpu_threads().saturating_sub(1);
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            workers: AtomicUsize::new(workers),
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(Job {
                body: NO_LOOP,
                count: 0,
            }),
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            running: Mutex::new(()),
        }));
        let started = (0..workers)
            .filter(|i| {
                std::thread::Builder::new()
                    .name(format!("{CPU_THREAD_PREFIX}p{i}"))
                    .spawn(move || pool.work())
                    .is_ok()
            })
            .count();
        if started < workers {
            // Loops wait for the workers that started, and only for them.
            tracing::warn!("could start only {started} of {workers} CPU worker threads");
            pool.workers.store(started, Ordering::SeqCst);
        }
        pool
    })
}

impl Pool {
    /// A worker's life: wait for a loop, claim its items, report, repeat.
    fn work(&self) {
        IN_LOOP.set(true);
        let mut seen = 0;
        loop {
            seen = self.wait_for_loop(seen);
            // SAFETY: published by the epoch bump just seen (see `Sync` above).
            let job = unsafe { *self.job.get() };
            self.claim_items(job);
            self.finished.fetch_add(1, Ordering::Release);
        }
    }

    /// Waits until the epoch differs from `seen`: spinning for [`SPIN`], then
    /// asleep. Returns the new epoch.
    fn wait_for_loop(&self, seen: usize) -> usize {
        let mut spin = Spin::new();
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            if epoch != seen {
                return epoch;
            }
            if spin.once_and_expired() {
                break;
            }
        }
        let mut guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            if epoch != seen {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return epoch;
            }
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs items of `job` until none is left; a panicking item is recorded and
    /// the remaining ones still run (the caller re-raises the panic).
    fn claim_items(&self, job: Job) {
        // SAFETY: the body outlives the loop (see `Sync` above).
        let body = unsafe { &*job.body };
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= job.count {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| body(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Runs `body` over `0..count` with every worker.
    fn run(&self, count: usize, body: &(dyn Fn(usize) + Sync)) {
        // SAFETY: only the lifetime is erased; the body is used only until every
        // worker reported below, before this function returns.
        let body: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(body) };
        // SAFETY: the caller holds `running`, and every worker finished the last
        // loop, so nobody reads `job` now.
        unsafe { *self.job.get() = Job { body, count } };
        self.next.store(0, Ordering::Relaxed);
        self.finished.store(0, Ordering::Relaxed);
        self.panicked.store(false, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        self.claim_items(Job { body, count });
        let mut spin = Spin::new();
        let workers = self.workers.load(Ordering::Relaxed);
        while self.finished.load(Ordering::Acquire) < workers {
            if spin.once_and_expired() {
                std::thread::yield_now();
            }
        }
        if self.panicked.load(Ordering::Relaxed) {
            resume_unwind(Box::new("a parallel CPU kernel item panicked"));
        }
    }
}

/// A busy wait's clock: the time is read every 256 spins only.
struct Spin {
    start: Instant,
    spins: u32,
}

impl Spin {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            spins: 0,
        }
    }

    /// Spins once; true when, on a 256th spin, [`SPIN`] has passed since the start.
    fn once_and_expired(&mut self) -> bool {
        std::hint::spin_loop();
        self.spins = self.spins.wrapping_add(1);
        self.spins.is_multiple_of(256) && self.start.elapsed() > SPIN
    }
}

/// Runs `body(i)` for every `i` in `0..count` on the CPU threads and returns when
/// all have run. Items run in no particular order, each exactly once.
pub fn for_each(count: usize, body: impl Fn(usize) + Sync) {
    let serial = |body: &dyn Fn(usize)| (0..count).for_each(body);
    if count <= 1 || IN_LOOP.get() {
        return serial(&body);
    }
    let pool = pool();
    if pool.workers.load(Ordering::Relaxed) == 0 {
        return serial(&body);
    }
    let Ok(_running) = pool.running.try_lock() else {
        // Another thread's loop holds the workers.
        return serial(&body);
    };
    IN_LOOP.set(true);
    let result = catch_unwind(AssertUnwindSafe(|| pool.run(count, &body)));
    IN_LOOP.set(false);
    if let Err(panic) = result {
        resume_unwind(panic);
    }
}

/// Runs `body(i, chunk)` for each `chunk`-long piece of `data` (the last may be
/// shorter), `i` counting from 0, on the CPU threads.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    body: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(chunk > 0, "for_each_chunk_mut: chunk length 0");
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    for_each(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        let end = (start + chunk).min(len);
        // SAFETY: each item gets its own disjoint piece of `data`, which the caller
        // lends mutably for the whole loop.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        body(i, piece);
    });
}

/// A pointer that may cross threads (each item touches its own part).
struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: used only for disjoint pieces, see `for_each_chunk_mut`.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the whole wrapper).
    fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_including_nested_and_concurrent_loops() {
        let hits: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        for_each(hits.len(), |i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));

        // A loop inside an item, and loops from several threads at once.
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for_each(20, |_| {
                        for_each(10, |_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    });
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 600);

        let mut data = vec![0usize; 103];
        for_each_chunk_mut(&mut data, 10, |i, piece| {
            piece.iter_mut().for_each(|v| *v = i)
        });
        assert!(data.iter().enumerate().all(|(j, &v)| v == j / 10));
    }

    #[test]
    fn a_panicking_item_reaches_the_caller_and_the_pool_still_works() {
        let caught = catch_unwind(|| {
            for_each(64, |i| {
                if i == 33 {
                    panic!("item 33");
                }
            })
        });
        assert!(caught.is_err());
        let count = AtomicUsize::new(0);
        for_each(64, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }
}
