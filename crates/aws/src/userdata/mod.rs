//! Node bootstrap user data for the launch templates, per image family, the way
//! karpenter-provider-aws writes it (`pkg/providers/amifamily/bootstrap/`): without it an
//! instance boots but its kubelet never joins the cluster.
//!
//! - AL2023: a MIME multi-part document whose last part is a `node.eks.aws/v1alpha1`
//!   `NodeConfig` for nodeadm ([`al2023`]);
//! - AL2: a MIME multi-part document whose last part is a shell script calling
//!   `/etc/eks/bootstrap.sh` ([`al2`]);
//! - Bottlerocket: TOML settings merged into the user's ([`bottlerocket`]);
//! - Custom: the user's `spec.userData` verbatim.
//!
//! Pure (no SDK) and deterministic: labels and taints are sorted, so the same inputs give the
//! same bytes and the launch template named by their hash is reused.

pub mod al2;
pub mod al2023;
pub mod bottlerocket;
pub mod mime;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The registration taint: on the Node from its creation until Karpenter registers it (the
/// controller's registration patch removes it), so nothing schedules before that.
pub const UNREGISTERED_TAINT_KEY: &str = "karpenter.sh/unregistered";

/// Why user data cannot be rendered, or the cluster settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    /// The API server endpoint is not an `https://` URL.
    #[error(
        "the cluster endpoint {0:?} is not an https:// URL (set --cluster-endpoint / CLUSTER_ENDPOINT)"
    )]
    Endpoint(String),
    /// No cluster CA bundle, or it is not base64.
    #[error(
        "the cluster CA bundle {0} (set --cluster-ca-bundle / CLUSTER_CA_BUNDLE to the base64 PEM bundle)"
    )]
    CaBundle(&'static str),
    /// The family has no bootstrap here.
    #[error(
        "image family {0:?} has no bootstrap user data (use AL2023, AL2, Bottlerocket or Custom)"
    )]
    UnsupportedFamily(String),
    /// `spec.userData` claims to be MIME but cannot be split into parts.
    #[error("spec.userData is not a valid MIME multi-part document: {0}")]
    Mime(String),
    /// `spec.userData` of a Bottlerocket class is not TOML we can merge into.
    #[error("spec.userData is not valid Bottlerocket TOML: {0}")]
    Toml(String),
    /// The NodeConfig could not be written (a bug, not user input).
    #[error("cannot write the NodeConfig: {0}")]
    Yaml(String),
}

/// What a node needs to find and trust the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Cluster name.
    pub name: String,
    /// API server URL (`https://...`).
    pub endpoint: String,
    /// Base64 of the PEM CA bundle (what EKS calls `certificateAuthority.data`).
    pub ca_bundle: String,
    /// The Service CIDR (AL2023's `spec.cluster.cidr`); omitted when unknown.
    pub service_cidr: Option<String>,
}

impl ClusterInfo {
    /// Checks the endpoint is `https://` (kubelet would send its bootstrap credentials in
    /// clear otherwise) and the CA bundle is non-empty base64.
    pub fn new(name: &str, endpoint: &str, ca_bundle: &str) -> Result<Self, UserDataError> {
        let endpoint = endpoint.trim();
        let host = endpoint
            .strip_prefix("https://")
            .ok_or_else(|| UserDataError::Endpoint(endpoint.to_owned()))?;
        if host.is_empty() {
            return Err(UserDataError::Endpoint(endpoint.to_owned()));
        }
        let ca_bundle = ca_bundle.trim();
        if ca_bundle.is_empty() {
            return Err(UserDataError::CaBundle("is missing"));
        }
        match STANDARD.decode(ca_bundle) {
            Ok(pem) if !pem.is_empty() => {}
            _ => return Err(UserDataError::CaBundle("is not base64")),
        }
        Ok(Self {
            name: name.to_owned(),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            ca_bundle: ca_bundle.to_owned(),
            service_cidr: None,
        })
    }

    /// Sets the Service CIDR.
    pub fn with_service_cidr(mut self, cidr: Option<String>) -> Self {
        self.service_cidr = cidr.filter(|c| !c.trim().is_empty());
        self
    }
}

/// The base64 PEM bundle of DER certificates (a kubeconfig's or the service account's root
/// CAs, as kube-rs holds them).
pub fn ca_bundle_from_der(certs: &[Vec<u8>]) -> String {
    let mut pem = String::new();
    for der in certs {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let body = STANDARD.encode(der);
        // PEM lines are 64 characters; base64 output is ASCII, so byte chunks are whole chars.
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    STANDARD.encode(pem)
}

/// The image family, which decides the user data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImageFamily {
    /// Amazon Linux 2023 (nodeadm).
    Al2023,
    /// Amazon Linux 2 (`/etc/eks/bootstrap.sh`).
    Al2,
    /// Bottlerocket (TOML settings).
    Bottlerocket,
    /// The user's user data as is.
    Custom,
}

impl ImageFamily {
    /// The family of an EC2NodeClass: its first alias's (`al2023@latest`), else `spec.amiFamily`,
    /// else AL2023 (upstream's default since v1). Windows has no bootstrap here yet.
    pub fn resolve<'a>(
        ami_family: Option<&str>,
        mut aliases: impl Iterator<Item = &'a str>,
    ) -> Result<Self, UserDataError> {
        let from_alias = aliases.next().map(|a| a.split('@').next().unwrap_or(a));
        let Some(name) = from_alias.or(ami_family) else {
            return Ok(Self::Al2023);
        };
        match name.to_ascii_lowercase().as_str() {
            "al2023" => Ok(Self::Al2023),
            "al2" => Ok(Self::Al2),
            "bottlerocket" => Ok(Self::Bottlerocket),
            "custom" => Ok(Self::Custom),
            _ => Err(UserDataError::UnsupportedFamily(name.to_owned())),
        }
    }
}

/// A taint to register the node with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

impl Taint {
    /// `key=value:Effect` (`key:Effect` without a value), kubelet's `--register-with-taints`.
    pub fn flag(&self) -> String {
        match self.value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => format!("{}={v}:{}", self.key, self.effect),
            None => format!("{}:{}", self.key, self.effect),
        }
    }
}

/// The kubelet settings written into the user data. Reserved resources and eviction
/// thresholds are the EC2NodeClass's as written: without them each family's bootstrap computes
/// upstream's defaults from `max_pods`, which is what allocatable assumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeletConfig {
    /// Pods the node may run (the instance type's pod capacity).
    pub max_pods: Option<i64>,
    /// `spec.kubelet.clusterDNS`.
    pub cluster_dns: Vec<String>,
    /// `spec.kubelet.kubeReserved`.
    pub kube_reserved: BTreeMap<String, String>,
    /// `spec.kubelet.systemReserved`.
    pub system_reserved: BTreeMap<String, String>,
    /// `spec.kubelet.evictionHard`.
    pub eviction_hard: BTreeMap<String, String>,
    /// `spec.kubelet.evictionSoft`.
    pub eviction_soft: BTreeMap<String, String>,
}

/// Everything one launch template's user data depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBootstrap<'a> {
    /// The cluster to join.
    pub cluster: &'a ClusterInfo,
    /// The image family.
    pub family: ImageFamily,
    /// Labels the node registers with (the NodeClaim's).
    pub labels: BTreeMap<String, String>,
    /// Taints and startup taints of the NodeClaim.
    pub taints: Vec<Taint>,
    /// Kubelet settings.
    pub kubelet: KubeletConfig,
    /// The EC2NodeClass's `spec.userData`.
    pub user_data: Option<&'a str>,
}

impl NodeBootstrap<'_> {
    /// The user data, plain text (the launch template wants it base64: [`Self::render_base64`]).
    pub fn render(&self) -> Result<String, UserDataError> {
        match self.family {
            ImageFamily::Al2023 => al2023::render(self),
            ImageFamily::Al2 => al2::render(self),
            ImageFamily::Bottlerocket => bottlerocket::render(self),
            ImageFamily::Custom => Ok(self.user_data.unwrap_or_default().to_owned()),
        }
    }

    /// [`Self::render`], base64-encoded as EC2 takes it.
    pub fn render_base64(&self) -> Result<String, UserDataError> {
        Ok(STANDARD.encode(self.render()?))
    }

    /// The labels kubelet accepts in `--node-labels`, sorted. Kubelet refuses to start on a
    /// `kubernetes.io`/`k8s.io` label outside its own set; the controller still puts every
    /// NodeClaim label on the Node when it registers it.
    pub fn node_labels(&self) -> Vec<(&str, &str)> {
        self.labels
            .iter()
            .filter(|(k, _)| kubelet_may_set(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The taints plus the registration taint, deduplicated by (key, effect) and sorted.
    pub fn register_taints(&self) -> Vec<Taint> {
        let mut out: Vec<Taint> = Vec::new();
        let unregistered = Taint {
            key: UNREGISTERED_TAINT_KEY.to_owned(),
            value: None,
            effect: "NoExecute".to_owned(),
        };
        for t in self.taints.iter().chain(std::iter::once(&unregistered)) {
            if !out.iter().any(|o| o.key == t.key && o.effect == t.effect) {
                out.push(t.clone());
            }
        }
        out.sort();
        out
    }
}

/// `--node-labels=k=v,...` (`None` without labels).
pub(crate) fn node_labels_flag(b: &NodeBootstrap<'_>) -> Option<String> {
    let labels = b.node_labels();
    (!labels.is_empty()).then(|| {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("--node-labels={}", pairs.join(","))
    })
}

/// Kubelet's rule for labels it may set on its own Node (`IsKubeletLabel`).
fn kubelet_may_set(key: &str) -> bool {
    const KUBELET_LABELS: [&str; 11] = [
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
    ];
    let Some((domain, _)) = key.split_once('/') else {
        return true;
    };
    let in_namespace = |ns: &str| domain == ns || domain.ends_with(&format!(".{ns}"));
    if !in_namespace("kubernetes.io") && !in_namespace("k8s.io") {
        return true;
    }
    KUBELET_LABELS.contains(&key)
        || in_namespace("kubelet.kubernetes.io")
        || in_namespace("node.kubernetes.io")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cluster() -> ClusterInfo {
        ClusterInfo::new(
            "demo",
            "https://api.demo.example:443/",
            &STANDARD.encode("PEM"),
        )
        .map(|c| c.with_service_cidr(Some("10.100.0.0/16".into())))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn bootstrap<'a>(
        cluster: &'a ClusterInfo,
        family: ImageFamily,
        user_data: Option<&'a str>,
    ) -> NodeBootstrap<'a> {
        NodeBootstrap {
            cluster,
            family,
            labels: BTreeMap::from([
                ("karpenter.sh/nodepool".into(), "default".into()),
                ("team".into(), "a".into()),
                ("node-role.kubernetes.io/worker".into(), "".into()),
                ("node.kubernetes.io/purpose".into(), "batch".into()),
            ]),
            taints: vec![
                Taint {
                    key: "gpu".into(),
                    value: Some("true".into()),
                    effect: "NoSchedule".into(),
                },
                Taint {
                    key: "startup".into(),
                    value: None,
                    effect: "NoExecute".into(),
                },
            ],
            kubelet: KubeletConfig {
                max_pods: Some(29),
                cluster_dns: vec!["10.100.0.10".into()],
                kube_reserved: BTreeMap::from([("cpu".into(), "100m".into())]),
                system_reserved: BTreeMap::new(),
                eviction_hard: BTreeMap::from([("memory.available".into(), "5%".into())]),
                eviction_soft: BTreeMap::new(),
            },
            user_data,
        }
    }

    #[test]
    fn cluster_info_wants_https_and_a_base64_bundle() {
        assert!(matches!(
            ClusterInfo::new("c", "http://api", "UEVN"),
            Err(UserDataError::Endpoint(_))
        ));
        let err = ClusterInfo::new("c", "https://api", "").err();
        assert_eq!(err, Some(UserDataError::CaBundle("is missing")));
        assert!(
            err.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("--cluster-ca-bundle")
        );
        assert!(ClusterInfo::new("c", "https://api", "not base64!").is_err());
        assert_eq!(cluster().endpoint, "https://api.demo.example:443");
    }

    #[test]
    fn der_certificates_become_a_base64_pem_bundle() -> Result<(), base64::DecodeError> {
        let pem = STANDARD.decode(ca_bundle_from_der(&[vec![0u8; 100], vec![1u8; 3]]))?;
        let pem = String::from_utf8_lossy(&pem).to_string();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----\n").count(), 2);
        assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
        Ok(())
    }

    #[test]
    fn family_comes_from_the_alias_then_ami_family() {
        let none = std::iter::empty();
        assert_eq!(ImageFamily::resolve(None, none), Ok(ImageFamily::Al2023));
        assert_eq!(
            ImageFamily::resolve(Some("AL2"), ["bottlerocket@latest"].into_iter()),
            Ok(ImageFamily::Bottlerocket)
        );
        assert_eq!(
            ImageFamily::resolve(Some("Custom"), std::iter::empty()),
            Ok(ImageFamily::Custom)
        );
        assert!(ImageFamily::resolve(Some("Windows2022"), std::iter::empty()).is_err());
    }

    #[test]
    fn labels_kubelet_refuses_are_left_to_registration_and_the_unregistered_taint_is_added() {
        let c = cluster();
        let b = bootstrap(&c, ImageFamily::Al2023, None);
        let keys: Vec<&str> = b.node_labels().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "karpenter.sh/nodepool",
                "node.kubernetes.io/purpose",
                "team"
            ]
        );
        let taints: Vec<String> = b.register_taints().iter().map(Taint::flag).collect();
        assert_eq!(
            taints,
            [
                "gpu=true:NoSchedule",
                "karpenter.sh/unregistered:NoExecute",
                "startup:NoExecute"
            ]
        );
    }

    #[test]
    fn custom_is_the_user_data_verbatim() {
        let c = cluster();
        let b = bootstrap(&c, ImageFamily::Custom, Some("#!/bin/sh\necho hi\n"));
        assert_eq!(b.render().as_deref(), Ok("#!/bin/sh\necho hi\n"));
        let b = bootstrap(&c, ImageFamily::Custom, None);
        assert_eq!(b.render().as_deref(), Ok(""));
    }
}
