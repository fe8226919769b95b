//! CreateFleet for [`Ec2Provider::create`]: the request (with a reserved launch's target
//! capacity type) and what its errors mean for the insufficient-capacity and reservation caches.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest,
    FleetOnDemandAllocationStrategy, FleetType, InstanceType as Ec2InstanceType,
    OnDemandOptionsRequest, ResourceType, SpotAllocationStrategy, SpotOptionsRequest,
    TargetCapacitySpecificationRequest,
};

use super::super::error::{AwsError, fleet_error, from_sdk};
use super::super::launch;
use super::super::reserved::{self, ReservedTarget};
use super::super::template::tag_spec;
use super::Ec2Provider;

impl Ec2Provider {
    /// CreateFleet with one launch template config per `(template, overrides)`; priorities
    /// follow the overall price order across the configs.
    pub(super) async fn create_fleet(
        &self,
        configs: &[(String, Vec<launch::Override>)],
        capacity_type: &str,
        reservation: Option<&ReservedTarget>,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, AwsError> {
        let started = Instant::now();
        let mut all: Vec<&launch::Override> = configs.iter().flat_map(|(_, g)| g).collect();
        all.sort_by(|a, b| a.price.total_cmp(&b.price));
        let priority = |o: &launch::Override| {
            all.iter()
                .position(|x| std::ptr::eq(*x, o))
                .unwrap_or(all.len()) as f64
        };
        let requests: Vec<FleetLaunchTemplateConfigRequest> = configs
            .iter()
            .map(|(template, group)| {
                FleetLaunchTemplateConfigRequest::builder()
                    .launch_template_specification(
                        FleetLaunchTemplateSpecificationRequest::builder()
                            .launch_template_name(template)
                            .version("$Latest")
                            .build(),
                    )
                    .set_overrides(Some(
                        group
                            .iter()
                            .map(|o| {
                                FleetLaunchTemplateOverridesRequest::builder()
                                    .instance_type(Ec2InstanceType::from(o.instance_type.as_str()))
                                    .subnet_id(&o.subnet_id)
                                    .availability_zone(&o.zone)
                                    .priority(priority(o))
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            })
            .collect();
        let target_type = reserved::fleet_capacity_type(capacity_type, reservation);
        // Capacity blocks take no on-demand options (upstream leaves them out too).
        let on_demand_options =
            (target_type != DefaultTargetCapacityType::CapacityBlock).then(|| {
                OnDemandOptionsRequest::builder()
                    .allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice)
                    .build()
            });
        let sent = self
            .client
            .create_fleet()
            .r#type(FleetType::Instant)
            .target_capacity_specification(
                TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(1)
                    .default_target_capacity_type(target_type)
                    .build(),
            )
            .set_launch_template_configs(Some(requests))
            .spot_options(
                SpotOptionsRequest::builder()
                    .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                    .build(),
            )
            .set_on_demand_options(on_demand_options)
            .tag_specifications(tag_spec(ResourceType::Instance, tags))
            .send()
            .await;
        let out = match (sent, reservation) {
            (Ok(out), _) => out,
            // A request-level refusal of the reservation (gone, or full) is its error too.
            (Err(e), Some(r)) => {
                let code = e.code().map(str::to_owned);
                let err = from_sdk("CreateFleet", e);
                if code
                    .as_deref()
                    .is_some_and(reserved::is_reservation_full_code)
                {
                    return Err(self.reservation_full(r, err.to_string()));
                }
                return Err(err);
            }
            (Err(e), None) => return Err(from_sdk("CreateFleet", e)),
        };
        if let Some(id) = out.instances().iter().flat_map(|i| i.instance_ids()).next() {
            if let Some(r) = reservation {
                self.reservations.mark_launched(&r.id, started);
            }
            return Ok(id.clone());
        }
        let errors: Vec<(String, String)> = out
            .errors()
            .iter()
            .map(|e| {
                (
                    e.error_code().unwrap_or("Unknown").to_owned(),
                    e.error_message().unwrap_or("").to_owned(),
                )
            })
            .collect();
        if let Some(r) = reservation {
            if reserved::is_reservation_full(&errors) {
                return Err(self.reservation_full(r, fleet_error(&errors).to_string()));
            }
            return Err(fleet_error(&errors));
        }
        let err = fleet_error(&errors);
        if matches!(err, AwsError::InsufficientCapacity(_)) {
            let tried: Vec<launch::Override> = all.into_iter().cloned().collect();
            self.mark_unavailable(&tried, capacity_type);
        }
        Err(err)
    }

    /// EC2 refused a launch into reservation `r` because it is full or gone: none left until
    /// the next DescribeCapacityReservations says otherwise, so the next round plans without it
    /// (the NodeClaim is deleted and its pods re-solved, as for any insufficient capacity).
    pub(super) fn reservation_full(&self, r: &ReservedTarget, message: String) -> AwsError {
        tracing::info!(capacity_reservation_id = %r.id, error = %message, "capacity reservation full, marking it unavailable");
        self.reservations.mark_unavailable(&r.id);
        AwsError::InsufficientCapacity(format!("capacity reservation {}: {message}", r.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpenter_api::ec2::ResolvedCapacityReservation;

    /// A provider whose client is never called (no endpoint is contacted by these tests).
    fn offline() -> Ec2Provider {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .build();
        Ec2Provider::new(
            aws_sdk_ec2::Client::from_conf(conf),
            crate::userdata::ClusterInfo {
                name: "test".into(),
                endpoint: "https://test.invalid".into(),
                ca_bundle: String::new(),
                service_cidr: None,
            },
            "us-east-1",
        )
    }

    #[test]
    fn a_refused_reservation_is_emptied_and_reported_as_insufficient_capacity() {
        let p = offline();
        let cache = p.reservation_availability();
        let r = |id: &str| ResolvedCapacityReservation {
            id: id.into(),
            available_instance_count: 3,
            ..Default::default()
        };
        cache.sync(&[r("cr-1"), r("cr-2")], Instant::now());
        let target = ReservedTarget {
            id: "cr-1".into(),
            reservation_type: "default".into(),
        };
        let e = p.reservation_full(&target, "ReservationCapacityExceeded: full".into());
        assert!(matches!(e, AwsError::InsufficientCapacity(_)), "{e:?}");
        assert!(e.to_string().contains("cr-1"), "{e}");
        assert_eq!(cache.count("cr-1"), Some(0));
        assert_eq!(
            cache.count("cr-2"),
            Some(3),
            "other reservations keep theirs"
        );
    }
}
