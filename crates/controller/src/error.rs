//! Errors of the control loops. Each loop returns these from `reconcile`; the error policy
//! logs them and requeues with backoff.

use karpenter_providers::CloudProviderError;

/// What a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The cloud provider failed.
    #[error(transparent)]
    Provider(#[from] CloudProviderError),
    /// Serialising a patch failed (a bug, not a cluster condition).
    #[error("serialising a patch: {0}")]
    Serde(#[from] serde_json::Error),
    /// An object lacks a field the loop needs (e.g. a name); it is skipped until it changes.
    #[error("invalid object: {0}")]
    Invalid(String),
    /// The solver rejected its input.
    #[error("solver: {0}")]
    Solver(#[from] karpenter_solver::SolveError),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Provider(e) => e.kind(),
            Self::Serde(_) => "serde",
            Self::Invalid(_) => "invalid",
            Self::Solver(_) => "solver",
        }
    }
}

/// Whether a kube error is an API status with this code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Whether the error is routine for a controller: an optimistic-concurrency conflict (409,
/// the object changed since it was read; a prompt retry on the new version is the fix) or the
/// object being gone already (404, e.g. a write racing its own finalizer's removal).
pub fn is_routine(e: &Error) -> bool {
    matches!(e, Error::Kube(k) if is_status(k, 409) || is_status(k, 404))
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
