//! AMI aliases through SSM and kubelet overrides, via `CloudProvider`, against moto and the
//! local control plane (the Kubernetes version the aliases resolve for comes from its API
//! server).
//!
//! Moto has none of AWS's EKS image parameters and refuses to create names under `/aws`, so
//! each test publishes the exact upstream parameter paths under its own prefix
//! (`AwsClients::with_ssm_parameter_prefix`; see crates/aws/README.md).

mod common;

use std::time::Duration;

use common::fixtures::{self, BoxError};
use karpenter_api::ec2::{AmiSelectorTerm, EC2NodeClass, KubeletConfiguration};
use karpenter_api::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL};
use karpenter_api::v1::NodePool;
use karpenter_aws::sdk::ami::{Alias, kubernetes_version};
use karpenter_aws::sdk::drift::AMI_DRIFT;
use karpenter_aws::sdk::launch::instance_id;
use karpenter_aws::sdk::nodeclass::{ami_arch, condition};
use karpenter_aws::sdk::{AwsClients, AwsCloudProvider};
use karpenter_providers::{CloudProvider, CloudProviderError};
use karpenter_solver::resources::{MEMORY, PODS};
use karpenter_testkit::TestCluster;
use kube::Api;
use kube::api::PostParams;

/// moto + the control plane with our CRDs, or `None` (skipped outside CI).
async fn setup(test: &str) -> Result<Option<(&'static str, TestCluster)>, BoxError> {
    let Some(url) = common::moto(test) else {
        return Ok(None);
    };
    let Some(cluster) = TestCluster::start().await else {
        return Ok(None);
    };
    cluster.apply_crds(&karpenter_api::all_crds()).await?;
    Ok(Some((url, cluster)))
}

/// A NodePool of `class` (on-demand only, so no spot service-linked role is involved).
fn pool(name: &str, class: &str) -> Result<NodePool, BoxError> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {
            "requirements": [{"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": ["on-demand"]}],
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": class},
        }}},
    }))?)
}

/// The image the claim's instance runs. moto's CreateFleet leaves the template's security
/// groups off the instance; this sets `security_group` as EC2 would have, so drift checked
/// afterwards can only be about the image.
async fn image_of_instance(
    aws: &AwsClients,
    claim: &karpenter_api::v1::NodeClaim,
    security_group: &str,
) -> Result<String, BoxError> {
    let pid = claim
        .status
        .as_ref()
        .and_then(|s| s.provider_id.clone())
        .ok_or("no providerID")?;
    let id = instance_id(&pid).ok_or("not an AWS providerID")?;
    aws.ec2
        .modify_instance_attribute()
        .instance_id(id)
        .groups(security_group)
        .send()
        .await?;
    let out = aws.ec2.describe_instances().instance_ids(id).send().await?;
    let inst = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .ok_or("no instance")?;
    Ok(inst.image_id().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn al2023_alias_launches_each_arch_with_its_image_and_a_new_release_drifts()
-> Result<(), BoxError> {
    let Some((url, kube_cluster)) = setup("al2023_alias").await? else {
        return Ok(());
    };
    let cluster = common::unique("alias");
    let prefix = format!("/karpenter-test/{cluster}");
    let aws = common::aws_clients(url)
        .await
        .with_ssm_parameter_prefix(&prefix);
    let version = kubernetes_version(&kube_cluster.client()).await?;
    let params = Alias::parse("al2023@latest")?.parameters(&version);
    let [x86_param, arm_param] = params.as_slice() else {
        return Err(format!("al2023 has two parameters, got {params:?}").into());
    };
    assert!(x86_param.contains(&format!("/{version}/amazon-linux-2023/x86_64/")));
    let x86_image = fixtures::image_of(&aws.ec2, "x86_64").await?;
    let arm_image = fixtures::image_of(&aws.ec2, "arm64").await?;
    fixtures::put_parameter(&aws.ssm, &format!("{prefix}{x86_param}"), &x86_image).await?;
    fixtures::put_parameter(&aws.ssm, &format!("{prefix}{arm_param}"), &arm_image).await?;

    let network = fixtures::cluster_network(&aws.ec2, &cluster).await?;
    let profile = format!("{cluster}-profile");
    fixtures::instance_profile(&aws.iam, &profile).await?;
    let class = format!("{cluster}-class");
    let mut nc = fixtures::node_class(&class, &cluster, "unused", &profile);
    nc.spec.ami_selector_terms = vec![AmiSelectorTerm {
        alias: Some("al2023@latest".into()),
        ..Default::default()
    }];
    nc.spec.kubelet = Some(KubeletConfiguration {
        max_pods: Some(20),
        eviction_hard: Some([("memory.available".to_owned(), "5%".to_owned())].into()),
        ..Default::default()
    });
    let nc = Api::<EC2NodeClass>::all(kube_cluster.client())
        .create(&PostParams::default(), &nc)
        .await?;
    // Resolve on every call, so the parameter change below is seen at once.
    let provider = AwsCloudProvider::new(
        kube_cluster.client(),
        aws.clone(),
        common::cluster_info(&cluster),
        "us-east-1",
    )
    .with_ttls(Duration::ZERO, Duration::from_secs(600));

    let status = provider.resolve(&nc).await?;
    let amis: Vec<(&str, Option<&str>)> = status
        .amis
        .iter()
        .map(|a| (a.id.as_str(), ami_arch(a)))
        .collect();
    assert!(
        amis.contains(&(x86_image.as_str(), Some("amd64"))),
        "{amis:?}"
    );
    assert!(
        amis.contains(&(arm_image.as_str(), Some("arm64"))),
        "{amis:?}"
    );
    assert_eq!(amis.len(), 2, "{amis:?}");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::AMIS_READY)
        .ok_or("no AMIsReady")?;
    assert!(ready.is_true(), "{ready:?}");

    // spec.kubelet sizes the pool's instance types: maxPods 20, memory.available 5 %.
    let its = CloudProvider::instance_types(&provider, &pool(&cluster, &class)?).await?;
    let m5 = its
        .iter()
        .find(|it| it.name == "m5.large")
        .ok_or("no m5.large")?;
    assert_eq!(m5.capacity.get(PODS), 20);
    assert_eq!(m5.overhead.kube_reserved.get(MEMORY), (11 * 20 + 255) << 20);
    let five_percent = (m5.capacity.get(MEMORY) as f64 * 0.05).ceil() as i64;
    assert_eq!(m5.overhead.eviction_threshold.get(MEMORY), five_percent);
    let m6g = its
        .iter()
        .find(|it| it.name == "m6g.large")
        .ok_or("no m6g.large")?;
    assert!(
        m6g.offerings.iter().any(|o| o.available),
        "an arm64 image resolved, so Graviton types can launch"
    );

    // Each architecture boots the image built for it.
    let launch = |name: &str, it: &str| {
        fixtures::node_claim(
            &format!("{cluster}-{name}"),
            "pool-a",
            &class,
            vec![
                fixtures::req(CAPACITY_TYPE_LABEL, &["on-demand"]),
                fixtures::req(INSTANCE_TYPE_LABEL, &[it]),
            ],
        )
    };
    let x86_claim = CloudProvider::create(&provider, &launch("x86", "m5.large")).await?;
    let arm_claim = CloudProvider::create(&provider, &launch("arm", "m6g.large")).await?;
    let sg = &network.security_group;
    assert_eq!(image_of_instance(&aws, &x86_claim, sg).await?, x86_image);
    assert_eq!(image_of_instance(&aws, &arm_claim, sg).await?, arm_image);
    let pods = x86_claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.get(PODS).cloned())
        .ok_or("no pods capacity")?;
    assert_eq!(
        pods.0, "20",
        "the launched NodeClaim reports the class's maxPods"
    );
    assert_eq!(
        CloudProvider::is_drifted(&provider, &x86_claim).await?,
        None
    );

    // AWS publishes a new x86 release: the x86 node drifts, the arm64 one does not.
    let copy = aws
        .ec2
        .copy_image()
        .source_image_id(&x86_image)
        .source_region("us-east-1")
        .name(format!("{cluster}-al2023-next"))
        .send()
        .await?;
    let next = copy.image_id().ok_or("no copied image id")?;
    fixtures::put_parameter(&aws.ssm, &format!("{prefix}{x86_param}"), next).await?;
    assert_eq!(
        CloudProvider::is_drifted(&provider, &x86_claim)
            .await?
            .as_deref(),
        Some(AMI_DRIFT)
    );
    assert_eq!(
        CloudProvider::is_drifted(&provider, &arm_claim).await?,
        None
    );

    CloudProvider::delete(&provider, &x86_claim).await?;
    CloudProvider::delete(&provider, &arm_claim).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_alias_parameter_names_the_alias_and_the_path() -> Result<(), BoxError> {
    let Some((url, kube_cluster)) = setup("missing_alias_parameter").await? else {
        return Ok(());
    };
    let cluster = common::unique("noalias");
    let prefix = format!("/karpenter-test/{cluster}");
    let aws = common::aws_clients(url)
        .await
        .with_ssm_parameter_prefix(&prefix);
    let version = kubernetes_version(&kube_cluster.client()).await?;
    fixtures::cluster_network(&aws.ec2, &cluster).await?;
    let profile = format!("{cluster}-profile");
    fixtures::instance_profile(&aws.iam, &profile).await?;
    let class = format!("{cluster}-class");
    let mut nc = fixtures::node_class(&class, &cluster, "unused", &profile);
    // A pinned release nobody published.
    nc.spec.ami_selector_terms = vec![AmiSelectorTerm {
        alias: Some("al2023@v20000101".into()),
        ..Default::default()
    }];
    let nc = Api::<EC2NodeClass>::all(kube_cluster.client())
        .create(&PostParams::default(), &nc)
        .await?;
    let provider = AwsCloudProvider::new(
        kube_cluster.client(),
        aws.clone(),
        common::cluster_info(&cluster),
        "us-east-1",
    );
    let status = provider.resolve(&nc).await?;
    let amis_ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::AMIS_READY)
        .ok_or("no AMIsReady")?;
    assert_eq!(amis_ready.status, "False");
    let message = amis_ready.message.clone().unwrap_or_default();
    let path = format!(
        "{prefix}/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/x86_64/standard/\
         amazon-eks-node-al2023-x86_64-standard-{version}-v20000101/image_id"
    );
    assert!(message.contains("alias al2023@v20000101"), "{message}");
    assert!(message.contains(&path), "{message}");
    match CloudProvider::instance_types(&provider, &pool(&cluster, &class)?).await {
        Err(CloudProviderError::NodeClassNotReady(m)) => {
            assert!(m.contains("al2023@v20000101"), "{m}")
        }
        other => return Err(format!("expected NodeClassNotReady, got {other:?}").into()),
    }
    Ok(())
}
