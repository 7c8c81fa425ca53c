//! A persistent worker pool for the ~200 matrix products of every decoded token.
//!
//! Why not rayon: a decode step is a chain of short (10-100 µs) operations, and waking rayon's
//! sleeping workers through the kernel for each of them cost ~10% of decode time. Here the workers
//! spin for a short while after each operation (so the next one, a few microseconds later, starts
//! without a system call), then park on a condition variable. One operation is published with a
//! single atomic store; the calling thread works on it too; tasks are claimed from an atomic counter,
//! so uneven tasks balance themselves. Dispatching allocates nothing.
//!
//! The pool is global and sized by [`set_num_threads`] (the CLI's `-t`): `n` threads in all, the
//! caller plus `n - 1` workers. Operations from several threads are serialized; a call made from
//! inside a task runs inline.

use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins for the next operation before parking.
const SPIN: Duration = Duration::from_micros(300);

/// Flag bit of `Shared::joined`.
const OPEN: usize = 1 << (usize::BITS - 1);

type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per operation (and at shutdown); workers wait for it to change.
    epoch: AtomicU64,
    /// The current operation. Written only by the dispatcher while every worker has finished the
    /// previous epoch, read by workers only after they saw the new epoch (Release/Acquire on `epoch`).
    job: UnsafeCell<Option<Job<'static>>>,
    n_tasks: AtomicUsize,
    next: AtomicUsize,
    /// `OPEN` while the caller still accepts helpers, plus the number of workers that joined. A worker
    /// that wakes late (descheduled on a busy machine) finds the operation closed and skips it, so the
    /// caller never waits for a thread that is not running.
    joined: AtomicUsize,
    /// Joined workers done with the current epoch.
    finished: AtomicUsize,
    sleepers: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

// SAFETY: `job` is the only non-Sync field; its accesses are ordered by the epoch/finished protocol
// described on the field (one writer while no reader can be active).
unsafe impl Sync for Shared {}

struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

thread_local! {
    /// Set on worker threads and on the caller while it runs tasks: nested calls run inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);
/// Threads requested with [`set_num_threads`] (0: not set, use the CPU count).
static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static DEFAULT: AtomicUsize = AtomicUsize::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the number of threads that run operations (caller included). Restarts the workers if the
/// pool already runs with another size. `0` means one per available CPU.
pub fn set_num_threads(n: usize) {
    let mut g = lock(&POOL);
    REQUESTED.store(n, Ordering::Relaxed);
    let want = num_threads();
    if g.as_ref().is_some_and(|p| p.threads != want) {
        *g = None; // joins the old workers
    }
}

/// The number of threads operations are split over.
pub fn num_threads() -> usize {
    let r = REQUESTED.load(Ordering::Relaxed);
    if r > 0 {
        return r;
    }
    let d = DEFAULT.load(Ordering::Relaxed);
    if d > 0 {
        return d;
    }
    let d = std::thread::available_parallelism().map_or(1, |n| n.get());
    DEFAULT.store(d, Ordering::Relaxed);
    d
}

/// Runs `f(i)` for every `i < n_tasks` on the pool's threads (the caller included) and returns
/// when all are done. A panic in a task is propagated to the caller after every task finished.
pub fn run(n_tasks: usize, f: impl Fn(usize) + Sync) {
    if n_tasks == 0 {
        return;
    }
    if n_tasks == 1 || IN_TASK.with(Cell::get) || num_threads() <= 1 {
        (0..n_tasks).for_each(f);
        return;
    }
    let mut g = lock(&POOL);
    let want = num_threads();
    if g.as_ref().is_none_or(|p| p.threads != want) {
        *g = None;
        *g = Some(Pool::new(want));
    }
    if let Some(p) = g.as_ref() {
        p.run(n_tasks, &f);
    }
}

/// Splits `data` into chunks of `chunk` elements (the last may be shorter) and runs
/// `f(chunk_index, chunk)` for each on the pool.
///
/// # Panics
/// If `chunk == 0`.
pub fn for_each_chunk_mut<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    assert!(chunk > 0, "for_each_chunk_mut: chunk size 0");
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    run(len.div_ceil(chunk), |i| {
        let a = i * chunk;
        let n = chunk.min(len - a);
        // SAFETY: task i is run exactly once and its range a..a+n lies inside `data` and is disjoint
        // from every other task's; `data` is mutably borrowed for the whole call.
        let c = unsafe { std::slice::from_raw_parts_mut(base.get().add(a), n) };
        f(i, c)
    });
}

/// Like [`for_each_chunk_mut`] over two slices at once: task `i` gets chunk `i` of `a` (size `ca`)
/// and chunk `i` of `b` (size `cb`). The task count is set by `a`.
///
/// # Panics
/// If a chunk size is 0 or `b` has fewer than `a.len().div_ceil(ca)` chunks.
pub fn for_each_chunk_pair_mut<A: Send, B: Send>(
    a: &mut [A],
    ca: usize,
    b: &mut [B],
    cb: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    assert!(ca > 0 && cb > 0, "for_each_chunk_pair_mut: chunk size 0");
    let (la, lb) = (a.len(), b.len());
    let tasks = la.div_ceil(ca);
    assert!(
        lb.div_ceil(cb) >= tasks,
        "for_each_chunk_pair_mut: {tasks} chunks of a, only {} of b",
        lb.div_ceil(cb)
    );
    let (pa, pb) = (SendPtr(a.as_mut_ptr()), SendPtr(b.as_mut_ptr()));
    run(tasks, |i| {
        let (oa, ob) = (i * ca, i * cb);
        let (na, nb) = (ca.min(la - oa), cb.min(lb - ob));
        // SAFETY: as in for_each_chunk_mut: each task's ranges are disjoint and inside the slices,
        // which are mutably borrowed for the whole call (ob < lb because b has at least `tasks` chunks).
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts_mut(pa.get().add(oa), na),
                std::slice::from_raw_parts_mut(pb.get().add(ob), nb),
            )
        };
        f(i, x, y)
    });
}

/// [`for_each_chunk_mut`] over several slices in one operation (one wake-up and one barrier instead of
/// one per slice): slice `k` is cut into chunks of `chunk[k]` elements and `f(k, chunk_index, chunk)`
/// runs once for each chunk of each slice.
///
/// # Panics
/// If a chunk size is 0.
pub fn for_each_chunk_of_mut<T: Send, const K: usize>(
    data: [&mut [T]; K],
    chunk: [usize; K],
    f: impl Fn(usize, usize, &mut [T]) + Sync,
) {
    assert!(chunk.iter().all(|&c| c > 0), "for_each_chunk_of_mut: chunk size 0");
    let lens: [usize; K] = std::array::from_fn(|k| data[k].len());
    let counts: [usize; K] = std::array::from_fn(|k| lens[k].div_ceil(chunk[k]));
    let ptrs = data.map(|d| SendPtr(d.as_mut_ptr()));
    let total: usize = counts.iter().sum();
    run(total, |mut i| {
        let mut k = 0;
        while i >= counts[k] {
            i -= counts[k];
            k += 1;
        }
        let a = i * chunk[k];
        let n = chunk[k].min(lens[k] - a);
        // SAFETY: task (k, i) is run exactly once; its range a..a+n lies inside slice k and is
        // disjoint from every other task's; every slice is mutably borrowed for the whole call.
        let c = unsafe { std::slice::from_raw_parts_mut(ptrs[k].get().add(a), n) };
        f(k, i, c)
    });
}

struct SendPtr<T>(*mut T);
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}
// SAFETY: only used to hand disjoint sub-slices of a `&mut [T]` (T: Send) to the pool's threads.
unsafe impl<T: Send> Sync for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SendPtr<T> {}

impl Pool {
    fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            joined: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(threads.saturating_sub(1));
        // Each started worker checks in before the pool is handed out, so that the threads' own start-up
        // work (the runtime's per-thread setup, which may allocate) is over before the first operation:
        // steady-state decoding then allocates nothing, however late the OS schedules a new thread.
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let st = Arc::clone(&started);
            match std::thread::Builder::new()
                .name(format!("bitnet-worker-{i}"))
                .spawn(move || {
                    *lock(&st.0) += 1;
                    st.1.notify_all();
                    drop(st);
                    worker(&s)
                }) {
                Ok(h) => workers.push(h),
                // Fewer workers only means less parallelism; the caller still runs every task.
                Err(_) => break,
            }
        }
        let mut n = lock(&started.0);
        while *n < workers.len() {
            n = started.1.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        drop(n);
        Pool {
            threads,
            shared,
            workers,
        }
    }

    fn run(&self, n_tasks: usize, f: Job<'_>) {
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call: we return after every
        // joined worker reported `finished`, and workers touch `job` only between joining and that.
        let job: Job<'static> = unsafe { std::mem::transmute::<Job<'_>, Job<'static>>(f) };
        // SAFETY: every worker finished the previous epoch (we waited for it), so none reads `job`.
        unsafe { *s.job.get() = Some(job) };
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.finished.store(0, Ordering::Relaxed);
        s.joined.store(OPEN, Ordering::Release);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = lock(&s.lock);
            s.cv.notify_all();
        }
        IN_TASK.with(|c| c.set(true));
        let mine = catch_unwind(AssertUnwindSafe(|| claim_tasks(s, f)));
        IN_TASK.with(|c| c.set(false));
        // Close the operation: workers that have not joined yet will skip it.
        let n_joined = s.joined.swap(0, Ordering::AcqRel) & !OPEN;
        let mut spins = 0u32;
        while s.finished.load(Ordering::Acquire) < n_joined {
            spins += 1;
            if spins < 256 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: all joined workers are done, and no other can join a closed operation.
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a worker thread panicked while running a parallel task");
        }
    }
}

fn claim_tasks(s: &Shared, f: Job<'_>) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    IN_TASK.with(|c| c.set(true));
    let mut seen = 0u64;
    loop {
        // Spin a little, then park until the epoch moves.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if !spins.is_multiple_of(128) {
                std::hint::spin_loop();
                continue;
            }
            if start.elapsed() < SPIN {
                // Give the core away now and then: on a busy machine the dispatcher may need it.
                std::thread::yield_now();
                continue;
            }
            let mut g = lock(&s.lock);
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen {
                g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        // Join the operation if it is still open.
        let mut j = s.joined.load(Ordering::Acquire);
        let joined = loop {
            if j & OPEN == 0 {
                break false;
            }
            match s
                .joined
                .compare_exchange_weak(j, j + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break true,
                Err(now) => j = now,
            }
        };
        if !joined {
            continue;
        }
        // SAFETY: the dispatcher wrote `job` before opening the operation we joined (Acquire on
        // `joined`), and keeps it alive until we increment `finished` below.
        if let Some(job) = unsafe { *s.job.get() } {
            if catch_unwind(AssertUnwindSafe(|| claim_tasks(s, job))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.finished.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::Release);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _g = lock(&s.lock);
            s.cv.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once_and_nests() {
        set_num_threads(3);
        for n in [0usize, 1, 2, 7, 100, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            run(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
                // A nested call runs inline rather than deadlocking.
                run(2, |_| {});
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n = {n}");
        }
    }

    #[test]
    fn chunks_cover_the_slice() {
        let mut v = vec![0u32; 1001];
        for_each_chunk_mut(&mut v, 64, |ci, c| c.iter_mut().for_each(|x| *x += ci as u32 + 1));
        for (i, x) in v.iter().enumerate() {
            assert_eq!(*x, (i / 64) as u32 + 1);
        }
        let mut a = vec![0u8; 10];
        let mut b = vec![0u16; 12];
        for_each_chunk_pair_mut(&mut a, 3, &mut b, 3, |i, x, y| {
            x.fill(i as u8 + 1);
            y.fill(i as u16 + 1);
        });
        assert_eq!(a, [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]);
        // Four tasks (set by `a`): b's fourth chunk is whole.
        assert_eq!(b, [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
        let mut b = vec![0u16; 13];
        for_each_chunk_pair_mut(&mut a, 3, &mut b, 3, |i, _, y| y.fill(i as u16 + 1));
        assert_eq!(&b[12..], &[0], "a fifth chunk of b is not a task");
    }

    #[test]
    fn chunks_of_several_slices() {
        set_num_threads(2);
        let (mut a, mut b, mut c) = (vec![0u32; 10], vec![0u32; 0], vec![0u32; 33]);
        for_each_chunk_of_mut([&mut a[..], &mut b[..], &mut c[..]], [4, 2, 16], |k, ci, x| {
            x.iter_mut().for_each(|v| *v += 100 * k as u32 + ci as u32 + 1)
        });
        for (i, v) in a.iter().enumerate() {
            assert_eq!(*v, (i / 4) as u32 + 1);
        }
        for (i, v) in c.iter().enumerate() {
            assert_eq!(*v, 200 + (i / 16) as u32 + 1);
        }
    }

    #[test]
    fn task_panic_reaches_the_caller_and_pool_survives() {
        let r = std::panic::catch_unwind(|| run(64, |i| assert!(i != 37, "boom")));
        assert!(r.is_err());
        let sum = AtomicUsize::new(0);
        run(10, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }
}
