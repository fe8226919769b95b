//! The EC2NodeClass status controller: resolves every EC2NodeClass (subnets, security groups,
//! images, instance profile; the spot service-linked role when a NodePool using the class
//! allows spot), writes `status` with conditions whose messages say what to fix, and publishes
//! a Warning Event on the class when it is not Ready.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use karpenter_api::ec2::{AWS_GROUP, EC2NodeClass, EC2NodeClassStatus};
use karpenter_api::labels::CAPACITY_TYPE_LABEL;
use karpenter_api::v1::{Condition, NodePool, NodeSelectorRequirementWithMinValues, Operator};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::AwsClients;
use super::ami::{AliasLookup, kubernetes_version};
use super::error::AwsError;
use super::iam::{
    SPOT_SERVICE_LINKED_ROLE, SPOT_SERVICE_LINKED_ROLE_FIX, resolve_instance_profile,
    spot_service_linked_role_exists,
};
use super::nodeclass::{condition, resolve, set_ready};

/// Kind of the AWS NodeClass.
pub const EC2_NODE_CLASS_KIND: &str = "EC2NodeClass";
/// Field manager and event reporter.
pub const MANAGER: &str = "karpenter";

/// Errors of the status controller.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// An AWS call failed (retried with backoff).
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Whether a NodePool's requirements let its NodeClaims be spot (no capacity-type requirement
/// means either, and the provider then prefers spot).
pub fn allows_spot(requirements: &[NodeSelectorRequirementWithMinValues]) -> bool {
    requirements
        .iter()
        .filter(|r| r.key == CAPACITY_TYPE_LABEL)
        .all(|r| match r.operator {
            Operator::In => r.values.iter().any(|v| v == "spot"),
            Operator::NotIn => !r.values.iter().any(|v| v == "spot"),
            Operator::Exists => true,
            _ => false,
        })
}

/// Whether this NodePool launches with this EC2NodeClass.
pub fn uses_class(pool: &NodePool, class: &str) -> bool {
    let r = &pool.spec.template.spec.node_class_ref;
    r.group == AWS_GROUP && r.kind == EC2_NODE_CLASS_KIND && r.name == class
}

/// The full status of an EC2NodeClass: EC2 resolution (image aliases for Kubernetes
/// `kubernetes_version`, e.g. `1.31`, through SSM), the instance profile and, when
/// `spot_allowed`, the spot service-linked role. Missing things are `False` conditions (and a
/// `False` Ready) with the fix in words, not errors.
pub async fn compute_status(
    clients: &AwsClients,
    cluster: &str,
    nc: &EC2NodeClass,
    spot_allowed: bool,
    kubernetes_version: &str,
) -> Result<EC2NodeClassStatus, AwsError> {
    let aliases = AliasLookup {
        ssm: &clients.ssm,
        prefix: &clients.ssm_parameter_prefix,
        kubernetes_version,
    };
    let mut status = resolve(&clients.ec2, nc, Some(&aliases)).await?;
    use super::nodeclass::condition as c;
    match resolve_instance_profile(&clients.iam, cluster, nc).await {
        Ok(profile) => {
            status.instance_profile = profile;
            status.conditions.push(condition(
                c::INSTANCE_PROFILE_READY,
                true,
                "",
                String::new(),
            ));
        }
        Err(AwsError::NodeClassNotReady(msg)) => {
            status.instance_profile = None;
            status.conditions.push(condition(
                c::INSTANCE_PROFILE_READY,
                false,
                "InstanceProfileNotFound",
                msg,
            ));
        }
        Err(e) => return Err(e),
    }
    if spot_allowed {
        let ok = spot_service_linked_role_exists(&clients.iam).await?;
        status.conditions.push(condition(
            c::SPOT_SERVICE_LINKED_ROLE_READY,
            ok,
            "SpotServiceLinkedRoleNotFound",
            format!(
                "a NodePool using this EC2NodeClass allows spot, but the EC2 Spot service-linked \
                 role {SPOT_SERVICE_LINKED_ROLE} does not exist; create it once with \
                 `{SPOT_SERVICE_LINKED_ROLE_FIX}`"
            ),
        ));
    }
    set_ready(&mut status.conditions);
    Ok(status)
}

/// Keeps `lastTransitionTime` of conditions whose status did not change; stamps `now` on the
/// others.
pub fn stamp_transitions(old: &[Condition], new: &mut [Condition], now: Timestamp) {
    for c in new {
        let prev = old.iter().find(|o| o.type_ == c.type_);
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Some(Time(now)),
        };
    }
}

/// Configuration of the status controller.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Cluster name (managed instance profiles are named and tagged with it).
    pub cluster: String,
    /// How often each EC2NodeClass is resolved again (upstream: 5 minutes; tests: seconds).
    pub resync: Duration,
    /// Identity of this replica in events.
    pub instance: Option<String>,
}

struct Ctx {
    client: Client,
    aws: AwsClients,
    recorder: Recorder,
    options: StatusOptions,
}

fn ready_condition(status: Option<&EC2NodeClassStatus>) -> Option<&Condition> {
    status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == super::nodeclass::condition::READY)
    })
}

async fn reconcile(nc: Arc<EC2NodeClass>, ctx: Arc<Ctx>) -> Result<Action, StatusError> {
    let name = nc.name_any();
    if nc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pools = Api::<NodePool>::all(ctx.client.clone())
        .list(&Default::default())
        .await?;
    let spot_allowed = pools
        .items
        .iter()
        .filter(|p| uses_class(p, &name))
        .any(|p| allows_spot(&p.spec.template.spec.requirements));
    // Asked each time: after a cluster upgrade, aliases must resolve to the new version's images.
    let version = kubernetes_version(&ctx.client).await?;
    let mut status =
        compute_status(&ctx.aws, &ctx.options.cluster, &nc, spot_allowed, &version).await?;
    let old = nc.status.clone().unwrap_or_default();
    stamp_transitions(&old.conditions, &mut status.conditions, Timestamp::now());
    if nc.status.as_ref() != Some(&status) {
        Api::<EC2NodeClass>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await?;
    }
    let was = ready_condition(nc.status.as_ref());
    if let Some(now) = ready_condition(Some(&status))
        && !now.is_true()
        && was.is_none_or(|w| w.is_true() || w.message != now.message)
    {
        let note = now.message.clone().unwrap_or_default();
        tracing::warn!(EC2NodeClass = %name, message = %note, "EC2NodeClass is not ready");
        let ev = Event {
            type_: EventType::Warning,
            reason: "NodeClassNotReady".into(),
            note: Some(truncate(note, 1000)),
            action: "Resolve".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &nc.object_ref(&())).await {
            tracing::warn!(error = %e, "publishing an EC2NodeClass event failed");
        }
    }
    Ok(Action::requeue(ctx.options.resync))
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn error_policy(nc: Arc<EC2NodeClass>, err: &StatusError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(EC2NodeClass = %nc.name_any(), error = %err, "resolving EC2NodeClass failed");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the status controller until the returned future is dropped. NodePool changes
/// re-resolve the classes they use (a pool that starts allowing spot triggers the
/// service-linked-role check).
pub async fn run(client: Client, aws: AwsClients, options: StatusOptions) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.to_owned(),
            instance: options.instance.clone(),
        },
    );
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        aws,
        recorder,
        options,
    });
    let classes: Api<EC2NodeClass> = Api::all(client.clone());
    let pools: Api<NodePool> = Api::all(client);
    Controller::new(classes, watcher::Config::default())
        .watches(pools, watcher::Config::default(), |pool: NodePool| {
            let r = &pool.spec.template.spec.node_class_ref;
            (r.group == AWS_GROUP && r.kind == EC2_NODE_CLASS_KIND)
                .then(|| ObjectRef::<EC2NodeClass>::new(&r.name))
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: Operator, values: &[&str]) -> NodeSelectorRequirementWithMinValues {
        NodeSelectorRequirementWithMinValues {
            key: CAPACITY_TYPE_LABEL.into(),
            operator: op,
            values: values.iter().map(|v| v.to_string()).collect(),
            min_values: None,
        }
    }

    #[test]
    fn spot_is_allowed_unless_excluded() {
        assert!(allows_spot(&[]));
        assert!(allows_spot(&[req(Operator::In, &["spot", "on-demand"])]));
        assert!(!allows_spot(&[req(Operator::In, &["on-demand"])]));
        assert!(!allows_spot(&[req(Operator::NotIn, &["spot"])]));
        assert!(!allows_spot(&[req(Operator::DoesNotExist, &[])]));
    }

    #[test]
    fn transition_times_survive_unchanged_statuses() {
        let t0 = Timestamp::from_second(1_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let t1 = Timestamp::from_second(2_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut old = vec![condition("A", true, "", String::new())];
        stamp_transitions(&[], &mut old, t0);
        let mut new = vec![
            condition("A", true, "", String::new()),
            condition("B", false, "X", "m".into()),
        ];
        stamp_transitions(&old, &mut new, t1);
        assert_eq!(new[0].last_transition_time, Some(Time(t0)));
        assert_eq!(new[1].last_transition_time, Some(Time(t1)));
    }
}
