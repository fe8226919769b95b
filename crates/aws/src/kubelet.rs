//! Kubelet overrides from an EC2NodeClass's `spec.kubelet`, applied to an instance type's pods
//! capacity and overhead the way karpenter-provider-aws does (`pkg/providers/instancetype/
//! types.go`: `pods`, `KubeReservedResources`, `SystemReservedResources`, `EvictionThreshold`).
//!
//! Pure: the strings a user wrote are parsed once by [`KubeletOverrides::parse`] (typed errors
//! naming the field), after which every computation is infallible integer arithmetic.

use std::collections::BTreeMap;

use karpenter_solver::quantity::{QuantityError, parse_for_resource};
use karpenter_solver::resources::{CPU, EPHEMERAL_STORAGE, MEMORY, PODS};
use karpenter_solver::{InstanceType, Overhead, Resources};

/// kubelet's default hard eviction threshold for memory (`memory.available<100Mi`).
pub const DEFAULT_EVICTION_MEMORY_BYTES: i64 = 100 << 20;
/// kubelet's default hard eviction threshold for the root filesystem (`nodefs.available<10%`).
pub const DEFAULT_EVICTION_NODEFS_PERCENT: f64 = 10.0;
/// Default kube-reserved ephemeral storage.
pub const KUBE_RESERVED_STORAGE_BYTES: i64 = 1 << 30;
/// Eviction signal that bounds memory.
pub const MEMORY_AVAILABLE: &str = "memory.available";
/// Eviction signal that bounds the root filesystem (ephemeral storage).
pub const NODEFS_AVAILABLE: &str = "nodefs.available";
/// Resources kubeReserved/systemReserved may name (upstream's CRD allows exactly these).
const RESERVABLE: [&str; 4] = [CPU, MEMORY, EPHEMERAL_STORAGE, "pid"];
const MIB: i64 = 1 << 20;

/// Why `spec.kubelet` cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KubeletError {
    /// A reserved-resources map names something other than cpu, memory, ephemeral-storage, pid.
    #[error(
        "spec.kubelet.{field}: {resource:?} cannot be reserved (use cpu, memory, ephemeral-storage or pid)"
    )]
    UnknownResource {
        /// `kubeReserved` or `systemReserved`.
        field: &'static str,
        /// The key as written.
        resource: String,
    },
    /// A quantity does not parse.
    #[error("spec.kubelet.{field}[{key}]: {source}")]
    Quantity {
        /// The map the value is in.
        field: &'static str,
        /// The key of the value.
        key: String,
        /// The parse failure.
        source: QuantityError,
    },
    /// A percentage threshold is not a number between 0 and 100.
    #[error("spec.kubelet.{field}[{key}]: {value:?} is not a percentage between 0% and 100%")]
    Percentage {
        /// The map the value is in.
        field: &'static str,
        /// The key of the value.
        key: String,
        /// The value as written.
        value: String,
    },
    /// maxPods or podsPerCore is negative.
    #[error("spec.kubelet.{field} must not be negative, got {value}")]
    Negative {
        /// `maxPods` or `podsPerCore`.
        field: &'static str,
        /// The value as written.
        value: i64,
    },
}

/// An eviction threshold: an absolute amount or a share of the node's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Bytes.
    Absolute(i64),
    /// Percent of capacity (`5%` → 5.0).
    Percent(f64),
}

impl Threshold {
    /// The threshold in bytes for a node with `capacity` bytes; percentages round up to a whole
    /// byte like upstream's `math.Ceil(capacity / 100 * p)`.
    pub fn bytes(self, capacity: i64) -> i64 {
        match self {
            Threshold::Absolute(b) => b,
            Threshold::Percent(p) => (capacity as f64 / 100.0 * p).ceil() as i64,
        }
    }
}

/// The memory and root-filesystem thresholds of one eviction map (hard or soft); other signals
/// (`nodefs.inodesFree`, `imagefs.*`, `pid.available`) do not change allocatable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvictionSignals {
    /// `memory.available`.
    pub memory_available: Option<Threshold>,
    /// `nodefs.available`.
    pub nodefs_available: Option<Threshold>,
}

/// The raw `spec.kubelet` fields that change allocatable, as the user wrote them (the SDK half
/// fills it from `karpenter_api::ec2::KubeletConfiguration`; this crate's pure half does not
/// depend on the API types).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeletSpec {
    /// `maxPods`.
    pub max_pods: Option<i32>,
    /// `podsPerCore`.
    pub pods_per_core: Option<i32>,
    /// `kubeReserved`.
    pub kube_reserved: BTreeMap<String, String>,
    /// `systemReserved`.
    pub system_reserved: BTreeMap<String, String>,
    /// `evictionHard`.
    pub eviction_hard: BTreeMap<String, String>,
    /// `evictionSoft`.
    pub eviction_soft: BTreeMap<String, String>,
}

/// Parsed kubelet overrides. `Default` is "no `spec.kubelet`": upstream's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeletOverrides {
    /// Replaces the ENI-limited pod count.
    pub max_pods: Option<i64>,
    /// Caps pods at this × vCPUs (0 = no cap, like kubelet).
    pub pods_per_core: Option<i64>,
    /// Per-resource replacements of the computed kube-reserved.
    pub kube_reserved: Resources,
    /// System-reserved (nothing by default).
    pub system_reserved: Resources,
    /// `evictionHard`.
    pub eviction_hard: EvictionSignals,
    /// `evictionSoft` (upstream reserves the larger of hard and soft).
    pub eviction_soft: EvictionSignals,
}

impl KubeletOverrides {
    /// Parses the user's strings; every error names the field and key.
    pub fn parse(spec: &KubeletSpec) -> Result<Self, KubeletError> {
        let count = |field: &'static str, v: Option<i32>| match v {
            Some(n) if n < 0 => Err(KubeletError::Negative {
                field,
                value: i64::from(n),
            }),
            other => Ok(other.map(i64::from)),
        };
        Ok(Self {
            max_pods: count("maxPods", spec.max_pods)?,
            pods_per_core: count("podsPerCore", spec.pods_per_core)?,
            kube_reserved: reserved("kubeReserved", &spec.kube_reserved)?,
            system_reserved: reserved("systemReserved", &spec.system_reserved)?,
            eviction_hard: signals("evictionHard", &spec.eviction_hard)?,
            eviction_soft: signals("evictionSoft", &spec.eviction_soft)?,
        })
    }

    /// Whether these are upstream's defaults (no override at all).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Pod capacity: `maxPods` when set, else the ENI-limited count; then at most
    /// `podsPerCore` × vCPUs when `podsPerCore` is positive (upstream `pods()`).
    pub fn pods(&self, vcpus: i64, eni_limited_pods: i64) -> i64 {
        let count = self.max_pods.unwrap_or(eni_limited_pods);
        match self.pods_per_core {
            Some(ppc) if ppc > 0 => count.min(ppc * vcpus),
            _ => count,
        }
    }

    /// kube-reserved, system-reserved and the eviction threshold for a node with `capacity`
    /// (whose `pods` already reflect [`KubeletOverrides::pods`]).
    pub fn overhead(&self, capacity: &Resources) -> Overhead {
        let mut kube_reserved = Resources::new();
        kube_reserved.set(CPU, kube_reserved_cpu_millis(capacity.get(CPU)));
        // Upstream sizes the kubelet's memory reserve by the pods it may run.
        kube_reserved.set(MEMORY, (11 * capacity.get(PODS) + 255) * MIB);
        kube_reserved.set(EPHEMERAL_STORAGE, KUBE_RESERVED_STORAGE_BYTES);
        // An explicit value replaces the computed one for that resource only (`lo.Assign`).
        for (k, v) in &self.kube_reserved.0 {
            kube_reserved.set(k, *v);
        }
        Overhead {
            kube_reserved,
            system_reserved: self.system_reserved.clone(),
            eviction_threshold: self.eviction_threshold(capacity),
        }
    }

    /// Memory and ephemeral-storage eviction thresholds: kubelet's defaults (100Mi, 10 %)
    /// unless `evictionHard`/`evictionSoft` name the signal; when both do, the larger wins,
    /// since the node must keep whichever is bigger free.
    pub fn eviction_threshold(&self, capacity: &Resources) -> Resources {
        let memory = capacity.get(MEMORY);
        let storage = capacity.get(EPHEMERAL_STORAGE);
        let pick = |get: fn(&EvictionSignals) -> Option<Threshold>, cap: i64, default: i64| {
            [get(&self.eviction_hard), get(&self.eviction_soft)]
                .into_iter()
                .flatten()
                .map(|t| t.bytes(cap))
                .max()
                .unwrap_or(default)
        };
        let mut out = Resources::new();
        out.set(
            MEMORY,
            pick(
                |s| s.memory_available,
                memory,
                DEFAULT_EVICTION_MEMORY_BYTES,
            ),
        );
        out.set(
            EPHEMERAL_STORAGE,
            pick(
                |s| s.nodefs_available,
                storage,
                Threshold::Percent(DEFAULT_EVICTION_NODEFS_PERCENT).bytes(storage),
            ),
        );
        out
    }

    /// Applies the overrides to an instance type built with the defaults (its `pods` capacity
    /// is the ENI-limited count): pods, then the overhead recomputed from them.
    pub fn apply(&self, it: &mut InstanceType) {
        if self.is_default() {
            return;
        }
        let vcpus = it.capacity.get(CPU) / 1000;
        let pods = self.pods(vcpus, it.capacity.get(PODS));
        it.capacity.set(PODS, pods);
        it.overhead = self.overhead(&it.capacity);
    }
}

fn reserved(field: &'static str, m: &BTreeMap<String, String>) -> Result<Resources, KubeletError> {
    let mut out = Resources::new();
    for (k, v) in m {
        if !RESERVABLE.contains(&k.as_str()) {
            return Err(KubeletError::UnknownResource {
                field,
                resource: k.clone(),
            });
        }
        let amount = parse_for_resource(k, v).map_err(|source| KubeletError::Quantity {
            field,
            key: k.clone(),
            source,
        })?;
        // Process ids are not a schedulable resource here; reserving them changes nothing the
        // solver sees (and a `pid` overhead would make allocatable negative).
        if k != "pid" {
            out.set(k, amount);
        }
    }
    Ok(out)
}

fn signals(
    field: &'static str,
    m: &BTreeMap<String, String>,
) -> Result<EvictionSignals, KubeletError> {
    let parse = |key: &str| -> Result<Option<Threshold>, KubeletError> {
        let Some(v) = m.get(key) else { return Ok(None) };
        let v = v.trim();
        if let Some(p) = v.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Some(Threshold::Percent(p))),
                _ => Err(KubeletError::Percentage {
                    field,
                    key: key.to_owned(),
                    value: v.to_owned(),
                }),
            };
        }
        parse_for_resource(MEMORY, v)
            .map(|b| Some(Threshold::Absolute(b)))
            .map_err(|source| KubeletError::Quantity {
                field,
                key: key.to_owned(),
                source,
            })
    };
    Ok(EvictionSignals {
        memory_available: parse(MEMORY_AVAILABLE)?,
        nodefs_available: parse(NODEFS_AVAILABLE)?,
    })
}

/// Upstream's kube-reserved CPU: 6 % of the first core, 1 % of the second, 0.5 % of the third
/// and fourth, 0.25 % of every core above four (in millicores, each band truncated).
pub fn kube_reserved_cpu_millis(cpu_millis: i64) -> i64 {
    const BANDS: [(i64, i64, f64); 4] = [
        (0, 1000, 0.06),
        (1000, 2000, 0.01),
        (2000, 4000, 0.005),
        (4000, 1 << 31, 0.0025),
    ];
    BANDS
        .iter()
        .filter(|(start, _, _)| cpu_millis >= *start)
        .map(|(start, end, share)| {
            let span = cpu_millis.min(*end) - start;
            (span as f64 * share) as i64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance_type::InstanceTypeInfo;

    /// m5.large: 2 vCPUs, 8192 MiB → 7577 MiB capacity, 29 ENI-limited pods, 20 Gi root.
    fn m5_large() -> InstanceTypeInfo {
        InstanceTypeInfo {
            name: "m5.large".into(),
            vcpu: 2,
            memory_mib: 8192,
            arch: "amd64".into(),
            enis: 3,
            ipv4_per_eni: 10,
            usage: vec!["on-demand".into()],
            hypervisor: None,
            bare_metal: false,
            cpu_manufacturer: None,
            clock_mhz: None,
            local_nvme_gb: None,
            ebs_bandwidth_mbps: None,
            gpus: vec![],
            neuron: vec![],
            efa: 0,
        }
    }

    fn with(spec: KubeletSpec) -> InstanceType {
        let k = KubeletOverrides::parse(&spec).expect("test spec parses");
        m5_large().to_instance_type_with("r", &["z".into()], 0.096, |_| None, &k)
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const CAPACITY_MIB: i64 = 7577;

    #[test]
    fn max_pods_sets_pods_and_the_memory_reserve() {
        let it = with(KubeletSpec {
            max_pods: Some(20),
            ..Default::default()
        });
        assert_eq!(it.capacity.get(PODS), 20);
        assert_eq!(it.overhead.kube_reserved.get(MEMORY), (11 * 20 + 255) * MIB);
        assert_eq!(
            it.allocatable().get(MEMORY),
            (CAPACITY_MIB - (11 * 20 + 255) - 100) * MIB
        );
        // maxPods above the ENI limit is taken as written, like upstream.
        let it = with(KubeletSpec {
            max_pods: Some(110),
            ..Default::default()
        });
        assert_eq!(it.capacity.get(PODS), 110);
    }

    #[test]
    fn pods_per_core_caps_pods_by_vcpus() {
        let it = with(KubeletSpec {
            pods_per_core: Some(4),
            ..Default::default()
        });
        assert_eq!(it.capacity.get(PODS), 8);
        assert_eq!(it.overhead.kube_reserved.get(MEMORY), (11 * 8 + 255) * MIB);
        // The smaller of maxPods and podsPerCore × vCPUs wins.
        let it = with(KubeletSpec {
            max_pods: Some(5),
            pods_per_core: Some(4),
            ..Default::default()
        });
        assert_eq!(it.capacity.get(PODS), 5);
        // podsPerCore 0 means no cap (kubelet's meaning).
        let it = with(KubeletSpec {
            pods_per_core: Some(0),
            ..Default::default()
        });
        assert_eq!(it.capacity.get(PODS), 29);
    }

    #[test]
    fn explicit_reservations_replace_only_their_resource() {
        let it = with(KubeletSpec {
            kube_reserved: map(&[("cpu", "200m")]),
            system_reserved: map(&[("memory", "1Gi"), ("pid", "1000")]),
            ..Default::default()
        });
        assert_eq!(it.overhead.kube_reserved.get(CPU), 200);
        // Memory and storage keep the computed defaults.
        assert_eq!(it.overhead.kube_reserved.get(MEMORY), (11 * 29 + 255) * MIB);
        assert_eq!(
            it.overhead.kube_reserved.get(EPHEMERAL_STORAGE),
            KUBE_RESERVED_STORAGE_BYTES
        );
        assert_eq!(it.overhead.system_reserved.get(MEMORY), 1 << 30);
        assert_eq!(it.overhead.system_reserved.get("pid"), 0);
        let a = it.allocatable();
        assert_eq!(a.get(CPU), 2000 - 200);
        assert_eq!(a.get(MEMORY), (CAPACITY_MIB - 574 - 1024 - 100) * MIB);
    }

    #[test]
    fn eviction_hard_percent_and_quantity_replace_the_defaults() {
        let it = with(KubeletSpec {
            eviction_hard: map(&[("memory.available", "5%"), ("nodefs.available", "2Gi")]),
            ..Default::default()
        });
        // ceil(7577 Mi × 5 %) = ceil(397253017.6) bytes.
        assert_eq!(it.overhead.eviction_threshold.get(MEMORY), 397_253_018);
        assert_eq!(
            it.overhead.eviction_threshold.get(EPHEMERAL_STORAGE),
            2 << 30
        );
        let it = with(KubeletSpec {
            eviction_hard: map(&[("memory.available", "500Mi"), ("nodefs.available", "15%")]),
            ..Default::default()
        });
        assert_eq!(it.overhead.eviction_threshold.get(MEMORY), 500 * MIB);
        // ceil(20 Gi × 15 %) = 3221225472 bytes exactly.
        assert_eq!(
            it.overhead.eviction_threshold.get(EPHEMERAL_STORAGE),
            3_221_225_472
        );
        // Only the named signal changes: the other keeps kubelet's default.
        let it = with(KubeletSpec {
            eviction_hard: map(&[("memory.available", "200Mi")]),
            ..Default::default()
        });
        // 10 % of the 20 Gi root volume (exact: 21474836480 / 10).
        assert_eq!(
            it.overhead.eviction_threshold.get(EPHEMERAL_STORAGE),
            (20 << 30) / 10
        );
    }

    #[test]
    fn eviction_soft_and_hard_reserve_the_larger() {
        let soft_bigger = with(KubeletSpec {
            eviction_hard: map(&[("memory.available", "200Mi")]),
            eviction_soft: map(&[("memory.available", "1Gi")]),
            ..Default::default()
        });
        assert_eq!(soft_bigger.overhead.eviction_threshold.get(MEMORY), 1 << 30);
        let hard_bigger = with(KubeletSpec {
            eviction_hard: map(&[("memory.available", "10%")]),
            eviction_soft: map(&[("memory.available", "300Mi")]),
            ..Default::default()
        });
        // ceil(7577 Mi × 10 %) = ceil(794506035.2).
        assert_eq!(
            hard_bigger.overhead.eviction_threshold.get(MEMORY),
            794_506_036
        );
        // Soft alone replaces the 100Mi default too (upstream takes the max of the maps given,
        // not of the default).
        let soft_only = with(KubeletSpec {
            eviction_soft: map(&[("memory.available", "50Mi")]),
            ..Default::default()
        });
        assert_eq!(soft_only.overhead.eviction_threshold.get(MEMORY), 50 * MIB);
    }

    #[test]
    fn apply_on_a_default_type_equals_building_with_the_overrides() {
        let spec = KubeletSpec {
            max_pods: Some(17),
            pods_per_core: Some(10),
            kube_reserved: map(&[("memory", "300Mi")]),
            eviction_hard: map(&[("memory.available", "7%")]),
            ..Default::default()
        };
        let k = KubeletOverrides::parse(&spec).expect("test spec parses");
        let mut applied = m5_large().to_instance_type("r", &["z".into()], 0.096, |_| None);
        k.apply(&mut applied);
        assert_eq!(applied, with(spec));
        assert_eq!(applied.capacity.get(PODS), 17);
        // No spec.kubelet: exactly the defaults.
        let mut plain = m5_large().to_instance_type("r", &["z".into()], 0.096, |_| None);
        KubeletOverrides::default().apply(&mut plain);
        assert_eq!(plain, with(KubeletSpec::default()));
        assert_eq!(plain.capacity.get(PODS), 29);
    }

    #[test]
    fn bad_values_are_errors_naming_the_field() {
        let err = |spec: KubeletSpec| {
            KubeletOverrides::parse(&spec)
                .expect_err("spec must be rejected")
                .to_string()
        };
        assert_eq!(
            err(KubeletSpec {
                kube_reserved: map(&[("nvidia.com/gpu", "1")]),
                ..Default::default()
            }),
            "spec.kubelet.kubeReserved: \"nvidia.com/gpu\" cannot be reserved (use cpu, memory, \
             ephemeral-storage or pid)"
        );
        assert!(
            err(KubeletSpec {
                system_reserved: map(&[("memory", "lots")]),
                ..Default::default()
            })
            .starts_with("spec.kubelet.systemReserved[memory]: invalid quantity")
        );
        assert_eq!(
            err(KubeletSpec {
                eviction_soft: map(&[("memory.available", "150%")]),
                ..Default::default()
            }),
            "spec.kubelet.evictionSoft[memory.available]: \"150%\" is not a percentage between \
             0% and 100%"
        );
        assert_eq!(
            err(KubeletSpec {
                max_pods: Some(-1),
                ..Default::default()
            }),
            "spec.kubelet.maxPods must not be negative, got -1"
        );
        // Signals that do not bound memory or the root filesystem are accepted and ignored.
        let k = KubeletOverrides::parse(&KubeletSpec {
            eviction_hard: map(&[("nodefs.inodesFree", "5%"), ("imagefs.available", "x")]),
            ..Default::default()
        })
        .expect("other signals are ignored");
        assert!(k.is_default());
    }
}
