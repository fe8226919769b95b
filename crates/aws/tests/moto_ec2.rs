//! The EC2 provider against moto: instance types, EC2NodeClass resolution, and the instance
//! lifecycle (CreateFleet → get/list → TerminateInstances). See crates/aws/README.md for the
//! calls moto cannot answer and how those are covered.

mod common;

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use common::fixtures::{self, BoxError, req};
use karpenter_api::ec2::{EC2NodeClass, SelectorTerm};
use karpenter_api::labels::{
    CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL, ZONE_LABEL,
};
use karpenter_api::v1::NodeClaim;
use karpenter_aws::StaticCatalog;
use karpenter_aws::sdk::aws_sdk_ec2::{self, Client};
use karpenter_aws::sdk::{AwsError, Ec2Provider};

type TestResult = Result<(), BoxError>;

/// The shared cluster network: (subnet ids, security group id).
async fn network(ec2: &Client, cluster: &str) -> Result<(Vec<String>, String), BoxError> {
    let n = fixtures::cluster_network(ec2, cluster).await?;
    Ok((n.subnets, n.security_group))
}

/// The shared EC2NodeClass with a `spec.tags` entry, so launches can be checked for it.
fn node_class(name: &str, cluster: &str, image: &str) -> EC2NodeClass {
    let mut nc = fixtures::node_class(name, cluster, image, "KarpenterNodeInstanceProfile");
    nc.spec.tags = BTreeMap::from([("team".into(), "platform".into())]);
    nc
}

fn claim(name: &str, capacity_type: &str, types: &[&str]) -> NodeClaim {
    fixtures::node_claim(
        name,
        "default",
        "default",
        vec![
            req(CAPACITY_TYPE_LABEL, &[capacity_type]),
            req(INSTANCE_TYPE_LABEL, types),
            req(ZONE_LABEL, &["us-east-1a", "us-east-1b"]),
        ],
    )
}

#[tokio::test]
async fn live_instance_types_match_the_embedded_catalog() -> TestResult {
    let Some(url) = common::moto("live_instance_types_match_the_embedded_catalog") else {
        return Ok(());
    };
    let provider = Ec2Provider::new(
        common::ec2(url).await,
        common::cluster_info(&common::unique("it")),
        common::REGION,
    );
    let live = provider.instance_types().await?;
    assert!(live.len() > 500, "{} instance types", live.len());
    let embedded = StaticCatalog::embedded()?.instance_types();
    // Both come from the same DescribeInstanceTypes data through the same code: capacity,
    // overhead and labels agree (prices may differ where moto has spot prices).
    for name in ["m5.large", "c6g.xlarge", "g5.xlarge", "p4d.24xlarge"] {
        let l = live
            .iter()
            .find(|t| t.name == name)
            .ok_or(format!("{name} not live"))?;
        let e = embedded
            .iter()
            .find(|t| t.name == name)
            .ok_or(format!("{name} not embedded"))?;
        assert_eq!(l.capacity, e.capacity, "{name}");
        assert_eq!(l.overhead, e.overhead, "{name}");
        assert_eq!(l.labels, e.labels, "{name}");
        let zones = |t: &karpenter_solver::InstanceType| {
            let mut z: Vec<String> = t.offerings.iter().map(|o| o.zone.clone()).collect();
            z.dedup();
            z
        };
        assert_eq!(zones(l), zones(e), "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn node_class_resolves_by_tags_and_ids() -> TestResult {
    let Some(url) = common::moto("node_class_resolves_by_tags_and_ids") else {
        return Ok(());
    };
    let ec2 = common::ec2(url).await;
    let cluster = common::unique("nc");
    let (subnets, sg) = network(&ec2, &cluster).await?;
    let image = fixtures::some_image(&ec2).await?;
    let provider = Ec2Provider::new(ec2, common::cluster_info(&cluster), common::REGION);

    let status = provider
        .resolve_node_class(&node_class("default", &cluster, &image))
        .await?;
    let mut got: Vec<String> = status.subnets.iter().map(|s| s.id.clone()).collect();
    got.sort();
    let mut want = subnets.clone();
    want.sort();
    assert_eq!(got, want);
    let zones: Vec<&str> = status.subnets.iter().map(|s| s.zone.as_str()).collect();
    assert!(
        zones.contains(&"us-east-1a") && zones.contains(&"us-east-1b"),
        "{zones:?}"
    );
    assert_eq!(status.security_groups.len(), 1);
    assert_eq!(status.security_groups[0].id, sg);
    assert_eq!(status.amis.len(), 1);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .ok_or("no Ready")?;
    assert!(ready.is_true(), "{:?}", status.conditions);

    // By id, one subnet only.
    let mut by_id = node_class("by-id", &cluster, &image);
    by_id.spec.subnet_selector_terms = vec![SelectorTerm {
        id: Some(subnets[1].clone()),
        ..Default::default()
    }];
    by_id.spec.security_group_selector_terms = vec![SelectorTerm {
        id: Some(sg.clone()),
        ..Default::default()
    }];
    let status = provider.resolve_node_class(&by_id).await?;
    assert_eq!(status.subnets.len(), 1);
    assert_eq!(status.subnets[0].id, subnets[1]);
    assert_eq!(status.security_groups.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_selector_matching_nothing_says_which_tags_it_looked_for() -> TestResult {
    let Some(url) = common::moto("a_selector_matching_nothing_says_which_tags_it_looked_for")
    else {
        return Ok(());
    };
    let ec2 = common::ec2(url).await;
    let cluster = common::unique("missing");
    let image = fixtures::some_image(&ec2).await?;
    let provider = Ec2Provider::new(ec2, common::cluster_info(&cluster), common::REGION);
    let status = provider
        .resolve_node_class(&node_class("default", &cluster, &image))
        .await?;
    assert!(status.subnets.is_empty() && status.security_groups.is_empty());
    let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t).cloned();
    let subnets = cond("SubnetsReady").ok_or("no SubnetsReady")?;
    assert_eq!(subnets.status, "False");
    let msg = subnets.message.unwrap_or_default();
    assert!(
        msg.contains(&format!("kubernetes.io/cluster/{cluster}: *")),
        "{msg}"
    );
    assert!(msg.contains("spec.subnetSelectorTerms"), "{msg}");
    let sgs = cond("SecurityGroupsReady").ok_or("no SecurityGroupsReady")?;
    assert!(
        sgs.message
            .unwrap_or_default()
            .contains(&format!("karpenter.sh/discovery: {cluster}"))
    );
    assert_eq!(cond("Ready").ok_or("no Ready")?.status, "False");

    // Launching with such a NodeClass is refused with the same reason.
    let its = provider.instance_types().await?;
    let nc = node_class("default", &cluster, &image);
    let err = provider
        .create(&claim("c-1", "spot", &["m5.large"]), &nc, &status, &its)
        .await;
    match err {
        Err(AwsError::NodeClassNotReady(m)) => assert!(m.contains("SubnetsReady"), "{m}"),
        other => panic!("expected NodeClassNotReady, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn create_tags_get_list_and_delete_an_instance() -> TestResult {
    let Some(url) = common::moto("create_tags_get_list_and_delete_an_instance") else {
        return Ok(());
    };
    let ec2 = common::ec2(url).await;
    let cluster = common::unique("life");
    network(&ec2, &cluster).await?;
    let image = fixtures::some_image(&ec2).await?;
    let provider = Ec2Provider::new(ec2.clone(), common::cluster_info(&cluster), common::REGION);
    let nc = node_class("default", &cluster, &image);
    let status = provider.resolve_node_class(&nc).await?;
    let its = provider.instance_types().await?;

    let types = ["m5.xlarge", "m5.large", "m5.2xlarge"];
    // moto launches the first override, and the overrides are ordered by price (then name:
    // moto quotes the same spot price for every offering).
    let cheapest = its
        .iter()
        .filter(|t| types.contains(&t.name.as_str()))
        .flat_map(|t| {
            t.offerings
                .iter()
                .filter(|o| o.capacity_type == "spot")
                .map(move |o| (o.price, t.name.clone()))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
        .map(|(_, name)| name)
        .ok_or("no spot offering")?;
    let c = claim("default-abc12", "spot", &types);
    let launched = provider.create(&c, &nc, &status, &its).await?;
    let st = launched.status.clone().ok_or("no status")?;
    let provider_id = st.provider_id.clone().ok_or("no providerID")?;
    assert!(provider_id.starts_with("aws:///us-east-1"), "{provider_id}");
    let labels = launched.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(INSTANCE_TYPE_LABEL),
        Some(&cheapest),
        "{labels:?}"
    );
    assert_eq!(
        labels.get(CAPACITY_TYPE_LABEL).map(String::as_str),
        Some("spot")
    );
    assert_eq!(
        labels.get(NODE_POOL_LABEL).map(String::as_str),
        Some("default")
    );
    let it = its
        .iter()
        .find(|t| t.name == cheapest)
        .ok_or("launched type unknown")?;
    assert_eq!(
        st.capacity.get("pods").map(|q| q.0.clone()),
        Some(it.capacity.get("pods").to_string())
    );
    assert!(st.allocatable.contains_key("memory"));

    // The instance carries the tags garbage collection and list rely on.
    let id = provider_id.rsplit('/').next().ok_or("bad providerID")?;
    let out = ec2.describe_instances().instance_ids(id).send().await?;
    let inst = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .ok_or("not found")?;
    let t: BTreeMap<&str, &str> = inst
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert_eq!(t.get("karpenter.sh/nodepool"), Some(&"default"), "{t:?}");
    assert_eq!(t.get("karpenter.sh/nodeclaim"), Some(&"default-abc12"));
    assert_eq!(t.get("karpenter.k8s.aws/ec2nodeclass"), Some(&"default"));
    assert_eq!(
        t.get(format!("kubernetes.io/cluster/{cluster}").as_str()),
        Some(&"owned")
    );
    assert_eq!(
        t.get("team"),
        Some(&"platform"),
        "NodeClass tags are applied"
    );
    assert_eq!(inst.image_id(), Some(image.as_str()));
    // Launched into one of the selected subnets.
    let subnet = inst.subnet_id().unwrap_or_default();
    assert!(status.subnets.iter().any(|s| s.id == subnet), "{subnet}");

    // Idempotent: a retry returns the same instance.
    let again = provider.create(&c, &nc, &status, &its).await?;
    assert_eq!(
        again.status.and_then(|s| s.provider_id).as_deref(),
        Some(provider_id.as_str())
    );

    let got = provider.get(&provider_id, &its).await?;
    assert_eq!(got.metadata.name.as_deref(), Some("default-abc12"));
    let listed = provider.list(&its).await?;
    assert_eq!(listed.len(), 1, "only this cluster's instance");
    assert_eq!(
        listed[0]
            .status
            .as_ref()
            .and_then(|s| s.provider_id.clone()),
        Some(provider_id.clone())
    );

    provider.delete(&launched).await?;
    assert!(matches!(
        provider.get(&provider_id, &its).await,
        Err(AwsError::NodeClaimNotFound(_))
    ));
    assert!(matches!(
        provider.delete(&launched).await,
        Err(AwsError::NodeClaimNotFound(_))
    ));
    assert!(provider.list(&its).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn on_demand_claims_launch_on_demand_instances() -> TestResult {
    let Some(url) = common::moto("on_demand_claims_launch_on_demand_instances") else {
        return Ok(());
    };
    let ec2 = common::ec2(url).await;
    let cluster = common::unique("od");
    network(&ec2, &cluster).await?;
    let image = fixtures::some_image(&ec2).await?;
    let provider = Ec2Provider::new(ec2.clone(), common::cluster_info(&cluster), common::REGION);
    let nc = node_class("default", &cluster, &image);
    let status = provider.resolve_node_class(&nc).await?;
    let its = provider.instance_types().await?;
    let launched = provider
        .create(
            &claim("od-1", "on-demand", &["c5.xlarge"]),
            &nc,
            &status,
            &its,
        )
        .await?;
    let labels = launched.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get(CAPACITY_TYPE_LABEL).map(String::as_str),
        Some("on-demand")
    );
    assert_eq!(
        labels.get(INSTANCE_TYPE_LABEL).map(String::as_str),
        Some("c5.xlarge")
    );
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:karpenter.sh/nodeclaim")
                .values("od-1")
                .build(),
        )
        .send()
        .await?;
    let inst = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .ok_or("not found")?;
    assert!(
        inst.instance_lifecycle().is_none(),
        "on-demand instances have no lifecycle"
    );

    // A claim no offering can satisfy is insufficient capacity, before any API call.
    let err = provider
        .create(
            &claim("od-2", "on-demand", &["no-such.type"]),
            &nc,
            &status,
            &its,
        )
        .await;
    assert!(
        matches!(err, Err(AwsError::InsufficientCapacity(_))),
        "{err:?}"
    );
    Ok(())
}
