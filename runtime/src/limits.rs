//! Limits: the cgroups of this platform.
//!
//! * Memory: the sum of an instance's linear memories plus its tables (8 bytes
//!   per element) may not exceed [`Limits::memory`]. A growth that would exceed
//!   it fails inside the guest (`memory.grow` returns -1, as on a real machine
//!   that is out of memory), so guests that handle allocation failure keep
//!   working; a guest that then traps is reported as having exceeded the limit.
//! * Wall-clock time ([`Limits::timeout`]): the instance is stopped when it
//!   expires, whether it is computing or blocked in a WASI call.
//! * CPU time ([`Limits::cpu_time`]): the CPU time of the thread running the
//!   guest, sampled at each epoch tick (every [`TICK`]) while wasm code runs.
//!   Time blocked in sleeps, stdin or I/O does not count; the resolution is one
//!   tick.
//! * Host descriptors ([`Limits::max_fds`]): files, directories and sockets
//!   the guest holds open at once (see `wrun_host_api::fds`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime::ResourceLimiter;

/// Default memory limit of one instance: 4 GiB, the address space of one
/// 32-bit linear memory.
pub const DEFAULT_MEMORY_LIMIT: u64 = 4 << 30;

/// Interval of the epoch ticker that drives timeouts and CPU accounting.
pub const TICK: Duration = Duration::from_millis(10);

/// Bytes a table element is counted as towards the memory limit.
const TABLE_ELEMENT_BYTES: u64 = 8;

/// Resource limits of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory plus tables, in bytes.
    pub memory: u64,
    /// Wall-clock time from the start of instantiation.
    pub timeout: Option<Duration>,
    /// CPU time spent running the guest.
    pub cpu_time: Option<Duration>,
    /// Host descriptors the guest may hold at once.
    pub max_fds: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY_LIMIT,
            timeout: None,
            cpu_time: None,
            max_fds: wrun_host_api::fds::DEFAULT_INSTANCE_FDS,
        }
    }
}

/// Which limit an instance exceeded, with its configured value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("memory limit of {} exceeded (the app asked for {} in all)", Size(*limit), Size(*requested))]
    Memory { limit: u64, requested: u64 },
    #[error("timeout of {} exceeded", humanize(*.0))]
    Timeout(Duration),
    #[error("CPU time limit of {} exceeded", humanize(*.0))]
    CpuTime(Duration),
}

/// Formats a duration the way users write it in flags (`500ms`, `30s`).
pub fn humanize(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{d:?}")
    }
}

/// Formats a byte count in binary units (`64 MiB`), exactly when it can.
pub struct Size(pub u64);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut unit = 0;
        while unit < UNITS.len() - 1 && self.0 >= 1u64 << (10 * (unit + 1)) {
            unit += 1;
        }
        let scale = 1u64 << (10 * unit);
        if self.0.is_multiple_of(scale) {
            write!(f, "{} {}", self.0 / scale, UNITS[unit])
        } else {
            write!(f, "{:.2} {}", self.0 as f64 / scale as f64, UNITS[unit])
        }
    }
}

/// Tracks an instance's memory and table bytes against its limit.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    used: u64,
    /// The total the guest asked for when a growth was last refused.
    pub(crate) refused: Option<u64>,
    /// Where `used` is published for readers outside the store (`docker
    /// stats`), if anyone reads it.
    gauge: Option<Arc<AtomicU64>>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            used: 0,
            refused: None,
            gauge: None,
        }
    }

    /// Publishes the bytes in use to `gauge` from now on.
    pub(crate) fn publish_to(&mut self, gauge: Arc<AtomicU64>) {
        gauge.store(self.used, Ordering::Relaxed);
        self.gauge = Some(gauge);
    }

    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let wanted = self.used.saturating_add(desired.saturating_sub(current));
        if wanted > self.limit {
            self.refused = Some(wanted);
            return false;
        }
        self.used = wanted;
        if let Some(gauge) = &self.gauge {
            gauge.store(wanted, Ordering::Relaxed);
        }
        true
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current as u64, desired as u64))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| (elements as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.grow(bytes(current), bytes(desired)))
    }
}

/// The CPU time consumed so far by the calling thread.
pub(crate) fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_memories_and_tables_together() {
        let mut l = MemoryLimiter::new(1 << 20);
        assert!(l.memory_growing(0, 512 << 10, None).unwrap());
        assert!(l.table_growing(0, 1024, None).unwrap()); // 8 KiB
        assert!(!l.memory_growing(512 << 10, 1 << 20, None).unwrap());
        assert_eq!(l.refused, Some((1 << 20) + (8 << 10)));
        assert!(l.memory_growing(512 << 10, 1000 << 10, None).unwrap());
    }

    #[test]
    fn formats() {
        assert_eq!(Size(64 << 20).to_string(), "64 MiB");
        assert_eq!(Size(4 << 30).to_string(), "4 GiB");
        assert_eq!(Size(1000).to_string(), "1000 B");
        assert_eq!(Size((64 << 20) + 65536).to_string(), "64.06 MiB");
        assert_eq!(Size(1088 << 10).to_string(), "1.06 MiB");
        assert_eq!(Size(1536).to_string(), "1.50 KiB");
        assert_eq!(humanize(Duration::from_millis(500)), "500ms");
        assert_eq!(humanize(Duration::from_secs(30)), "30s");
    }
}
