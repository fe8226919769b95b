//! The sync gate: whether every watched kind reflects a complete list. A kind is unsynced from
//! the start until its first `InitDone`, and again from any re-list's `Init` until that list's
//! `InitDone` (a watch that fell too far behind, or restarted, lists again; until the list is
//! complete the state may lack objects that exist, such as a NodeClaim just created). The loops
//! that create or delete capacity act only while the gate is open.

use std::sync::Arc;

use tokio::sync::watch;

/// The state stopped (its watch tasks are gone) before the awaited condition held.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the cluster state stopped before it was synced")]
pub struct NotSynced;

/// Which kinds are unsynced (a bit each), and whether all were ever synced at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Gate {
    kinds: u32,
    unsynced: u64,
    ever: bool,
}

/// Shared handle on the gate. Cloning shares it.
#[derive(Clone)]
pub struct SyncGate {
    tx: Arc<watch::Sender<Gate>>,
    rx: watch::Receiver<Gate>,
}

impl std::fmt::Debug for SyncGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncGate")
            .field("gate", &*self.rx.borrow())
            .finish()
    }
}

/// One kind's side of the gate, owned by its watch.
#[derive(Debug, Clone)]
pub struct KindSync {
    gate: SyncGate,
    bit: u64,
}

impl Default for SyncGate {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncGate {
    /// A gate with no kinds (open until one registers).
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(Gate::default());
        Self {
            tx: Arc::new(tx),
            rx,
        }
    }

    /// Registers a kind, unsynced. The gate has room for 64 kinds; more share the last bit
    /// (and so are synced together), which the state, with a dozen kinds, never needs.
    pub fn register(&self) -> KindSync {
        let mut bit = 0;
        self.tx.send_modify(|g| {
            bit = 1u64 << g.kinds.min(63);
            g.kinds = g.kinds.saturating_add(1);
            g.unsynced |= bit;
        });
        KindSync {
            gate: self.clone(),
            bit,
        }
    }

    /// Whether every kind reflects a complete list right now.
    pub fn is_synced(&self) -> bool {
        self.rx.borrow().unsynced == 0
    }

    /// Whether every kind was synced at least once (readiness).
    pub fn was_synced(&self) -> bool {
        self.rx.borrow().ever
    }

    /// Waits until every kind reflects a complete list.
    pub async fn wait_until_synced(&self) -> Result<(), NotSynced> {
        let mut rx = self.rx.clone();
        rx.wait_for(|g| g.unsynced == 0)
            .await
            .map(|_| ())
            .map_err(|_| NotSynced)
    }

    /// Waits until every kind was synced at least once.
    pub async fn wait_until_ready(&self) -> Result<(), NotSynced> {
        let mut rx = self.rx.clone();
        rx.wait_for(|g| g.ever)
            .await
            .map(|_| ())
            .map_err(|_| NotSynced)
    }

    fn set(&self, bit: u64, synced: bool) {
        self.tx.send_if_modified(|g| {
            let before = *g;
            if synced {
                g.unsynced &= !bit;
            } else {
                g.unsynced |= bit;
            }
            if g.unsynced == 0 {
                g.ever = true;
            }
            *g != before
        });
    }
}

impl KindSync {
    /// A (re-)list started: the kind's objects are being listed again.
    pub fn listing(&self) {
        self.gate.set(self.bit, false);
    }

    /// The list is complete and applied.
    pub fn listed(&self) {
        self.gate.set(self.bit, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn open_only_while_every_kind_is_listed() {
        let gate = SyncGate::new();
        let pods = gate.register();
        let claims = gate.register();
        assert!(
            !gate.is_synced() && !gate.was_synced(),
            "nothing listed yet"
        );
        pods.listed();
        assert!(!gate.is_synced(), "claims not listed yet");
        claims.listed();
        assert!(gate.is_synced() && gate.was_synced());
        // A re-list of one kind closes the gate until it completes; readiness stays.
        claims.listing();
        assert!(!gate.is_synced() && gate.was_synced());
        pods.listing();
        pods.listed();
        assert!(!gate.is_synced(), "claims still listing");
        claims.listed();
        assert!(gate.is_synced());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_when_the_gate_opens() {
        let gate = SyncGate::new();
        let nodes = gate.register();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.wait_until_synced().await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "the gate is closed");
        nodes.listed();
        let woke = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(matches!(woke, Ok(Ok(Ok(())))), "{woke:?}");
    }
}
