//! Resource use of a process from /proc: peak RSS (`VmHWM`) and CPU time (utime + stime).

use anyhow::{Context as _, Result};

/// One reading of a live process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// `VmHWM`: the peak resident set so far, in bytes.
    pub peak_rss_bytes: u64,
    /// utime + stime, in seconds.
    pub cpu_seconds: f64,
}

/// Clock ticks per second of /proc/PID/stat times. `getconf CLK_TCK` rather than a libc call
/// (the crate forbids unsafe); 100 is what every Linux build this runs on uses.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Reads `pid`'s peak RSS and CPU seconds. Fails once the process is gone (or a zombie,
/// whose status no longer has `VmHWM`): sample before killing it.
pub fn sample(pid: u32, ticks: f64) -> Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(ProcSample {
        peak_rss_bytes: hwm_kb * 1024,
        cpu_seconds: cpu_ticks(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))? as f64
            / ticks,
    })
}

/// utime + stime (fields 14 and 15). The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_odd_command_names() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some(300));
    }

    #[test]
    fn own_process_is_readable() -> Result<()> {
        let s = sample(std::process::id(), clock_ticks())?;
        assert!(s.peak_rss_bytes > 0);
        Ok(())
    }
}
