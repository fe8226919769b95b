//! One solver input at a time.
//!
//! Provisioning, disruption planning and disruption validation each build a solver input over
//! the whole cluster (every bound pod converted, the planner's per-node state on top): at
//! 10 000 pods about 50 MB each. Run concurrently they held three at once (a heap profile of
//! the perf suite's 10 000-pod run peaked at 236 MB, 130 MB of it in such inputs). They are
//! CPU-bound work on a controller that usually has one or two cores, so taking turns costs
//! little time and bounds the heap by one input.

use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The turns; cloning shares them.
#[derive(Debug, Clone)]
pub struct SolverTurns(Arc<Semaphore>);

impl Default for SolverTurns {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(1)))
    }
}

/// A turn: held while a solver input exists, given back when dropped. Hold it only across
/// building and solving, never across waiting for the cluster to change (the provisioner
/// needs a turn to make that change).
#[derive(Debug)]
pub struct SolverTurn<'a> {
    _permit: Option<SemaphorePermit<'a>>,
}

impl SolverTurns {
    /// Waits for the current turn to end.
    pub async fn next(&self) -> SolverTurn<'_> {
        // The semaphore is never closed; if it were, going on without a turn costs memory,
        // not correctness.
        SolverTurn {
            _permit: self.0.acquire().await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn one_turn_at_a_time() {
        let turns = SolverTurns::default();
        let first = turns.next().await;
        let shared = turns.clone();
        assert!(
            shared.next().now_or_never().is_none(),
            "a second turn while the first is held"
        );
        drop(first);
        let second = shared.next().now_or_never();
        assert!(second.is_some(), "the turn is free again once given back");
    }
}
