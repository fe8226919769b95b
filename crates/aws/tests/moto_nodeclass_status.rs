//! The EC2NodeClass status controller against moto and the local control plane: setup traps
//! become a `Ready=False` condition and a Warning Event with the fix in words.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::fixtures::{self, BoxError};
use k8s_openapi::api::events::v1::Event;
use karpenter_api::ec2::{EC2NodeClass, SelectorTerm};
use karpenter_api::v1::{
    NodeClaimTemplate, NodeClaimTemplateSpec, NodeClassReference, NodePool, NodePoolSpec,
};
use karpenter_aws::sdk::iam::SPOT_SERVICE_LINKED_ROLE_FIX;
use karpenter_aws::sdk::status::{self, StatusOptions};
use karpenter_testkit::TestCluster;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

const TIMEOUT: Duration = Duration::from_secs(120);

struct Aborting(tokio::task::JoinHandle<()>);
impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for the class's Ready condition to have `status` and returns its message.
async fn ready(
    cluster: &TestCluster,
    api: &Api<EC2NodeClass>,
    name: &str,
    want: &str,
) -> Result<String, BoxError> {
    let msg = cluster
        .wait_for(TIMEOUT, format!("{name} Ready={want}"), || async {
            let nc = api.get(name).await?;
            let c = nc
                .status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"));
            Ok::<_, kube::Error>(
                c.filter(|c| c.status == want)
                    .map(|c| c.message.unwrap_or_default()),
            )
        })
        .await?;
    Ok(msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_traps_are_conditions_and_events_with_the_fix() -> Result<(), BoxError> {
    let Some(url) = common::moto("setup_traps") else {
        return Ok(());
    };
    let Some(kube_cluster) = TestCluster::start().await else {
        return Ok(());
    };
    kube_cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let client = kube_cluster.client();
    let aws = common::aws_clients(url).await;
    let cluster = common::unique("status");
    let network = fixtures::cluster_network(&aws.ec2, &cluster).await?;
    let image = fixtures::some_image(&aws.ec2).await?;
    let profile = format!("{cluster}-profile");
    fixtures::instance_profile(&aws.iam, &profile).await?;
    let _controller = Aborting(tokio::spawn(status::run(
        client.clone(),
        aws.clone(),
        StatusOptions {
            cluster: cluster.clone(),
            resync: Duration::from_secs(2),
            instance: None,
        },
    )));
    let api: Api<EC2NodeClass> = Api::all(client.clone());

    // Everything exists, no spot pool: Ready, with what was resolved.
    let good = format!("{cluster}-good");
    api.create(
        &PostParams::default(),
        &fixtures::node_class(&good, &cluster, &image, &profile),
    )
    .await?;
    ready(&kube_cluster, &api, &good, "True").await?;
    let st = api.get(&good).await?.status.unwrap_or_default();
    let mut subnets: Vec<String> = st.subnets.iter().map(|s| s.id.clone()).collect();
    subnets.sort();
    let mut want = network.subnets.clone();
    want.sort();
    assert_eq!(subnets, want);
    assert_eq!(st.security_groups.len(), 1);
    assert_eq!(st.amis.first().map(|a| a.id.as_str()), Some(image.as_str()));
    assert_eq!(st.instance_profile.as_deref(), Some(profile.as_str()));

    // No subnet has the selector's tag: the message names the selector and its tags.
    let no_subnets = format!("{cluster}-nosubnets");
    let mut nc = fixtures::node_class(&no_subnets, &cluster, &image, &profile);
    let missing_tag = format!("kubernetes.io/cluster/{cluster}-missing");
    nc.spec.subnet_selector_terms = vec![SelectorTerm {
        tags: Some(BTreeMap::from([(missing_tag.clone(), "*".into())])),
        ..Default::default()
    }];
    api.create(&PostParams::default(), &nc).await?;
    let msg = ready(&kube_cluster, &api, &no_subnets, "False").await?;
    assert!(msg.contains("spec.subnetSelectorTerms"), "{msg}");
    assert!(msg.contains(&missing_tag), "{msg}");

    // The instance profile does not exist.
    let no_profile = format!("{cluster}-noprofile");
    let missing_profile = format!("{cluster}-missing-profile");
    api.create(
        &PostParams::default(),
        &fixtures::node_class(&no_profile, &cluster, &image, &missing_profile),
    )
    .await?;
    let msg = ready(&kube_cluster, &api, &no_profile, "False").await?;
    assert!(
        msg.contains(&format!("instance profile {missing_profile:?}"))
            && msg.contains("does not exist"),
        "{msg}"
    );

    // A NodePool using the good class allows spot (no capacity-type requirement), and moto's
    // account has no spot service-linked role: the class says how to create it.
    let pool = format!("{cluster}-spot");
    Api::<NodePool>::all(client.clone())
        .create(
            &PostParams::default(),
            &NodePool::new(
                &pool,
                NodePoolSpec {
                    template: NodeClaimTemplate {
                        metadata: Default::default(),
                        spec: NodeClaimTemplateSpec {
                            node_class_ref: NodeClassReference {
                                group: "karpenter.k8s.aws".into(),
                                kind: "EC2NodeClass".into(),
                                name: good.clone(),
                            },
                            expire_after: "Never".into(),
                            ..NodeClaimTemplateSpec::default()
                        },
                    },
                    disruption: Default::default(),
                    limits: BTreeMap::new(),
                    weight: None,
                    replicas: None,
                },
            ),
        )
        .await?;
    let msg = ready(&kube_cluster, &api, &good, "False").await?;
    assert!(msg.contains(SPOT_SERVICE_LINKED_ROLE_FIX), "{msg}");
    assert!(
        msg.contains("aws iam create-service-linked-role --aws-service-name spot.amazonaws.com")
    );

    // Each trap is also a Warning Event on its EC2NodeClass.
    let events: Api<Event> = Api::all(client.clone());
    kube_cluster
        .wait_for(TIMEOUT, "a NodeClassNotReady event per trap", || async {
            let list = events.list(&Default::default()).await?.items;
            let has = |name: &str, needle: &str| {
                list.iter().any(|e| {
                    e.reason.as_deref() == Some("NodeClassNotReady")
                        && e.type_.as_deref() == Some("Warning")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                        && e.note.as_deref().is_some_and(|n| n.contains(needle))
                })
            };
            Ok::<_, kube::Error>(
                (has(&no_subnets, &missing_tag)
                    && has(&no_profile, &missing_profile)
                    && has(&good, SPOT_SERVICE_LINKED_ROLE_FIX))
                .then_some(()),
            )
        })
        .await?;

    let _ = Api::<NodePool>::all(client.clone())
        .delete(&pool, &DeleteParams::background())
        .await;
    for name in [&good, &no_subnets, &no_profile] {
        let _ = api.delete(name, &DeleteParams::background()).await;
    }
    Ok(())
}
