//! The controller under test as a separate process (`karpenter controller`, kwok provider,
//! JSON logs to a file), so its own peak RSS and CPU time can be read from /proc. Killed when
//! dropped, also on error paths.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, Result};

use crate::procstat::{self, ProcSample};

/// A running `karpenter controller`.
#[derive(Debug)]
pub struct ControllerProc {
    child: Child,
    /// Port of its Prometheus `/metrics`.
    pub metrics_port: u16,
    /// Its log file.
    pub log: PathBuf,
    ticks: f64,
    /// The last reading while it ran (kept for the totals after it is killed).
    last: ProcSample,
}

impl ControllerProc {
    /// Starts `bin controller` against `kubeconfig`, logging to `log`.
    pub fn start(bin: &Path, kubeconfig: &Path, log: PathBuf) -> Result<ControllerProc> {
        let metrics_port = free_port()?;
        let health_port = free_port()?;
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        let child = Command::new(bin)
            .arg("controller")
            .args(["--log-format", "json"])
            .args(["--cloud-provider", "kwok"])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--health-probe-port", &health_port.to_string()])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} controller", bin.display()))?;
        tracing::info!(pid = child.id(), metrics_port, log = %log.display(), "controller started");
        Ok(ControllerProc {
            child,
            metrics_port,
            log,
            ticks: procstat::clock_ticks(),
            last: ProcSample::default(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads peak RSS and CPU time now (and remembers it). Errors once the process is gone.
    pub fn sample(&mut self) -> Result<ProcSample> {
        if let Ok(Some(status)) = self.child.try_wait() {
            anyhow::bail!(
                "controller exited with {status}; see {}",
                self.log.display()
            );
        }
        let s = procstat::sample(self.child.id(), self.ticks)?;
        self.last = s;
        Ok(s)
    }

    /// SIGKILL (no shutdown path runs: the crash case), after a last reading. Returns it.
    pub fn kill(mut self) -> ProcSample {
        let _ = self.sample();
        self.stop();
        self.last
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill sends SIGKILL on Unix.
            if let Err(e) = self.child.kill() {
                tracing::warn!(error = %e, "cannot kill the controller");
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free now (the kernel picks it; released at once for the controller to bind).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("reading the bound port")?.port())
}
