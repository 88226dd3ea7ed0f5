//! What can be done to a running instance from outside it: pause it, kill
//! it, bound its CPU (`--cpus`), weigh it against the other busy instances
//! (`--cpu-shares`), and read the CPU time it used.
//!
//! The instance's future is wrapped in [`Governed`], which decides before
//! each poll whether the guest may run. A guest running wasm comes back to
//! it at every epoch tick (the store yields there when it is governed, see
//! `Runtime::run_with`), and a guest blocked in a host call does not run
//! anyway; so a paused guest uses no CPU, a killed one ends within a tick,
//! and `--cpus` is enforced as cgroups' CPU controller does: a quota of CPU
//! time per 100 ms period, the guest held back for the rest of a period
//! once it is spent.
//!
//! `--cpu-shares` is enforced as CFS weighs cgroups (`cpu.shares`,
//! `cpu.weight`), among the instances of one [`SharePool`]: in the daemon,
//! all its containers, which run on one pool of guest threads, one per CPU.
//! Each instance has a virtual runtime, its CPU time × 1024 / its shares.
//! An instance runs on one thread at a time, so while there are no more
//! busy instances than threads, each has a thread to itself and shares
//! change nothing (as a single-threaded process gets a whole core whatever
//! its weight, when cores are free). Beyond that, an instance about to run
//! waits instead if at least as many busy instances as the pool has
//! threads are behind it by more than a slice (`SLICE`): the least advanced
//! always run, so no thread idles for fairness' sake, and the virtual
//! runtimes of busy instances stay within a slice and a tick of each
//! other, which is CPU in proportion to shares. "Busy" is wanting to run: an instance blocked in a
//! host call, paused or held back by its quota takes nothing from the
//! others, and one that comes back starts at most a slice behind the least
//! advanced busy one, so that sleeping earns no credit (CFS's placement of
//! a waking task). Shares divide the CPU time the guest threads get; how
//! much they get against other processes is the host scheduler's business,
//! and there each guest thread is one thread of the daemon: two busy
//! containers with a thread each get what the host gives each thread,
//! whatever their shares (where cgroups, each container a group of its
//! own, would still split a loaded host's CPU by weight).

use crate::limits::{TICK, thread_cpu_time};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The period of the CPU quota, as cgroups' default `cpu.cfs_period_us`.
const PERIOD: Duration = Duration::from_millis(100);

/// The most CPUs a quota may name (Docker's bound is the host's count; a
/// larger value is no bound at all).
pub const MAX_CPUS: f64 = 1024.0;

/// Docker's CPU weight of a container whose `--cpu-shares` is unset or 0.
const DEFAULT_CPU_SHARES: u64 = 1024;

/// The weights the kernel takes for `cpu.shares`; others are clamped to
/// these, as it does.
const MIN_CPU_SHARES: u64 = 2;
const MAX_CPU_SHARES: u64 = 262_144;

/// How far, in virtual runtime (nanoseconds of CPU time at the default
/// weight), an instance may run ahead of the others before it waits: two
/// epoch ticks, so that instances of equal weight do not trade places at
/// every tick.
const SLICE: Duration = Duration::from_nanos(2 * TICK.as_nanos() as u64);

/// Killed from outside, by `signal` (as Docker reports: exit code 128 +
/// the signal's number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Killed {
    pub signal: i32,
}

impl Killed {
    pub fn exit_code(self) -> i32 {
        128 + self.signal
    }
}

/// A handle on one instance's governor; clones control the same instance.
#[derive(Clone, Default)]
pub struct Control {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    cpu_nanos: AtomicU64,
    /// Linear memory and tables in use, as the instance's limiter counts.
    memory: Arc<AtomicU64>,
}

#[derive(Default)]
struct Inner {
    paused: bool,
    killed: Option<Killed>,
    waker: Option<Waker>,
    quota: Option<Quota>,
    /// The pool it shares CPU in, and its weight there.
    shares: Option<(SharePool, u64)>,
}

struct Quota {
    per_period: Duration,
    period_start: Instant,
    /// CPU time used in the current period, with what an earlier period
    /// overran carried over (a poll cannot be cut short, so a guest may
    /// overrun by up to a tick; it pays for it in the next period).
    used: Duration,
}

impl Control {
    /// A governor allowing `cpus` cores' worth of CPU time (all it can use
    /// when `None`).
    pub fn new(cpus: Option<f64>) -> Control {
        let control = Control::default();
        control.set_cpus(cpus);
        control
    }

    /// This governor, weighing the instance by `shares` against the other
    /// busy instances of this process (all that share its guest threads)
    /// (`--cpu-shares`; Docker's 1024 when `None` or 0). It applies to the
    /// futures governed from now on.
    pub fn with_shares(self, shares: Option<u64>) -> Control {
        self.with_shares_in(SharePool::process(), shares)
    }

    /// [`Control::with_shares`] in `pool`.
    pub(crate) fn with_shares_in(self, pool: &SharePool, shares: Option<u64>) -> Control {
        self.lock().shares = Some((pool.clone(), weight(shares)));
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared.inner)
    }

    /// Changes the CPU quota (`docker update --cpus`).
    pub fn set_cpus(&self, cpus: Option<f64>) {
        let quota = cpus
            .filter(|&cpus| cpus > 0.0 && cpus < MAX_CPUS)
            .map(|cpus| Quota {
                per_period: PERIOD.mul_f64(cpus),
                period_start: Instant::now(),
                used: Duration::ZERO,
            });
        self.lock().quota = quota;
    }

    pub fn pause(&self) {
        self.lock().paused = true;
    }

    pub fn unpause(&self) {
        let mut inner = self.lock();
        inner.paused = false;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// Ends the instance at its next poll (a guest running wasm reaches one
    /// within a tick), paused or not.
    pub fn kill(&self, signal: i32) {
        let mut inner = self.lock();
        inner.killed.get_or_insert(Killed { signal });
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// The CPU time the instance has used so far.
    pub fn cpu_time(&self) -> Duration {
        Duration::from_nanos(self.shared.cpu_nanos.load(Ordering::Relaxed))
    }

    /// The bytes of linear memory and tables the instance uses now.
    pub fn memory(&self) -> u64 {
        self.shared.memory.load(Ordering::Relaxed)
    }

    /// Where the instance's limiter publishes its memory in use.
    pub(crate) fn memory_gauge(&self) -> Arc<AtomicU64> {
        self.shared.memory.clone()
    }

    /// `future` under this governor.
    pub fn govern<F: Future>(&self, future: F) -> Governed<F> {
        let shares = self.lock().shares.clone();
        Governed {
            inner: Box::pin(future),
            control: self.clone(),
            throttle: None,
            seat: shares.map(|(pool, weight)| Seat::join(pool, weight)),
        }
    }
}

/// The weight of `--cpu-shares` `shares`, as Docker and the kernel take it.
fn weight(shares: Option<u64>) -> u64 {
    match shares {
        None | Some(0) => DEFAULT_CPU_SHARES,
        Some(shares) => shares.clamp(MIN_CPU_SHARES, MAX_CPU_SHARES),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A future that runs only when its [`Control`] lets it.
pub struct Governed<F> {
    inner: Pin<Box<F>>,
    control: Control,
    throttle: Option<Pin<Box<Sleep>>>,
    /// Its place in a [`SharePool`], until it ends.
    seat: Option<Seat>,
}

impl<F: Future> Future for Governed<F> {
    type Output = Result<F::Output, Killed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        {
            let mut inner = this.control.lock();
            if let Some(killed) = inner.killed {
                drop(inner);
                this.seat = None;
                return Poll::Ready(Err(killed));
            }
            if !inner
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.waker = Some(cx.waker().clone());
            }
            if inner.paused {
                drop(inner);
                if let Some(seat) = &this.seat {
                    seat.idle();
                }
                return Poll::Pending;
            }
            if let Some(quota) = &mut inner.quota {
                let now = Instant::now();
                let periods = (now - quota.period_start).as_nanos() / PERIOD.as_nanos();
                if periods > 0 {
                    let periods = u32::try_from(periods).unwrap_or(u32::MAX);
                    quota.used = quota.used.saturating_sub(quota.per_period * periods);
                    quota.period_start += PERIOD * periods;
                }
                if quota.used >= quota.per_period {
                    let until = quota.period_start + PERIOD;
                    drop(inner);
                    let sleep = this
                        .throttle
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                    sleep.as_mut().reset(until);
                    if sleep.as_mut().poll(cx).is_pending() {
                        // Held back, it competes with nobody (as CFS takes
                        // a throttled group off its run queue).
                        if let Some(seat) = &this.seat {
                            seat.idle();
                        }
                        return Poll::Pending;
                    }
                    // The period ended while we looked: run in the new one.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        if let Some(seat) = &this.seat
            && !seat.may_run(cx)
        {
            return Poll::Pending;
        }
        let started = thread_cpu_time();
        let result = match &this.seat {
            Some(seat) => {
                seat.wakeup.woken.store(false, Ordering::SeqCst);
                this.inner
                    .as_mut()
                    .poll(&mut Context::from_waker(&seat.waker))
            }
            None => this.inner.as_mut().poll(cx),
        };
        let used = thread_cpu_time().saturating_sub(started);
        this.control.shared.cpu_nanos.fetch_add(
            u64::try_from(used.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(quota) = &mut this.control.lock().quota {
            quota.used += used;
        }
        match &result {
            Poll::Ready(_) => this.seat = None,
            Poll::Pending => {
                if let Some(seat) = &this.seat {
                    seat.ran(used, cx);
                }
            }
        }
        result.map(Ok)
    }
}

/// The instances that share one pool of guest threads, weighed against
/// each other by their CPU shares (see the module's documentation). Clones
/// are the same pool.
#[derive(Clone)]
pub(crate) struct SharePool {
    registry: Arc<Mutex<Registry>>,
}

impl SharePool {
    /// A pool of `threads` threads.
    pub(crate) fn new(threads: usize) -> SharePool {
        SharePool {
            registry: Arc::new(Mutex::new(Registry {
                threads: threads.max(1),
                floor: 0,
                slots: Vec::new(),
                free: Vec::new(),
                scratch: Vec::new(),
            })),
        }
    }

    /// This process's pool: as many threads as it may use CPUs
    /// (`available_parallelism`, which is how `wrun daemon` sizes its pool
    /// of guest threads).
    pub(crate) fn process() -> &'static SharePool {
        static POOL: LazyLock<SharePool> = LazyLock::new(|| {
            SharePool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
        });
        &POOL
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Wakes the waiting instances that may run now. Wakers are called with
    /// the lock released: waking a task of a runtime that shuts down drops
    /// its future, whose seat then takes the lock.
    fn wake_eligible<'a>(&'a self, mut registry: MutexGuard<'a, Registry>) {
        loop {
            let mut batch: [Option<Waker>; 8] = Default::default();
            let more = registry.take_eligible(&mut batch);
            drop(registry);
            for waker in batch.into_iter().flatten() {
                waker.wake();
            }
            if !more {
                return;
            }
            registry = self.lock();
        }
    }

    /// How many instances are in the pool.
    #[cfg(test)]
    fn members(&self) -> usize {
        self.lock().slots.iter().filter(|s| s.live).count()
    }
}

/// Every instance of a pool; a slot per instance, reused after it leaves.
struct Registry {
    threads: usize,
    /// The least virtual runtime of a busy instance, never decreasing (CFS's
    /// `min_vruntime`): an instance joins there, and one that comes back
    /// starts at most a slice behind it.
    floor: u128,
    /// As many as the most instances that were in the pool at once.
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Room for the busy instances' virtual runtimes, to find the N-th
    /// least without allocating (reserved as the slots grow).
    scratch: Vec<u128>,
}

#[derive(Default)]
struct Slot {
    live: bool,
    weight: u64,
    /// Nanoseconds of CPU time × 1024 / weight.
    vruntime: u128,
    busy: bool,
    /// The task to wake when it may run: set while it waits for the others.
    waiting: Option<Waker>,
}

impl Registry {
    fn join(&mut self, weight: u64) -> usize {
        let slot = Slot {
            live: true,
            weight,
            vruntime: self.floor,
            busy: false,
            waiting: None,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = slot;
                index
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.scratch.clear();
        self.scratch.reserve(self.slots.len());
        index
    }

    fn leave(&mut self, index: usize) {
        self.slots[index] = Slot::default();
        self.free.push(index);
    }

    /// The instance wants to run.
    fn busy(&mut self, index: usize) {
        let start = self.floor.saturating_sub(SLICE.as_nanos());
        let slot = &mut self.slots[index];
        if !slot.busy {
            slot.busy = true;
            slot.vruntime = slot.vruntime.max(start);
        }
    }

    /// The instance does not want to run (blocked, paused, throttled).
    fn idle(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.busy = false;
        slot.waiting = None;
    }

    fn charge(&mut self, index: usize, used: Duration) {
        let slot = &mut self.slots[index];
        slot.vruntime += used.as_nanos() * u128::from(DEFAULT_CPU_SHARES) / u128::from(slot.weight);
    }

    /// The N-th least virtual runtime of the busy instances (N: the pool's
    /// threads), if that many are busy; moves the floor up to the least.
    fn nth_busy(&mut self) -> Option<u128> {
        self.scratch.clear();
        self.scratch.extend(
            self.slots
                .iter()
                .filter(|s| s.live && s.busy)
                .map(|s| s.vruntime),
        );
        if let Some(&least) = self.scratch.iter().min() {
            self.floor = self.floor.max(least);
        }
        if self.scratch.len() < self.threads {
            return None;
        }
        let (_, nth, _) = self.scratch.select_nth_unstable(self.threads - 1);
        Some(*nth)
    }

    /// Whether a busy instance at `vruntime` must let others run: as many
    /// busy instances as there are threads are more than a slice behind it.
    fn ahead(nth: Option<u128>, vruntime: u128) -> bool {
        nth.is_some_and(|nth| nth + SLICE.as_nanos() < vruntime)
    }

    /// Moves into `batch` the wakers of waiting instances that may run now;
    /// true when the batch filled up (there may be more).
    fn take_eligible(&mut self, batch: &mut [Option<Waker>]) -> bool {
        if !self.slots.iter().any(|s| s.waiting.is_some()) {
            return false;
        }
        let nth = self.nth_busy();
        let mut taken = 0;
        for slot in &mut self.slots {
            if slot.waiting.is_some() && !Registry::ahead(nth, slot.vruntime) {
                if taken == batch.len() {
                    return true;
                }
                batch[taken] = slot.waiting.take();
                taken += 1;
            }
        }
        false
    }
}

/// A governed future's place in its pool.
struct Seat {
    pool: SharePool,
    index: usize,
    wakeup: Arc<Wakeup>,
    /// `wakeup` as the waker the governed future gets.
    waker: Waker,
}

/// The governed future's waker: it records that the future was woken, which
/// tells a future that wants to run again (it yielded at an epoch tick) from
/// one waiting in a host call, then wakes the task.
struct Wakeup {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        let task = lock(&self.task).clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl Seat {
    fn join(pool: SharePool, weight: u64) -> Seat {
        let index = pool.lock().join(weight);
        let wakeup = Arc::new(Wakeup {
            // Its first poll.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Seat {
            pool,
            index,
            waker: Waker::from(wakeup.clone()),
            wakeup,
        }
    }

    /// Whether the future may be polled now: it was woken, and it is not
    /// ahead of the others (else it waits, its task woken when they catch
    /// up or stop wanting to run).
    fn may_run(&self, cx: &Context<'_>) -> bool {
        {
            let mut task = lock(&self.wakeup.task);
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut registry = self.pool.lock();
        if !self.wakeup.woken.load(Ordering::SeqCst) {
            // Nothing woke the future since it returned: it waits in a host
            // call, and wants no CPU until something wakes it.
            registry.idle(self.index);
            self.pool.wake_eligible(registry);
            return false;
        }
        registry.busy(self.index);
        let nth = registry.nth_busy();
        let slot = &mut registry.slots[self.index];
        if Registry::ahead(nth, slot.vruntime) {
            if !slot
                .waiting
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                slot.waiting = Some(cx.waker().clone());
            }
            return false;
        }
        slot.waiting = None;
        true
    }

    /// Charges a poll that returned `Pending` and used `used`.
    fn ran(&self, used: Duration, cx: &mut Context<'_>) {
        let mut registry = self.pool.lock();
        registry.charge(self.index, used);
        self.pool.wake_eligible(registry);
        if !self.wakeup.woken.load(Ordering::SeqCst) {
            // Either it yielded, and tokio defers that wake until it has run
            // the other ready tasks, or it waits in a host call. It counts as
            // busy until its task is polled again after tokio's deferred
            // wakes (the next poll tells which it was), or it would lose its
            // turn at every tick.
            defer_poll(cx);
        }
    }

    fn idle(&self) {
        let mut registry = self.pool.lock();
        registry.idle(self.index);
        self.pool.wake_eligible(registry);
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut registry = self.pool.lock();
        registry.leave(self.index);
        self.pool.wake_eligible(registry);
    }
}

/// Has the task polled again once tokio has run the wakes it deferred (as
/// `yield_now`'s are, until the other ready tasks have run); outside a tokio
/// runtime, at once.
fn defer_poll(cx: &mut Context<'_>) {
    let yielded = std::pin::pin!(tokio::task::yield_now());
    let _ = yielded.poll(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let start = thread_cpu_time();
        while thread_cpu_time() - start < d {}
    }

    /// A future that spins `slice` of CPU per poll, `polls` times.
    async fn busy(polls: u32, slice: Duration) {
        for _ in 0..polls {
            spin(slice);
            tokio::task::yield_now().await;
        }
    }

    /// A guest that never stops computing (and yields every 2 ms, as at an
    /// epoch tick).
    async fn forever_busy() {
        loop {
            spin(Duration::from_millis(2));
            tokio::task::yield_now().await;
        }
    }

    async fn let_others_run() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Yields until `done` holds; fails after 60 s of real time (the
    /// machine may be slow; a pool that starved everyone would never get
    /// there).
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::task::yield_now().await;
        }
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[tokio::test]
    async fn a_paused_future_is_not_polled_and_a_killed_one_ends() {
        let control = Control::new(None);
        control.pause();
        let polls = Arc::new(AtomicU64::new(0));
        let counted = polls.clone();
        let task = tokio::spawn(control.govern(async move {
            loop {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
        let_others_run().await;
        assert_eq!(polls.load(Ordering::Relaxed), 0);
        control.unpause();
        let_others_run().await;
        assert!(polls.load(Ordering::Relaxed) > 0);
        control.pause();
        control.kill(9);
        assert_eq!(task.await.unwrap(), Err(Killed { signal: 9 }));
        assert_eq!(Killed { signal: 9 }.exit_code(), 137);
    }

    /// On tokio's paused clock, which moves only while everything waits:
    /// the time the governor made the future wait, not how fast this
    /// machine is.
    #[tokio::test(start_paused = true)]
    async fn a_quota_holds_a_busy_future_to_its_share() {
        let control = Control::new(Some(0.5));
        let started = Instant::now();
        control
            .govern(busy(40, Duration::from_millis(5)))
            .await
            .unwrap();
        // 200 ms of CPU at half a core: three full periods waited out (the
        // last period's half is used without waiting).
        assert!(control.cpu_time() >= Duration::from_millis(200));
        assert!(started.elapsed() >= PERIOD * 3, "{:?}", started.elapsed());
    }

    #[test]
    fn shares_are_weights_as_docker_and_the_kernel_take_them() {
        assert_eq!(weight(None), 1024);
        assert_eq!(weight(Some(0)), 1024);
        assert_eq!(weight(Some(1)), 2);
        assert_eq!(weight(Some(512)), 512);
        assert_eq!(weight(Some(1 << 40)), 262_144);
    }

    /// Two busy instances on one thread (a current-thread runtime): CPU in
    /// proportion to their shares. The figures are CPU time, which the
    /// governor measures per poll, so a slow machine changes how long this
    /// takes, not the split (within a slice and a poll of 600 ms).
    #[tokio::test]
    async fn busy_instances_on_one_thread_split_it_by_their_shares() {
        let pool = SharePool::new(1);
        let heavy = Control::new(None).with_shares_in(&pool, Some(1024));
        let light = Control::new(None).with_shares_in(&pool, Some(512));
        let a = tokio::spawn(heavy.govern(forever_busy()));
        let b = tokio::spawn(light.govern(forever_busy()));
        assert_eq!(pool.members(), 2);
        until("600 ms of CPU used", || {
            heavy.cpu_time() + light.cpu_time() >= Duration::from_millis(600)
        })
        .await;
        heavy.kill(9);
        light.kill(9);
        assert!(a.await.unwrap().is_err());
        assert!(b.await.unwrap().is_err());
        let ratio = heavy.cpu_time().as_secs_f64() / light.cpu_time().as_secs_f64();
        assert!(
            (1.6..2.5).contains(&ratio),
            "1024 vs 512 shares: {:.1} ms vs {:.1} ms",
            ms(heavy.cpu_time()),
            ms(light.cpu_time())
        );
        // Ended, they left the pool.
        assert_eq!(pool.members(), 0);
    }

    /// Three busy instances on two threads (real ones): 2/5, 2/5 and 1/5
    /// of the CPU the threads get. Loosely: tokio, not the pool, decides
    /// which thread runs what, and this machine may be loaded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_instances_beyond_the_threads_share_them_by_their_shares() {
        let pool = SharePool::new(2);
        let controls = [1024, 1024, 512].map(|s| Control::new(None).with_shares_in(&pool, Some(s)));
        let tasks = controls
            .clone()
            .map(|c| tokio::spawn(c.govern(forever_busy())));
        let used = || controls.iter().map(Control::cpu_time).sum::<Duration>();
        // This task shares the threads too; it mostly sleeps.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while used() < Duration::from_millis(900) {
            assert!(std::time::Instant::now() < deadline, "never: 900 ms of CPU");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for control in &controls {
            control.kill(9);
        }
        for task in tasks {
            assert!(task.await.unwrap().is_err());
        }
        let [a, b, light] = controls.map(|c| c.cpu_time().as_secs_f64());
        let shown = format!("{:.0} / {:.0} / {:.0} ms", a * 1e3, b * 1e3, light * 1e3);
        assert!((0.6..1.6).contains(&(a / b)), "{shown}");
        assert!((1.3..3.0).contains(&((a + b) / 2.0 / light)), "{shown}");
        assert_eq!(pool.members(), 0);
    }

    /// No more busy instances than threads: each runs as if alone.
    #[tokio::test]
    async fn shares_change_nothing_while_there_is_a_thread_for_everyone() {
        let pool = SharePool::new(2);
        let heavy = Control::new(None).with_shares_in(&pool, Some(262_144));
        let light = Control::new(None).with_shares_in(&pool, Some(2));
        let a = tokio::spawn(heavy.govern(forever_busy()));
        // Against 131072 times its weight, it would get nothing on one
        // thread; here it does not wait at all.
        light
            .govern(busy(50, Duration::from_millis(2)))
            .await
            .unwrap();
        heavy.kill(9);
        assert!(a.await.unwrap().is_err());
    }

    /// An instance blocked in a host call takes nothing; when it comes back
    /// it starts a slice behind the other, not as far behind as it slept.
    #[tokio::test]
    async fn an_idle_instance_takes_nothing_and_earns_no_credit_asleep() {
        let pool = SharePool::new(1);
        let busy = Control::new(None).with_shares_in(&pool, Some(512));
        let sleeper = Control::new(None).with_shares_in(&pool, Some(1024));
        let wake = Arc::new(tokio::sync::Notify::new());
        let woken = wake.clone();
        let a = tokio::spawn(busy.govern(forever_busy()));
        let b = tokio::spawn(sleeper.govern(async move {
            woken.notified().await;
            forever_busy().await
        }));
        // Alone busy, at a low weight, it gets the thread.
        until("200 ms of CPU for the busy one", || {
            busy.cpu_time() >= Duration::from_millis(200)
        })
        .await;
        assert!(sleeper.cpu_time() < Duration::from_millis(10));
        wake.notify_one();
        let (busy_before, sleeper_before) = (busy.cpu_time(), sleeper.cpu_time());
        until("150 ms of CPU for the sleeper once awake", || {
            sleeper.cpu_time() - sleeper_before >= Duration::from_millis(150)
        })
        .await;
        // Half the sleeper's rate (it has half its weight): some 75 ms. Had
        // the sleeper kept the credit of its sleep, the busy one would have
        // waited for all of these 150 ms.
        let gained = busy.cpu_time() - busy_before;
        assert!(gained >= Duration::from_millis(30), "{:.1} ms", ms(gained));
        busy.kill(9);
        sleeper.kill(9);
        assert!(a.await.unwrap().is_err());
        assert!(b.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_paused_or_killed_instance_holds_nobody_back_and_leaves_the_pool() {
        let pool = SharePool::new(1);
        let light = Control::new(None).with_shares_in(&pool, Some(2));
        let heavy = Control::new(None).with_shares_in(&pool, Some(262_144));
        let a = tokio::spawn(light.govern(forever_busy()));
        let b = tokio::spawn(heavy.govern(forever_busy()));
        until("50 ms of CPU for the heavy one", || {
            heavy.cpu_time() >= Duration::from_millis(50)
        })
        .await;
        // A few polls before it fell behind by its weight, then nothing.
        assert!(
            light.cpu_time() < heavy.cpu_time() / 2,
            "{:.1} ms vs {:.1} ms",
            ms(light.cpu_time()),
            ms(heavy.cpu_time())
        );
        heavy.pause();
        let before = light.cpu_time();
        until("the light one runs while the heavy one is paused", || {
            light.cpu_time() - before >= Duration::from_millis(100)
        })
        .await;
        heavy.unpause();
        let_others_run().await;
        heavy.kill(9);
        assert_eq!(b.await.unwrap(), Err(Killed { signal: 9 }));
        assert_eq!(pool.members(), 1);
        let before = light.cpu_time();
        until("the light one runs once the heavy one is gone", || {
            light.cpu_time() - before >= Duration::from_millis(50)
        })
        .await;
        light.kill(9);
        assert!(a.await.unwrap().is_err());
        assert_eq!(pool.members(), 0);
    }

    /// On the paused clock: an instance held back by its quota does not
    /// compete, so the other, of a far lower weight, never waits for the
    /// clock (which moves only when every task waits).
    #[tokio::test(start_paused = true)]
    async fn a_throttled_instance_holds_nobody_back() {
        let pool = SharePool::new(1);
        let capped = Control::new(Some(0.05)).with_shares_in(&pool, Some(262_144));
        let other = Control::new(None).with_shares_in(&pool, Some(2));
        let a = tokio::spawn(capped.govern(forever_busy()));
        let started = Instant::now();
        let ran = tokio::time::timeout(
            PERIOD * 10,
            other.govern(busy(50, Duration::from_millis(2))),
        )
        .await;
        assert!(ran.is_ok(), "held back by a throttled instance");
        assert!(started.elapsed() < PERIOD, "{:?}", started.elapsed());
        assert!(capped.cpu_time() > Duration::ZERO);
        capped.kill(9);
        assert!(a.await.unwrap().is_err());
    }
}
