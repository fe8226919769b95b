//! DescribeInstanceTypes answers → [`InstanceTypeInfo`], the same facts the embedded catalog
//! stores, so live and static instance types go through one allocatable/label computation.

use aws_sdk_ec2::types::{
    ArchitectureType, EbsOptimizedSupport, EphemeralNvmeSupport, InstanceTypeInfo as Ec2Info,
    UsageClassType,
};

use karpenter_api::ec2::KubeletConfiguration;

use crate::instance_type::{GpuInfo, InstanceTypeInfo, NeuronInfo};
use crate::kubelet::KubeletSpec;

/// Converts one DescribeInstanceTypes entry. `None` when a fact every node needs (vCPUs,
/// memory, ENI limits, a Kubernetes architecture) is missing: such a type cannot be sized.
pub fn from_ec2(info: &Ec2Info) -> Option<InstanceTypeInfo> {
    let name = info.instance_type()?.as_str().to_owned();
    let vcpu = i64::from(info.v_cpu_info()?.default_v_cpus()?);
    let memory_mib = info.memory_info()?.size_in_mib()?;
    let processor = info.processor_info()?;
    let arch = processor
        .supported_architectures()
        .iter()
        .find_map(|a| match a {
            ArchitectureType::X8664 => Some("amd64"),
            ArchitectureType::Arm64 => Some("arm64"),
            _ => None,
        })?
        .to_owned();
    let net = info.network_info()?;
    let card_index = net.default_network_card_index().unwrap_or(0);
    // The VPC CNI only uses the default network card.
    let enis = net
        .network_cards()
        .iter()
        .find(|c| c.network_card_index() == Some(card_index))
        .and_then(|c| c.maximum_network_interfaces())
        .or(net.maximum_network_interfaces())?;
    let usage = info
        .supported_usage_classes()
        .iter()
        .filter_map(|u| match u {
            UsageClassType::OnDemand => Some("on-demand".to_owned()),
            UsageClassType::Spot => Some("spot".to_owned()),
            _ => None,
        })
        .collect();
    let local_nvme_gb = info.instance_storage_info().and_then(|s| {
        if s.nvme_support() == Some(&EphemeralNvmeSupport::Unsupported) {
            None
        } else {
            s.total_size_in_gb()
        }
    });
    let ebs_bandwidth_mbps = info.ebs_info().and_then(|e| {
        if e.ebs_optimized_support() == Some(&EbsOptimizedSupport::Default) {
            e.ebs_optimized_info()?
                .maximum_bandwidth_in_mbps()
                .map(i64::from)
        } else {
            None
        }
    });
    let gpus = info
        .gpu_info()
        .map(|g| {
            g.gpus()
                .iter()
                .map(|d| GpuInfo {
                    name: d.name().unwrap_or_default().to_owned(),
                    manufacturer: d.manufacturer().unwrap_or_default().to_owned(),
                    count: i64::from(d.count().unwrap_or(0)),
                    memory_mib: i64::from(
                        d.memory_info().and_then(|m| m.size_in_mib()).unwrap_or(0),
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    let neuron = info
        .neuron_info()
        .map(|n| {
            n.neuron_devices()
                .iter()
                .map(|d| NeuronInfo {
                    name: d.name().unwrap_or_default().to_owned(),
                    count: i64::from(d.count().unwrap_or(0)),
                    cores: i64::from(d.core_info().and_then(|c| c.count()).unwrap_or(0)),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(InstanceTypeInfo {
        name,
        vcpu,
        memory_mib,
        arch,
        enis: i64::from(enis),
        ipv4_per_eni: i64::from(net.ipv4_addresses_per_interface()?),
        usage,
        hypervisor: info.hypervisor().map(|h| h.as_str().to_owned()),
        bare_metal: info.bare_metal().unwrap_or(false),
        cpu_manufacturer: processor.manufacturer().map(str::to_owned),
        clock_mhz: processor
            .sustained_clock_speed_in_ghz()
            .map(|g| (g * 1000.0).round() as i64),
        local_nvme_gb,
        ebs_bandwidth_mbps,
        gpus,
        neuron,
        efa: net
            .efa_info()
            .and_then(|e| e.maximum_efa_interfaces())
            .map_or(0, i64::from),
    })
}

/// An EC2NodeClass's `spec.kubelet` as the pure half's [`KubeletSpec`] (absent maps are empty).
pub fn kubelet_spec(k: Option<&KubeletConfiguration>) -> KubeletSpec {
    let Some(k) = k else {
        return KubeletSpec::default();
    };
    KubeletSpec {
        max_pods: k.max_pods,
        pods_per_core: k.pods_per_core,
        kube_reserved: k.kube_reserved.clone().unwrap_or_default(),
        system_reserved: k.system_reserved.clone().unwrap_or_default(),
        eviction_hard: k.eviction_hard.clone().unwrap_or_default(),
        eviction_soft: k.eviction_soft.clone().unwrap_or_default(),
    }
}
