//! Launching into capacity reservations: which reservation a NodeClaim's launch targets, what
//! the launch template and CreateFleet say for it, and how many instances each reservation can
//! still take ([`ReservationAvailability`], upstream's availability cache). Pure except for the
//! cache's lock, so all of it is unit-tested.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use aws_sdk_ec2::types::{
    CapacityReservationPreference, CapacityReservationTarget, DefaultTargetCapacityType, Instance,
    InstanceLifecycleType, LaunchTemplateCapacityReservationSpecificationRequest,
    LaunchTemplateInstanceMarketOptionsRequest, MarketType,
};
use karpenter_api::ec2::ResolvedCapacityReservation;
use karpenter_solver::labels::CAPACITY_TYPE_RESERVED;

use super::launch::Candidate;
use super::reservations::{CAPACITY_RESERVATION_ID_LABEL, CAPACITY_RESERVATION_TYPE_LABEL};

/// `reservationType` of a capacity block (launched with market type `capacity-block`).
pub const CAPACITY_BLOCK: &str = "capacity-block";
/// `reservationType` of an on-demand capacity reservation.
pub const DEFAULT_RESERVATION: &str = "default";

/// The reservation a reserved launch targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedTarget {
    /// Capacity reservation id (`cr-...`).
    pub id: String,
    /// `default` or `capacity-block`.
    pub reservation_type: String,
}

impl ReservedTarget {
    /// Whether it is a capacity block.
    pub fn is_capacity_block(&self) -> bool {
        self.reservation_type == CAPACITY_BLOCK
    }

    /// The labels a node launched into it carries (besides capacity type `reserved`).
    pub fn labels(&self) -> [(&'static str, String); 2] {
        [
            (CAPACITY_RESERVATION_ID_LABEL, self.id.clone()),
            (
                CAPACITY_RESERVATION_TYPE_LABEL,
                self.reservation_type.clone(),
            ),
        ]
    }
}

/// The reservation an instance was launched into by Karpenter: EC2 reports a reservation id
/// and the `capacity-reservations-only` preference a targeted launch sets. An on-demand
/// instance that merely landed in an open reservation (preference `open`) is not reserved,
/// as upstream: treating it so would drift it when the reservation is not selected.
pub fn instance_reservation(instance: &Instance) -> Option<ReservedTarget> {
    let id = instance.capacity_reservation_id()?;
    let targeted = instance
        .capacity_reservation_specification()
        .and_then(|s| s.capacity_reservation_preference())
        == Some(&CapacityReservationPreference::CapacityReservationsOnly);
    targeted.then(|| ReservedTarget {
        id: id.to_owned(),
        reservation_type: if instance.instance_lifecycle()
            == Some(&InstanceLifecycleType::CapacityBlock)
        {
            CAPACITY_BLOCK
        } else {
            DEFAULT_RESERVATION
        }
        .to_owned(),
    })
}

/// Narrows reserved `candidates` to one reservation, the cheapest candidate's: the launch
/// template names one reservation, and a reservation is one instance type in one zone, so the
/// launch has one override. Returns that reservation (its type from the NodeClass status,
/// `default` if the status no longer lists it). Non-reserved candidates are left alone and
/// give `None`.
pub fn narrow_to_one_reservation(
    candidates: &mut Vec<Candidate>,
    reservations: &[ResolvedCapacityReservation],
) -> Option<ReservedTarget> {
    let id = candidates
        .iter()
        .filter(|c| c.capacity_type == CAPACITY_TYPE_RESERVED)
        .find_map(|c| c.reservation_id.clone())?;
    candidates.retain(|c| {
        c.capacity_type != CAPACITY_TYPE_RESERVED || c.reservation_id.as_deref() == Some(&id)
    });
    let reservation_type = reservations
        .iter()
        .find(|r| r.id == id)
        .map_or(DEFAULT_RESERVATION, |r| r.reservation_type.as_str())
        .to_owned();
    Some(ReservedTarget {
        id,
        reservation_type,
    })
}

/// How launch templates treat capacity reservations (upstream's launch mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchMode {
    /// `ReservedCapacity` on: reserved launches target their reservation, and on-demand / spot
    /// launches stay out of open reservations (preference `none`): those are offered as
    /// `reserved` and counted, and an on-demand launch silently using one would upset the count.
    Targeted,
    /// `ReservedCapacity` off: nothing set, EC2's default (`open`) lets on-demand launches use
    /// open reservations, as before reserved capacity existed.
    Open,
}

/// What one launch template says about capacity reservations: the provider's mode and, for a
/// reserved launch, its target.
#[derive(Debug, Clone, Copy)]
pub struct TemplateReservation<'a> {
    /// Targeted or open.
    pub mode: LaunchMode,
    /// The reservation a reserved launch goes into.
    pub target: Option<&'a ReservedTarget>,
}

/// The launch template's capacity reservation part. Targeted mode: a reserved launch goes only
/// into its target (`capacity-reservations-only`, so a full reservation fails instead of
/// silently launching on demand), and a capacity block also needs market type
/// `capacity-block`; other launches get preference `none`. Open mode sets nothing.
pub fn template_reservation(
    mode: LaunchMode,
    target: Option<&ReservedTarget>,
) -> (
    Option<LaunchTemplateCapacityReservationSpecificationRequest>,
    Option<LaunchTemplateInstanceMarketOptionsRequest>,
) {
    if mode == LaunchMode::Open {
        return (None, None);
    }
    let Some(t) = target else {
        let none = LaunchTemplateCapacityReservationSpecificationRequest::builder()
            .capacity_reservation_preference(CapacityReservationPreference::None)
            .build();
        return (Some(none), None);
    };
    let spec = LaunchTemplateCapacityReservationSpecificationRequest::builder()
        .capacity_reservation_preference(CapacityReservationPreference::CapacityReservationsOnly)
        .capacity_reservation_target(
            CapacityReservationTarget::builder()
                .capacity_reservation_id(&t.id)
                .build(),
        )
        .build();
    let market = t.is_capacity_block().then(|| {
        LaunchTemplateInstanceMarketOptionsRequest::builder()
            .market_type(MarketType::CapacityBlock)
            .build()
    });
    (Some(spec), market)
}

/// CreateFleet's default target capacity type: `spot` for spot, `capacity-block` for a capacity
/// block, otherwise `on-demand` (an on-demand capacity reservation is consumed by on-demand
/// launches that target it).
pub fn fleet_capacity_type(
    capacity_type: &str,
    target: Option<&ReservedTarget>,
) -> DefaultTargetCapacityType {
    match (capacity_type, target) {
        ("spot", _) => DefaultTargetCapacityType::Spot,
        (_, Some(t)) if t.is_capacity_block() => DefaultTargetCapacityType::CapacityBlock,
        _ => DefaultTargetCapacityType::OnDemand,
    }
}

/// EC2 error codes of a reserved launch that mean "this reservation cannot take the instance
/// now": it is full, or it is gone. Either way the next round should plan without it.
pub const RESERVATION_FULL_CODES: &[&str] = &[
    "ReservationCapacityExceeded",
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "UnfulfillableCapacity",
    "InvalidCapacityReservationId.NotFound",
    "InvalidCapacityReservationId.Malformed",
];

/// Whether an EC2 error code of a reserved launch says the reservation is full (or gone).
pub fn is_reservation_full_code(code: &str) -> bool {
    RESERVATION_FULL_CODES.contains(&code)
}

/// Whether a failed reserved launch's CreateFleet errors say the reservation is full (or gone).
pub fn is_reservation_full(errors: &[(String, String)]) -> bool {
    errors.iter().any(|(c, _)| is_reservation_full_code(c))
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: i64,
    synced: Instant,
}

/// How many instances each capacity reservation can still take: what DescribeCapacityReservations
/// last said ([`Self::sync`]), less the launches since, plus the terminations since; zero after
/// EC2 said it is full, until the next sync. Reservations it never saw have no entry.
#[derive(Debug, Default)]
pub struct ReservationAvailability {
    entries: Mutex<HashMap<String, Entry>>,
}

impl ReservationAvailability {
    /// Records what EC2 reported at `now` (the NodeClass's freshly resolved reservations).
    pub fn sync(&self, reservations: &[ResolvedCapacityReservation], now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for r in reservations {
            entries.insert(
                r.id.clone(),
                Entry {
                    count: r.available_instance_count.max(0),
                    synced: now,
                },
            );
        }
    }

    /// Instances the reservation can still take, if it was ever synced.
    pub fn count(&self, id: &str) -> Option<i64> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(id).map(|e| e.count)
    }

    /// One instance launched into the reservation by a launch that started at `started`. A
    /// sync after that may already count it, so only a launch started after the last sync
    /// lowers the count (overestimating is the safe side: EC2 refuses a full reservation).
    pub fn mark_launched(&self, id: &str, started: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get_mut(id)
            && e.synced <= started
            && e.count > 0
        {
            e.count -= 1;
        }
    }

    /// One instance of the reservation is being terminated; its slot frees up.
    pub fn mark_terminated(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get_mut(id) {
            e.count += 1;
        }
    }

    /// EC2 refused a launch into the reservation: none left until the next sync says otherwise.
    pub fn mark_unavailable(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get_mut(id) {
            e.count = 0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::CapacityReservationSpecificationResponse;
    use std::time::Duration;

    fn cand(it: &str, ct: &str, price: f64, reservation: Option<&str>) -> Candidate {
        Candidate {
            instance_type: it.into(),
            zone: "us-east-1a".into(),
            capacity_type: ct.into(),
            price,
            reservation_id: reservation.map(str::to_owned),
        }
    }

    fn reservation(id: &str, ty: &str, available: i64) -> ResolvedCapacityReservation {
        ResolvedCapacityReservation {
            id: id.into(),
            reservation_type: ty.into(),
            available_instance_count: available,
            ..Default::default()
        }
    }

    #[test]
    fn a_reserved_launch_targets_the_cheapest_candidates_reservation_only() {
        let mut c = vec![
            cand("m5.large", "reserved", 0.1e-7, Some("cr-b")),
            cand("m5.xlarge", "reserved", 0.2e-7, Some("cr-a")),
            cand("m5.large", "on-demand", 0.096, None),
        ];
        let target =
            narrow_to_one_reservation(&mut c, &[reservation("cr-b", CAPACITY_BLOCK, 1)]).unwrap();
        assert_eq!(
            target,
            ReservedTarget {
                id: "cr-b".into(),
                reservation_type: "capacity-block".into()
            }
        );
        let left: Vec<_> = c.iter().map(|c| c.instance_type.as_str()).collect();
        assert_eq!(left, ["m5.large", "m5.large"]);
        // Not in the status any more: an on-demand capacity reservation is assumed.
        let mut c = vec![cand("m5.xlarge", "reserved", 0.2e-7, Some("cr-a"))];
        assert_eq!(
            narrow_to_one_reservation(&mut c, &[])
                .unwrap()
                .reservation_type,
            "default"
        );
        let mut c = vec![cand("m5.large", "on-demand", 0.096, None)];
        assert_eq!(narrow_to_one_reservation(&mut c, &[]), None);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn templates_and_fleets_of_reserved_launches_name_the_reservation() {
        let odcr = ReservedTarget {
            id: "cr-1".into(),
            reservation_type: "default".into(),
        };
        let block = ReservedTarget {
            id: "cr-2".into(),
            reservation_type: "capacity-block".into(),
        };
        let t = LaunchMode::Targeted;
        let (spec, market) = template_reservation(t, Some(&odcr));
        let spec = spec.unwrap();
        assert_eq!(
            spec.capacity_reservation_preference(),
            Some(&CapacityReservationPreference::CapacityReservationsOnly)
        );
        assert_eq!(
            spec.capacity_reservation_target()
                .and_then(|t| t.capacity_reservation_id()),
            Some("cr-1")
        );
        assert!(market.is_none());
        let (spec, market) = template_reservation(t, Some(&block));
        assert_eq!(
            spec.unwrap()
                .capacity_reservation_target()
                .and_then(|t| t.capacity_reservation_id()),
            Some("cr-2")
        );
        assert_eq!(
            market.unwrap().market_type(),
            Some(&MarketType::CapacityBlock)
        );
        // On-demand / spot in targeted mode: out of open reservations.
        let (spec, market) = template_reservation(t, None);
        let spec = spec.unwrap();
        assert_eq!(
            spec.capacity_reservation_preference(),
            Some(&CapacityReservationPreference::None)
        );
        assert!(spec.capacity_reservation_target().is_none() && market.is_none());
        let (spec, market) = template_reservation(LaunchMode::Open, None);
        assert!(spec.is_none() && market.is_none());

        assert_eq!(
            fleet_capacity_type("reserved", Some(&odcr)),
            DefaultTargetCapacityType::OnDemand
        );
        assert_eq!(
            fleet_capacity_type("reserved", Some(&block)),
            DefaultTargetCapacityType::CapacityBlock
        );
        assert_eq!(
            fleet_capacity_type("spot", None),
            DefaultTargetCapacityType::Spot
        );
        assert_eq!(
            fleet_capacity_type("on-demand", None),
            DefaultTargetCapacityType::OnDemand
        );
    }

    #[test]
    fn only_targeted_instances_count_as_reserved() {
        let targeted = CapacityReservationSpecificationResponse::builder()
            .capacity_reservation_preference(
                CapacityReservationPreference::CapacityReservationsOnly,
            )
            .build();
        let block = Instance::builder()
            .capacity_reservation_id("cr-1")
            .capacity_reservation_specification(targeted.clone())
            .instance_lifecycle(InstanceLifecycleType::CapacityBlock)
            .build();
        assert_eq!(
            instance_reservation(&block),
            Some(ReservedTarget {
                id: "cr-1".into(),
                reservation_type: "capacity-block".into()
            })
        );
        let odcr = Instance::builder()
            .capacity_reservation_id("cr-2")
            .capacity_reservation_specification(targeted)
            .build();
        assert_eq!(
            instance_reservation(&odcr).map(|t| t.reservation_type),
            Some("default".into())
        );
        let open = Instance::builder()
            .capacity_reservation_id("cr-3")
            .capacity_reservation_specification(
                CapacityReservationSpecificationResponse::builder()
                    .capacity_reservation_preference(CapacityReservationPreference::Open)
                    .build(),
            )
            .build();
        assert_eq!(instance_reservation(&open), None);
        assert_eq!(instance_reservation(&Instance::builder().build()), None);
    }

    #[test]
    fn full_or_missing_reservations_are_recognised() {
        let e = |c: &str| vec![(c.to_owned(), "m".to_owned())];
        assert!(is_reservation_full(&e("ReservationCapacityExceeded")));
        assert!(is_reservation_full(&e("InsufficientInstanceCapacity")));
        assert!(is_reservation_full(&e(
            "InvalidCapacityReservationId.NotFound"
        )));
        assert!(!is_reservation_full(&e("UnauthorizedOperation")));
        assert!(!is_reservation_full(&[]));
        assert!(is_reservation_full_code("ReservationCapacityExceeded"));
        assert!(!is_reservation_full_code("RequestLimitExceeded"));
    }

    #[test]
    fn availability_follows_syncs_launches_terminations_and_refusals() {
        let cache = ReservationAvailability::default();
        let t0 = Instant::now();
        assert_eq!(cache.count("cr-1"), None);
        cache.sync(&[reservation("cr-1", "default", 3)], t0);
        assert_eq!(cache.count("cr-1"), Some(3));
        // Launched after the sync: 3 − 1.
        cache.mark_launched("cr-1", t0 + Duration::from_secs(1));
        assert_eq!(cache.count("cr-1"), Some(2));
        // A sync at t0+10 s already counts a launch that started at t0+5 s.
        cache.sync(
            &[reservation("cr-1", "default", 1)],
            t0 + Duration::from_secs(10),
        );
        cache.mark_launched("cr-1", t0 + Duration::from_secs(5));
        assert_eq!(cache.count("cr-1"), Some(1));
        cache.mark_terminated("cr-1");
        assert_eq!(cache.count("cr-1"), Some(2));
        cache.mark_unavailable("cr-1");
        assert_eq!(cache.count("cr-1"), Some(0));
        // Never below zero; unknown ids stay unknown.
        cache.mark_launched("cr-1", t0 + Duration::from_secs(20));
        assert_eq!(cache.count("cr-1"), Some(0));
        cache.mark_unavailable("cr-x");
        cache.mark_terminated("cr-x");
        assert_eq!(cache.count("cr-x"), None);
        // The next sync replaces the refusal with what EC2 says.
        cache.sync(
            &[reservation("cr-1", "default", 4)],
            t0 + Duration::from_secs(30),
        );
        assert_eq!(cache.count("cr-1"), Some(4));
    }
}
