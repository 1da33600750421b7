//! What only a live agent does: guessing the machine's resources.

// Live only: it reads /proc and the machine's CPU count.
#![allow(clippy::disallowed_methods)]

/// `cpus:N;mem:M;disk:10000;ports:[31000-32000]` for this machine: every CPU, and the memory less
/// what Mesos leaves to the system (1 GB, or half of a machine with less than 2 GB).
pub fn detect_resources() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let total_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(1024, |kb| kb / 1024);
    let mem = if total_mb >= 2048 {
        total_mb - 1024
    } else {
        total_mb / 2
    };
    format!("cpus:{cpus};mem:{mem};disk:10000;ports:[31000-32000]")
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn detected_resources_parse() {
        let text = super::detect_resources();
        let resources: drover_core::Resources = text.parse().unwrap();
        assert!(resources.scalar("cpus").as_f64() >= 1.0, "{text}");
        assert!(!super::hostname().is_empty());
    }
}
