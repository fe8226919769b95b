//! Capacity reservations of an EC2NodeClass (`spec.capacityReservationSelectorTerms`): which
//! ones the terms select (DescribeCapacityReservations), their `status.capacityReservations`
//! entries, and the `reserved` offerings they add to the instance types.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{CapacityReservation, Filter};
use karpenter_api::ec2::{CapacityReservationSelectorTerm, ResolvedCapacityReservation};
use karpenter_solver::{InstanceType, Offering};

use super::error::{AwsError, from_sdk};

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

/// Adds a `reserved` offering per reservation to its instance type: in the reservation's zone,
/// priced at the type's on-demand price there divided by [`RESERVED_PRICE_DIVISOR`], with the
/// instances it can still launch. A reservation of a type or zone the catalog does not sell on
/// demand adds nothing; its offering is available only while that on-demand one is (a zone
/// without a selected subnet cannot launch either).
pub fn add_reserved_offerings(
    its: &mut [InstanceType],
    reservations: &[ResolvedCapacityReservation],
) {
    for r in reservations {
        let Some(it) = its.iter_mut().find(|it| it.name == r.instance_type) else {
            continue;
        };
        let Some(od) = it
            .offerings
            .iter()
            .find(|o| o.zone == r.availability_zone && o.capacity_type == "on-demand")
        else {
            continue;
        };
        let mut o = Offering::reserved(
            &r.availability_zone,
            od.price / RESERVED_PRICE_DIVISOR,
            &r.id,
            r.available_instance_count,
        );
        o.available = od.available;
        it.offerings.push(o);
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
            available_instance_count: available,
            ..Default::default()
        }
    }

    #[test]
    fn reservations_add_near_free_reserved_offerings() {
        let mut unavailable = Offering::new("us-east-1b", "on-demand", 0.096);
        unavailable.available = false;
        let mut its = vec![InstanceType {
            name: "m5.large".into(),
            capacity: Resources::new(),
            overhead: Default::default(),
            labels: Default::default(),
            offerings: vec![
                Offering::new("us-east-1a", "spot", 0.04),
                Offering::new("us-east-1a", "on-demand", 0.096),
                unavailable,
            ],
        }];
        add_reserved_offerings(
            &mut its,
            &[
                reservation("cr-a", "m5.large", "us-east-1a", 3),
                reservation("cr-b", "m5.large", "us-east-1b", 1),
                reservation("cr-c", "m5.large", "us-east-1z", 1), // zone not sold
                reservation("cr-d", "c5.large", "us-east-1a", 1), // type not in catalog
            ],
        );
        let reserved: Vec<&Offering> = its[0].offerings[3..].iter().collect();
        assert_eq!(reserved.len(), 2);
        // 0.096 / 10⁷.
        let mut want = Offering::reserved("us-east-1a", 0.096 / 1e7, "cr-a", 3);
        assert_eq!(reserved[0], &want);
        want = Offering::reserved("us-east-1b", 0.096 / 1e7, "cr-b", 1);
        want.available = false;
        assert_eq!(reserved[1], &want);
    }
}
