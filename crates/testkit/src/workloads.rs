//! Workloads the e2e tests of several crates create: a Deployment of pods that request CPU and
//! select one NodePool's nodes by a label.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

/// A pod spec with one container requesting `cpu`, selecting nodes labelled
/// `selector_key=selector_value`, and stopping at once when deleted.
pub fn pod_spec(cpu: &str, selector_key: &str, selector_value: &str) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some("registry.invalid/app:1".into()),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu.into()))])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }],
        node_selector: Some(BTreeMap::from([(
            selector_key.to_string(),
            selector_value.to_string(),
        )])),
        termination_grace_period_seconds: Some(0),
        ..PodSpec::default()
    }
}

/// A Deployment named `name` of `replicas` pods with `spec`, labelled `app=<name>`.
pub fn deployment(name: &str, replicas: i32, spec: PodSpec) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(spec),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}
