//! moto fixtures shared by the provider-level and controller-level tests: a tagged network, an
//! image, an instance profile, EC2NodeClasses and NodeClaims.

use std::collections::BTreeMap;

use karpenter_api::ec2::{AmiSelectorTerm, EC2NodeClass, EC2NodeClassSpec, SelectorTerm};
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::v1::{
    NodeClaim, NodeClaimSpec, NodeClassReference, NodeSelectorRequirementWithMinValues, Operator,
    ResourceRequirements,
};
use karpenter_aws::sdk::aws_sdk_ec2::Client;
use karpenter_aws::sdk::aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};

/// Boxed error for fixtures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn tag_spec(resource: ResourceType, pairs: &[(&str, &str)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            pairs
                .iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .build()
}

/// The network a test launches into.
#[derive(Debug, Clone)]
pub struct Network {
    /// Subnet ids, one per zone (us-east-1a, us-east-1b).
    pub subnets: Vec<String>,
    /// Security group id.
    pub security_group: String,
}

/// A VPC with one subnet per zone tagged `subnet_tags` and a security group tagged
/// `sg_tags`.
pub async fn network(
    ec2: &Client,
    cidr_octet: u8,
    subnet_tags: &[(&str, &str)],
    sg_tags: &[(&str, &str)],
    name: &str,
) -> Result<Network, BoxError> {
    let vpc = ec2
        .create_vpc()
        .cidr_block(format!("10.{cidr_octet}.0.0/16"))
        .send()
        .await?;
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .ok_or("no vpc id")?
        .to_owned();
    let mut subnets = Vec::new();
    for (i, zone) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(format!("10.{cidr_octet}.{i}.0/24"))
            .availability_zone(*zone)
            .tag_specifications(tag_spec(ResourceType::Subnet, subnet_tags))
            .send()
            .await?;
        subnets.push(
            s.subnet()
                .and_then(|s| s.subnet_id())
                .ok_or("no subnet id")?
                .to_owned(),
        );
    }
    let sg = ec2
        .create_security_group()
        .group_name(format!("{name}-nodes"))
        .description("nodes")
        .vpc_id(&vpc_id)
        .tag_specifications(tag_spec(ResourceType::SecurityGroup, sg_tags))
        .send()
        .await?;
    Ok(Network {
        subnets,
        security_group: sg.group_id().ok_or("no group id")?.to_owned(),
    })
}

/// The usual network of a cluster: subnets tagged `kubernetes.io/cluster/<cluster>: shared`,
/// security group tagged `karpenter.sh/discovery: <cluster>`.
pub async fn cluster_network(ec2: &Client, cluster: &str) -> Result<Network, BoxError> {
    let cluster_tag = format!("kubernetes.io/cluster/{cluster}");
    network(
        ec2,
        0,
        &[(&cluster_tag, "shared")],
        &[("karpenter.sh/discovery", cluster)],
        cluster,
    )
    .await
}

/// An x86_64 image moto ships (the provider boots an image only on instance types of its
/// architecture; the tests' claims mostly land on amd64 types).
pub async fn some_image(ec2: &Client) -> Result<String, BoxError> {
    image_of(ec2, "x86_64").await
}

/// The first (by id) image moto ships for the EC2 architecture `arch` (`x86_64`, `arm64`).
pub async fn image_of(ec2: &Client, arch: &str) -> Result<String, BoxError> {
    let out = ec2
        .describe_images()
        .owners("amazon")
        .filters(
            karpenter_aws::sdk::aws_sdk_ec2::types::Filter::builder()
                .name("architecture")
                .values(arch)
                .build(),
        )
        .send()
        .await?;
    let mut ids: Vec<&str> = out.images().iter().filter_map(|i| i.image_id()).collect();
    ids.sort();
    Ok(ids
        .first()
        .ok_or(format!("moto has no {arch} image"))?
        .to_string())
}

/// Publishes (or overwrites) an SSM parameter: the tests' stand-in for AWS's EKS image
/// parameters, which moto lacks and will not let anyone create under `/aws`.
pub async fn put_parameter(
    ssm: &karpenter_aws::sdk::aws_sdk_ssm::Client,
    name: &str,
    value: &str,
) -> Result<(), BoxError> {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(karpenter_aws::sdk::aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await?;
    Ok(())
}

/// Creates an instance profile named `name` in moto's IAM.
pub async fn instance_profile(
    iam: &karpenter_aws::sdk::aws_sdk_iam::Client,
    name: &str,
) -> Result<(), BoxError> {
    iam.create_instance_profile()
        .instance_profile_name(name)
        .send()
        .await?;
    Ok(())
}

/// An EC2NodeClass selecting [`cluster_network`]'s subnets and security group, the image, and
/// the instance profile.
pub fn node_class(name: &str, cluster: &str, image: &str, profile: &str) -> EC2NodeClass {
    EC2NodeClass::new(
        name,
        EC2NodeClassSpec {
            subnet_selector_terms: vec![SelectorTerm {
                tags: Some(BTreeMap::from([(
                    format!("kubernetes.io/cluster/{cluster}"),
                    "*".into(),
                )])),
                ..Default::default()
            }],
            security_group_selector_terms: vec![SelectorTerm {
                tags: Some(BTreeMap::from([(
                    "karpenter.sh/discovery".into(),
                    cluster.into(),
                )])),
                ..Default::default()
            }],
            ami_selector_terms: vec![AmiSelectorTerm {
                id: Some(image.into()),
                ..Default::default()
            }],
            instance_profile: Some(profile.into()),
            ..Default::default()
        },
    )
}

/// `key In values`.
pub fn req(key: &str, values: &[&str]) -> NodeSelectorRequirementWithMinValues {
    NodeSelectorRequirementWithMinValues {
        key: key.into(),
        operator: Operator::In,
        values: values.iter().map(|v| v.to_string()).collect(),
        min_values: None,
    }
}

/// A NodeClaim of `pool` over EC2NodeClass `class`, asking for one cpu.
pub fn node_claim(
    name: &str,
    pool: &str,
    class: &str,
    requirements: Vec<NodeSelectorRequirementWithMinValues>,
) -> NodeClaim {
    let mut claim = NodeClaim::new(
        name,
        NodeClaimSpec {
            taints: vec![],
            startup_taints: vec![],
            requirements,
            resources: ResourceRequirements {
                requests: BTreeMap::from([(
                    "cpu".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
                )]),
            },
            node_class_ref: NodeClassReference {
                group: "karpenter.k8s.aws".into(),
                kind: "EC2NodeClass".into(),
                name: class.into(),
            },
            termination_grace_period: None,
            expire_after: "Never".into(),
        },
    );
    claim.metadata.labels = Some(BTreeMap::from([(NODE_POOL_LABEL.into(), pool.into())]));
    claim
}

/// The instance's tags as a map.
pub async fn instance_tags(
    ec2: &Client,
    instance_id: &str,
) -> Result<BTreeMap<String, String>, BoxError> {
    let out = ec2
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await?;
    let inst = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .ok_or("no instance")?;
    Ok(inst
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect())
}
