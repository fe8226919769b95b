//! What every loop shares: the client, the provider, the cluster state, the event recorder,
//! metrics and options.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use karpenter_providers::CloudProvider;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::leaderelection::LeaderElectionConfig;
use crate::metrics::Metrics;
use crate::nodeoverlay::launch::LaunchPrices;
use crate::provisioning::batcher;
use crate::provisioning::verdicts::Unplaceable;
use crate::state::ClusterState;
use crate::turns::SolverTurns;

/// Field manager and event reporter name.
pub const MANAGER: &str = "karpenter";

/// Tunables (flags / environment in the binary).
#[derive(Debug, Clone)]
pub struct Options {
    /// Batch idle window (`BATCH_IDLE_DURATION`, 1 s).
    pub batch_idle: Duration,
    /// Batch maximum window (`BATCH_MAX_DURATION`, 10 s).
    pub batch_max: Duration,
    /// A launched NodeClaim whose Node has not registered by then is deleted (15 min).
    pub registration_timeout: Duration,
    /// How often garbage collection runs.
    pub gc_interval: Duration,
    /// How old an instance without a NodeClaim must be before it is deleted (covers the gap
    /// between launching an instance and recording its providerID).
    pub gc_grace: Duration,
    /// How long a pod's nomination to capacity holds once that capacity is initialized.
    pub nomination_window: Duration,
    /// Whether the disruption loop runs (emptiness, consolidation, drift, expiration).
    pub disruption: bool,
    /// How often the disruption loop plans (upstream 10 s).
    pub disruption_poll_period: Duration,
    /// How long emptiness and consolidation commands wait before they are planned again and
    /// kept only if they still hold (upstream 15 s).
    pub disruption_validation_period: Duration,
    /// How long a disruption command waits for its replacements to initialize before it is
    /// rolled back (upstream at least 10 min).
    pub disruption_replacement_timeout: Duration,
    /// Replace spot nodes with cheaper spot nodes (upstream feature gate
    /// `SpotToSpotConsolidation`, off by default).
    pub spot_to_spot_consolidation: bool,
    /// Apply NodeOverlays to the catalog and write their status (upstream feature gate
    /// `NodeOverlay`, off by default).
    pub node_overlay: bool,
    /// Replace nodes whose conditions match the provider's repair policies (upstream feature
    /// gate `NodeRepair`, off by default).
    pub node_repair: bool,
    /// With `node_repair`: run the legacy `node.health` loop (upstream v1.15
    /// `--legacy-node-repair`, off by default) instead of repair as a disruption method.
    pub legacy_node_repair: bool,
    /// Use the provider's capacity reservations (upstream feature gate `ReservedCapacity`, on
    /// by default); off, reserved offerings are dropped from the catalog.
    pub reserved_capacity: bool,
    /// Keep static NodePools (`spec.replicas`) at their size (upstream feature gate
    /// `StaticCapacity`, off by default). Off, static NodePools are left alone: nothing is
    /// launched for them, by the static loop or for pending pods, as upstream.
    pub static_capacity: bool,
    /// Keep room for CapacityBuffers' virtual pods (upstream feature gate `CapacityBuffer`,
    /// off by default): buffers are watched and resolved, their virtual pods join every
    /// provisioning round, and nodes holding them are neither empty nor consolidated away.
    pub capacity_buffer: bool,
    /// How often the static loop looks at the static NodePools (it also wakes on NodeClaim
    /// changes).
    pub static_poll_period: Duration,
    /// How often node repair looks at every Node (upstream reacts to Node updates and requeues
    /// at the toleration's end; a scan every 10 s is at most that late).
    pub repair_poll_period: Duration,
    /// How long a Node held back by the 20% rule waits before it is looked at again (upstream
    /// 5 min).
    pub repair_blocked_retry: Duration,
    /// Identity of this replica in events.
    pub instance: Option<String>,
    /// Leader election; `None` acts at once (`--disable-leader-election`, tests).
    pub leader_election: Option<LeaderElectionConfig>,
}

impl Options {
    /// Node repair runs as a disruption method (the `NodeRepair` gate without
    /// `legacy_node_repair`).
    pub fn repairs_in_disruption(&self) -> bool {
        self.node_repair && !self.legacy_node_repair
    }

    /// Node repair runs as the legacy `node.health` loop.
    pub fn repairs_in_legacy_loop(&self) -> bool {
        self.node_repair && self.legacy_node_repair
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch_idle: batcher::DEFAULT_IDLE,
            batch_max: batcher::DEFAULT_MAX,
            registration_timeout: Duration::from_secs(15 * 60),
            gc_interval: Duration::from_secs(60),
            gc_grace: Duration::from_secs(30),
            nomination_window: Duration::from_secs(20),
            disruption: true,
            disruption_poll_period: Duration::from_secs(10),
            disruption_validation_period: Duration::from_secs(15),
            disruption_replacement_timeout: Duration::from_secs(10 * 60),
            spot_to_spot_consolidation: false,
            node_overlay: false,
            node_repair: false,
            legacy_node_repair: false,
            reserved_capacity: true,
            static_capacity: false,
            capacity_buffer: false,
            static_poll_period: Duration::from_secs(10),
            repair_poll_period: Duration::from_secs(10),
            repair_blocked_retry: Duration::from_secs(5 * 60),
            instance: None,
            leader_election: None,
        }
    }
}

/// The API clients the loops use.
#[derive(Clone)]
pub struct Clients {
    /// For everything but evictions.
    pub client: Client,
    /// For evictions: no automatic retries.
    pub eviction_client: Client,
}

impl Clients {
    /// Both clients from one configuration.
    pub fn new(config: &kube::Config) -> Result<Self, kube::Error> {
        let mut no_retry = config.clone();
        no_retry.default_retry = false;
        Ok(Self {
            client: Client::try_from(config.clone())?,
            eviction_client: Client::try_from(no_retry)?,
        })
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// API client.
    pub client: Client,
    /// A client that never retries on its own: evictions answer 429 when a PodDisruptionBudget
    /// forbids them, and kube's default retry layer would hold the drain in a long backoff
    /// instead of letting the termination loop report it and requeue.
    pub eviction_client: Client,
    /// Whether this replica leads (always true without leader election).
    pub leader: watch::Receiver<bool>,
    /// The cloud.
    pub provider: Arc<dyn CloudProvider>,
    /// Reflector stores.
    pub state: ClusterState,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Options.
    pub options: Options,
    /// Retry delays of failed reconciles, per object.
    pub backoff: Backoff,
    /// When draining nodes' placement-constrained pods were evicted (node termination).
    pub drain_head_starts: crate::node::termination::HeadStarts,
    /// NodeClaim versions the lifecycle has written over (its reads lag its writes).
    pub superseded: crate::nodeclaim::superseded::Superseded,
    /// Pending pods the provisioner's last round could not place (disruption does not wait
    /// for them).
    pub unplaceable: Unplaceable,
    /// Turns at building and solving a solver input (one at a time).
    pub solver_turns: SolverTurns,
    /// The last catalog's prices after NodeOverlays, for the NodeClaims launched from it.
    pub launch_prices: LaunchPrices,
}

impl Context {
    /// A context; the recorder reports as `karpenter`.
    pub fn new(
        clients: Clients,
        provider: Arc<dyn CloudProvider>,
        state: ClusterState,
        metrics: Arc<Metrics>,
        options: Options,
        leader: watch::Receiver<bool>,
    ) -> Self {
        let Clients {
            client,
            eviction_client,
        } = clients;
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_string(),
                instance: options.instance.clone(),
            },
        );
        Self {
            client,
            eviction_client,
            leader,
            provider,
            state,
            recorder,
            metrics,
            options,
            backoff: Backoff::default(),
            drain_head_starts: Default::default(),
            superseded: Default::default(),
            unplaceable: Unplaceable::default(),
            solver_turns: SolverTurns::default(),
            launch_prices: LaunchPrices::default(),
        }
    }

    /// Whether this replica leads (and so may write).
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Publishes an event; failures are logged, never fatal (events are best effort).
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        // The events API caps notes at 1 kB.
        let mut note = note;
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, regarding).await {
            tracing::warn!(error = %e, reason, "publishing an event failed");
        }
    }
}
