//! How many chunks (virtual pods) a CapacityBuffer asks for, as upstream's CapacityBuffer
//! controller computes it: `replicas` and the `percentage` of the scalable workload are
//! candidates, the larger wins; `limits` caps them, or alone sizes the buffer.

use karpenter_solver::Resources;

use super::CapacityBufferSpec;

/// Upstream's `ResourceList` requests carry no pod slot; the slot our request totals add must
/// not make `limits: {pods: N}` a constraint.
const POD_SLOT: &str = "pods";

/// The number of chunks for a buffer. `scalable_replicas` is the `scalableRef`'s current
/// replica count (None for `podTemplateRef` buffers, where `percentage` does not apply);
/// `requests` are one chunk's effective requests and `limits` the parsed `spec.limits`.
pub fn desired_replicas(
    spec: &CapacityBufferSpec,
    scalable_replicas: Option<i32>,
    requests: &Resources,
    limits: Option<&Resources>,
) -> i32 {
    let mut candidates = Vec::with_capacity(2);
    if let (Some(pct), Some(scalable)) = (spec.percentage, scalable_replicas)
        && scalable > 0
    {
        candidates.push(percentage_replicas(scalable, pct));
    }
    if let Some(r) = spec.replicas {
        candidates.push(r);
    }
    // Upstream takes the larger candidate (its field doc says "minimum"; its code, which
    // decides what Cluster Autoscaler and Karpenter agree on, says maximum).
    let desired = candidates.iter().copied().max();
    match (desired, limits.and_then(|l| limit_replicas(l, requests))) {
        (Some(d), Some(l)) => d.min(l),
        (None, Some(l)) => l,
        (Some(d), None) => d,
        (None, None) => 0,
    }
    .max(0)
}

/// How many chunks fit in `limits`: the smallest `floor(limit / request)` over the resources
/// both name. None when no limited resource is requested (the limits do not constrain).
pub fn limit_replicas(limits: &Resources, requests: &Resources) -> Option<i32> {
    limits
        .0
        .iter()
        .filter(|(name, _)| name.as_str() != POD_SLOT)
        .filter_map(|(name, &limit)| {
            let request = requests.0.get(name).copied().filter(|&r| r > 0)?;
            let n = limit.max(0) / request;
            Some(i32::try_from(n).unwrap_or(i32::MAX))
        })
        .min()
}

/// `percentage` of `scalable` replicas, rounded up; at least 1 when both are positive.
pub fn percentage_replicas(scalable: i32, percentage: i32) -> i32 {
    if scalable <= 0 || percentage <= 0 {
        return 0;
    }
    let n = (i64::from(scalable) * i64::from(percentage) + 99) / 100;
    i32::try_from(n).unwrap_or(i32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaling::LocalObjectRef;

    fn res(pairs: &[(&str, i64)]) -> Resources {
        Resources::from_pairs(pairs.iter().copied())
    }

    fn template_spec(replicas: Option<i32>) -> CapacityBufferSpec {
        CapacityBufferSpec {
            pod_template_ref: Some(LocalObjectRef { name: "t".into() }),
            replicas,
            ..CapacityBufferSpec::default()
        }
    }

    #[test]
    fn replicas_alone() {
        let one_cpu = res(&[("cpu", 1000), ("pods", 1)]);
        assert_eq!(
            desired_replicas(&template_spec(Some(3)), None, &one_cpu, None),
            3
        );
        assert_eq!(
            desired_replicas(&template_spec(Some(0)), None, &one_cpu, None),
            0
        );
    }

    #[test]
    fn limits_alone_fit_as_many_chunks_as_the_tightest_resource_allows() {
        // Upstream's example 4: chunks of 2 CPU / 4Gi under 20 CPU / 40Gi: 20/2 = 10 and
        // 40Gi/4Gi = 10 -> 10. With 30Gi: floor(30/4) = 7 is tighter.
        let gi = 1i64 << 30;
        let chunk = res(&[("cpu", 2000), ("memory", 4 * gi), ("pods", 1)]);
        let limits = res(&[("cpu", 20_000), ("memory", 40 * gi)]);
        assert_eq!(
            desired_replicas(&template_spec(None), None, &chunk, Some(&limits)),
            10
        );
        let tighter = res(&[("cpu", 20_000), ("memory", 30 * gi)]);
        assert_eq!(
            desired_replicas(&template_spec(None), None, &chunk, Some(&tighter)),
            7
        );
    }

    #[test]
    fn limits_cap_replicas() {
        // 5 chunks of 1.5 CPU under 4 CPU: floor(4000/1500) = 2.
        let chunk = res(&[("cpu", 1500)]);
        let limits = res(&[("cpu", 4000)]);
        assert_eq!(
            desired_replicas(&template_spec(Some(5)), None, &chunk, Some(&limits)),
            2
        );
        // A cap above the replicas leaves them.
        let loose = res(&[("cpu", 100_000)]);
        assert_eq!(
            desired_replicas(&template_spec(Some(5)), None, &chunk, Some(&loose)),
            5
        );
    }

    #[test]
    fn limits_on_resources_the_chunk_does_not_request_do_not_constrain() {
        let chunk = res(&[("cpu", 1000), ("pods", 1)]);
        let limits = res(&[("nvidia.com/gpu", 1), ("pods", 0)]);
        assert_eq!(limit_replicas(&limits, &chunk), None);
        assert_eq!(
            desired_replicas(&template_spec(Some(4)), None, &chunk, Some(&limits)),
            4
        );
        // Limits alone that constrain nothing: no chunks.
        assert_eq!(
            desired_replicas(&template_spec(None), None, &chunk, Some(&limits)),
            0
        );
    }

    #[test]
    fn percentage_rounds_up_with_a_floor_of_one() {
        // 10 replicas at 20% = 2; 7 at 20% = 1.4 -> 2; 1 at 1% = 0.01 -> 1; 0% -> 0.
        assert_eq!(percentage_replicas(10, 20), 2);
        assert_eq!(percentage_replicas(7, 20), 2);
        assert_eq!(percentage_replicas(1, 1), 1);
        assert_eq!(percentage_replicas(10, 0), 0);
        assert_eq!(percentage_replicas(0, 50), 0);
    }

    #[test]
    fn percentage_and_replicas_take_the_larger() {
        // Upstream's example 2: 20% of 100 = 20 against replicas 10 -> 20 (upstream's code
        // takes the maximum); 20% of 30 = 6 against 10 -> 10.
        let spec = CapacityBufferSpec {
            percentage: Some(20),
            replicas: Some(10),
            ..CapacityBufferSpec::default()
        };
        let chunk = res(&[("cpu", 100)]);
        assert_eq!(desired_replicas(&spec, Some(100), &chunk, None), 20);
        assert_eq!(desired_replicas(&spec, Some(30), &chunk, None), 10);
        // A template buffer ignores percentage (no scalable replicas).
        assert_eq!(desired_replicas(&spec, None, &chunk, None), 10);
    }
}
