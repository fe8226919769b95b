//! Controller e2e with the AWS provider: the real controller (in-process) on the local control
//! plane, EC2/IAM/SQS on moto. There is no kubelet, so the test plays it: once a NodeClaim has
//! a providerID, it registers a Node with that providerID, the NodeClaim's labels and capacity
//! and kwok's annotation, and kwok makes it Ready and runs its pods.
//!
//! One test (the controllers of two tests would both provision for each other's pods):
//! pending pods → a fleet launch, tagged; an orphan instance → garbage-collected; an SQS spot
//! interruption → the NodeClaim is replaced and drained; deleting NodeClaims → instances
//! terminated.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::fixtures::{self, BoxError};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Pod, Taint};
use karpenter_api::ec2::EC2NodeClass;
use karpenter_api::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL};
use karpenter_api::v1::{
    NodeClaim, NodeClaimTemplate, NodeClaimTemplateSpec, NodeClassReference, NodePool,
    NodePoolSpec, TemplateMetadata,
};
use karpenter_aws::sdk::interruption::messages::spot_interruption_message;
use karpenter_aws::sdk::interruption::{InterruptionController, InterruptionOptions};
use karpenter_aws::sdk::launch::instance_id;
use karpenter_aws::sdk::{AwsCloudProvider, AwsError};
use karpenter_controller::{Clients, Metrics, Options};
use karpenter_providers::CloudProvider;
use karpenter_testkit::{TestCluster, workloads};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

const TIMEOUT: Duration = Duration::from_secs(120);
const POOL_LABEL: &str = "e2e.example.com/pool";

fn node_pool(name: &str, class: &str) -> NodePool {
    NodePool::new(
        name,
        NodePoolSpec {
            template: NodeClaimTemplate {
                metadata: TemplateMetadata {
                    labels: BTreeMap::from([(POOL_LABEL.to_string(), name.to_string())]),
                    annotations: BTreeMap::new(),
                },
                spec: NodeClaimTemplateSpec {
                    requirements: vec![
                        fixtures::req(CAPACITY_TYPE_LABEL, &["on-demand"]),
                        fixtures::req(INSTANCE_TYPE_LABEL, &["m5.large", "m5.xlarge"]),
                        fixtures::req("kubernetes.io/arch", &["amd64"]),
                    ],
                    node_class_ref: NodeClassReference {
                        group: "karpenter.k8s.aws".into(),
                        kind: "EC2NodeClass".into(),
                        name: class.into(),
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
    )
}

fn deployment(name: &str, pool: &str, replicas: i32) -> Deployment {
    workloads::deployment(
        name,
        replicas,
        workloads::pod_spec("500m", POOL_LABEL, pool),
    )
}

/// The Node a kubelet on the NodeClaim's instance would register.
fn node_for(claim: &NodeClaim) -> Option<Node> {
    let status = claim.status.as_ref()?;
    let pid = status.provider_id.clone()?;
    let name = claim.name_any();
    let mut labels = claim.labels().clone();
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    Some(Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "kwok.x-k8s.io/node".to_string(),
                "fake".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(pid),
            taints: Some(vec![Taint {
                key: "karpenter.sh/unregistered".into(),
                effect: "NoExecute".into(),
                ..Taint::default()
            }]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(status.capacity.clone()),
            allocatable: Some(status.allocatable.clone()),
            ..NodeStatus::default()
        }),
    })
}

/// Plays the kubelet for the pool's launched NodeClaims until aborted.
async fn kubelet(client: Client, pool: String) {
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Ok(list) = claims
            .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={pool}")))
            .await
        else {
            continue;
        };
        for c in list.items {
            if c.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(node) = node_for(&c) else { continue };
            if matches!(nodes.get_opt(&c.name_any()).await, Ok(None)) {
                let _ = nodes.create(&PostParams::default(), &node).await;
            }
        }
    }
}

struct Aborting(tokio::task::JoinHandle<()>);
impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn pod_running(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_get_instances_that_are_collected_interrupted_and_terminated() -> Result<(), BoxError>
{
    let Some(url) = common::moto("e2e_aws") else {
        return Ok(());
    };
    let Some(kube_cluster) = TestCluster::start().await else {
        return Ok(());
    };
    kube_cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let client = kube_cluster.client();
    let aws = common::aws_clients(url).await;
    let cluster = common::unique("e2e");
    fixtures::cluster_network(&aws.ec2, &cluster).await?;
    let image = fixtures::some_image(&aws.ec2).await?;
    let profile = format!("{cluster}-profile");
    fixtures::instance_profile(&aws.iam, &profile).await?;
    let class = format!("{cluster}-class");
    let pool = format!("{cluster}-pool");
    Api::<EC2NodeClass>::all(client.clone())
        .create(
            &PostParams::default(),
            &fixtures::node_class(&class, &cluster, &image, &profile),
        )
        .await?;
    Api::<NodePool>::all(client.clone())
        .create(&PostParams::default(), &node_pool(&pool, &class))
        .await?;

    let provider = Arc::new(AwsCloudProvider::new(
        client.clone(),
        aws.clone(),
        common::cluster_info(&cluster),
        "us-east-1",
    ));
    let clients = Clients::new(&kube_cluster.config().await?)?;
    let (metrics, _registry) = Metrics::new();
    let options = Options {
        gc_interval: Duration::from_secs(1),
        gc_grace: Duration::from_secs(3),
        ..Options::default()
    };
    let mut running =
        karpenter_controller::start(clients, provider.clone(), Arc::new(metrics), options);
    let _kubelet = Aborting(tokio::spawn(kubelet(client.clone(), pool.clone())));
    let ns = kube_cluster.namespace().await?;

    let result = body(
        &kube_cluster,
        &client,
        &aws,
        &provider,
        &cluster,
        &pool,
        &class,
        ns.name(),
    )
    .await;

    // Cleanup (also on failure): pods, then NodeClaims (the controller terminates their
    // instances), then the pool and class.
    let cleanup = async {
        ns.cleanup().await?;
        let claims: Api<NodeClaim> = Api::all(client.clone());
        for c in claims
            .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={pool}")))
            .await?
            .items
        {
            let _ = claims
                .delete(&c.name_any(), &DeleteParams::background())
                .await;
        }
        kube_cluster
            .wait_for(
                TIMEOUT,
                "NodeClaims gone and instances terminated",
                || async {
                    let left = claims
                        .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={pool}")))
                        .await?
                        .items
                        .len();
                    let instances = provider.list().await.map_err(|e| e.to_string())?;
                    Ok::<_, BoxError>((left == 0 && instances.is_empty()).then_some(()))
                },
            )
            .await?;
        let _ = Api::<NodePool>::all(client.clone())
            .delete(&pool, &DeleteParams::background())
            .await;
        let _ = Api::<EC2NodeClass>::all(client.clone())
            .delete(&class, &DeleteParams::background())
            .await;
        Ok::<_, BoxError>(())
    }
    .await;
    running.stop();
    result.and(cleanup)
}

#[allow(clippy::too_many_arguments)]
async fn body(
    kube_cluster: &TestCluster,
    client: &Client,
    aws: &karpenter_aws::sdk::AwsClients,
    provider: &AwsCloudProvider,
    cluster: &str,
    pool: &str,
    class: &str,
    ns: &str,
) -> Result<(), BoxError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let by_pool = ListParams::default().labels(&format!("{NODE_POOL_LABEL}={pool}"));
    let app = "web";
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment(app, pool, 2))
        .await?;
    let pods = &pods;
    let wait_running = |n: usize| async move {
        kube_cluster
            .wait_for(TIMEOUT, format!("{n} pods Running"), || async {
                let list = pods
                    .list(&ListParams::default().labels(&format!("app={app}")))
                    .await?
                    .items;
                let running = list.iter().filter(|p| pod_running(p)).count();
                Ok::<_, kube::Error>((running == n && list.len() == n).then_some(()))
            })
            .await
    };
    wait_running(2).await?;

    // (b) The fleet's instances are tagged for the cluster, pool, NodeClaim and class.
    let launched = claims.list(&by_pool).await?.items;
    assert!(!launched.is_empty());
    for c in &launched {
        let pid = c
            .status
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .ok_or("launched NodeClaim without providerID")?;
        let id = instance_id(&pid).ok_or("not an AWS providerID")?;
        let tags = fixtures::instance_tags(&aws.ec2, id).await?;
        assert_eq!(tags.get(NODE_POOL_LABEL).map(String::as_str), Some(pool));
        assert_eq!(
            tags.get("karpenter.sh/nodeclaim").cloned(),
            Some(c.name_any())
        );
        assert_eq!(
            tags.get(&format!("kubernetes.io/cluster/{cluster}"))
                .map(String::as_str),
            Some("owned")
        );
        assert_eq!(
            tags.get("karpenter.k8s.aws/ec2nodeclass")
                .map(String::as_str),
            Some(class)
        );
    }

    // (b) An instance tagged for the cluster whose NodeClaim never existed is collected.
    let orphan = fixtures::node_claim(
        &format!("{cluster}-orphan"),
        pool,
        class,
        vec![
            fixtures::req(CAPACITY_TYPE_LABEL, &["on-demand"]),
            fixtures::req(INSTANCE_TYPE_LABEL, &["m5.large"]),
        ],
    );
    let orphan = provider.create(&orphan).await?;
    let orphan_id = orphan
        .status
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(instance_id)
        .ok_or("orphan without instance")?
        .to_owned();
    kube_cluster
        .wait_for(TIMEOUT, "the orphan instance to be terminated", || async {
            match provider.ec2().describe(&orphan_id).await {
                Err(AwsError::NodeClaimNotFound(_)) => Ok(Some(())),
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;

    // (c) A spot interruption warning for one instance: its NodeClaim is deleted (drained,
    // instance terminated) and a replacement runs the evicted pods.
    let victim = launched[0].clone();
    let victim_name = victim.name_any();
    let victim_id = victim
        .status
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(instance_id)
        .ok_or("victim without instance")?
        .to_owned();
    let queue = aws
        .sqs
        .create_queue()
        .queue_name(format!("{cluster}-interruption"))
        .send()
        .await?
        .queue_url()
        .ok_or("no queue url")?
        .to_owned();
    let mut options = InterruptionOptions::new(&queue);
    options.wait = Duration::from_secs(1);
    let controller = InterruptionController::new(client.clone(), aws.sqs.clone(), options, None);
    let _poller = Aborting(tokio::spawn(controller.run(None)));
    aws.sqs
        .send_message()
        .queue_url(&queue)
        .message_body("this is not an EventBridge message")
        .send()
        .await?;
    aws.sqs
        .send_message()
        .queue_url(&queue)
        .message_body(spot_interruption_message(&victim_id, "us-east-1"))
        .send()
        .await?;
    kube_cluster
        .wait_for(
            TIMEOUT,
            "the interrupted NodeClaim to be replaced",
            || async {
                let now = claims.list(&by_pool).await?.items;
                let gone = !now.iter().any(|c| c.name_any() == victim_name);
                let replaced = now.iter().any(|c| {
                    !launched.iter().any(|l| l.name_any() == c.name_any())
                        && c.status
                            .as_ref()
                            .and_then(|s| s.provider_id.as_ref())
                            .is_some()
                });
                Ok::<_, kube::Error>((gone && replaced).then_some(()))
            },
        )
        .await?;
    wait_running(2).await?;
    match provider.ec2().describe(&victim_id).await {
        Err(AwsError::NodeClaimNotFound(_)) => {}
        other => panic!("the interrupted instance is still live: {other:?}"),
    }
    // Both messages (the malformed one too) were deleted.
    kube_cluster
        .wait_for(TIMEOUT, "the queue to be empty", || async {
            let attrs = aws
                .sqs
                .get_queue_attributes()
                .queue_url(&queue)
                .attribute_names(karpenter_aws::sdk::aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await?;
            let count = |k: &str| {
                attrs
                    .attributes()
                    .and_then(|a| {
                        a.iter()
                            .find(|(name, _)| name.as_str() == k)
                            .map(|(_, v)| v.clone())
                    })
                    .unwrap_or_default()
            };
            let empty = count("ApproximateNumberOfMessages") == "0"
                && count("ApproximateNumberOfMessagesNotVisible") == "0";
            Ok::<_, BoxError>(empty.then_some(()))
        })
        .await?;
    Ok(())
}
