//! One watch per kind (Pods of the perf namespace, Nodes, NodeClaims) feeding a shared view of
//! the fleet: pods Running and their Pending->Running latency, nodes and what they cost,
//! nodes being disrupted against the budget, pods deleted from disrupted nodes, orphans.
//! The watches record events as they happen, so short-lived states (a node tainted for a few
//! seconds, a burst of evictions) are not missed between samples.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use karpenter_api::v1::NodeClaim;
use karpenter_providers::kwok::{MANAGED_LABEL, PROVIDER_ID_PREFIX};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt as _};
use tokio::task::JoinHandle;

use crate::price;
use crate::workload::{NAMESPACE, POOL_LABEL};

/// The taint a disruption command puts on its nodes.
const DISRUPTED_TAINT: &str = "karpenter.sh/disrupted";

#[derive(Debug, Default)]
struct PodInfo {
    node: Option<String>,
    /// When kube-scheduler first marked it unschedulable (ms, API clock): the condition's
    /// transition time is overwritten once the pod is bound, so it is kept from the event.
    unschedulable_ms: Option<i64>,
    running: bool,
    deleting: bool,
}

#[derive(Debug, Default)]
struct NodeInfo {
    pool: bool,
    managed: bool,
    disrupting: bool,
    provider_id: Option<String>,
}

#[derive(Debug, Default)]
struct ClaimInfo {
    provider_id: Option<String>,
    price: Option<f64>,
    created_ms: i64,
}

/// Counters of one phase (reset by [`Fleet::start_phase`]).
#[derive(Debug, Default, Clone)]
pub struct PhaseCounters {
    /// Nodes that were disrupting (tainted or deleting) at some point in the phase.
    pub disrupted_nodes: HashSet<String>,
    /// Most nodes disrupting at once, and the budget allowed at that moment.
    pub max_disrupting: usize,
    pub allowed_at_max: usize,
    /// Moments (node events) where more nodes were disrupting than the budget allows.
    pub over_budget_events: usize,
    pub worst_excess: usize,
    /// Pods deleted while their node was disrupting (evictions by the drain).
    pub evicted: usize,
    /// All pod deletions seen.
    pub pod_deletions: usize,
    /// Latencies (s) of pods that turned Running in this phase.
    pub latencies: Vec<f64>,
    /// The same pods' wait split in stages (s): created -> first marked unschedulable by
    /// kube-scheduler (0 when it was bound without), -> bound, -> Ready.
    pub stages: Stages,
}

/// Where a pod's Pending -> Running went, per pod (API timestamps).
#[derive(Debug, Default, Clone)]
pub struct Stages {
    /// creationTimestamp -> PodScheduled=False/Unschedulable (the scheduler's first verdict).
    pub to_unschedulable: Vec<f64>,
    /// That verdict -> PodScheduled=True (capacity came and the scheduler bound the pod).
    pub to_bound: Vec<f64>,
    /// PodScheduled=True -> Ready.
    pub to_ready: Vec<f64>,
    /// How many of the pods kube-scheduler judged Unschedulable before binding them (the
    /// stage times alone cannot tell: condition times have whole seconds).
    pub judged: usize,
    /// kube-scheduler's first verdict message of each judged pod, digits folded to `N` (so
    /// "0/412 nodes are available: 3 Insufficient cpu" and "0/410 ... 5 ..." count together),
    /// with how many pods got it: why successors found no room.
    pub verdicts: std::collections::BTreeMap<String, usize>,
    /// The first few of those messages as written (with the node counts per reason).
    pub verdict_samples: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, PodInfo>,
    nodes: HashMap<String, NodeInfo>,
    claims: HashMap<String, ClaimInfo>,
    claims_seen: HashSet<String>,
    phase: PhaseCounters,
    budget_percent: u64,
}

/// A snapshot for sampling.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub pods: usize,
    pub running: usize,
    pub nodes: usize,
    pub claims: usize,
    pub price: f64,
    pub disrupting: usize,
}

/// Nodes without a NodeClaim and NodeClaims without a Node.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Orphans {
    pub instances_without_claim: usize,
    pub claims_without_instance: usize,
}

/// The shared view and the watch tasks feeding it (aborted when dropped).
pub struct Fleet {
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts the three watches. `budget_percent` is the pool's `nodes: "P%"` budget.
    pub fn start(client: &Client, budget_percent: u64) -> Fleet {
        let state = Arc::new(Mutex::new(State {
            budget_percent,
            ..State::default()
        }));
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let nodes: Api<Node> = Api::all(client.clone());
        let claims: Api<NodeClaim> = Api::all(client.clone());
        let tasks = vec![
            spawn_watch(pods, state.clone(), on_pod),
            spawn_watch(nodes, state.clone(), on_node),
            spawn_watch(claims, state.clone(), on_claim),
        ];
        Fleet { state, tasks }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would only be in this module's bookkeeping; keep
        // measuring with what is there rather than poisoning every later reading.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        Snapshot {
            pods: s.pods.values().filter(|p| !p.deleting).count(),
            running: s.pods.values().filter(|p| p.running && !p.deleting).count(),
            nodes: s.nodes.values().filter(|n| n.pool).count(),
            claims: s.claims.len(),
            price: s.claims.values().filter_map(|c| c.price).sum(),
            disrupting: s.nodes.values().filter(|n| n.pool && n.disrupting).count(),
        }
    }

    /// Resets the per-phase counters and returns those of the phase that ends.
    pub fn start_phase(&self) -> PhaseCounters {
        std::mem::take(&mut self.lock().phase)
    }

    /// NodeClaims ever seen.
    pub fn claims_seen(&self) -> usize {
        self.lock().claims_seen.len()
    }

    /// Orphans now; NodeClaims younger than `grace_ms` may not have their Node yet.
    pub fn orphans(&self, now_ms: i64, grace_ms: i64) -> Orphans {
        let s = self.lock();
        let claimed: HashSet<&str> = s
            .claims
            .values()
            .filter_map(|c| c.provider_id.as_deref())
            .collect();
        let instances: HashSet<&str> = s
            .nodes
            .values()
            .filter(|n| n.managed)
            .filter_map(|n| n.provider_id.as_deref())
            .collect();
        Orphans {
            instances_without_claim: instances.iter().filter(|p| !claimed.contains(*p)).count(),
            claims_without_instance: s
                .claims
                .values()
                .filter(|c| now_ms - c.created_ms > grace_ms)
                .filter(|c| {
                    c.provider_id
                        .as_deref()
                        .is_none_or(|p| !instances.contains(p))
                })
                .count(),
        }
    }

    /// NodeClaims sharing a providerID with another (two claims for one instance).
    pub fn duplicate_provider_ids(&self) -> usize {
        let s = self.lock();
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for p in s.claims.values().filter_map(|c| c.provider_id.as_deref()) {
            *by.entry(p).or_default() += 1;
        }
        by.values().filter(|n| **n > 1).map(|n| n - 1).sum()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    state: Arc<Mutex<State>>,
    on: fn(&mut State, &Event<K>),
) -> JoinHandle<()>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => on(&mut state.lock().unwrap_or_else(|p| p.into_inner()), &event),
                Err(e) => tracing::warn!(error = %e, "watch error (retrying)"),
            }
        }
    })
}

fn pod_key(p: &Pod) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

fn on_pod(s: &mut State, e: &Event<Pod>) {
    match e {
        Event::Apply(p) | Event::InitApply(p) => {
            let key = pod_key(p);
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let deleting = p.metadata.deletion_timestamp.is_some();
            let info = s.pods.entry(key).or_default();
            let newly_running = running && !info.running;
            let newly_deleting = deleting && !info.deleting;
            info.node = node.clone();
            info.running = running;
            info.deleting = deleting;
            if info.unschedulable_ms.is_none() {
                info.unschedulable_ms = condition_ms(p, "PodScheduled", "False");
                if info.unschedulable_ms.is_some() {
                    let stages = &mut s.phase.stages;
                    let message = verdict_message(p);
                    if stages.verdict_samples.len() < VERDICT_SAMPLES {
                        stages.verdict_samples.push(message.to_string());
                    }
                    *stages.verdicts.entry(fold_digits(message)).or_default() += 1;
                }
            }
            let unschedulable_ms = info.unschedulable_ms;
            if newly_running && let Some(l) = latency(p) {
                s.phase.latencies.push(l);
                record_stages(&mut s.phase.stages, p, unschedulable_ms);
            }
            if newly_deleting {
                count_deletion(s, node.as_deref());
            }
        }
        Event::Delete(p) => {
            if let Some(info) = s.pods.remove(&pod_key(p))
                && !info.deleting
            {
                count_deletion(s, info.node.as_deref());
            }
        }
        Event::Init | Event::InitDone => {}
    }
}

fn count_deletion(s: &mut State, node: Option<&str>) {
    s.phase.pod_deletions += 1;
    if node
        .and_then(|n| s.nodes.get(n))
        .is_some_and(|n| n.disrupting)
    {
        s.phase.evicted += 1;
    }
}

/// creationTimestamp -> the Ready condition's lastTransitionTime (the API's timestamps: 1 s
/// resolution).
fn latency(p: &Pod) -> Option<f64> {
    let created = p.metadata.creation_timestamp.as_ref()?.0.as_millisecond();
    let ready = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()?
        .0
        .as_millisecond();
    Some((ready - created).max(0) as f64 / 1000.0)
}

/// A condition's lastTransitionTime (ms) when it has the given status.
fn condition_ms(p: &Pod, type_: &str, status: &str) -> Option<i64> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0.as_millisecond())
}

/// How many verdict messages a phase keeps as written.
const VERDICT_SAMPLES: usize = 5;

/// The PodScheduled condition's message.
fn verdict_message(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| c.message.as_deref())
        .unwrap_or("(no message)")
}

/// `message` with every run of digits replaced by `N`.
fn fold_digits(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_number = false;
    for c in message.chars() {
        match (c.is_ascii_digit(), in_number) {
            (false, _) => out.push(c),
            (true, false) => out.push('N'),
            (true, true) => {}
        }
        in_number = c.is_ascii_digit();
    }
    out
}

fn record_stages(stages: &mut Stages, p: &Pod, unschedulable_ms: Option<i64>) {
    let Some(created) = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
    else {
        return;
    };
    let (Some(bound), Some(ready)) = (
        condition_ms(p, "PodScheduled", "True"),
        condition_ms(p, "Ready", "True"),
    ) else {
        return;
    };
    let secs = |from: i64, to: i64| (to - from).max(0) as f64 / 1000.0;
    stages.judged += usize::from(unschedulable_ms.is_some());
    let marked = unschedulable_ms.unwrap_or(created);
    stages.to_unschedulable.push(secs(created, marked));
    stages.to_bound.push(secs(marked, bound));
    stages.to_ready.push(secs(bound, ready));
}

fn on_node(s: &mut State, e: &Event<Node>) {
    match e {
        Event::Apply(n) | Event::InitApply(n) => {
            let labels = n.labels();
            let disrupting = n.metadata.deletion_timestamp.is_some()
                || n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|ts| ts.iter().any(|t| t.key == DISRUPTED_TAINT));
            let info = NodeInfo {
                pool: labels.contains_key(POOL_LABEL),
                managed: labels.get(MANAGED_LABEL).is_some_and(|v| v == "true"),
                disrupting,
                provider_id: n.spec.as_ref().and_then(|s| s.provider_id.clone()),
            };
            if info.pool && disrupting {
                s.phase.disrupted_nodes.insert(n.name_any());
            }
            s.nodes.insert(n.name_any(), info);
            check_budget(s);
        }
        Event::Delete(n) => {
            s.nodes.remove(&n.name_any());
        }
        Event::Init | Event::InitDone => {}
    }
}

/// Disrupting nodes vs the budget (`P%` of the pool's nodes, rounded up, as the controller).
fn check_budget(s: &mut State) {
    let total = s.nodes.values().filter(|n| n.pool).count() as u64;
    let disrupting = s.nodes.values().filter(|n| n.pool && n.disrupting).count();
    let allowed = (s.budget_percent * total).div_ceil(100) as usize;
    if disrupting > s.phase.max_disrupting {
        s.phase.max_disrupting = disrupting;
        s.phase.allowed_at_max = allowed;
    }
    if disrupting > allowed {
        s.phase.over_budget_events += 1;
        s.phase.worst_excess = s.phase.worst_excess.max(disrupting - allowed);
    }
}

fn on_claim(s: &mut State, e: &Event<NodeClaim>) {
    match e {
        Event::Apply(c) | Event::InitApply(c) => {
            let provider_id = c
                .status
                .as_ref()
                .and_then(|st| st.provider_id.clone())
                .filter(|p| p.starts_with(PROVIDER_ID_PREFIX));
            let info = ClaimInfo {
                provider_id,
                price: price::of_labels(c.labels()),
                created_ms: c
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond())
                    .unwrap_or_default(),
            };
            s.claims_seen.insert(c.name_any());
            s.claims.insert(c.name_any(), info);
        }
        Event::Delete(c) => {
            s.claims.remove(&c.name_any());
        }
        Event::Init | Event::InitDone => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_that_differ_only_in_counts_fold_together() {
        let a = fold_digits(
            "0/412 nodes are available: 3 Insufficient cpu, 409 node(s) had untolerated taint(s).",
        );
        let b = fold_digits(
            "0/41 nodes are available: 12 Insufficient cpu, 29 node(s) had untolerated taint(s).",
        );
        assert_eq!(
            a,
            "N/N nodes are available: N Insufficient cpu, N node(s) had untolerated taint(s)."
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            fold_digits("0/41 nodes are available: 12 Insufficient memory.")
        );
    }
}
