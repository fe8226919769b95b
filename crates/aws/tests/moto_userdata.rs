//! Node bootstrap user data on moto: the launch template of a launched instance carries user
//! data that decodes to a MIME document whose NodeConfig names the cluster, its endpoint and
//! CA, and the NodeClaim's labels and taints; NodeClaims with the same labels reuse the
//! template, different labels get their own.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::fixtures::{self, BoxError};
use karpenter_api::ec2::EC2NodeClass;
use karpenter_api::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL};
use karpenter_api::v1::{NodeClaim, Taint, TaintEffect};
use karpenter_aws::sdk::{AwsClients, AwsCloudProvider, aws_sdk_ec2};
use karpenter_providers::CloudProvider;
use karpenter_testkit::TestCluster;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;

fn claim(name: &str, pool: &str, class: &str, team: &str) -> NodeClaim {
    let mut c = fixtures::node_claim(
        name,
        pool,
        class,
        vec![
            fixtures::req(CAPACITY_TYPE_LABEL, &["on-demand"]),
            // One type, so one max-pods group and one template per label set.
            fixtures::req(INSTANCE_TYPE_LABEL, &["m5.large"]),
        ],
    );
    c.metadata
        .labels
        .get_or_insert_default()
        .insert("team".into(), team.into());
    c.spec.taints = vec![Taint {
        key: "dedicated".into(),
        value: Some("batch".into()),
        effect: TaintEffect::NoSchedule,
    }];
    c.spec.startup_taints = vec![Taint {
        key: "example.com/init".into(),
        value: None,
        effect: TaintEffect::NoExecute,
    }];
    c
}

/// The decoded user data of every launch template of the NodeClass.
async fn template_user_data(aws: &AwsClients, class: &str) -> Result<Vec<String>, BoxError> {
    let templates = aws
        .ec2
        .describe_launch_templates()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:karpenter.k8s.aws/ec2nodeclass")
                .values(class)
                .build(),
        )
        .send()
        .await?;
    let mut out = Vec::new();
    for t in templates.launch_templates() {
        let id = t.launch_template_id().ok_or("template without id")?;
        let versions = aws
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(id)
            .send()
            .await?;
        for v in versions.launch_template_versions() {
            let data = v
                .launch_template_data()
                .and_then(|d| d.user_data())
                .ok_or("launch template without user data")?;
            out.push(String::from_utf8(STANDARD.decode(data)?)?);
        }
    }
    out.sort();
    Ok(out)
}

/// The NodeConfig part of an AL2023 MIME document, as generic YAML.
fn node_config(doc: &str) -> Result<Value, BoxError> {
    let (_, rest) = doc
        .split_once("Content-Type: application/node.eks.aws\n\n")
        .ok_or("no NodeConfig part")?;
    let body = rest.split("\n--//").next().ok_or("no part end")?;
    Ok(serde_saphyr::from_str::<Value>(body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_templates_carry_the_bootstrap_and_are_reused() -> Result<(), BoxError> {
    let Some(url) = common::moto("launch_templates_carry_the_bootstrap") else {
        return Ok(());
    };
    let Some(kube_cluster) = TestCluster::start().await else {
        return Ok(());
    };
    kube_cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let aws = common::aws_clients(url).await;
    let cluster = common::unique("userdata");
    fixtures::cluster_network(&aws.ec2, &cluster).await?;
    let image = fixtures::image_of(&aws.ec2, "x86_64").await?;
    let profile = format!("{cluster}-profile");
    fixtures::instance_profile(&aws.iam, &profile).await?;
    let class = format!("{cluster}-class");
    let mut nc = fixtures::node_class(&class, &cluster, &image, &profile);
    // No alias and no amiFamily: AL2023, upstream's default.
    nc.spec.user_data = Some("#!/bin/bash\necho from-the-user\n".into());
    Api::<EC2NodeClass>::all(kube_cluster.client())
        .create(&PostParams::default(), &nc)
        .await?;
    let provider = AwsCloudProvider::new(
        kube_cluster.client(),
        aws.clone(),
        common::cluster_info(&cluster),
        "us-east-1",
    );

    provider
        .create(&claim(&format!("{cluster}-a"), "pool-ud", &class, "a"))
        .await?;
    let docs = template_user_data(&aws, &class).await?;
    assert_eq!(docs.len(), 1, "{docs:?}");
    let doc = &docs[0];
    assert!(doc.starts_with("MIME-Version: 1.0\n"), "{doc}");
    // The user's script is a part of its own, before ours.
    let user_at = doc.find("echo from-the-user").ok_or("user data dropped")?;
    let ours_at = doc
        .find("application/node.eks.aws")
        .ok_or("no NodeConfig")?;
    assert!(user_at < ours_at, "{doc}");

    let config = node_config(doc)?;
    assert_eq!(config["kind"], "NodeConfig");
    let c = &config["spec"]["cluster"];
    assert_eq!(c["name"], cluster.as_str());
    assert_eq!(c["apiServerEndpoint"], common::TEST_ENDPOINT);
    assert_eq!(c["certificateAuthority"], common::TEST_CA_BUNDLE);
    let kubelet = &config["spec"]["kubelet"];
    // m5.large: 3 ENIs × (10 − 1) + 2.
    assert_eq!(kubelet["config"]["maxPods"], 29);
    let flags = kubelet["flags"].to_string();
    for label in [
        "karpenter.sh/nodepool=pool-ud",
        "team=a",
        "karpenter.sh/capacity-type=on-demand",
    ] {
        assert!(flags.contains(label), "{label} not in {flags}");
    }
    let taints = kubelet["config"]["registerWithTaints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has = |key: &str, effect: &str| {
        taints
            .iter()
            .any(|t| t["key"] == key && t["effect"] == effect)
    };
    assert!(has("dedicated", "NoSchedule"), "{taints:?}");
    assert!(has("example.com/init", "NoExecute"), "{taints:?}");
    assert!(has("karpenter.sh/unregistered", "NoExecute"), "{taints:?}");

    // Same labels and taints: the same template.
    provider
        .create(&claim(&format!("{cluster}-b"), "pool-ud", &class, "a"))
        .await?;
    assert_eq!(template_user_data(&aws, &class).await?, docs);
    // Other labels: a template of their own.
    provider
        .create(&claim(&format!("{cluster}-c"), "pool-ud", &class, "b"))
        .await?;
    let after = template_user_data(&aws, &class).await?;
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().any(|d| d.contains("team=b")));
    Ok(())
}
