//! kube-rs control loops of karpenter-rs: cluster state, provisioning, NodeClaim lifecycle,
//! node termination and garbage collection, plus metrics and health endpoints.
//!
//! [`start`] runs them all in-process on the current tokio runtime (the binary and the e2e
//! tests use the same entry point).

pub mod context;
pub mod error;
pub mod garbagecollection;
pub mod metrics;
pub mod node;
pub mod nodeclaim;
pub mod provisioning;
pub mod server;
pub mod state;

use std::sync::Arc;

use karpenter_providers::CloudProvider;
use kube::Client;
use tokio::sync::mpsc::unbounded_channel;
use tokio::task::JoinHandle;

pub use context::{Context, Options};
pub use error::Error;
pub use metrics::Metrics;

/// The running loops. Dropping it (or calling [`Running::stop`]) stops them all.
pub struct Running {
    /// Shared context (state stores, metrics).
    pub context: Arc<Context>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops every loop.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Whether every cluster-state store has its initial list.
    pub fn synced(&self) -> bool {
        self.context.state.is_ready()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts cluster state, provisioner, lifecycle, termination and garbage collection on the
/// current runtime.
pub fn start(
    client: Client,
    provider: Arc<dyn CloudProvider>,
    metrics: Arc<Metrics>,
    options: Options,
) -> Running {
    let (tx, rx) = unbounded_channel();
    let (state, mut tasks) = state::ClusterState::start(&client, tx.clone());
    let context = Arc::new(Context::new(client, provider, state, metrics, options));
    tasks.push(tokio::spawn(provisioning::run(context.clone(), rx, tx)));
    tasks.push(tokio::spawn(nodeclaim::lifecycle::run(context.clone())));
    tasks.push(tokio::spawn(node::termination::run(context.clone())));
    tasks.push(tokio::spawn(garbagecollection::run(context.clone())));
    Running { context, tasks }
}
