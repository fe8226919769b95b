//! EC2 instance-type facts → solver [`InstanceType`]: capacity, overhead (allocatable) and labels
//! computed the way karpenter-provider-aws does, so a node sized here is the node upstream would
//! predict. Shared by the embedded catalog and the live SDK provider.

use std::collections::BTreeMap;

use karpenter_solver::{InstanceType, Offering, Overhead, Resources, labels};
use serde::Deserialize;

use crate::kubelet::KubeletOverrides;
pub use crate::kubelet::kube_reserved_cpu_millis;

/// Label group of the AWS provider.
pub const GROUP: &str = "karpenter.k8s.aws";

/// Well-known AWS label keys (upstream `pkg/apis/v1/labels.go`).
pub mod label {
    /// e.g. `m` for `m5.large`.
    pub const INSTANCE_CATEGORY: &str = "karpenter.k8s.aws/instance-category";
    /// e.g. `m5`.
    pub const INSTANCE_FAMILY: &str = "karpenter.k8s.aws/instance-family";
    /// e.g. `5`.
    pub const INSTANCE_GENERATION: &str = "karpenter.k8s.aws/instance-generation";
    /// e.g. `large`.
    pub const INSTANCE_SIZE: &str = "karpenter.k8s.aws/instance-size";
    /// vCPUs.
    pub const INSTANCE_CPU: &str = "karpenter.k8s.aws/instance-cpu";
    /// `intel`, `amd`, `aws`.
    pub const INSTANCE_CPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-cpu-manufacturer";
    /// Sustained clock speed in MHz.
    pub const INSTANCE_CPU_SUSTAINED_CLOCK_SPEED_MHZ: &str =
        "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz";
    /// Memory in MiB (as EC2 reports it, before any overhead).
    pub const INSTANCE_MEMORY: &str = "karpenter.k8s.aws/instance-memory";
    /// `nitro`, `xen`.
    pub const INSTANCE_HYPERVISOR: &str = "karpenter.k8s.aws/instance-hypervisor";
    /// Local NVMe storage in GB.
    pub const INSTANCE_LOCAL_NVME: &str = "karpenter.k8s.aws/instance-local-nvme";
    /// Maximum EBS bandwidth in Mbps.
    pub const INSTANCE_EBS_BANDWIDTH: &str = "karpenter.k8s.aws/instance-ebs-bandwidth";
    /// `true` for `*-flex` families.
    pub const INSTANCE_CAPABILITY_FLEX: &str = "karpenter.k8s.aws/instance-capability-flex";
    /// e.g. `a10g`.
    pub const INSTANCE_GPU_NAME: &str = "karpenter.k8s.aws/instance-gpu-name";
    /// e.g. `nvidia`.
    pub const INSTANCE_GPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-gpu-manufacturer";
    /// GPUs per instance.
    pub const INSTANCE_GPU_COUNT: &str = "karpenter.k8s.aws/instance-gpu-count";
    /// Memory per GPU in MiB.
    pub const INSTANCE_GPU_MEMORY: &str = "karpenter.k8s.aws/instance-gpu-memory";
    /// e.g. `inferentia2`.
    pub const INSTANCE_ACCELERATOR_NAME: &str = "karpenter.k8s.aws/instance-accelerator-name";
    /// e.g. `aws`.
    pub const INSTANCE_ACCELERATOR_MANUFACTURER: &str =
        "karpenter.k8s.aws/instance-accelerator-manufacturer";
    /// Accelerators per instance.
    pub const INSTANCE_ACCELERATOR_COUNT: &str = "karpenter.k8s.aws/instance-accelerator-count";
    /// The EC2NodeClass a node was launched from.
    pub const EC2_NODE_CLASS: &str = "karpenter.k8s.aws/ec2nodeclass";
}

/// Extended resource names (upstream `pkg/apis/v1`).
pub mod resource {
    /// NVIDIA GPUs.
    pub const NVIDIA_GPU: &str = "nvidia.com/gpu";
    /// AMD GPUs.
    pub const AMD_GPU: &str = "amd.com/gpu";
    /// Habana Gaudi accelerators.
    pub const HABANA_GAUDI: &str = "habana.ai/gaudi";
    /// AWS Neuron devices (Inferentia, Trainium).
    pub const AWS_NEURON: &str = "aws.amazon.com/neuron";
    /// AWS Neuron cores.
    pub const AWS_NEURON_CORE: &str = "aws.amazon.com/neuroncore";
    /// EFA interfaces.
    pub const EFA: &str = "vpc.amazonaws.com/efa";
}

/// Share of memory the hypervisor keeps (upstream `--vm-memory-overhead-percent` default).
pub const VM_MEMORY_OVERHEAD_PERCENT: f64 = 0.075;
/// Graviton kernels reserve 64 MiB of CMA memory that pods cannot use.
const ARM64_CMA_MIB: i64 = 64;
/// Root volume size when the EC2NodeClass sets no block device mappings (upstream
/// `amifamily.DefaultEBS`).
pub const DEFAULT_ROOT_VOLUME_BYTES: i64 = 20 << 30;
const MIB: i64 = 1 << 20;

/// Spot price as a share of on-demand when no live spot price is known. The embedded catalog
/// uses it for every spot offering; the SDK provider replaces it with DescribeSpotPriceHistory
/// prices. 0.35 approximates the typical 60–70 % spot discount AWS reports for general-purpose
/// families; it is an estimate, not a quote.
pub const SPOT_PRICE_RATIO: f64 = 0.35;

/// One GPU model an instance type carries (DescribeInstanceTypes `GpuInfo.Gpus[]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
// Unknown fields are errors so a generator/reader name mismatch cannot silently zero a value.
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuInfo {
    /// Model, e.g. `A10G`.
    pub name: String,
    /// `NVIDIA`, `AMD`, `Habana`...
    pub manufacturer: String,
    /// Devices of this model.
    pub count: i64,
    /// Memory per device in MiB.
    #[serde(default, rename = "memoryMiB")]
    pub memory_mib: i64,
}

/// One Neuron device model (DescribeInstanceTypes `NeuronInfo.NeuronDevices[]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NeuronInfo {
    /// Model, e.g. `Inferentia2`.
    pub name: String,
    /// Devices.
    pub count: i64,
    /// Cores per device.
    #[serde(default)]
    pub cores: i64,
}

/// The EC2 facts of an instance type this crate needs; the embedded catalog stores exactly these
/// fields and the SDK provider fills them from DescribeInstanceTypes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTypeInfo {
    /// e.g. `m5.large`.
    pub name: String,
    /// Default vCPUs.
    pub vcpu: i64,
    /// Memory in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: i64,
    /// Kubernetes architecture (`amd64`, `arm64`).
    pub arch: String,
    /// Network interfaces of the default network card (the VPC CNI uses only that card).
    pub enis: i64,
    /// IPv4 addresses per interface.
    pub ipv4_per_eni: i64,
    /// Supported usage classes among `on-demand` and `spot`.
    #[serde(default)]
    pub usage: Vec<String>,
    /// `nitro` or `xen`.
    #[serde(default)]
    pub hypervisor: Option<String>,
    /// Bare-metal instance.
    #[serde(default)]
    pub bare_metal: bool,
    /// `Intel`, `AMD`, `AWS`.
    #[serde(default)]
    pub cpu_manufacturer: Option<String>,
    /// Sustained clock speed in MHz.
    #[serde(default)]
    pub clock_mhz: Option<i64>,
    /// Local NVMe instance storage in GB.
    #[serde(default, rename = "localNvmeGB")]
    pub local_nvme_gb: Option<i64>,
    /// Maximum EBS bandwidth (EBS-optimised by default only).
    #[serde(default)]
    pub ebs_bandwidth_mbps: Option<i64>,
    /// GPU models.
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    /// Neuron device models.
    #[serde(default)]
    pub neuron: Vec<NeuronInfo>,
    /// Maximum EFA interfaces.
    #[serde(default)]
    pub efa: i64,
}

impl InstanceTypeInfo {
    /// Whether EC2 sells this type as `capacity_type` (`on-demand` or `spot`).
    pub fn supports(&self, capacity_type: &str) -> bool {
        self.usage.iter().any(|u| u == capacity_type)
    }

    /// Pods the VPC CNI can address: ENIs × (IPv4 per ENI − 1) + 2 (one address per ENI is
    /// the ENI's own; the +2 are host-network pods, as in the EKS AMI's eni-max-pods table).
    pub fn eni_limited_pods(&self) -> i64 {
        if self.enis <= 0 {
            return 0;
        }
        self.enis * (self.ipv4_per_eni - 1).max(0) + 2
    }

    /// Memory the kubelet sees, in bytes: EC2 memory minus Graviton CMA and VM overhead.
    pub fn memory_capacity_bytes(&self) -> i64 {
        let mut mib = self.memory_mib;
        if self.arch == "arm64" {
            mib -= ARM64_CMA_MIB;
        }
        // Upstream rounds the overhead up to whole MiB.
        let overhead_mib = (mib as f64 * VM_MEMORY_OVERHEAD_PERCENT).ceil() as i64;
        (mib - overhead_mib).max(0) * MIB
    }

    /// Node capacity: cpu, memory, pods, ephemeral storage (default root volume) and the
    /// extended resources the device plugins advertise.
    pub fn capacity(&self) -> Resources {
        let mut r = Resources::new();
        r.set(karpenter_solver::resources::CPU, self.vcpu * 1000);
        r.set(
            karpenter_solver::resources::MEMORY,
            self.memory_capacity_bytes(),
        );
        r.set(karpenter_solver::resources::PODS, self.eni_limited_pods());
        r.set(
            karpenter_solver::resources::EPHEMERAL_STORAGE,
            DEFAULT_ROOT_VOLUME_BYTES,
        );
        let gpus_by = |maker: &str| -> i64 {
            self.gpus
                .iter()
                .filter(|g| g.manufacturer == maker)
                .map(|g| g.count)
                .sum()
        };
        r.set(resource::NVIDIA_GPU, gpus_by("NVIDIA"));
        r.set(resource::AMD_GPU, gpus_by("AMD"));
        r.set(resource::HABANA_GAUDI, gpus_by("Habana"));
        r.set(
            resource::AWS_NEURON,
            self.neuron.iter().map(|d| d.count).sum(),
        );
        // Upstream counts the cores of the first device model only; there is only ever one.
        r.set(
            resource::AWS_NEURON_CORE,
            self.neuron.first().map_or(0, |d| d.count * d.cores),
        );
        r.set(resource::EFA, self.efa);
        r
    }

    /// kube-reserved, system-reserved and eviction threshold for `capacity`, with upstream's
    /// defaults (no `spec.kubelet`).
    pub fn overhead(&self, capacity: &Resources) -> Overhead {
        KubeletOverrides::default().overhead(capacity)
    }

    /// Capacity with the EC2NodeClass's kubelet overrides: `pods` follows `maxPods` and
    /// `podsPerCore` (see [`KubeletOverrides::pods`]).
    pub fn capacity_with(&self, kubelet: &KubeletOverrides) -> Resources {
        let mut r = self.capacity();
        r.set(
            karpenter_solver::resources::PODS,
            kubelet.pods(self.vcpu, self.eni_limited_pods()),
        );
        r
    }

    /// The labels every node of this type carries in `region` (zone, capacity type and
    /// instance type are per offering and added by the solver).
    pub fn labels(&self, region: &str) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            l.insert(k.to_owned(), v);
        };
        put(labels::ARCH, self.arch.clone());
        put(labels::OS, "linux".into());
        put(labels::REGION, region.to_owned());
        if let Some((family, size)) = self.name.split_once('.') {
            put(label::INSTANCE_FAMILY, family.to_owned());
            put(label::INSTANCE_SIZE, size.to_owned());
            put(
                label::INSTANCE_CAPABILITY_FLEX,
                family.contains("-flex").to_string(),
            );
        }
        if let Some((category, generation)) = category_and_generation(&self.name) {
            put(label::INSTANCE_CATEGORY, category.to_owned());
            put(label::INSTANCE_GENERATION, generation.to_owned());
        }
        put(label::INSTANCE_CPU, self.vcpu.to_string());
        put(label::INSTANCE_MEMORY, self.memory_mib.to_string());
        if let Some(h) = &self.hypervisor {
            put(label::INSTANCE_HYPERVISOR, h.clone());
        }
        if let Some(m) = &self.cpu_manufacturer {
            put(label::INSTANCE_CPU_MANUFACTURER, kebab(m));
        }
        if let Some(mhz) = self.clock_mhz {
            put(
                label::INSTANCE_CPU_SUSTAINED_CLOCK_SPEED_MHZ,
                mhz.to_string(),
            );
        }
        if let Some(gb) = self.local_nvme_gb {
            put(label::INSTANCE_LOCAL_NVME, gb.to_string());
        }
        if let Some(mbps) = self.ebs_bandwidth_mbps {
            put(label::INSTANCE_EBS_BANDWIDTH, mbps.to_string());
        }
        // Like upstream, GPU and accelerator labels only when there is a single model: a label
        // holds one value.
        if let [gpu] = self.gpus.as_slice() {
            put(label::INSTANCE_GPU_NAME, kebab(&gpu.name));
            put(label::INSTANCE_GPU_MANUFACTURER, kebab(&gpu.manufacturer));
            put(label::INSTANCE_GPU_COUNT, gpu.count.to_string());
            put(label::INSTANCE_GPU_MEMORY, gpu.memory_mib.to_string());
        }
        if let [device] = self.neuron.as_slice() {
            put(label::INSTANCE_ACCELERATOR_NAME, kebab(&device.name));
            put(label::INSTANCE_ACCELERATOR_MANUFACTURER, "aws".into());
            put(label::INSTANCE_ACCELERATOR_COUNT, device.count.to_string());
        }
        l
    }

    /// The solver's view: capacity, overhead, labels and one offering per zone and supported
    /// capacity type. `spot_price(zone)` gives a live spot price when known; otherwise the
    /// on-demand price × [`SPOT_PRICE_RATIO`] is used. Upstream's kubelet defaults; see
    /// [`InstanceTypeInfo::to_instance_type_with`] for an EC2NodeClass's `spec.kubelet`.
    pub fn to_instance_type(
        &self,
        region: &str,
        zones: &[String],
        on_demand_price: f64,
        spot_price: impl Fn(&str) -> Option<f64>,
    ) -> InstanceType {
        self.to_instance_type_with(
            region,
            zones,
            on_demand_price,
            spot_price,
            &KubeletOverrides::default(),
        )
    }

    /// [`InstanceTypeInfo::to_instance_type`] with kubelet overrides: pods, kube-reserved,
    /// system-reserved and eviction thresholds follow `kubelet`.
    pub fn to_instance_type_with(
        &self,
        region: &str,
        zones: &[String],
        on_demand_price: f64,
        spot_price: impl Fn(&str) -> Option<f64>,
        kubelet: &KubeletOverrides,
    ) -> InstanceType {
        let capacity = self.capacity_with(kubelet);
        let overhead = kubelet.overhead(&capacity);
        let mut offerings = Vec::with_capacity(zones.len() * 2);
        for zone in zones {
            if self.supports("spot") {
                let price = spot_price(zone).unwrap_or(on_demand_price * SPOT_PRICE_RATIO);
                offerings.push(Offering::new(zone, "spot", round_price(price)));
            }
            if self.supports("on-demand") {
                offerings.push(Offering::new(zone, "on-demand", on_demand_price));
            }
        }
        InstanceType {
            name: self.name.clone(),
            capacity,
            overhead,
            labels: self.labels(region),
            offerings,
        }
    }
}

/// `m5.large` → (`m`, `5`); `u-6tb1.metal` → (`u`, `1`), like upstream's
/// `(^[a-z]+)(\-[0-9]+tb)?([0-9]+).*\.`.
fn category_and_generation(name: &str) -> Option<(&str, &str)> {
    let (family, _) = name.split_once('.')?;
    let letters = family.find(|c: char| !c.is_ascii_lowercase())?;
    if letters == 0 {
        return None;
    }
    let category = &family[..letters];
    let mut rest = &family[letters..];
    // High-memory families carry their size in the name: `u-6tb1`, `u7i-12tb`.
    if let Some(after_dash) = rest.strip_prefix('-') {
        let digits = after_dash
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_dash.len());
        if digits > 0 && after_dash[digits..].starts_with("tb") {
            rest = &after_dash[digits + 2..];
        }
    }
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    (digits > 0).then(|| (category, &rest[..digits]))
}

/// Upstream label values: lower case, spaces as dashes.
fn kebab(s: &str) -> String {
    s.replace(' ', "-").to_lowercase()
}

/// Derived prices keep six decimals, like the upstream price table, so JSON output stays short
/// and stable.
fn round_price(p: f64) -> f64 {
    (p * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpenter_solver::resources::{CPU, EPHEMERAL_STORAGE, MEMORY, PODS};

    fn m5_large() -> InstanceTypeInfo {
        InstanceTypeInfo {
            name: "m5.large".into(),
            vcpu: 2,
            memory_mib: 8192,
            arch: "amd64".into(),
            enis: 3,
            ipv4_per_eni: 10,
            usage: vec!["on-demand".into(), "spot".into()],
            hypervisor: Some("nitro".into()),
            bare_metal: false,
            cpu_manufacturer: Some("Intel".into()),
            clock_mhz: Some(3100),
            local_nvme_gb: None,
            ebs_bandwidth_mbps: Some(4750),
            gpus: vec![],
            neuron: vec![],
            efa: 0,
        }
    }

    #[test]
    fn kube_reserved_cpu_follows_the_bands() {
        assert_eq!(kube_reserved_cpu_millis(1000), 60);
        assert_eq!(kube_reserved_cpu_millis(2000), 70);
        assert_eq!(kube_reserved_cpu_millis(4000), 80);
        // 80 + 4 cores × 2.5
        assert_eq!(kube_reserved_cpu_millis(8000), 90);
        assert_eq!(kube_reserved_cpu_millis(96_000), 80 + 230);
        assert_eq!(kube_reserved_cpu_millis(500), 30);
    }

    #[test]
    fn m5_large_matches_upstream_allocatable() {
        // Upstream (AL2023, defaults) reports m5.large as: pods 29, memory capacity
        // 8192 - ceil(8192 × 0.075) = 7577 Mi, kube-reserved 70m / (11 × 29 + 255) Mi.
        let it = m5_large().to_instance_type("us-east-1", &["us-east-1a".into()], 0.096, |_| None);
        assert_eq!(it.capacity.get(PODS), 29);
        assert_eq!(it.capacity.get(MEMORY), 7577 * MIB);
        let a = it.allocatable();
        assert_eq!(a.get(CPU), 1930);
        assert_eq!(a.get(MEMORY), (7577 - 574 - 100) * MIB);
        assert_eq!(a.get(EPHEMERAL_STORAGE), (20 << 30) - (1 << 30) - (2 << 30));
        assert_eq!(it.offerings.len(), 2);
        assert_eq!(it.offerings[0].capacity_type, "spot");
        assert!((it.offerings[0].price - 0.0336).abs() < 1e-9);
        assert_eq!(it.offerings[1].price, 0.096);
    }

    #[test]
    fn arm64_loses_cma_memory_and_live_spot_prices_win() {
        let mut info = m5_large();
        info.name = "m6g.large".into();
        info.arch = "arm64".into();
        let it = info.to_instance_type("r", &["z".into()], 0.077, |z| (z == "z").then_some(0.02));
        let expected_mib = 8128 - (8128.0_f64 * 0.075).ceil() as i64;
        assert_eq!(it.capacity.get(MEMORY), expected_mib * MIB);
        assert_eq!(it.offerings[0].price, 0.02);
    }

    #[test]
    fn labels_are_upstreams() {
        let mut info = m5_large();
        info.gpus = vec![GpuInfo {
            name: "Tesla T4".into(),
            manufacturer: "NVIDIA".into(),
            count: 1,
            memory_mib: 15360,
        }];
        let l = info.labels("us-east-1");
        let get = |k: &str| l.get(k).map(String::as_str);
        assert_eq!(get(label::INSTANCE_FAMILY), Some("m5"));
        assert_eq!(get(label::INSTANCE_CATEGORY), Some("m"));
        assert_eq!(get(label::INSTANCE_GENERATION), Some("5"));
        assert_eq!(get(label::INSTANCE_SIZE), Some("large"));
        assert_eq!(get(label::INSTANCE_CPU), Some("2"));
        assert_eq!(get(label::INSTANCE_MEMORY), Some("8192"));
        assert_eq!(get(label::INSTANCE_CPU_MANUFACTURER), Some("intel"));
        assert_eq!(get(label::INSTANCE_GPU_NAME), Some("tesla-t4"));
        assert_eq!(get(label::INSTANCE_GPU_COUNT), Some("1"));
        assert_eq!(get(labels::ARCH), Some("amd64"));
        assert_eq!(get(labels::REGION), Some("us-east-1"));
        assert_eq!(info.capacity().get(resource::NVIDIA_GPU), 1);
    }

    #[test]
    fn category_and_generation_parse_like_upstream() {
        assert_eq!(category_and_generation("m5.large"), Some(("m", "5")));
        assert_eq!(category_and_generation("x2idn.16xlarge"), Some(("x", "2")));
        assert_eq!(category_and_generation("u-6tb1.metal"), Some(("u", "1")));
        assert_eq!(
            category_and_generation("trn1n.32xlarge"),
            Some(("trn", "1"))
        );
        assert_eq!(category_and_generation("nodot"), None);
        assert_eq!(category_and_generation("5m.large"), None);
    }
}
