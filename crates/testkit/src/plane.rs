//! Finding or starting the control plane that tests run against (one per test binary).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Env var with the admin kubeconfig of a running plane (set by `hack/test.sh` after `up`).
pub const KUBECONFIG_ENV: &str = "KARPENTER_TEST_KUBECONFIG";
/// Env var with the plane's state directory (its `logs/` are printed when a wait fails).
pub const STATE_DIR_ENV: &str = "KARPENTER_CP_DIR";
/// Set to `1` to never start a plane from inside a test binary (only use [`KUBECONFIG_ENV`]).
pub const NO_START_ENV: &str = "KARPENTER_TEST_NO_START";

/// A running control plane: where its kubeconfig and (if known) its logs are.
#[derive(Debug)]
pub(crate) struct Plane {
    pub kubeconfig: PathBuf,
    pub state_dir: Option<PathBuf>,
}

/// Why no plane is available, and whether that is the caller's explicit choice gone wrong
/// (a given kubeconfig that does not work), which is a failure even outside CI.
#[derive(Debug, Clone)]
pub(crate) struct Unavailable {
    pub reason: String,
    pub explicit: bool,
}

// Holds only paths, never a `kube::Client`: every `#[tokio::test]` has its own runtime, and a
// client's connection tasks die with the runtime that created them.
static PLANE: OnceLock<Result<Arc<Plane>, Unavailable>> = OnceLock::new();

/// The plane for this test binary: found or started on first use, then shared.
/// Blocks (possibly for minutes on a cold build): call it from `spawn_blocking`.
pub(crate) fn plane() -> Result<Arc<Plane>, Unavailable> {
    PLANE.get_or_init(find_or_start).clone()
}

fn find_or_start() -> Result<Arc<Plane>, Unavailable> {
    if let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
        let kubeconfig = PathBuf::from(path);
        if !kubeconfig.is_file() {
            return Err(Unavailable {
                reason: format!("{KUBECONFIG_ENV}={} is not a file", kubeconfig.display()),
                explicit: true,
            });
        }
        let state_dir = std::env::var_os(STATE_DIR_ENV)
            .map(PathBuf::from)
            .or_else(|| kubeconfig.parent().map(Path::to_path_buf))
            .filter(|d| d.join("logs").is_dir());
        return Ok(Arc::new(Plane {
            kubeconfig,
            state_dir,
        }));
    }
    if std::env::var(NO_START_ENV).is_ok_and(|v| v == "1") {
        return Err(Unavailable {
            reason: format!("{KUBECONFIG_ENV} is unset and {NO_START_ENV}=1"),
            explicit: false,
        });
    }
    start().map(Arc::new).map_err(|reason| Unavailable {
        reason: format!("{KUBECONFIG_ENV} is unset and starting one failed: {reason}"),
        explicit: false,
    })
}

/// Runs `hack/control-plane/up` with a fresh state directory. `up` tears the plane down by
/// itself when this process exits (KARPENTER_CP_OWNER_PID), since statics are never dropped.
fn start() -> Result<Plane, String> {
    let up = repo_root().join("hack/control-plane/up");
    if !up.is_file() {
        return Err(format!("{} not found", up.display()));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let state_dir =
        std::env::temp_dir().join(format!("karpenter-cp-{}-{nanos:x}", std::process::id()));
    eprintln!(
        "karpenter-testkit: starting a control plane in {} via {} \
         (the first run builds it from Go modules, which takes several minutes)",
        state_dir.display(),
        up.display()
    );
    let output = Command::new(&up)
        .env(STATE_DIR_ENV, &state_dir)
        .env("KARPENTER_CP_OWNER_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit()) // progress and, on failure, the component logs
        .output()
        .map_err(|e| format!("running {}: {e}", up.display()))?;
    if !output.status.success() {
        return Err(format!("{} exited with {}", up.display(), output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let kubeconfig = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("{} printed no kubeconfig path: {stdout:?}", up.display()))?;
    Ok(Plane {
        kubeconfig,
        state_dir: Some(state_dir),
    })
}

/// The workspace root: this crate lives in `<root>/crates/testkit`.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Plane {
    /// Prints the last `lines` lines of every component log (etcd, kube-apiserver, ...) to
    /// stderr, so a failed wait shows what the control plane was doing.
    pub fn print_log_tails(&self, lines: usize) {
        let Some(dir) = &self.state_dir else {
            eprintln!("karpenter-testkit: control-plane logs unknown (set {STATE_DIR_ENV})");
            return;
        };
        let logs = dir.join("logs");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&logs) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                eprintln!("karpenter-testkit: cannot read {}: {e}", logs.display());
                return;
            }
        };
        files.retain(|p| p.extension().is_some_and(|x| x == "log"));
        files.sort();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let all: Vec<&str> = text.lines().collect();
                    let tail = &all[all.len().saturating_sub(lines)..];
                    eprintln!(
                        "\n----- {} (last {} lines) -----",
                        file.display(),
                        tail.len()
                    );
                    for line in tail {
                        eprintln!("{line}");
                    }
                }
                Err(e) => eprintln!("karpenter-testkit: cannot read {}: {e}", file.display()),
            }
        }
    }
}
