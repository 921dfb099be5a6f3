//! What the kernel says about a process: CPU time and memory.
//!
//! Everything here is read from `/proc`, so it measures the servers from the
//! outside, whatever they report about themselves. (Bytes per link come
//! from the sockets' TCP counters instead: see [`crate::tcpbytes`].)

use serde::Serialize;
use std::time::Duration;

/// One look at a process.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProcSample {
    /// utime + stime, all threads.
    pub cpu: Duration,
    /// Resident set size now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started (VmHWM), KiB.
    pub hwm_kib: u64,
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may contain spaces
    // or parentheses itself: the fields that follow start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let tck = clock_ticks_per_second();
    let ticks = utime + stime;
    Some(Duration::from_secs(ticks / tck) + Duration::from_nanos((ticks % tck) * 1_000_000_000 / tck))
}

/// A `Key:   value kB` line of `/proc/PID/status`, in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

/// Samples `pid` (`"self"` for this process).
pub fn sample(pid: &str) -> Result<ProcSample, String> {
    let what = |f: &str| format!("/proc/{pid}/{f}");
    let read = |f: &str| std::fs::read_to_string(what(f)).map_err(|e| format!("cannot read {}: {e}", what(f)));
    let stat = read("stat")?;
    let status = read("status")?;
    let bad = |f: &str| format!("{}: unexpected format", what(f));
    Ok(ProcSample {
        cpu: parse_stat_cpu(&stat).ok_or_else(|| bad("stat"))?,
        // Kernel threads and zombies have no VmRSS line: treat as 0.
        rss_kib: parse_status_kib(&status, "VmRSS").unwrap_or(0),
        hwm_kib: parse_status_kib(&status, "VmHWM").unwrap_or(0),
    })
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let tck = clock_ticks_per_second();
        let stat = format!("1234 (model (x) server) S 1 2 3 4 5 6 7 8 9 10 {} {} 0 0", 3 * tck, tck / 2);
        assert_eq!(parse_stat_cpu(&stat), Some(Duration::from_millis(3500)));
        let status = "Name:\tx\nVmHWM:\t  20480 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        let me = sample("self").unwrap();
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
        assert!(loadavg().is_some());
        assert!(sample("999999999").unwrap_err().contains("/proc/999999999/stat"));
    }
}
