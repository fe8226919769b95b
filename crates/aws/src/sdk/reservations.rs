//! Capacity reservations of an EC2NodeClass (`spec.capacityReservationSelectorTerms`): which
//! ones the terms select (DescribeCapacityReservations), their `status.capacityReservations`
//! entries, and the `reserved` offerings they add to the instance types.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat as Format};
use aws_sdk_ec2::types::{CapacityReservation, Filter};
use karpenter_api::ec2::{CapacityReservationSelectorTerm, ResolvedCapacityReservation};
use karpenter_solver::{InstanceType, Offering};

use super::error::{AwsError, from_sdk};
use super::reserved::ReservationAvailability;

/// Label of a node launched into a capacity reservation: the reservation's id (upstream's
/// `cloudprovider.ReservationIDLabel` for AWS).
pub const CAPACITY_RESERVATION_ID_LABEL: &str = "karpenter.k8s.aws/capacity-reservation-id";
/// Label of a node launched into a capacity reservation: `default` or `capacity-block`.
pub const CAPACITY_RESERVATION_TYPE_LABEL: &str = "karpenter.k8s.aws/capacity-reservation-type";

/// How much cheaper than on-demand a reserved offering is priced: it is paid for whether used
/// or not, so it must win every price comparison (karpenter-provider-aws uses the same factor).
pub const RESERVED_PRICE_DIVISOR: f64 = 10_000_000.0;

/// States whose reservations can take launches.
const USABLE_STATES: [&str; 1] = ["active"];

/// DescribeCapacityReservations arguments for one term: (ids, filters). `id` → that id;
/// `tags` → `tag:<key>` filters (`tag-key` for the `*` wildcard) and `ownerID` → `owner-id`;
/// every term also filters on the states that can take launches.
pub fn term_request(term: &CapacityReservationSelectorTerm) -> (Vec<String>, Vec<Filter>) {
    let ids: Vec<String> = term.id.iter().cloned().collect();
    let mut filters: Vec<Filter> = term
        .tags
        .iter()
        .flatten()
        .map(|(k, v)| {
            if v == "*" {
                Filter::builder().name("tag-key").values(k).build()
            } else {
                Filter::builder().name(format!("tag:{k}")).values(v).build()
            }
        })
        .collect();
    if let Some(owner) = &term.owner_id {
        filters.push(Filter::builder().name("owner-id").values(owner).build());
    }
    filters.push(
        Filter::builder()
            .name("state")
            .set_values(Some(USABLE_STATES.iter().map(|s| s.to_string()).collect()))
            .build(),
    );
    (ids, filters)
}

/// The status entry of a reservation EC2 described; `None` when a field Karpenter needs to
/// launch into it (id, zone, type, owner) is missing or it is not in a usable state.
pub fn resolved(cr: &CapacityReservation) -> Option<ResolvedCapacityReservation> {
    let state = cr.state()?.as_str().to_owned();
    if !USABLE_STATES.contains(&state.as_str()) {
        return None;
    }
    Some(ResolvedCapacityReservation {
        id: cr.capacity_reservation_id()?.to_owned(),
        availability_zone: cr.availability_zone()?.to_owned(),
        instance_type: cr.instance_type()?.to_owned(),
        owner_id: cr.owner_id()?.to_owned(),
        instance_match_criteria: cr
            .instance_match_criteria()
            .map_or("open", |m| m.as_str())
            .to_owned(),
        reservation_type: cr
            .reservation_type()
            .map_or("default", |t| t.as_str())
            .to_owned(),
        state,
        end_time: cr.end_date().map(|d| d.to_string()),
        available_instance_count: i64::from(cr.available_instance_count().unwrap_or(0)).max(0),
    })
}

/// Every usable reservation any term selects, sorted by id (no terms: none, and no call).
pub async fn resolve_capacity_reservations(
    client: &Client,
    terms: &[CapacityReservationSelectorTerm],
) -> Result<Vec<ResolvedCapacityReservation>, AwsError> {
    let mut found: BTreeMap<String, ResolvedCapacityReservation> = BTreeMap::new();
    for term in terms {
        let (ids, filters) = term_request(term);
        let mut token = None;
        loop {
            let out = client
                .describe_capacity_reservations()
                .set_capacity_reservation_ids((!ids.is_empty()).then(|| ids.clone()))
                .set_filters(Some(filters.clone()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| from_sdk("DescribeCapacityReservations", e))?;
            for r in out.capacity_reservations().iter().filter_map(resolved) {
                found.insert(r.id.clone(), r);
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(found.into_values().collect())
}

/// Whether the reservation's `endTime` (RFC 3339, as [`resolved`] writes it) is at or before
/// `now`. No end time, or one that does not parse, is not expired: EC2 refuses launches into an
/// ended reservation anyway, and the launch error then marks it full.
pub fn is_expired(r: &ResolvedCapacityReservation, now: SystemTime) -> bool {
    r.end_time
        .as_deref()
        .and_then(|t| DateTime::from_str(t, Format::DateTime).ok())
        .is_some_and(|end| end <= DateTime::from(now))
}

/// Adds a `reserved` offering per active, unexpired reservation to its instance type, in the
/// reservation's zone, priced at the type's on-demand price divided by
/// [`RESERVED_PRICE_DIVISOR`] (zero when the type has no on-demand price, as upstream), with
/// the instances it can still take: `available(id)` (the provider's availability cache), else
/// the status's count. A reservation of a type the catalog lacks, or in a zone the type is not
/// offered in, adds nothing. Whether the zone has a subnet and the type an image is the
/// caller's business, as for every offering.
pub fn add_reserved_offerings(
    its: &mut [InstanceType],
    reservations: &[ResolvedCapacityReservation],
    available: impl Fn(&str) -> Option<i64>,
    now: SystemTime,
) {
    for r in reservations {
        if !USABLE_STATES.contains(&r.state.as_str()) || is_expired(r, now) {
            continue;
        }
        let Some(it) = its.iter_mut().find(|it| it.name == r.instance_type) else {
            continue;
        };
        if !it.offerings.iter().any(|o| o.zone == r.availability_zone) {
            continue;
        }
        let on_demand = it
            .offerings
            .iter()
            .find(|o| o.capacity_type == "on-demand")
            .map_or(0.0, |o| o.price);
        let capacity = available(&r.id).unwrap_or(r.available_instance_count);
        it.offerings.push(Offering::reserved(
            &r.availability_zone,
            on_demand / RESERVED_PRICE_DIVISOR,
            &r.id,
            capacity.max(0),
        ));
    }
}

/// The class's reservations as offerings when the `ReservedCapacity` gate is `on` (none when
/// off), each with what `availability` says it can still take.
pub fn offer_reservations(
    on: bool,
    its: &mut [InstanceType],
    reservations: &[ResolvedCapacityReservation],
    availability: &ReservationAvailability,
    now: SystemTime,
) {
    if on {
        add_reserved_offerings(its, reservations, |id| availability.count(id), now);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{
        CapacityReservationInstancePlatform, CapacityReservationState, CapacityReservationType,
        InstanceMatchCriteria,
    };
    use karpenter_solver::Resources;

    fn filters(f: &[Filter]) -> Vec<(String, Vec<String>)> {
        f.iter()
            .map(|f| (f.name().unwrap_or("").to_owned(), f.values().to_vec()))
            .collect()
    }

    #[test]
    fn terms_become_ids_tag_owner_and_state_filters() {
        let by_id = CapacityReservationSelectorTerm {
            id: Some("cr-1".into()),
            ..Default::default()
        };
        let (ids, f) = term_request(&by_id);
        assert_eq!(ids, vec!["cr-1".to_string()]);
        assert_eq!(filters(&f), vec![("state".into(), vec!["active".into()])]);
        let by_tags = CapacityReservationSelectorTerm {
            tags: Some(BTreeMap::from([
                ("team".into(), "ml".into()),
                ("any".into(), "*".into()),
            ])),
            owner_id: Some("123456789012".into()),
            ..Default::default()
        };
        let (ids, f) = term_request(&by_tags);
        assert!(ids.is_empty());
        assert_eq!(
            filters(&f),
            vec![
                ("tag-key".into(), vec!["any".into()]),
                ("tag:team".into(), vec!["ml".into()]),
                ("owner-id".into(), vec!["123456789012".into()]),
                ("state".into(), vec!["active".into()]),
            ]
        );
    }

    fn described(state: CapacityReservationState) -> CapacityReservation {
        CapacityReservation::builder()
            .capacity_reservation_id("cr-1")
            .availability_zone("us-east-1a")
            .instance_type("m5.large")
            .owner_id("123456789012")
            .instance_platform(CapacityReservationInstancePlatform::LinuxUnix)
            .instance_match_criteria(InstanceMatchCriteria::Targeted)
            .reservation_type(CapacityReservationType::CapacityBlock)
            .state(state)
            .total_instance_count(5)
            .available_instance_count(3)
            .build()
    }

    #[test]
    fn described_reservations_become_status_entries() {
        let r = resolved(&described(CapacityReservationState::Active)).unwrap();
        assert_eq!(
            r,
            ResolvedCapacityReservation {
                id: "cr-1".into(),
                availability_zone: "us-east-1a".into(),
                instance_type: "m5.large".into(),
                owner_id: "123456789012".into(),
                instance_match_criteria: "targeted".into(),
                reservation_type: "capacity-block".into(),
                state: "active".into(),
                end_time: None,
                available_instance_count: 3,
            }
        );
        assert_eq!(
            resolved(&described(CapacityReservationState::Expired)),
            None
        );
        let no_zone = CapacityReservation::builder()
            .capacity_reservation_id("cr-2")
            .state(CapacityReservationState::Active)
            .build();
        assert_eq!(resolved(&no_zone), None);
    }

    fn reservation(id: &str, it: &str, zone: &str, available: i64) -> ResolvedCapacityReservation {
        ResolvedCapacityReservation {
            id: id.into(),
            availability_zone: zone.into(),
            instance_type: it.into(),
            state: "active".into(),
            available_instance_count: available,
            ..Default::default()
        }
    }

    fn m5_large() -> InstanceType {
        InstanceType {
            name: "m5.large".into(),
            capacity: Resources::new(),
            overhead: Default::default(),
            labels: Default::default(),
            offerings: vec![
                Offering::new("us-east-1a", "spot", 0.04),
                Offering::new("us-east-1a", "on-demand", 0.096),
                Offering::new("us-east-1b", "spot", 0.05),
            ],
        }
    }

    #[test]
    fn reservations_add_near_free_reserved_offerings() {
        let mut its = vec![m5_large()];
        // 2026-01-01T00:00:00Z.
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
        let mut expired = reservation("cr-e", "m5.large", "us-east-1a", 5);
        expired.end_time = Some("2025-12-31T23:59:59Z".into());
        let mut later = reservation("cr-b", "m5.large", "us-east-1b", 1);
        later.end_time = Some("2026-01-01T00:00:01Z".into());
        let mut expiring = reservation("cr-x", "m5.large", "us-east-1a", 1);
        expiring.state = "expired".into();
        add_reserved_offerings(
            &mut its,
            &[
                reservation("cr-a", "m5.large", "us-east-1a", 3),
                later,
                expired,
                expiring,
                reservation("cr-c", "m5.large", "us-east-1z", 1), // zone not offered
                reservation("cr-d", "c5.large", "us-east-1a", 1), // type not in catalog
                reservation("cr-f", "m5.large", "us-east-1a", 4),
            ],
            // The cache knows cr-f: 2 left since the status was written.
            |id| (id == "cr-f").then_some(2),
            now,
        );
        let reserved: Vec<&Offering> = its[0].offerings[3..].iter().collect();
        // 0.096 / 10⁷; cr-b in us-east-1b, where the type sells only spot: same price.
        assert_eq!(
            reserved,
            [
                &Offering::reserved("us-east-1a", 0.096 / 1e7, "cr-a", 3),
                &Offering::reserved("us-east-1b", 0.096 / 1e7, "cr-b", 1),
                &Offering::reserved("us-east-1a", 0.096 / 1e7, "cr-f", 2),
            ]
        );
        assert!(reserved.iter().all(|o| o.capacity_type == "reserved"));
    }

    #[test]
    fn a_type_without_on_demand_price_gets_a_free_reservation() {
        let mut it = m5_large();
        it.offerings.retain(|o| o.capacity_type == "spot");
        let mut its = vec![it];
        add_reserved_offerings(
            &mut its,
            &[reservation("cr-a", "m5.large", "us-east-1a", 0)],
            |_| None,
            SystemTime::UNIX_EPOCH,
        );
        let o = &its[0].offerings[2];
        assert_eq!(o, &Offering::reserved("us-east-1a", 0.0, "cr-a", 0));
        assert!(!o.usable(), "no capacity left");
    }

    #[test]
    fn the_gate_decides_whether_reservations_are_offered() {
        let rs = [reservation("cr-a", "m5.large", "us-east-1a", 3)];
        let cache = ReservationAvailability::default();
        let mut off = vec![m5_large()];
        offer_reservations(false, &mut off, &rs, &cache, SystemTime::UNIX_EPOCH);
        assert_eq!(off, vec![m5_large()], "gate off: nothing added");
        // Gate on, the cache synced at 3 and one launch since: 2.
        let t0 = std::time::Instant::now();
        cache.sync(&rs, t0);
        cache.mark_launched("cr-a", t0);
        let mut on = vec![m5_large()];
        offer_reservations(true, &mut on, &rs, &cache, SystemTime::UNIX_EPOCH);
        assert_eq!(
            on[0].offerings[3..],
            [Offering::reserved("us-east-1a", 0.096 / 1e7, "cr-a", 2)]
        );
    }
}
