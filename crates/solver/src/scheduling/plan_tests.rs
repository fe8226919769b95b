//! A claim's options read in price order, stopping early, are the options a scan of every
//! instance type it fits gives.

use proptest::prelude::*;

use super::assign;
use crate::Options;
use crate::bound::tests::{arb_it, arb_pod, problem};
use crate::scheduling::prepare::Prepared;
use crate::scheduling::run_greedy;

/// Every claim's choice and options with at most `keep` options, once in price order and once
/// over every instance type (the path taken when the catalog has reservations).
fn both_ways(p: &crate::Problem, keep: usize) -> Result<(String, String), TestCaseError> {
    let ordered = Prepared::new(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assume!(!ordered.reservations);
    let mut full = ordered.clone();
    full.reservations = true;
    let opts = Options::default();
    let a = run_greedy(p, &ordered, &opts);
    let b = run_greedy(p, &full, &opts);
    Ok((
        format!("{:?}", assign(&a, keep)),
        format!("{:?}", assign(&b, keep)),
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn options_in_price_order_equal_a_full_scan(
        its in prop::collection::vec(arb_it(), 1..24),
        pods in prop::collection::vec(arb_pod(), 1..20),
        keep in prop::sample::select(vec![1usize, 2, 3, 5, 60, usize::MAX]),
    ) {
        let p = problem(&its, &pods);
        let (ordered, full) = both_ways(&p, keep)?;
        prop_assert_eq!(ordered, full);
    }

    /// Prices per offering from a menu of three, and pods pinned to a zone or a capacity
    /// type: many types tie, ties go by name, and a claim often pays more for a type than its
    /// cheapest offering (the scan's stopping rule must not mistake one for the other).
    #[test]
    fn tied_and_pinned_prices_keep_the_same_options(
        its in prop::collection::vec(arb_it(), 1..24),
        menu in prop::collection::vec(prop::sample::select(vec![100u32, 200, 300]), 72),
        pods in prop::collection::vec(arb_pod(), 1..12),
        pins in prop::collection::vec(0usize..6, 12),
        keep in prop::sample::select(vec![1usize, 2, 4, usize::MAX]),
    ) {
        let its: Vec<_> = its
            .into_iter()
            .enumerate()
            .map(|(i, (cpu, gib, max_pods, prices))| {
                let prices = (0..prices.len()).map(|z| menu[3 * i + z]).collect();
                (cpu, gib, max_pods, prices)
            })
            .collect();
        let mut p = problem(&its, &pods);
        for (pod, pin) in p.pods.iter_mut().zip(pins) {
            match pin {
                0..=2 => {
                    let zone = ["z1", "z2", "z3"][pin].to_owned();
                    pod.node_selector.insert(crate::labels::ZONE.to_owned(), zone);
                }
                3 => {
                    let spot = "spot".to_owned();
                    pod.node_selector.insert(crate::labels::CAPACITY_TYPE.to_owned(), spot);
                }
                _ => {}
            }
        }
        let (ordered, full) = both_ways(&p, keep)?;
        prop_assert_eq!(ordered, full);
    }
}
