//! Budgets of host file descriptors.
//!
//! Every host descriptor a guest causes (a file or directory it opens, a
//! socket, both ends of a loopback connection, a connection waiting in its
//! listener's backlog) is taken from its instance's [`FdBudget`] before the
//! descriptor exists, and given back when it closes. An instance's budget is
//! a child of the process's: the instance is refused at its own limit (the
//! guest sees `EMFILE`, or its WASI 0.2 equivalent), and every instance is
//! refused once the guests of the process together reach the process budget
//! (`ENFILE`), which leaves a reserve below the process's `RLIMIT_NOFILE`
//! for the host's own listeners, cache files and connections. A guest can
//! therefore never take the process's last descriptor.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Descriptors one instance may hold at once unless told otherwise, as the
/// soft `nofile` limit Docker and Podman give a container.
pub const DEFAULT_INSTANCE_FDS: usize = 1024;

/// Which budget refused a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FdExhausted {
    /// The instance holds as many as its limit allows (`EMFILE`).
    #[error("the instance's limit of {0} open descriptors is reached")]
    Instance(usize),
    /// The guests of this process hold as many as it allows them (`ENFILE`).
    #[error("the process's limit of {0} descriptors for guests is reached")]
    Process(usize),
}

/// A count of descriptors in use against a limit, inside its parent's.
#[derive(Debug)]
pub struct FdBudget {
    limit: usize,
    used: AtomicUsize,
    parent: Option<Arc<FdBudget>>,
}

static PROCESS: OnceLock<Arc<FdBudget>> = OnceLock::new();

impl FdBudget {
    /// The budget of a new instance, `limit` descriptors inside the process's.
    pub fn instance(limit: usize) -> Arc<FdBudget> {
        Arc::new(FdBudget {
            limit,
            used: AtomicUsize::new(0),
            parent: Some(FdBudget::process().clone()),
        })
    }

    /// A budget with no parent: for tests, and for [`set_process_limit`].
    pub fn root(limit: usize) -> Arc<FdBudget> {
        Arc::new(FdBudget {
            limit,
            used: AtomicUsize::new(0),
            parent: None,
        })
    }

    /// A child budget of `parent`.
    pub fn child(parent: &Arc<FdBudget>, limit: usize) -> Arc<FdBudget> {
        Arc::new(FdBudget {
            limit,
            used: AtomicUsize::new(0),
            parent: Some(parent.clone()),
        })
    }

    /// The process's budget for all guests: what [`set_process_limit`] set,
    /// else derived from the current `RLIMIT_NOFILE` by [`guest_share`].
    pub fn process() -> &'static Arc<FdBudget> {
        PROCESS.get_or_init(|| FdBudget::root(guest_share(nofile_limit())))
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Descriptors taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` descriptors from this budget and every budget above it, or
    /// none of them.
    pub fn take(self: &Arc<Self>, n: usize) -> Result<FdGrant, FdExhausted> {
        self.reserve(n)?;
        Ok(FdGrant {
            budget: Some(self.clone()),
            n,
        })
    }

    fn reserve(&self, n: usize) -> Result<(), FdExhausted> {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            });
        if taken.is_err() {
            return Err(match self.parent {
                Some(_) => FdExhausted::Instance(self.limit),
                None => FdExhausted::Process(self.limit),
            });
        }
        if let Some(parent) = &self.parent
            && let Err(e) = parent.reserve(n)
        {
            self.used.fetch_sub(n, Ordering::AcqRel);
            // A middle level (a tenant, a pod) refusing reads as the
            // instance's own kind of limit; only the root is the process's.
            return Err(e);
        }
        Ok(())
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        if let Some(parent) = &self.parent {
            parent.release(n);
        }
    }
}

/// Descriptors taken from a budget, given back when dropped.
#[derive(Debug)]
pub struct FdGrant {
    budget: Option<Arc<FdBudget>>,
    n: usize,
}

impl FdGrant {
    /// A grant of nothing, for descriptors that are not counted.
    pub fn none() -> FdGrant {
        FdGrant { budget: None, n: 0 }
    }

    /// How many descriptors it holds.
    pub fn count(&self) -> usize {
        self.n
    }
}

impl Drop for FdGrant {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            budget.release(self.n);
        }
    }
}

/// Sets the process's budget for guests (once, at start; later calls are
/// ignored and return false).
pub fn set_process_limit(limit: usize) -> bool {
    PROCESS.set(FdBudget::root(limit)).is_ok()
}

/// The process's soft `RLIMIT_NOFILE` now (unlimited reads as `usize::MAX`).
pub fn nofile_limit() -> u64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current.unwrap_or(u64::MAX)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as most servers do at
/// start (the soft limit is often 1024 for compatibility with `select`,
/// which wrun does not use). Returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!("could not raise RLIMIT_NOFILE to the hard limit: {e}");
        }
    }
    nofile_limit()
}

/// Descriptors the process keeps for itself whatever its guests do: its
/// listeners, the files of its cache and image store, its own connections.
pub fn host_reserve(nofile: u64) -> u64 {
    256 + nofile / 16
}

/// The share of `nofile` descriptors that guests of a process with no other
/// large user of descriptors (`wrun run`) may hold together.
pub fn guest_share(nofile: u64) -> usize {
    let share = nofile.saturating_sub(host_reserve(nofile));
    usize::try_from(share).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_refused_at_its_limit_and_recovers() {
        let process = FdBudget::root(10);
        let a = FdBudget::child(&process, 3);
        let grants: Vec<_> = (0..3).map(|_| a.take(1).unwrap()).collect();
        assert_eq!(a.take(1).unwrap_err(), FdExhausted::Instance(3));
        assert_eq!(process.used(), 3);
        drop(grants);
        assert_eq!((a.used(), process.used()), (0, 0));
        assert!(a.take(3).is_ok());
    }

    #[test]
    fn the_process_budget_bounds_all_instances() {
        let process = FdBudget::root(4);
        let a = FdBudget::child(&process, 3);
        let b = FdBudget::child(&process, 3);
        let _a = a.take(3).unwrap();
        let _b = b.take(1).unwrap();
        assert_eq!(b.take(1).unwrap_err(), FdExhausted::Process(4));
        // The refused take left nothing behind in the instance's count.
        assert_eq!(b.used(), 1);
        assert_eq!(process.used(), 4);
    }

    #[test]
    fn a_middle_level_counts_as_the_instances_own() {
        let process = FdBudget::root(100);
        let tenant = FdBudget::child(&process, 2);
        let instance = FdBudget::child(&tenant, 10);
        let _held = instance.take(2).unwrap();
        assert_eq!(instance.take(1).unwrap_err(), FdExhausted::Instance(2));
        assert_eq!(instance.used(), 2);
    }

    #[test]
    fn a_grant_of_many_is_all_or_nothing() {
        let process = FdBudget::root(5);
        let a = FdBudget::child(&process, 10);
        assert!(a.take(6).is_err());
        assert_eq!((a.used(), process.used()), (0, 0));
        let g = a.take(5).unwrap();
        assert_eq!(g.count(), 5);
    }

    #[test]
    fn shares_leave_a_reserve() {
        assert_eq!(guest_share(1024), 1024 - 256 - 64);
        assert_eq!(guest_share(100), 0);
        assert!(guest_share(1 << 20) < 1 << 20);
    }
}
