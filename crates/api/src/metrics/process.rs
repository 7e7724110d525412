//! The standard `process_*` metrics (as the Prometheus client libraries name them), read from
//! `/proc/self` at scrape time. Off Linux, or if `/proc` cannot be read, each one is left
//! out rather than reported as a made-up zero.

use std::fmt::Write as _;

/// Clock ticks per second in `/proc/<pid>/stat` (the kernel's USER_HZ). It is 100 on every
/// architecture Linux exports to user space; the Prometheus procfs library assumes the same.
/// (Reading it with `sysconf` would need `unsafe`, which this workspace forbids.)
const USER_HZ: f64 = 100.0;

/// Appends every `process_*` metric that can be read now.
pub(crate) fn render(out: &mut String) {
    let stat = read("/proc/self/stat").and_then(|text| ProcessStat::parse(&text));
    let status = read("/proc/self/status");
    if let Some(stat) = &stat {
        metric(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (stat.utime_ticks + stat.stime_ticks) as f64 / USER_HZ,
        );
    }
    if let Some(bytes) = status.as_deref().and_then(|s| status_kib(s, "VmRSS:")) {
        metric(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            bytes.saturating_mul(1024) as f64,
        );
    }
    if let Some(bytes) = status.as_deref().and_then(|s| status_kib(s, "VmSize:")) {
        metric(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            bytes.saturating_mul(1024) as f64,
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        metric(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            entries.count() as f64,
        );
    }
    if let Some(max) = read("/proc/self/limits").and_then(|text| max_open_files(&text)) {
        metric(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
    let boot_time_seconds = read("/proc/stat").and_then(|text| boot_time_seconds(&text));
    if let (Some(stat), Some(boot)) = (&stat, boot_time_seconds) {
        metric(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot as f64 + stat.start_ticks as f64 / USER_HZ,
        );
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// The fields of `/proc/<pid>/stat` used here, in clock ticks.
#[derive(Debug, PartialEq, Eq)]
struct ProcessStat {
    utime_ticks: u64,
    stime_ticks: u64,
    /// Since boot.
    start_ticks: u64,
}

impl ProcessStat {
    fn parse(text: &str) -> Option<Self> {
        // Field 2, the command name, is in parentheses and may itself hold spaces and ')':
        // the fields after the last ')' start at field 3.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        Some(Self {
            utime_ticks: field(14)?,
            stime_ticks: field(15)?,
            start_ticks: field(22)?,
        })
    }
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The soft limit on the "Max open files" line of `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `btime` line of `/proc/stat`: boot time, in seconds since the epoch.
fn boot_time_seconds(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed() {
        let stat = "4242 (stock guard) srv) S 1 4242 4242 0 -1 4194560 1185 0 0 0 57 13 0 0 20 0 \
                    9 0 123456 204800000 3000 18446744073709551615";
        assert_eq!(
            ProcessStat::parse(stat),
            Some(ProcessStat {
                utime_ticks: 57,
                stime_ticks: 13,
                start_ticks: 123_456,
            })
        );
        assert_eq!(ProcessStat::parse("4242 (cut"), None);
        let status = "Name:\tstockguard\nVmSize:\t  204800 kB\nVmRSS:\t    3000 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(3000));
        assert_eq!(status_kib(status, "VmSize:"), Some(204_800));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            boot_time_seconds("cpu  1 2 3\nbtime 1764650000\nprocesses 9\n"),
            Some(1_764_650_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(out.contains(name), "{name} missing:\n{out}");
        }
    }
}
