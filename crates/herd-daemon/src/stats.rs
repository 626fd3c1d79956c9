//! What this node measures about itself: CPUs, speed, load, memory, kernel features.

use std::time::{Duration, Instant};

use herd_cluster::Features;

/// CPUs this process may run on: a cpuset or taskset narrows it.
pub fn cpus() -> u32 {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).count() as u32,
        Err(_) => std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
    }
}

/// Total and available memory, bytes: `MemTotal` and `MemAvailable` from /proc/meminfo,
/// or less when herdd's memory cgroup (a container, a systemd slice, a local-cluster node)
/// has a lower limit — processes here live within that limit (0 if unreadable).
pub fn memory() -> (u64, u64) {
    use procfs::Current;
    let (total, free) = match procfs::Meminfo::current() {
        Ok(m) => (m.mem_total, m.mem_available.unwrap_or(m.mem_free)),
        Err(_) => return (0, 0),
    };
    match herd_kernel::host::cgroup_memory() {
        Some(cg) if cg.limit < total => (cg.limit, free.min(cg.free())),
        _ => (total, free),
    }
}

pub fn features() -> Features {
    Features {
        arch: std::env::consts::ARCH.into(),
        kernel: herd_kernel::host::kernel_release(),
        vdso_hash: herd_kernel::host::vdso_hash(),
        xcr0: herd_kernel::host::xcr0(),
        xsave_size: herd_kernel::host::xsave_size(),
    }
}

/// The openMosix load average: the mean number of runnable tasks over each second (as
/// [`crate::sampler`] measures it; openMosix sampled it several times a second), smoothed:
/// it rises slowly ((5·old + 3·new)/8) and falls at once, so a brief burst does not
/// attract or repel processes.
#[derive(Default, Debug)]
pub struct LoadMeter {
    load: f32,
}

impl LoadMeter {
    /// Closes the current second with its mean number of runnable tasks (None: not
    /// measured, the load stays) and returns the smoothed load.
    pub fn second(&mut self, runnable: Option<f32>) -> f32 {
        if let Some(mean) = runnable {
            self.load = if mean > self.load { (5.0 * self.load + 3.0 * mean) / 8.0 } else { mean };
        }
        self.load
    }
}

/// herdd's limit of open files (the soft limit, which herdd raises to the hard one as it
/// starts), read once: what its descriptors kept per process may use a share of.
pub fn open_files() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft as usize))
}

/// Work units of the calibration loop the reference CPU does per microsecond; chosen so
/// that one core of the machines herd was developed on measures about 10000.
const REFERENCE_UNITS_PER_US: f64 = 450.0;

/// Measures this CPU's speed with a short integer loop: the best of 12 rounds of 20 ms,
/// with random pauses between them so that daemons starting together (a local cluster)
/// do not keep running their rounds at the same moments. 10000 = the reference CPU.
pub fn calibrate_speed() -> u32 {
    let mut best = 0.0f64;
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 25));
        let start = Instant::now();
        let mut units = 0u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        while start.elapsed() < Duration::from_millis(20) {
            for _ in 0..1000 {
                // xorshift with a multiply: dependent integer work, no memory traffic.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            }
            units += 1000;
        }
        std::hint::black_box(x);
        let per_us = units as f64 / start.elapsed().as_micros().max(1) as f64;
        best = best.max(per_us);
    }
    ((best / REFERENCE_UNITS_PER_US) * 10000.0).round().clamp(1.0, 10_000_000.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_rises_slowly_and_falls_at_once() {
        let mut m = LoadMeter::default();
        let first = m.second(Some(4.0));
        assert!((first - 1.5).abs() < 1e-6, "{first}");
        assert_eq!(m.second(None), first, "a second not measured keeps the load");
        assert!(m.second(Some(4.0)) > first);
        assert_eq!(m.second(Some(0.0)), 0.0);
    }

    #[test]
    fn this_machine_has_cpus_memory_and_features() {
        assert!(cpus() >= 1);
        let (total, free) = memory();
        assert!(total > 0 && free <= total);
        let f = features();
        assert!(!f.kernel.is_empty());
        assert!(calibrate_speed() > 0);
    }
}
