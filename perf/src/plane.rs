//! A fresh local control plane per size (`hack/control-plane/up`), with the client rate limits
//! raised so kube-controller-manager, kube-scheduler and the API server keep up with the
//! controller under test; torn down (`down`) when dropped, also on error paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::audit::CONTROLLER_USER;

/// Rate limits handed to `up` through its `KARPENTER_CP_*` knobs.
#[derive(Debug, Clone)]
pub struct PlaneLimits {
    /// `--kube-api-qps` of kube-controller-manager and kube-scheduler.
    pub qps: u32,
    /// `--kube-api-burst` of the same.
    pub burst: u32,
    /// API server `--max-requests-inflight`.
    pub inflight: u32,
    /// API server `--max-mutating-requests-inflight`.
    pub mutating_inflight: u32,
    /// kwok's pod and node stage parallelism (its default, 4, caps pods turning Running).
    pub kwok_parallelism: u32,
}

/// A running plane; `down` runs when dropped.
#[derive(Debug)]
pub struct Plane {
    pub state_dir: PathBuf,
    /// Admin (`system:masters`) kubeconfig: the suite's own client.
    pub kubeconfig: PathBuf,
    /// The controller's kubeconfig (`system:masters` too, as user [`CONTROLLER_USER`]).
    pub controller_kubeconfig: PathBuf,
    /// The API server's audit log of [`CONTROLLER_USER`]'s requests.
    pub audit_log: PathBuf,
    repo: PathBuf,
}

impl Plane {
    /// Runs `up` in a new state directory under `parent`. Blocks (the first run may wait for
    /// another process building the plane's binaries).
    pub fn up(repo: &Path, parent: &Path, limits: &PlaneLimits) -> Result<Plane> {
        let state_dir = parent.join("control-plane");
        let up = repo.join("hack/control-plane/up");
        tracing::info!(state_dir = %state_dir.display(), "starting the control plane");
        let output = Command::new(&up)
            .env("KARPENTER_CP_DIR", &state_dir)
            .env("KARPENTER_CP_AUDIT_USER", CONTROLLER_USER)
            .env("KARPENTER_CP_QPS", limits.qps.to_string())
            .env("KARPENTER_CP_BURST", limits.burst.to_string())
            .env(
                "KARPENTER_CP_MAX_REQUESTS_INFLIGHT",
                limits.inflight.to_string(),
            )
            .env(
                "KARPENTER_CP_MAX_MUTATING_REQUESTS_INFLIGHT",
                limits.mutating_inflight.to_string(),
            )
            .env(
                "KARPENTER_CP_KWOK_PARALLELISM",
                limits.kwok_parallelism.to_string(),
            )
            // If this process dies without unwinding (SIGKILL), `up`'s watchdog still runs `down`.
            .env("KARPENTER_CP_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", up.display()))?;
        // From here the directory may hold running processes: the guard owns it.
        let plane = Plane {
            kubeconfig: state_dir.join("kubeconfig"),
            controller_kubeconfig: state_dir.join("karpenter.kubeconfig"),
            audit_log: state_dir.join("audit.log"),
            state_dir,
            repo: repo.to_path_buf(),
        };
        if !output.status.success() {
            bail!("{} exited with {}", up.display(), output.status);
        }
        if !plane.kubeconfig.is_file() || !plane.controller_kubeconfig.is_file() {
            bail!(
                "{} wrote no kubeconfig (or no karpenter.kubeconfig)",
                up.display()
            );
        }
        Ok(plane)
    }

    /// An admin client of this plane.
    pub async fn client(&self) -> Result<Client> {
        let file = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .context("building a client config from the plane's kubeconfig")?;
        Client::try_from(config).context("building the admin client")
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let down = self.repo.join("hack/control-plane/down");
        // The component logs are kept with the run's results; the rest (etcd data) goes.
        if let Some(parent) = self.state_dir.parent() {
            let _ = copy_dir(
                &self.state_dir.join("logs"),
                &parent.join("control-plane-logs"),
            );
        }
        match Command::new(&down)
            .arg(&self.state_dir)
            .stdin(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => tracing::info!("control plane stopped"),
            Ok(s) => tracing::warn!(status = %s, "control plane down failed"),
            Err(e) => tracing::warn!(error = %e, "cannot run {}", down.display()),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}
