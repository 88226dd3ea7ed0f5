//! What can be done to a running instance from outside it: pause it, kill
//! it, bound its CPU (`--cpus`), and read the CPU time it used.
//!
//! The instance's future is wrapped in [`Governed`], which decides before
//! each poll whether the guest may run. A guest running wasm comes back to
//! it at every epoch tick (the store yields there when it is governed, see
//! `Runtime::run_with`), and a guest blocked in a host call does not run
//! anyway; so a paused guest uses no CPU, a killed one ends within a tick,
//! and `--cpus` is enforced as cgroups' CPU controller does: a quota of CPU
//! time per 100 ms period, the guest held back for the rest of a period
//! once it is spent.

use crate::limits::thread_cpu_time;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The period of the CPU quota, as cgroups' default `cpu.cfs_period_us`.
const PERIOD: Duration = Duration::from_millis(100);

/// The most CPUs a quota may name (Docker's bound is the host's count; a
/// larger value is no bound at all).
pub const MAX_CPUS: f64 = 1024.0;

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

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
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
        Governed {
            inner: Box::pin(future),
            control: self.clone(),
            throttle: None,
        }
    }
}

/// A future that runs only when its [`Control`] lets it.
pub struct Governed<F> {
    inner: Pin<Box<F>>,
    control: Control,
    throttle: Option<Pin<Box<Sleep>>>,
}

impl<F: Future> Future for Governed<F> {
    type Output = Result<F::Output, Killed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        {
            let mut inner = this.control.lock();
            if let Some(killed) = inner.killed {
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
                        return Poll::Pending;
                    }
                    // The period ended while we looked: run in the new one.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        let started = thread_cpu_time();
        let result = this.inner.as_mut().poll(cx);
        let used = thread_cpu_time().saturating_sub(started);
        this.control.shared.cpu_nanos.fetch_add(
            u64::try_from(used.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(quota) = &mut this.control.lock().quota {
            quota.used += used;
        }
        result.map(Ok)
    }
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

    async fn let_others_run() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
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
}
