//! The kwok instance-type catalog, generated like upstream's `kwok/tools/gen_instance_types.go`.
//!
//! cpu ∈ {1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256} × memory factor ∈ {2, 4, 8} GiB/vCPU
//! (families `c`, `s`, `m`) × arch ∈ {amd64, arm64}, OS linux only = 72 types. Upstream also
//! generates windows variants; they are left out because our kwok nodes are linux and a windows
//! type would only ever be chosen by pods that select it (none of ours), doubling the catalog
//! every packing pass scans. Offerings: zones `test-zone-a..d` × {spot, on-demand}, all
//! available; on-demand price = 0.025·vCPU + 0.001·memory_bytes/1e9, spot = 0.7 × on-demand.

use std::collections::BTreeMap;

use karpenter_solver::{InstanceType, Offering, Overhead, Resources};

/// CPU sizes, as upstream.
pub const CPUS: [i64; 12] = [1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256];
/// (family, GiB per vCPU).
pub const FAMILIES: [(&str, i64); 3] = [("c", 2), ("s", 4), ("m", 8)];
/// Architectures.
pub const ARCHS: [&str; 2] = ["amd64", "arm64"];
/// Zones every type is offered in.
pub const ZONES: [&str; 4] = ["test-zone-a", "test-zone-b", "test-zone-c", "test-zone-d"];

/// Label prefix of the kwok provider's instance labels.
pub const LABEL_FAMILY: &str = "karpenter.kwok.sh/instance-family";
/// Instance size label (the cpu count as a string, like upstream for non-AWS names).
pub const LABEL_SIZE: &str = "karpenter.kwok.sh/instance-size";
/// CPU label.
pub const LABEL_CPU: &str = "karpenter.kwok.sh/instance-cpu";
/// Memory label (quantity string, e.g. `16Gi`).
pub const LABEL_MEMORY: &str = "karpenter.kwok.sh/instance-memory";

const GI: i64 = 1 << 30;

/// On-demand price of a type with `cpu` vCPUs and `memory_bytes` of memory.
pub fn on_demand_price(cpu: i64, memory_bytes: i64) -> f64 {
    0.025 * cpu as f64 + 0.001 * memory_bytes as f64 / 1e9
}

/// The catalog, in a fixed order (cpu, family, arch).
pub fn catalog() -> Vec<InstanceType> {
    let mut out = Vec::with_capacity(CPUS.len() * FAMILIES.len() * ARCHS.len());
    for cpu in CPUS {
        for (family, factor) in FAMILIES {
            for arch in ARCHS {
                let memory = cpu * factor * GI;
                let name = format!("{family}-{cpu}x-{arch}-linux");
                let mut capacity = Resources::new();
                capacity.set("cpu", cpu * 1000);
                capacity.set("memory", memory);
                capacity.set("pods", (cpu * 16).min(1024));
                capacity.set("ephemeral-storage", 20 * GI);
                let mut kube_reserved = Resources::new();
                kube_reserved.set("cpu", 100);
                kube_reserved.set("memory", 10 << 20);
                let labels: BTreeMap<String, String> = [
                    ("kubernetes.io/arch", arch.to_string()),
                    ("kubernetes.io/os", "linux".to_string()),
                    (LABEL_FAMILY, family.to_string()),
                    (LABEL_SIZE, cpu.to_string()),
                    (LABEL_CPU, cpu.to_string()),
                    (LABEL_MEMORY, format!("{}Gi", cpu * factor)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                let od = on_demand_price(cpu, memory);
                let offerings = ZONES
                    .iter()
                    .flat_map(|z| {
                        [
                            Offering::new(z, "spot", 0.7 * od),
                            Offering::new(z, "on-demand", od),
                        ]
                    })
                    .collect();
                out.push(InstanceType {
                    name,
                    capacity,
                    overhead: Overhead {
                        kube_reserved,
                        ..Default::default()
                    },
                    labels,
                    offerings,
                });
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_prices() {
        let c = catalog();
        assert_eq!(c.len(), 72);
        let c1 = c.iter().find(|i| i.name == "c-1x-amd64-linux").unwrap();
        assert_eq!(c1.capacity.get("memory"), 2 * GI);
        assert_eq!(c1.capacity.get("pods"), 16);
        // Upstream's documented prices: c-1x OD 0.027147, spot 0.019003.
        let od = c1
            .offerings
            .iter()
            .find(|o| o.capacity_type == "on-demand")
            .unwrap()
            .price;
        let spot = c1
            .offerings
            .iter()
            .find(|o| o.capacity_type == "spot")
            .unwrap()
            .price;
        assert!((od - 0.027147).abs() < 1e-6, "{od}");
        assert!((spot - 0.019003).abs() < 1e-6, "{spot}");
        let big = c.iter().find(|i| i.name == "m-256x-arm64-linux").unwrap();
        assert_eq!(big.capacity.get("pods"), 1024);
        assert_eq!(big.offerings.len(), 8);
        assert_eq!(big.allocatable().get("cpu"), 255_900);
        assert_eq!(c, catalog(), "deterministic");
    }
}
