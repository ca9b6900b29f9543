//! What the results were measured on: CPU, cores, kernel, io_uring support, load.

use std::fs;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub host: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub io_uring_usable: bool,
    /// Features the kernel reports for a fresh ring (empty if no ring could be made).
    pub io_uring_features: Vec<&'static str>,
    pub io_uring_disabled_sysctl: String,
    /// `/proc/loadavg` when the run started: other work on the machine shows here.
    pub loadavg_at_start: String,
    pub rmem_max: String,
}

fn read(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn uring_features() -> Vec<&'static str> {
    let Ok(ring) = io_uring::IoUring::new(8) else {
        return Vec::new();
    };
    let p = ring.params();
    [
        ("single_mmap", p.is_feature_single_mmap()),
        ("nodrop", p.is_feature_nodrop()),
        ("submit_stable", p.is_feature_submit_stable()),
        ("fast_poll", p.is_feature_fast_poll()),
        ("ext_arg", p.is_feature_ext_arg()),
        ("native_workers", p.is_feature_native_workers()),
        ("skip_cqe_on_success", p.is_feature_skip_cqe_on_success()),
        ("linked_file", p.is_feature_linked_file()),
        ("recvsend_bundle", p.is_feature_recvsend_bundle()),
        ("min_timeout", p.is_feature_min_timeout()),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect()
}

impl Machine {
    pub fn probe() -> Self {
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            host: read("/proc/sys/kernel/hostname"),
            cpu_model,
            // Counted from /proc/cpuinfo: a pinned process sees only its own CPU set.
            cpus: fs::read_to_string("/proc/cpuinfo")
                .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
                .unwrap_or(0)
                .max(1),
            kernel: read("/proc/sys/kernel/osrelease"),
            io_uring_usable: prism_forwarder::io::uring_available(),
            io_uring_features: uring_features(),
            io_uring_disabled_sysctl: read("/proc/sys/kernel/io_uring_disabled"),
            loadavg_at_start: read("/proc/loadavg"),
            rmem_max: read("/proc/sys/net/core/rmem_max"),
        }
    }
}
