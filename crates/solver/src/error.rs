//! Typed errors for invalid solver input. Unschedulable pods are *not* errors: they are part
//! of the [`crate::Plan`].

use thiserror::Error;

use crate::quantity::QuantityError;

/// Input the solver refuses to work on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SolveError {
    /// A node-selector requirement is malformed (e.g. `Gt` with a non-integer value).
    #[error("invalid requirement on key {key:?}: {reason}")]
    InvalidRequirement {
        /// The label key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A quantity string could not be parsed.
    #[error(transparent)]
    Quantity(#[from] QuantityError),
    /// Two pending pods share the same `namespace/name` key.
    #[error("duplicate pod {0}")]
    DuplicatePod(String),
    /// `explain` was asked about a pod that is not in the problem.
    #[error("pod {0} is not a pending pod of this problem")]
    UnknownPod(String),
    /// A topology spread constraint has `maxSkew < 1`.
    #[error(
        "pod {pod}: topology spread constraint on {key:?} has maxSkew {max_skew} (must be >= 1)"
    )]
    InvalidMaxSkew {
        /// The pod key.
        pod: String,
        /// The topology key.
        key: String,
        /// The offending value.
        max_skew: i32,
    },
}
