//! e2e: a Deployment of 3 pods requesting 1 cpu each gets kwok nodes: NodeClaims are created,
//! launched, registered and initialized, the Nodes become Ready, and kube-scheduler binds the
//! pods, which kwok runs.

mod common;

use std::collections::BTreeMap;

use anyhow::Result;
use common::{Env, TIMEOUT, claim_condition, node_ready, pod_running};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use karpenter_api::labels::{INITIALIZED_LABEL, REGISTERED_LABEL, TERMINATION_FINALIZER};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_gets_nodes_and_runs() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(3),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(env.pod_spec("1")),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    Api::<Deployment>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &deployment)
        .await?;

    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    env.cluster
        .wait_for(TIMEOUT, "3 pods bound and Running", || async {
            let list = pods.list(&ListParams::default().labels("app=web")).await?;
            let running = list.items.iter().filter(|p| pod_running(p)).count();
            Ok::<_, kube::Error>((running == 3).then_some(()))
        })
        .await?;

    // Pods can run on a Node before its NodeClaim is Initialized (initialization also waits
    // for the node lifecycle controller to lift `node.kubernetes.io/not-ready`), so the
    // conditions are awaited, not read once.
    const CONDITIONS: [&str; 4] = ["Launched", "Registered", "Initialized", "Ready"];
    let claims = env
        .cluster
        .wait_for(
            TIMEOUT,
            "every NodeClaim Launched, Registered, Initialized, Ready",
            || async {
                let claims = env.node_claims().await?;
                let done = !claims.is_empty()
                    && claims
                        .iter()
                        .all(|c| CONDITIONS.iter().all(|cond| claim_condition(c, cond)));
                Ok::<_, anyhow::Error>(done.then_some(claims))
            },
        )
        .await?;
    for c in &claims {
        for cond in CONDITIONS {
            assert!(
                claim_condition(c, cond),
                "{} lacks {cond}: {:?}",
                c.name_any(),
                c.status
            );
        }
        assert!(c.finalizers().iter().any(|f| f == TERMINATION_FINALIZER));
        let status = c.status.clone().unwrap_or_default();
        assert!(
            status
                .provider_id
                .as_deref()
                .is_some_and(|p| p.starts_with("kwok://"))
        );
        assert!(status.node_name.is_some());
        assert!(status.allocatable.contains_key("cpu"));
    }
    let nodes = env.nodes().await?;
    assert_eq!(nodes.len(), claims.len(), "one node per claim");
    for n in &nodes {
        assert!(node_ready(n), "{} not Ready", n.name_any());
        assert_eq!(
            n.labels().get(REGISTERED_LABEL).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            n.labels().get(INITIALIZED_LABEL).map(String::as_str),
            Some("true")
        );
        assert!(n.finalizers().iter().any(|f| f == TERMINATION_FINALIZER));
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(
            !taints.iter().any(|t| t.key == "karpenter.sh/unregistered"),
            "registration removes the unregistered taint"
        );
        assert!(
            n.owner_references().iter().any(|o| o.kind == "NodeClaim"),
            "node owned by its claim"
        );
    }
    // Every pod landed on one of our nodes.
    let names: Vec<String> = nodes.iter().map(|n| n.name_any()).collect();
    for p in pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
    {
        let on = p.spec.and_then(|s| s.node_name).unwrap_or_default();
        assert!(names.contains(&on), "pod on {on}, not one of {names:?}");
    }
    Ok(())
}
