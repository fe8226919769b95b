//! Capacity reservations of the kwok provider (upstream's kwok models them as offerings with a
//! `ReservationCapacity` in its instance-types file). Each one adds a `reserved` offering of one
//! instance type in one zone to the catalog, sized in instances; the controller subtracts the
//! NodeClaims already on it (see `CloudProvider::reservations`).
//!
//! Written `ID=INSTANCE_TYPE/ZONE:COUNT`, comma-separated, e.g.
//! `cr-a=c-2x-amd64-linux/test-zone-a:3` (`--kwok-reservations`, `KWOK_RESERVATIONS`).

use karpenter_solver::{InstanceType, Offering};

/// How much cheaper than on-demand a reserved offering is priced: it is paid for already, and
/// must win every price comparison (karpenter-provider-aws divides by the same factor).
pub const RESERVED_PRICE_DIVISOR: f64 = 10_000_000.0;

/// One declared reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KwokReservation {
    /// Reservation ID (the `karpenter.kwok.sh/reservation-id` label of its nodes).
    pub id: String,
    /// Instance type it holds.
    pub instance_type: String,
    /// Zone it is in.
    pub zone: String,
    /// Instances it holds.
    pub count: i64,
}

/// Parses `ID=INSTANCE_TYPE/ZONE:COUNT[,...]` (spaces around items allowed, empty items
/// skipped); errors name the item.
pub fn parse_reservations(s: &str) -> Result<Vec<KwokReservation>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || format!("kwok reservation {item:?} is not ID=INSTANCE_TYPE/ZONE:COUNT");
        let (id, rest) = item.split_once('=').ok_or_else(bad)?;
        let (instance_type, rest) = rest.split_once('/').ok_or_else(bad)?;
        let (zone, count) = rest.rsplit_once(':').ok_or_else(bad)?;
        let count: i64 = count
            .trim()
            .parse()
            .map_err(|_| format!("kwok reservation {item:?}: count {count:?} is not a number"))?;
        if count < 0
            || [id, instance_type, zone]
                .iter()
                .any(|p| p.trim().is_empty())
        {
            return Err(bad());
        }
        if out.iter().any(|r: &KwokReservation| r.id == id.trim()) {
            return Err(format!(
                "kwok reservation {:?} is declared twice",
                id.trim()
            ));
        }
        out.push(KwokReservation {
            id: id.trim().to_string(),
            instance_type: instance_type.trim().to_string(),
            zone: zone.trim().to_string(),
            count,
        });
    }
    Ok(out)
}

/// Adds a `reserved` offering per reservation to its instance type, priced at that type's
/// on-demand price in the zone divided by [`RESERVED_PRICE_DIVISOR`]. A reservation naming a
/// type or zone the catalog does not offer is an error.
pub fn add_reservations(
    catalog: &mut [InstanceType],
    reservations: &[KwokReservation],
) -> Result<(), String> {
    for r in reservations {
        let it = catalog
            .iter_mut()
            .find(|it| it.name == r.instance_type)
            .ok_or_else(|| {
                format!(
                    "kwok reservation {}: no instance type {:?}",
                    r.id, r.instance_type
                )
            })?;
        let on_demand = it
            .offerings
            .iter()
            .find(|o| o.zone == r.zone && o.capacity_type == "on-demand")
            .map(|o| o.price)
            .ok_or_else(|| {
                format!(
                    "kwok reservation {}: {} is not offered on demand in zone {:?}",
                    r.id, r.instance_type, r.zone
                )
            })?;
        it.offerings.push(Offering::reserved(
            &r.zone,
            on_demand / RESERVED_PRICE_DIVISOR,
            &r.id,
            r.count,
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_items_and_names_bad_ones() {
        let got = parse_reservations(
            " cr-a=c-1x-amd64-linux/test-zone-a:2 ,, cr-b=m-2x-arm64-linux/test-zone-b:0",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                KwokReservation {
                    id: "cr-a".into(),
                    instance_type: "c-1x-amd64-linux".into(),
                    zone: "test-zone-a".into(),
                    count: 2,
                },
                KwokReservation {
                    id: "cr-b".into(),
                    instance_type: "m-2x-arm64-linux".into(),
                    zone: "test-zone-b".into(),
                    count: 0,
                },
            ]
        );
        assert_eq!(parse_reservations(""), Ok(vec![]));
        for bad in [
            "cr-a",
            "cr-a=t:1",
            "cr-a=t/z",
            "=t/z:1",
            "cr-a=t/z:-1",
            "cr-a=t/z:x",
        ] {
            let e = parse_reservations(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert!(
            parse_reservations("a=t/z:1,a=t/z:2")
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn a_reservation_adds_a_near_free_reserved_offering() {
        let mut c = crate::kwok::catalog();
        let r = parse_reservations("cr-a=c-1x-amd64-linux/test-zone-b:3").unwrap();
        add_reservations(&mut c, &r).unwrap();
        let it = c.iter().find(|i| i.name == "c-1x-amd64-linux").unwrap();
        let reserved: Vec<&Offering> = it
            .offerings
            .iter()
            .filter(|o| o.capacity_type == "reserved")
            .collect();
        assert_eq!(reserved.len(), 1);
        assert_eq!(reserved[0].zone, "test-zone-b");
        assert_eq!(reserved[0].reservation_id(), Some("cr-a"));
        assert_eq!(
            reserved[0].reservation.as_ref().map(|r| r.capacity),
            Some(3)
        );
        // c-1x on demand: 0.025 + 0.001 · 2 GiB (2.147 GB) = 0.027147.
        assert!(
            (reserved[0].price - 0.027147 / 1e7).abs() < 1e-11,
            "{}",
            reserved[0].price
        );
        assert!(
            add_reservations(&mut c, &parse_reservations("x=nope/test-zone-a:1").unwrap()).is_err()
        );
        assert!(
            add_reservations(
                &mut c,
                &parse_reservations("x=c-1x-amd64-linux/zone-z:1").unwrap()
            )
            .is_err()
        );
    }
}
