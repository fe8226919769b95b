//! The controller across restarts: the current process, and peak RSS / CPU seconds summed over
//! every process of the run (a killed process's last reading counts).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::controller::ControllerProc;

/// Runs `karpenter controller`, restarts it on demand, and keeps the totals.
pub struct Supervisor {
    bin: PathBuf,
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    current: Option<ControllerProc>,
    starts: usize,
    /// CPU seconds of the processes already gone.
    cpu_done: f64,
    cpu_now: f64,
    peak_rss: u64,
}

/// Totals over all processes so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub peak_rss_mb: f64,
    pub cpu_seconds: f64,
}

impl Supervisor {
    pub fn new(bin: &Path, kubeconfig: &Path, log_dir: &Path) -> Supervisor {
        Supervisor {
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            current: None,
            starts: 0,
            cpu_done: 0.0,
            cpu_now: 0.0,
            peak_rss: 0,
        }
    }

    /// Starts a new process (logs to `controller-<n>.log`).
    pub fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let log = self.log_dir.join(format!("controller-{}.log", self.starts));
        self.current = Some(ControllerProc::start(&self.bin, &self.kubeconfig, log)?);
        self.cpu_now = 0.0;
        Ok(())
    }

    /// Reads the running process; an error means it died on its own (a crash to report).
    pub fn sample(&mut self) -> Result<Usage> {
        if let Some(c) = self.current.as_mut() {
            let s = c.sample()?;
            self.cpu_now = s.cpu_seconds;
            self.peak_rss = self.peak_rss.max(s.peak_rss_bytes);
        }
        Ok(self.usage())
    }

    /// SIGKILL the running process (after a last reading).
    pub fn kill(&mut self) {
        if let Some(c) = self.current.take() {
            let s = c.kill();
            self.peak_rss = self.peak_rss.max(s.peak_rss_bytes);
            self.cpu_done += s.cpu_seconds.max(self.cpu_now);
            self.cpu_now = 0.0;
        }
    }

    pub fn usage(&self) -> Usage {
        Usage {
            peak_rss_mb: self.peak_rss as f64 / (1024.0 * 1024.0),
            cpu_seconds: self.cpu_done + self.cpu_now,
        }
    }

    /// The running process's metrics port and log.
    pub fn current(&self) -> Option<(u16, &Path)> {
        self.current
            .as_ref()
            .map(|c| (c.metrics_port, c.log.as_path()))
    }

    pub fn pid(&self) -> Option<u32> {
        self.current.as_ref().map(ControllerProc::pid)
    }
}
