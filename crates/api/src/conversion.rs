//! Conversion of legacy `karpenter.sh/v1alpha5` Provisioners to `karpenter.sh/v1` on read.
//!
//! | v1alpha5 Provisioner | v1 NodePool (+ EC2NodeClass) |
//! |---|---|
//! | `metadata.name`, `metadata.labels`, `metadata.annotations` | same on the NodePool |
//! | `spec.labels`, `spec.annotations` | `spec.template.metadata.labels` / `.annotations` |
//! | `spec.requirements`, `spec.taints`, `spec.startupTaints` | `spec.template.spec.*` (copied) |
//! | `spec.weight` | `spec.weight` |
//! | `spec.limits.resources` | `spec.limits` |
//! | `spec.ttlSecondsAfterEmpty: N` | `consolidationPolicy: WhenEmpty`, `consolidateAfter: "Ns"` |
//! | `spec.consolidation.enabled: true` | `consolidationPolicy: WhenEmptyOrUnderutilized`, `consolidateAfter: "0s"` |
//! | neither of the two | `consolidationPolicy: WhenEmptyOrUnderutilized`, `consolidateAfter: Never` |
//! | `spec.ttlSecondsUntilExpired: N` | `spec.template.spec.expireAfter: "Ns"` |
//! | `spec.ttlSecondsUntilExpired` unset | `expireAfter: Never` (legacy nodes never expired; v1's default is 720h) |
//! | — | `spec.disruption.budgets: [{nodes: "10%"}]` (v1 default) |
//! | `spec.providerRef {apiVersion, kind, name}` | `nodeClassRef {group: apiVersion before "/", kind, name}`; kind `AWSNodeTemplate` (or unset) becomes `EC2NodeClass`, group defaults to `karpenter.k8s.aws` |
//! | `spec.provider` (inline) | a new `EC2NodeClass` named after the Provisioner; `nodeClassRef` points at it; the raw blob is kept in the NodePool annotation `compatibility.karpenter.sh/provider` |
//! | `provider.subnetSelector {k: v, ...}` | `subnetSelectorTerms: [{tags: {k: v, ...}}]`; key `aws-ids: "subnet-a,subnet-b"` gives one `{id}` term per id |
//! | `provider.securityGroupSelector` | `securityGroupSelectorTerms`, same rules |
//! | `provider.instanceProfile` | `instanceProfile` (required: v1 has no global default profile) |
//! | `provider.amiFamily` (default `AL2`) | `amiFamily` + `amiSelectorTerms: [{alias: "<family>@latest"}]` |
//! | `provider.tags`, `blockDeviceMappings`, `metadataOptions` | same on the EC2NodeClass |
//! | `provider.launchTemplate` | rejected: v1 has no launch-template support |
//! | `spec.kubeletConfiguration` with inline provider | `EC2NodeClass.spec.kubelet` (`containerRuntime` dropped) |
//! | `spec.kubeletConfiguration` with providerRef | NodePool annotation `compatibility.karpenter.sh/v1alpha5-kubelet-conversion` (JSON) |
//!
//! Before converting, the Provisioner is validated (TTLs non-negative, `ttlSecondsAfterEmpty`
//! and `consolidation.enabled: true` exclusive, exactly one of `provider`/`providerRef`, plus
//! the v1 label/requirement/taint rules at the Provisioner's own field paths).

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use serde_json::{Map, Value};

use crate::ec2::{self, AmiSelectorTerm, EC2NodeClass, EC2NodeClassSpec, SelectorTerm};
use crate::labels::{KUBELET_COMPATIBILITY_ANNOTATION, PROVIDER_COMPATIBILITY_ANNOTATION};
use crate::v1::{
    ConsolidationPolicy, Disruption, NodeClaimTemplate, NodeClaimTemplateSpec, NodeClassReference,
    NodePool, NodePoolSpec, TemplateMetadata,
};
use crate::v1alpha5::{ProviderRef, Provisioner};
use crate::validation::{Collector, ValidationErrors, check_provisioner_into, validate_node_pool};

/// Key of a legacy selector whose value lists resource ids, comma-separated.
pub const IDS_SELECTOR_KEYS: [&str; 2] = ["aws-ids", "aws::ids"];

/// The v1 objects a Provisioner converts to.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    /// The NodePool.
    pub node_pool: NodePool,
    /// The EC2NodeClass built from an inline `provider`, if there was one.
    pub node_class: Option<EC2NodeClass>,
}

impl Provisioner {
    /// Converts this Provisioner to a v1 NodePool (and an EC2NodeClass for an inline
    /// `provider`). Pure: no I/O, no clock. See the module docs for the mapping.
    pub fn convert(&self) -> Result<Converted, ValidationErrors> {
        let name = self.metadata.name.clone().unwrap_or_default();
        let mut c = Collector::default();
        check_provisioner_into(&mut c, self);
        let s = &self.spec;

        let mut annotations = self.metadata.annotations.clone().unwrap_or_default();
        let (node_class_ref, node_class) = match (&s.provider, &s.provider_ref) {
            (Some(provider), None) => {
                let nc = node_class_from_provider(&mut c, &name, provider, self);
                annotations.insert(
                    PROVIDER_COMPATIBILITY_ANNOTATION.to_owned(),
                    Value::Object(provider.clone()).to_string(),
                );
                let r = NodeClassReference {
                    group: ec2::AWS_GROUP.to_owned(),
                    kind: "EC2NodeClass".to_owned(),
                    name: name.clone(),
                };
                (r, nc)
            }
            (None, Some(pr)) => {
                if let Some(k) = &s.kubelet_configuration {
                    annotations.insert(
                        KUBELET_COMPATIBILITY_ANNOTATION.to_owned(),
                        serde_json::to_value(k)
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                    );
                }
                (node_class_ref_from(pr), None)
            }
            // Reported by the validation above.
            _ => (NodeClassReference::default(), None),
        };

        let (policy, consolidate_after) = match (
            s.ttl_seconds_after_empty,
            s.consolidation.as_ref().and_then(|c| c.enabled),
        ) {
            (Some(ttl), _) => (ConsolidationPolicy::WhenEmpty, format!("{ttl}s")),
            (None, Some(true)) => (
                ConsolidationPolicy::WhenEmptyOrUnderutilized,
                "0s".to_owned(),
            ),
            (None, _) => (
                ConsolidationPolicy::WhenEmptyOrUnderutilized,
                "Never".to_owned(),
            ),
        };
        let expire_after = s
            .ttl_seconds_until_expired
            .map_or_else(|| "Never".to_owned(), |ttl| format!("{ttl}s"));

        let node_pool = NodePool {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: self.metadata.labels.clone(),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..ObjectMeta::default()
            },
            spec: NodePoolSpec {
                template: NodeClaimTemplate {
                    metadata: TemplateMetadata {
                        labels: s.labels.clone(),
                        annotations: s.annotations.clone(),
                    },
                    spec: NodeClaimTemplateSpec {
                        taints: s.taints.clone(),
                        startup_taints: s.startup_taints.clone(),
                        requirements: s.requirements.clone(),
                        node_class_ref,
                        termination_grace_period: None,
                        expire_after,
                    },
                },
                disruption: Disruption {
                    consolidate_after,
                    consolidation_policy: policy,
                    ..Disruption::default()
                },
                limits: s
                    .limits
                    .as_ref()
                    .map(|l| l.resources.clone())
                    .unwrap_or_default(),
                weight: s.weight,
                replicas: None,
            },
            status: None,
        };
        c.finish("Provisioner", &name)?;
        // Defence in depth: what we emit must pass the v1 rules too.
        validate_node_pool(&node_pool)?;
        if let Some(nc) = &node_class {
            crate::validation::validate_ec2_node_class(nc)?;
        }
        Ok(Converted {
            node_pool,
            node_class,
        })
    }
}

fn node_class_ref_from(pr: &ProviderRef) -> NodeClassReference {
    let group = pr
        .api_version
        .as_deref()
        .map(|v| v.split_once('/').map_or(v, |(g, _)| g))
        .filter(|g| !g.is_empty())
        .unwrap_or(ec2::AWS_GROUP)
        .to_owned();
    let kind = match pr.kind.as_deref() {
        None | Some("") | Some("AWSNodeTemplate") => "EC2NodeClass".to_owned(),
        Some(k) => k.to_owned(),
    };
    NodeClassReference {
        group,
        kind,
        name: pr.name.clone(),
    }
}

fn node_class_from_provider(
    c: &mut Collector,
    name: &str,
    provider: &Map<String, Value>,
    p: &Provisioner,
) -> Option<EC2NodeClass> {
    let subnets = selector_terms(c, provider, "subnetSelector");
    let groups = selector_terms(c, provider, "securityGroupSelector");
    let instance_profile = match provider.get("instanceProfile") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            c.push(
                "spec.provider.instanceProfile",
                "must be a non-empty string",
            );
            None
        }
        None => {
            c.push(
                "spec.provider.instanceProfile",
                "is required to convert an inline provider (v1 has no global default instance profile)",
            );
            None
        }
    };
    if provider.contains_key("launchTemplate") {
        c.push(
            "spec.provider.launchTemplate",
            "launch templates are not supported by karpenter.k8s.aws/v1 EC2NodeClass",
        );
    }
    let family = match provider.get("amiFamily") {
        None => "AL2".to_owned(),
        Some(Value::String(f)) => f.clone(),
        Some(_) => {
            c.push("spec.provider.amiFamily", "must be a string");
            "AL2".to_owned()
        }
    };
    let alias = match family.as_str() {
        "AL2" | "AL2023" | "Bottlerocket" | "Windows2019" | "Windows2022" => {
            format!("{}@latest", family.to_lowercase())
        }
        other => {
            c.push(
                "spec.provider.amiFamily",
                format!(
                    "{other:?} has no v1 alias; use AL2, AL2023, Bottlerocket, Windows2019 or Windows2022"
                ),
            );
            String::new()
        }
    };
    let tags = typed_field::<BTreeMap<String, String>>(c, provider, "tags").unwrap_or_default();
    let block_device_mappings = typed_field(c, provider, "blockDeviceMappings").unwrap_or_default();
    let metadata_options = typed_field(c, provider, "metadataOptions");
    let kubelet = p
        .spec
        .kubelet_configuration
        .as_ref()
        .map(|k| k.kubelet.clone());
    Some(EC2NodeClass {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: p.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        spec: EC2NodeClassSpec {
            subnet_selector_terms: subnets,
            security_group_selector_terms: groups,
            ami_selector_terms: vec![AmiSelectorTerm {
                alias: Some(alias),
                ..AmiSelectorTerm::default()
            }],
            capacity_reservation_selector_terms: Vec::new(),
            ami_family: Some(family),
            role: None,
            instance_profile,
            user_data: None,
            tags,
            block_device_mappings,
            metadata_options,
            kubelet,
        },
        status: None,
    })
}

fn typed_field<T: serde::de::DeserializeOwned>(
    c: &mut Collector,
    provider: &Map<String, Value>,
    key: &str,
) -> Option<T> {
    let v = provider.get(key)?;
    match serde_path_to_error::deserialize(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." {
                format!("spec.provider.{key}")
            } else {
                format!("spec.provider.{key}.{inner}")
            };
            c.push(path, e.into_inner().to_string());
            None
        }
    }
}

/// A legacy selector map to v1 selector terms: all tags ANDed in one term, ids one term each.
fn selector_terms(
    c: &mut Collector,
    provider: &Map<String, Value>,
    key: &str,
) -> Vec<SelectorTerm> {
    let path = format!("spec.provider.{key}");
    let Some(sel) = provider.get(key) else {
        c.push(path, "is required to build an EC2NodeClass");
        return Vec::new();
    };
    let Some(sel) = sel.as_object() else {
        c.push(path, "must be a map of tag key to value");
        return Vec::new();
    };
    let mut terms = Vec::new();
    let mut tags = BTreeMap::new();
    for (k, v) in sel {
        let Some(v) = v.as_str() else {
            c.push(format!("{path}[{k}]"), "must be a string");
            continue;
        };
        if IDS_SELECTOR_KEYS.contains(&k.as_str()) {
            terms.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(|id| SelectorTerm {
                        id: Some(id.to_owned()),
                        ..SelectorTerm::default()
                    }),
            );
        } else {
            tags.insert(k.clone(), v.to_owned());
        }
    }
    if !tags.is_empty() {
        terms.insert(
            0,
            SelectorTerm {
                tags: Some(tags),
                ..SelectorTerm::default()
            },
        );
    }
    if terms.is_empty() {
        c.push(path, "must select something (tags or aws-ids)");
    }
    terms
}
