//! AL2023: nodeadm reads `node.eks.aws/v1alpha1` `NodeConfig` documents from the MIME parts of
//! the user data and merges them in order, so ours goes last (like upstream) and the user's
//! parts (shell scripts, their own NodeConfig) come first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::mime::{self, Part};
use super::{NodeBootstrap, UserDataError, node_labels_flag};

/// Content type of a NodeConfig part.
pub const NODECONFIG_CONTENT_TYPE: &str = "application/node.eks.aws";
/// Content type of a shell script part.
pub const SHELL_CONTENT_TYPE: &str = "text/x-shellscript; charset=\"us-ascii\"";

/// nodeadm's `NodeConfig` (the fields Karpenter sets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    /// `node.eks.aws/v1alpha1`.
    pub api_version: String,
    /// `NodeConfig`.
    pub kind: String,
    /// The settings.
    pub spec: NodeConfigSpec,
}

/// `spec` of a NodeConfig.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeConfigSpec {
    /// The cluster to join.
    pub cluster: ClusterDetails,
    /// Kubelet configuration and flags.
    pub kubelet: KubeletOptions,
}

/// `spec.cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDetails {
    /// Cluster name.
    pub name: String,
    /// API server URL.
    pub api_server_endpoint: String,
    /// Base64 PEM CA bundle.
    pub certificate_authority: String,
    /// Service CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

/// `spec.kubelet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeletOptions {
    /// Merged into kubelet's `KubeletConfiguration`.
    pub config: KubeletConfigFields,
    /// Extra kubelet command-line flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// The `KubeletConfiguration` fields Karpenter sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfigFields {
    /// Pod capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<i64>,
    /// DNS servers of pods.
    #[serde(default, rename = "clusterDNS", skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
    /// kube-reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kube_reserved: BTreeMap<String, String>,
    /// system-reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub system_reserved: BTreeMap<String, String>,
    /// Hard eviction thresholds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_hard: BTreeMap<String, String>,
    /// Soft eviction thresholds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft: BTreeMap<String, String>,
    /// Taints the Node is created with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub register_with_taints: Vec<RegisterTaint>,
}

/// A core/v1 Taint as kubelet's configuration spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterTaint {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Effect.
    pub effect: String,
}

/// Our NodeConfig for `b`.
pub fn node_config(b: &NodeBootstrap<'_>) -> NodeConfig {
    let k = &b.kubelet;
    NodeConfig {
        api_version: "node.eks.aws/v1alpha1".into(),
        kind: "NodeConfig".into(),
        spec: NodeConfigSpec {
            cluster: ClusterDetails {
                name: b.cluster.name.clone(),
                api_server_endpoint: b.cluster.endpoint.clone(),
                certificate_authority: b.cluster.ca_bundle.clone(),
                cidr: b.cluster.service_cidr.clone(),
            },
            kubelet: KubeletOptions {
                config: KubeletConfigFields {
                    max_pods: k.max_pods,
                    cluster_dns: k.cluster_dns.clone(),
                    kube_reserved: k.kube_reserved.clone(),
                    system_reserved: k.system_reserved.clone(),
                    eviction_hard: k.eviction_hard.clone(),
                    eviction_soft: k.eviction_soft.clone(),
                    register_with_taints: b
                        .register_taints()
                        .into_iter()
                        .map(|t| RegisterTaint {
                            key: t.key,
                            value: t.value.filter(|v| !v.is_empty()),
                            effect: t.effect,
                        })
                        .collect(),
                },
                flags: node_labels_flag(b).into_iter().collect(),
            },
        },
    }
}

/// The MIME document: the user's parts, then our NodeConfig.
pub fn render(b: &NodeBootstrap<'_>) -> Result<String, UserDataError> {
    let default_type = match b.user_data {
        // A bare NodeConfig (or other nodeadm document) is nodeadm's; anything else a script.
        Some(d) if d.trim_start().starts_with("apiVersion:") => NODECONFIG_CONTENT_TYPE,
        _ => SHELL_CONTENT_TYPE,
    };
    let mut parts = mime::user_parts(b.user_data, default_type)?;
    let yaml =
        serde_saphyr::to_string(&node_config(b)).map_err(|e| UserDataError::Yaml(e.to_string()))?;
    parts.push(Part::new(NODECONFIG_CONTENT_TYPE, &format!("---\n{yaml}")));
    Ok(mime::write(&parts))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{bootstrap, cluster};
    use super::super::{ImageFamily, mime};
    use super::*;

    fn ours(doc: &str) -> Result<NodeConfig, String> {
        let parts = mime::user_parts(Some(doc), "x").map_err(|e| e.to_string())?;
        let last = parts.last().ok_or("no parts")?;
        assert_eq!(
            last.headers,
            [format!("Content-Type: {NODECONFIG_CONTENT_TYPE}")]
        );
        serde_saphyr::from_str(&last.body).map_err(|e| e.to_string())
    }

    #[test]
    fn the_node_config_names_the_cluster_labels_and_taints() -> Result<(), String> {
        let c = cluster();
        let doc = bootstrap(&c, ImageFamily::Al2023, None)
            .render()
            .map_err(|e| e.to_string())?;
        assert!(doc.starts_with("MIME-Version: 1.0\n"), "{doc}");
        let nc = ours(&doc)?;
        assert_eq!(nc.api_version, "node.eks.aws/v1alpha1");
        assert_eq!(nc.kind, "NodeConfig");
        assert_eq!(nc.spec.cluster.name, "demo");
        assert_eq!(
            nc.spec.cluster.api_server_endpoint,
            "https://api.demo.example:443"
        );
        assert_eq!(nc.spec.cluster.certificate_authority, c.ca_bundle);
        assert_eq!(nc.spec.cluster.cidr.as_deref(), Some("10.100.0.0/16"));
        let k = &nc.spec.kubelet;
        assert_eq!(
            k.flags,
            ["--node-labels=karpenter.sh/nodepool=default,node.kubernetes.io/purpose=batch,team=a"]
        );
        assert_eq!(k.config.max_pods, Some(29));
        assert_eq!(k.config.cluster_dns, ["10.100.0.10"]);
        assert_eq!(k.config.kube_reserved["cpu"], "100m");
        assert_eq!(k.config.eviction_hard["memory.available"], "5%");
        let gpu = RegisterTaint {
            key: "gpu".into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
        };
        assert!(k.config.register_with_taints.contains(&gpu));
        assert!(
            k.config
                .register_with_taints
                .iter()
                .any(|t| t.key == "karpenter.sh/unregistered"
                    && t.effect == "NoExecute"
                    && t.value.is_none())
        );
        Ok(())
    }

    #[test]
    fn user_data_parts_come_first_and_the_output_is_deterministic() -> Result<(), String> {
        let c = cluster();
        let script = bootstrap(&c, ImageFamily::Al2023, Some("#!/bin/bash\necho hi"));
        let doc = script.render().map_err(|e| e.to_string())?;
        assert_eq!(Ok(doc.clone()), script.render().map_err(|e| e.to_string()));
        let parts = mime::user_parts(Some(&doc), "x").map_err(|e| e.to_string())?;
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0].headers,
            [format!("Content-Type: {SHELL_CONTENT_TYPE}")]
        );
        assert_eq!(parts[0].body, "#!/bin/bash\necho hi\n");

        let user_mime = mime::write(&[
            Part::new("text/x-shellscript", "echo a\n"),
            Part::new(
                NODECONFIG_CONTENT_TYPE,
                "apiVersion: node.eks.aws/v1alpha1\n",
            ),
        ]);
        let b = bootstrap(&c, ImageFamily::Al2023, Some(&user_mime));
        let doc = b.render().map_err(|e| e.to_string())?;
        let parts = mime::user_parts(Some(&doc), "x").map_err(|e| e.to_string())?;
        assert_eq!(parts.len(), 3, "{doc}");
        assert_eq!(parts[0].body, "echo a\n");
        assert_eq!(ours(&doc)?.spec.cluster.name, "demo");

        let bare = bootstrap(
            &c,
            ImageFamily::Al2023,
            Some("apiVersion: node.eks.aws/v1alpha1\n"),
        );
        let doc = bare.render().map_err(|e| e.to_string())?;
        let parts = mime::user_parts(Some(&doc), "x").map_err(|e| e.to_string())?;
        assert_eq!(
            parts[0].headers,
            [format!("Content-Type: {NODECONFIG_CONTENT_TYPE}")]
        );
        Ok(())
    }
}
