//! `CloudProvider` for AWS through the trait, against moto and the local control plane (the
//! provider reads EC2NodeClasses from the API server): create tags and launches, list finds,
//! drift is named, delete terminates; a legacy Provisioner's inline `provider:` block launches
//! into the subnets its selector selects.

mod common;

use std::collections::BTreeMap;

use common::fixtures::{self, BoxError};
use karpenter_api::ec2::{AmiSelectorTerm, EC2NodeClass};
use karpenter_api::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL};
use karpenter_api::read::{KarpenterObject, parse_karpenter_objects};
use karpenter_aws::sdk::ami::{Alias, kubernetes_version};
use karpenter_aws::sdk::drift::{NODECLASS_DRIFT, NODECLASS_HASH_ANNOTATION};
use karpenter_aws::sdk::launch::instance_id;
use karpenter_aws::sdk::{AwsCloudProvider, aws_sdk_ec2};
use karpenter_providers::{CloudProvider, CloudProviderError};
use karpenter_testkit::TestCluster;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_through_the_trait_tags_lists_drifts_and_deletes() -> Result<(), BoxError> {
    let Some((url, kube_cluster)) = setup("create_through_the_trait").await? else {
        return Ok(());
    };
    let aws = common::aws_clients(url).await;
    let cluster = common::unique("trait");
    let network = fixtures::cluster_network(&aws.ec2, &cluster).await?;
    let image = fixtures::some_image(&aws.ec2).await?;
    let profile = format!("{cluster}-profile");
    fixtures::instance_profile(&aws.iam, &profile).await?;
    let class = format!("{cluster}-class");
    let classes: Api<EC2NodeClass> = Api::all(kube_cluster.client());
    classes
        .create(
            &PostParams::default(),
            &fixtures::node_class(&class, &cluster, &image, &profile),
        )
        .await?;

    let provider = AwsCloudProvider::new(
        kube_cluster.client(),
        aws.clone(),
        common::cluster_info(&cluster),
        "us-east-1",
    );
    let provider: &dyn CloudProvider = &provider;
    let claim_name = format!("{cluster}-claim");
    let claim = fixtures::node_claim(
        &claim_name,
        "pool-a",
        &class,
        vec![
            fixtures::req(CAPACITY_TYPE_LABEL, &["on-demand"]),
            fixtures::req(INSTANCE_TYPE_LABEL, &["m5.large", "m5.xlarge"]),
        ],
    );
    let launched = provider.create(&claim).await?;
    let pid = launched
        .status
        .as_ref()
        .and_then(|s| s.provider_id.clone())
        .ok_or("no providerID")?;
    let id = instance_id(&pid).ok_or("not an AWS providerID")?;
    let labels = launched.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(CAPACITY_TYPE_LABEL).map(String::as_str),
        Some("on-demand")
    );
    assert!(
        launched
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(NODECLASS_HASH_ANNOTATION)),
        "create stamps the NodeClass hash"
    );

    // moto's CreateFleet leaves the launch template's security groups off the instance (it
    // gets the VPC default group); EC2 applies them. Do what EC2 would before checking drift.
    aws.ec2
        .modify_instance_attribute()
        .instance_id(id)
        .groups(&network.security_group)
        .send()
        .await?;
    let tags = fixtures::instance_tags(&aws.ec2, id).await?;
    assert_eq!(
        tags.get(NODE_POOL_LABEL).map(String::as_str),
        Some("pool-a")
    );
    assert_eq!(
        tags.get("karpenter.sh/nodeclaim").map(String::as_str),
        Some(claim_name.as_str())
    );
    assert_eq!(
        tags.get(&format!("kubernetes.io/cluster/{cluster}"))
            .map(String::as_str),
        Some("owned")
    );
    assert_eq!(
        tags.get("karpenter.k8s.aws/ec2nodeclass")
            .map(String::as_str),
        Some(class.as_str())
    );

    // Idempotent: a retry adopts the instance.
    let again = provider.create(&claim).await?;
    assert_eq!(again.status.and_then(|s| s.provider_id), Some(pid.clone()));

    let listed = provider.list().await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0].metadata.name.as_deref(),
        Some(claim_name.as_str())
    );
    assert!(
        listed[0].metadata.creation_timestamp.is_some(),
        "GC needs the launch time"
    );
    assert_eq!(
        provider.get(&pid).await?.status.and_then(|s| s.provider_id),
        Some(pid.clone())
    );

    // Drift: unchanged → none; a static spec change → NodeClassDrift; an image the selector
    // no longer selects → AMIDrift.
    assert_eq!(provider.is_drifted(&launched).await?, None);
    classes
        .patch(
            &class,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"tags": {"team": "new"}}})),
        )
        .await?;
    assert_eq!(
        provider.is_drifted(&launched).await?.as_deref(),
        Some(NODECLASS_DRIFT)
    );
    // The batched check answers the same, in order: a claim without an instance yet is not
    // drifted, one whose instance does not exist is not found (without failing the batch).
    let mut unlaunched = launched.clone();
    unlaunched.status = None;
    let mut vanished = launched.clone();
    if let Some(s) = vanished.status.as_mut() {
        s.provider_id = Some("aws:///us-east-1a/i-00000000000000dead".into());
    }
    let answers = provider
        .are_drifted(&[launched.clone(), unlaunched, vanished])
        .await;
    assert_eq!(answers.len(), 3);
    assert_eq!(
        answers[0].as_ref().ok().cloned().flatten().as_deref(),
        Some(NODECLASS_DRIFT)
    );
    assert!(matches!(answers[1], Ok(None)), "{:?}", answers[1]);
    assert!(
        matches!(answers[2], Err(CloudProviderError::NodeClaimNotFound(_))),
        "{:?}",
        answers[2]
    );
    let other_image = {
        let out = aws.ec2.describe_images().owners("amazon").send().await?;
        let mut ids: Vec<String> = out
            .images()
            .iter()
            .filter_map(|i| i.image_id().map(str::to_owned))
            .filter(|i| *i != image)
            .collect();
        ids.sort();
        ids.into_iter().next().ok_or("moto has one image only")?
    };
    let mut unhashed = launched.clone();
    unhashed.metadata.annotations = None;
    classes
        .patch(
            &class,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"amiSelectorTerms": [
                AmiSelectorTerm { id: Some(other_image), ..Default::default() }
            ]}})),
        )
        .await?;
    assert_eq!(
        provider.is_drifted(&unhashed).await?.as_deref(),
        Some("AMIDrift")
    );

    provider.delete(&launched).await?;
    match provider.get(&pid).await {
        Err(CloudProviderError::NodeClaimNotFound(_)) => {}
        other => panic!("terminated instance still found: {other:?}"),
    }
    match provider.delete(&launched).await {
        Err(e) if e.is_not_found() => {}
        other => panic!("second delete should say gone: {other:?}"),
    }
    assert!(provider.list().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_provisioner_launches_into_its_selected_subnets() -> Result<(), BoxError> {
    let Some((url, kube_cluster)) = setup("legacy_provisioner_launches").await? else {
        return Ok(());
    };
    let cluster = common::unique("legacy");
    // Moto lacks AWS's EKS image parameters; publish the real paths under a test prefix.
    let prefix = format!("/karpenter-test/{cluster}");
    let aws = common::aws_clients(url)
        .await
        .with_ssm_parameter_prefix(&prefix);
    // The bundled example, with its cluster name `demo` made unique for this run.
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/legacy/provisioner.yaml"),
    )?
    .replace("demo", &cluster);
    let docs = parse_karpenter_objects(&yaml)?;
    let provisioner = docs
        .into_iter()
        .find_map(|d| match d.object {
            Some(KarpenterObject::Provisioner(p))
                if p.metadata.name.as_deref() == Some("default") =>
            {
                Some(p)
            }
            _ => None,
        })
        .ok_or("no Provisioner `default` in the example")?;
    let converted = provisioner.convert()?;
    let pool = converted.node_pool;
    let mut nc = converted
        .node_class
        .ok_or("inline provider gives a NodeClass")?;

    // Subnets the selector (`kubernetes.io/cluster/<cluster>: '*'`) selects, and decoys that
    // it does not; the security group carries the selector's `aws:eks:cluster-name` tag
    // (moto lets tests set that reserved prefix).
    let cluster_tag = format!("kubernetes.io/cluster/{cluster}");
    let selected = fixtures::network(
        &aws.ec2,
        1,
        &[(&cluster_tag, "owned")],
        &[("aws:eks:cluster-name", &cluster)],
        &cluster,
    )
    .await?;
    let decoy = fixtures::network(
        &aws.ec2,
        2,
        &[("kubernetes.io/cluster/someone-else", "owned")],
        &[("purpose", "decoy")],
        &format!("{cluster}-decoy"),
    )
    .await?;
    let profile = format!("KarpenterNodeInstanceProfile-{cluster}");
    fixtures::instance_profile(&aws.iam, &profile).await?;
    assert_eq!(nc.spec.instance_profile.as_deref(), Some(profile.as_str()));
    // amiFamily AL2 converts to the alias `al2@latest`, resolved through SSM for the control
    // plane's Kubernetes version. Only the x86_64 parameter exists (the Provisioner allows
    // m5/c5 types only): a family missing one architecture still resolves.
    assert_eq!(
        nc.spec.ami_selector_terms,
        vec![AmiSelectorTerm {
            alias: Some("al2@latest".into()),
            ..Default::default()
        }]
    );
    let version = kubernetes_version(&kube_cluster.client()).await?;
    let params = Alias::parse("al2@latest")?.parameters(&version);
    let x86_param = params.first().ok_or("al2 has no parameters")?;
    let al2_image = fixtures::some_image(&aws.ec2).await?;
    fixtures::put_parameter(&aws.ssm, &format!("{prefix}{x86_param}"), &al2_image).await?;
    let class_name = nc.metadata.name.clone().ok_or("no name")?;
    // The converted NodeClass is named after the Provisioner (`default`); give it this run's
    // name so parallel runs do not share it, and point the pool at it.
    let class_name = format!("{class_name}-{cluster}");
    nc.metadata.name = Some(class_name.clone());
    Api::<EC2NodeClass>::all(kube_cluster.client())
        .create(&PostParams::default(), &nc)
        .await?;

    let provider = AwsCloudProvider::new(
        kube_cluster.client(),
        aws.clone(),
        common::cluster_info(&cluster),
        "us-east-1",
    );
    let mut pool = pool;
    pool.spec.template.spec.node_class_ref.name = class_name.clone();
    // The pool's instance types are offered only in zones with a selected subnet.
    let its = provider.instance_types(&pool).await?;
    assert!(its.iter().any(|it| it.name == "m5.large"));
    let requirements = pool.spec.template.spec.requirements.clone();
    let claim = fixtures::node_claim(
        &format!("{cluster}-claim"),
        pool.metadata.name.as_deref().unwrap_or("default"),
        &class_name,
        requirements,
    );
    let launched = CloudProvider::create(&provider, &claim).await?;
    let pid = launched
        .status
        .as_ref()
        .and_then(|s| s.provider_id.clone())
        .ok_or("no providerID")?;
    let id = instance_id(&pid).ok_or("not an AWS providerID")?;
    let out = aws.ec2.describe_instances().instance_ids(id).send().await?;
    let inst = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .ok_or("no instance")?;
    assert_eq!(inst.image_id(), Some(al2_image.as_str()));
    let subnet = inst.subnet_id().unwrap_or_default().to_owned();
    assert!(
        selected.subnets.contains(&subnet),
        "launched into {subnet}, not one of the selected {:?} (decoys {:?})",
        selected.subnets,
        decoy.subnets
    );
    // The selected security group is in the launch template the fleet used (moto does not
    // copy a template's groups onto the instance, so check the template).
    let templates = aws
        .ec2
        .describe_launch_templates()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:karpenter.k8s.aws/ec2nodeclass")
                .values(&class_name)
                .build(),
        )
        .send()
        .await?;
    let template = templates
        .launch_templates()
        .first()
        .and_then(|t| t.launch_template_id())
        .ok_or("no launch template for the NodeClass")?;
    let versions = aws
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(template)
        .send()
        .await?;
    let sgs: Vec<String> = versions
        .launch_template_versions()
        .iter()
        .filter_map(|v| v.launch_template_data())
        .flat_map(|d| d.security_group_ids().to_vec())
        .collect();
    assert_eq!(sgs, vec![selected.security_group.clone()]);
    // The Provisioner asks for spot and four instance types.
    let labels = launched.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(CAPACITY_TYPE_LABEL).map(String::as_str),
        Some("spot")
    );
    let it = labels.get(INSTANCE_TYPE_LABEL).cloned().unwrap_or_default();
    assert!(
        ["m5.large", "m5.xlarge", "m5.2xlarge", "c5.xlarge"].contains(&it.as_str()),
        "{it}"
    );
    let labels_of_pool: BTreeMap<String, String> = pool.spec.template.metadata.labels.clone();
    assert_eq!(
        labels_of_pool.get("node-type").map(String::as_str),
        Some("worker")
    );
    CloudProvider::delete(&provider, &launched).await?;
    Ok(())
}
