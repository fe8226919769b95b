//! kube-rs control loops of karpenter-rs: cluster state, provisioning, NodeClaim lifecycle,
//! node termination, disruption (emptiness, consolidation, drift, expiration) and garbage
//! collection, leader election, plus metrics and health endpoints.
//!
//! [`start`] runs them all in-process on the current tokio runtime (the binary and the e2e
//! tests use the same entry point). Every replica keeps the cluster state warm and runs the
//! provisioner's batching; only the leader provisions and runs the writing loops (lifecycle,
//! pod events, termination, disruption, garbage collection), so a follower that takes over
//! acts at once.

pub mod backoff;
pub mod capacitybuffer;
pub mod context;
pub mod disruption;
pub mod drift;
pub mod error;
pub mod garbagecollection;
pub mod leaderelection;
pub mod metrics;
pub mod node;
pub mod nodeclaim;
pub mod nodeoverlay;
pub mod pods;
pub mod provisioning;
pub mod reservations;
pub mod server;
pub mod state;
pub mod static_nodepool;
pub mod turns;

use std::sync::Arc;

use karpenter_providers::CloudProvider;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use context::{Clients, Context, Options};
pub use error::Error;
use leaderelection::Elector;
pub use metrics::Metrics;
use metrics::cloudprovider::with_controller;
use state::Trigger;

/// Tasks aborted when dropped (a dropped `JoinHandle` would detach its task instead).
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn push(&mut self, t: JoinHandle<()>) {
        self.0.push(t);
    }

    fn abort(&mut self) {
        for t in self.0.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The running loops. Dropping it (or calling [`Running::stop`]) stops them all.
pub struct Running {
    /// Shared context (state stores, metrics).
    pub context: Arc<Context>,
    tasks: Tasks,
    elector: Option<Arc<Elector>>,
}

impl Running {
    /// Stops every loop at once, as a crash would: a held Lease is not released (it expires).
    pub fn stop(&mut self) {
        self.tasks.abort();
    }

    /// Stops every loop, then releases the Lease if this replica holds it, so another replica
    /// takes over without waiting for it to expire.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(elector) = self.elector.take()
            && let Err(e) = elector.release().await
        {
            tracing::warn!(error = %e, "releasing the lease failed; it will expire");
        }
    }

    /// Whether every cluster-state store has its initial list.
    pub fn synced(&self) -> bool {
        self.context.state.is_ready()
    }

    /// Whether this replica leads (always true without leader election).
    pub fn is_leader(&self) -> bool {
        self.context.is_leader()
    }
}

/// Starts cluster state, leader election, the provisioner and (while leading) lifecycle, pod
/// events, termination, disruption and garbage collection on the current runtime.
pub fn start(
    clients: Clients,
    provider: Arc<dyn CloudProvider>,
    metrics: Arc<Metrics>,
    options: Options,
) -> Running {
    // Every provider call is timed and its errors counted, whichever loop makes it.
    let provider: Arc<dyn CloudProvider> = Arc::new(metrics::cloudprovider::Instrumented::new(
        provider,
        metrics.clone(),
    ));
    let (tx, rx) = unbounded_channel();
    let (state, state_tasks) = state::ClusterState::start(
        &clients.client,
        tx.clone(),
        options.node_overlay,
        options.capacity_buffer,
    );
    let mut tasks = Tasks::default();
    for t in state_tasks {
        tasks.push(t);
    }
    let (elector, leader) = match options.leader_election.clone() {
        Some(config) => {
            let (elector, leader) = Elector::new(clients.client.clone(), config);
            let elector = Arc::new(elector);
            let campaign = elector.clone();
            tasks.push(tokio::spawn(async move { campaign.run().await }));
            (Some(elector), leader)
        }
        None => {
            let (always, leader) = watch::channel(true);
            // Keep the sender alive for as long as the loops run: a closed channel reads as
            // "stop" to the supervisor.
            tasks.push(tokio::spawn(async move { always.closed().await }));
            (None, leader)
        }
    };
    let context = Arc::new(Context::new(
        clients,
        provider,
        state,
        metrics,
        options,
        leader.clone(),
    ));
    tasks.push(tokio::spawn(with_controller(
        "provisioner",
        provisioning::run(context.clone(), rx, tx.clone()),
    )));
    tasks.push(tokio::spawn(supervise(context.clone(), leader, tx)));
    Running {
        context,
        tasks,
        elector,
    }
}

/// Spawns a loop under its controller name ([`with_controller`]).
fn spawn_as<F>(name: &'static str, fut: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(with_controller(name, fut))
}

/// Runs the writing loops while this replica leads, and stops them when it no longer does.
async fn supervise(
    ctx: Arc<Context>,
    mut leader: watch::Receiver<bool>,
    triggers: UnboundedSender<Trigger>,
) {
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("leading: starting the writing loops");
        // Pods that went pending while we followed get a round now.
        let _ = triggers.send(Trigger::Resync);
        let mut writers = Tasks::default();
        // Each loop runs under its upstream controller name (the `controller` label of the
        // cloud provider metrics).
        writers.push(spawn_as(
            "nodeclaim.lifecycle",
            nodeclaim::lifecycle::run(ctx.clone()),
        ));
        writers.push(spawn_as(
            "node.termination",
            node::termination::run(ctx.clone()),
        ));
        writers.push(spawn_as(
            "nodeclaim.garbagecollection",
            garbagecollection::run(ctx.clone()),
        ));
        writers.push(spawn_as(
            "nodeclaim.podevents",
            nodeclaim::podevents::run(ctx.clone()),
        ));
        // Drift conditions and hash stamps are kept even when disruption is off.
        writers.push(spawn_as("nodeclaim.disruption", drift::run(ctx.clone())));
        if ctx.options.disruption {
            writers.push(spawn_as("disruption", disruption::run(ctx.clone())));
        }
        if ctx.options.node_overlay {
            writers.push(spawn_as(
                "nodeoverlay.controller",
                nodeoverlay::status::run(ctx.clone()),
            ));
        }
        if ctx.options.capacity_buffer {
            writers.push(spawn_as(
                "capacitybuffer",
                capacitybuffer::status::run(ctx.clone()),
            ));
        }
        if ctx.options.static_capacity {
            writers.push(spawn_as(
                "static.provisioning",
                static_nodepool::run(ctx.clone()),
            ));
        }
        if ctx.options.repairs_in_legacy_loop() {
            writers.push(spawn_as("node.health", node::repair::run(ctx.clone())));
        }
        // Like upstream's metrics controllers, only the leader reports the cluster's gauges
        // (replicas would otherwise report every node twice).
        writers.push(spawn_as(
            "metrics.nodepool",
            metrics::cluster::run(ctx.clone()),
        ));
        let lost = leader.wait_for(|l| !*l).await;
        writers.abort();
        if lost.is_err() {
            return;
        }
        tracing::warn!("no longer leading: writing loops stopped");
    }
}
