use std::path::PathBuf;
use std::time::Duration;

/// Everything the test kit can fail with. Tests usually just `?` these into `anyhow`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No control plane could be found or started (the reason says why).
    #[error("no control plane: {0}")]
    NoControlPlane(String),

    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },

    #[error("building a client from kubeconfig {path}: {source}")]
    ClientConfig {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },

    #[error(transparent)]
    Kube(#[from] kube::Error),

    /// The delaying proxy could not start or forward.
    #[error("delaying proxy: {0}")]
    Proxy(String),

    /// The caller passed something unusable (e.g. a CRD without a name).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A [`crate::wait_for`] ran out of time; `last` is the last "not yet" reason or error.
    #[error("timed out after {timeout:?} waiting for {what}{}", last.as_ref().map(|l| format!(" (last: {l})")).unwrap_or_default())]
    Timeout {
        what: String,
        timeout: Duration,
        last: Option<String>,
    },
}
