//! Launching into capacity reservations (and on-demand launches staying out of them) against
//! moto. Moto has no DescribeCapacityReservations,
//! so the reservations are written into the resolved status by hand (what the NodeClass status
//! would hold); CreateFleet and the launch templates are moto's. Moto stores a launch
//! template's data as sent, so the template read back shows what a launch asked EC2 for.

mod common;

use std::time::{Instant, SystemTime};

use aws_sdk_ec2::types::{CapacityReservationPreference, Filter, MarketType};
use common::fixtures::{self, BoxError, req};
use karpenter_api::ec2::{EC2NodeClassStatus, ResolvedCapacityReservation};
use karpenter_api::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, ZONE_LABEL};
use karpenter_api::v1::NodeClaim;
use karpenter_aws::sdk::aws_sdk_ec2::{self, Client};
use karpenter_aws::sdk::reservations::{
    CAPACITY_RESERVATION_ID_LABEL, CAPACITY_RESERVATION_TYPE_LABEL, add_reserved_offerings,
};
use karpenter_aws::sdk::{AwsError, Ec2Provider};
use karpenter_solver::InstanceType;

type TestResult = Result<(), BoxError>;

fn reservation(id: &str, reservation_type: &str, available: i64) -> ResolvedCapacityReservation {
    ResolvedCapacityReservation {
        id: id.into(),
        availability_zone: "us-east-1a".into(),
        instance_type: "m5.large".into(),
        owner_id: "123456789012".into(),
        instance_match_criteria: "targeted".into(),
        reservation_type: reservation_type.into(),
        state: "active".into(),
        end_time: None,
        available_instance_count: available,
    }
}

/// A NodeClaim pinned to reservation `id`, as the controller creates one.
fn pinned(name: &str, id: &str) -> NodeClaim {
    fixtures::node_claim(
        name,
        "default",
        "default",
        vec![
            req(CAPACITY_TYPE_LABEL, &["reserved"]),
            req(INSTANCE_TYPE_LABEL, &["m5.large", "m5.xlarge"]),
            req(ZONE_LABEL, &["us-east-1a", "us-east-1b"]),
            req(CAPACITY_RESERVATION_ID_LABEL, &[id]),
        ],
    )
}

/// The region's types with the status's reservations as offerings, sized by the provider's
/// availability cache (what `AwsCloudProvider::class_instance_types` does).
fn with_reservations(
    base: &[InstanceType],
    status: &EC2NodeClassStatus,
    provider: &Ec2Provider,
) -> Vec<InstanceType> {
    let mut its = base.to_vec();
    let cache = provider.reservation_availability();
    add_reserved_offerings(
        &mut its,
        &status.capacity_reservations,
        |id| cache.count(id),
        SystemTime::now(),
    );
    its
}

/// Every version-1 launch template data of the cluster's templates.
async fn templates(
    ec2: &Client,
    cluster: &str,
) -> Result<Vec<aws_sdk_ec2::types::ResponseLaunchTemplateData>, BoxError> {
    let out = ec2
        .describe_launch_templates()
        .filters(
            Filter::builder()
                .name(format!("tag:kubernetes.io/cluster/{cluster}"))
                .values("owned")
                .build(),
        )
        .send()
        .await?;
    let mut data = Vec::new();
    for t in out.launch_templates() {
        let v = ec2
            .describe_launch_template_versions()
            .launch_template_id(t.launch_template_id().unwrap_or_default())
            .send()
            .await?;
        data.extend(
            v.launch_template_versions()
                .iter()
                .filter_map(|v| v.launch_template_data().cloned()),
        );
    }
    Ok(data)
}

fn targets(data: &aws_sdk_ec2::types::ResponseLaunchTemplateData) -> Option<&str> {
    data.capacity_reservation_specification()?
        .capacity_reservation_target()?
        .capacity_reservation_id()
}

#[tokio::test]
async fn a_pinned_claim_launches_into_its_reservation_and_a_full_one_is_skipped() -> TestResult {
    let Some(url) = common::moto("a_pinned_claim_launches_into_its_reservation") else {
        return Ok(());
    };
    let ec2 = common::ec2(url).await;
    let cluster = common::unique("rsv");
    fixtures::cluster_network(&ec2, &cluster).await?;
    let image = fixtures::some_image(&ec2).await?;
    let provider = Ec2Provider::new(ec2.clone(), common::cluster_info(&cluster), common::REGION);
    let nc = fixtures::node_class("default", &cluster, &image, "KarpenterNodeInstanceProfile");
    let mut status = provider.resolve_node_class(&nc).await?;
    status.capacity_reservations = vec![
        reservation("cr-0aaaaaaaaaaaaaaa1", "default", 2),
        reservation("cr-0aaaaaaaaaaaaaaa2", "default", 5),
    ];
    provider
        .reservation_availability()
        .sync(&status.capacity_reservations, Instant::now());
    let base = provider.instance_types().await?;
    let its = with_reservations(&base, &status, &provider);

    let launched = provider
        .create(
            &pinned("default-rsv01", "cr-0aaaaaaaaaaaaaaa1"),
            &nc,
            &status,
            &its,
        )
        .await?;
    let labels = launched.metadata.labels.clone().unwrap_or_default();
    let label = |k: &str| labels.get(k).map(String::as_str);
    assert_eq!(label(CAPACITY_TYPE_LABEL), Some("reserved"), "{labels:?}");
    assert_eq!(
        label(CAPACITY_RESERVATION_ID_LABEL),
        Some("cr-0aaaaaaaaaaaaaaa1")
    );
    assert_eq!(label(CAPACITY_RESERVATION_TYPE_LABEL), Some("default"));
    // The reservation's type and zone, not the cheaper-looking others the claim allows.
    assert_eq!(label(INSTANCE_TYPE_LABEL), Some("m5.large"));
    assert_eq!(label(ZONE_LABEL), Some("us-east-1a"));
    // Launched after the sync: 2 − 1 left; the other reservation untouched.
    let cache = provider.reservation_availability();
    assert_eq!(cache.count("cr-0aaaaaaaaaaaaaaa1"), Some(1));
    assert_eq!(cache.count("cr-0aaaaaaaaaaaaaaa2"), Some(5));

    // The one launch template asks for that reservation only, on demand (no market options),
    // and its user data labels the node with it.
    let data = templates(&ec2, &cluster).await?;
    let reserved: Vec<_> = data.iter().filter(|d| targets(d).is_some()).collect();
    assert_eq!(reserved.len(), 1, "{data:?}");
    assert_eq!(targets(reserved[0]), Some("cr-0aaaaaaaaaaaaaaa1"));
    assert_eq!(
        reserved[0]
            .capacity_reservation_specification()
            .and_then(|s| s.capacity_reservation_preference()),
        Some(&CapacityReservationPreference::CapacityReservationsOnly)
    );
    assert!(reserved[0].instance_market_options().is_none());
    let user_data = decode(reserved[0].user_data().unwrap_or_default())?;
    assert!(
        user_data.contains("karpenter.k8s.aws/capacity-reservation-id=cr-0aaaaaaaaaaaaaaa1"),
        "{user_data}"
    );

    // An on-demand launch stays out of open reservations (preference `none`, no target).
    let od = fixtures::node_claim(
        "default-od01",
        "default",
        "default",
        vec![
            req(CAPACITY_TYPE_LABEL, &["on-demand"]),
            req(INSTANCE_TYPE_LABEL, &["m5.large"]),
        ],
    );
    let launched = provider.create(&od, &nc, &status, &its).await?;
    let labels = launched.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(CAPACITY_TYPE_LABEL).map(String::as_str),
        Some("on-demand")
    );
    assert_eq!(labels.get(CAPACITY_RESERVATION_ID_LABEL), None);
    let data = templates(&ec2, &cluster).await?;
    let open: Vec<_> = data.iter().filter(|d| targets(d).is_none()).collect();
    assert_eq!(open.len(), 1, "{data:?}");
    assert_eq!(
        open[0]
            .capacity_reservation_specification()
            .and_then(|s| s.capacity_reservation_preference()),
        Some(&CapacityReservationPreference::None)
    );

    // EC2 refused the second reservation (as a full one would): the next launch pinned to it
    // finds no offering, fails with insufficient capacity, and launches nothing.
    cache.mark_unavailable("cr-0aaaaaaaaaaaaaaa2");
    let its = with_reservations(&base, &status, &provider);
    let full = provider
        .create(
            &pinned("default-rsv02", "cr-0aaaaaaaaaaaaaaa2"),
            &nc,
            &status,
            &its,
        )
        .await;
    assert!(
        matches!(full, Err(AwsError::InsufficientCapacity(_))),
        "{full:?}"
    );
    let listed = provider.list(&its).await?;
    assert_eq!(
        listed.len(),
        2,
        "the reserved and the on-demand launch: {listed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_capacity_block_launch_template_has_market_type_capacity_block() -> TestResult {
    let Some(url) = common::moto("a_capacity_block_launch_template") else {
        return Ok(());
    };
    let ec2 = common::ec2(url).await;
    let cluster = common::unique("blk");
    fixtures::cluster_network(&ec2, &cluster).await?;
    let image = fixtures::some_image(&ec2).await?;
    let provider = Ec2Provider::new(ec2.clone(), common::cluster_info(&cluster), common::REGION);
    let nc = fixtures::node_class("default", &cluster, &image, "KarpenterNodeInstanceProfile");
    let mut status = provider.resolve_node_class(&nc).await?;
    status.capacity_reservations = vec![reservation("cr-0bbbbbbbbbbbbbbb1", "capacity-block", 1)];
    let base = provider.instance_types().await?;
    let its = with_reservations(&base, &status, &provider);
    // Moto's CreateFleet only launches `on-demand` and `spot` target capacity: a
    // `capacity-block` fleet returns neither an instance nor an error, which is a transient
    // failure here. The launch template was made before, and is what this test reads.
    let result = provider
        .create(
            &pinned("default-blk01", "cr-0bbbbbbbbbbbbbbb1"),
            &nc,
            &status,
            &its,
        )
        .await;
    assert!(matches!(result, Err(AwsError::Transient(_))), "{result:?}");
    let data = templates(&ec2, &cluster).await?;
    assert_eq!(data.len(), 1, "{data:?}");
    assert_eq!(targets(&data[0]), Some("cr-0bbbbbbbbbbbbbbb1"));
    assert_eq!(
        data[0]
            .instance_market_options()
            .and_then(|m| m.market_type()),
        Some(&MarketType::CapacityBlock)
    );
    let user_data = decode(data[0].user_data().unwrap_or_default())?;
    assert!(
        user_data.contains("karpenter.k8s.aws/capacity-reservation-type=capacity-block"),
        "{user_data}"
    );
    Ok(())
}

/// Launch template user data is base64.
fn decode(b64: &str) -> Result<String, BoxError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(String::from_utf8(bytes)?)
}
