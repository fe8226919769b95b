//! The kwok instance-type catalog, generated like upstream's `kwok/tools/gen_instance_types.go`.
//!
//! cpu ∈ {1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256} × memory factor ∈ {2, 4, 8} GiB/vCPU
//! (families `c`, `s`, `m`) × arch ∈ {amd64, arm64}, OS linux only = 72 types. Upstream also
//! generates windows variants; they are left out because our kwok nodes are linux and a windows
//! type would only ever be chosen by pods that select it (none of ours), doubling the catalog
//! every packing pass scans. Offerings: zones `test-zone-a..d` × {spot, on-demand}, all
//! available; on-demand price = 0.025·vCPU + 0.001·memory_bytes/1e9, spot = 0.7 × on-demand.
//!
//! Upstream's default kwok catalog has no accelerators, so GPU workloads could never be tried
//! offline; we add a small `g` family (amd64, 4 GiB/vCPU, one `nvidia.com/gpu` per 4 vCPU,
//! GPU_PRICE per GPU on top of the formula above), shaped like upstream's kwok GPU example.

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

/// GPU family sizes: (vCPU, GPUs).
pub const GPU_SIZES: [(i64, i64); 3] = [(4, 1), (8, 2), (16, 4)];
/// On-demand price per hour added for each GPU.
pub const GPU_PRICE: f64 = 0.5;
/// The extended resource GPU types offer.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// GPU count label.
pub const LABEL_GPU_COUNT: &str = "karpenter.kwok.sh/instance-gpu-count";

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

/// The catalog, in a fixed order: (cpu, family, arch) for the general families, then the GPU
/// family by size.
pub fn catalog() -> Vec<InstanceType> {
    let mut out = Vec::with_capacity(CPUS.len() * FAMILIES.len() * ARCHS.len() + GPU_SIZES.len());
    for cpu in CPUS {
        for (family, factor) in FAMILIES {
            for arch in ARCHS {
                let memory = cpu * factor * GI;
                let name = format!("{family}-{cpu}x-{arch}-linux");
                let od = on_demand_price(cpu, memory);
                out.push(instance_type(name, family, arch, cpu, factor, 0, od));
            }
        }
    }
    for (cpu, gpus) in GPU_SIZES {
        let factor = 4;
        let od = on_demand_price(cpu, cpu * factor * GI) + GPU_PRICE * gpus as f64;
        let name = format!("g-{cpu}x-amd64-linux");
        out.push(instance_type(name, "g", "amd64", cpu, factor, gpus, od));
    }
    out
}

fn instance_type(
    name: String,
    family: &str,
    arch: &str,
    cpu: i64,
    gib_per_cpu: i64,
    gpus: i64,
    on_demand: f64,
) -> InstanceType {
    let mut capacity = Resources::new();
    capacity.set("cpu", cpu * 1000);
    capacity.set("memory", cpu * gib_per_cpu * GI);
    capacity.set("pods", (cpu * 16).min(1024));
    capacity.set("ephemeral-storage", 20 * GI);
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/arch", arch.to_string()),
        ("kubernetes.io/os", "linux".to_string()),
        (LABEL_FAMILY, family.to_string()),
        (LABEL_SIZE, cpu.to_string()),
        (LABEL_CPU, cpu.to_string()),
        (LABEL_MEMORY, format!("{}Gi", cpu * gib_per_cpu)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if gpus > 0 {
        capacity.set(GPU_RESOURCE, gpus);
        labels.insert(LABEL_GPU_COUNT.to_string(), gpus.to_string());
    }
    let mut kube_reserved = Resources::new();
    kube_reserved.set("cpu", 100);
    kube_reserved.set("memory", 10 << 20);
    let offerings = ZONES
        .iter()
        .flat_map(|z| {
            [
                Offering::new(z, "spot", 0.7 * on_demand),
                Offering::new(z, "on-demand", on_demand),
            ]
        })
        .collect();
    InstanceType {
        name,
        capacity,
        overhead: Overhead {
            kube_reserved,
            ..Default::default()
        },
        labels,
        offerings,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_prices() {
        let c = catalog();
        assert_eq!(c.len(), 72 + GPU_SIZES.len());
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

    #[test]
    fn gpu_types_offer_gpus_at_a_premium() {
        let c = catalog();
        let g = c.iter().find(|i| i.name == "g-8x-amd64-linux").unwrap();
        assert_eq!(g.capacity.get(GPU_RESOURCE), 2);
        assert_eq!(g.labels.get(LABEL_GPU_COUNT).map(String::as_str), Some("2"));
        // 8 vCPU, 32 GiB: 0.2 + 0.034359738368 for the machine, 2 × 0.5 for the GPUs.
        let od = g
            .offerings
            .iter()
            .find(|o| o.capacity_type == "on-demand")
            .unwrap();
        assert!((od.price - 1.234_359_738).abs() < 1e-6, "{}", od.price);
        // No general-purpose type offers the resource, so only GPU pods pay the premium.
        let with_gpu = c
            .iter()
            .filter(|i| i.capacity.get(GPU_RESOURCE) > 0)
            .count();
        assert_eq!(with_gpu, GPU_SIZES.len());
    }
}
