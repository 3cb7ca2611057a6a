//! The node's own process: CPU time and resident memory, read from
//! `/proc/self` (Linux). Elsewhere both are unknown (`None`).

/// Clock ticks per second of `/proc/self/stat`'s CPU times: 100 on every
/// Linux platform this runs on (`getconf CLK_TCK`).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time used by the process so far (user + system), in µs.
pub(crate) fn cpu_time_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are 11 and 12 after ')'.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / TICKS_PER_SECOND)
}

/// Resident set size, in bytes.
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0);
        }
        assert!(super::cpu_time_us().unwrap() > 0);
        assert!(super::rss_bytes().unwrap() > 1024 * 1024);
    }
}
