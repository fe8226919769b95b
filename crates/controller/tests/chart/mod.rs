//! Rendering the Helm chart (`charts/karpenter`) with a real `helm`, applying what it renders
//! to the local control plane, and asking the API server what an identity may do
//! (SubjectAccessReview): shared by the chart tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use karpenter_testkit::control_plane_required;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::{Api, Client};
use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$HELM`, or the binary `hack/helm/build` prints (building it once, minutes when cold).
pub fn helm() -> Result<Option<PathBuf>> {
    if let Some(h) = std::env::var_os("HELM").filter(|h| !h.is_empty()) {
        return Ok(Some(PathBuf::from(h)));
    }
    let out = Command::new(repo_root().join("hack/helm/build")).output();
    match out {
        Ok(o) if o.status.success() => {
            let path = String::from_utf8(o.stdout)?.trim().to_string();
            Ok(Some(PathBuf::from(path)))
        }
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            if control_plane_required() {
                bail!("no helm, and CI=true forbids skipping: {why}");
            }
            eprintln!("\n******** SKIPPED: no helm: {why} ********\n");
            Ok(None)
        }
    }
}

/// How to render: helm, the target's Kubernetes version (`helm template` otherwise assumes an
/// old one and `kubeVersion` fails), namespace and name prefix.
pub struct Render<'a> {
    pub helm: &'a Path,
    pub kube_version: &'a str,
    pub namespace: &'a str,
    pub fullname: &'a str,
}

/// Renders the chart; every document as JSON.
pub fn render(r: &Render<'_>, set: &[&str]) -> Result<Vec<Value>> {
    let (namespace, fullname) = (r.namespace, r.fullname);
    let mut cmd = Command::new(r.helm);
    cmd.arg("template")
        .args(["--kube-version", r.kube_version])
        .arg("karpenter")
        .arg(repo_root().join("charts/karpenter"))
        .args(["--namespace", namespace])
        .args(["--set", &format!("fullnameOverride={fullname}")]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().context("running helm template")?;
    if !out.status.success() {
        bail!(
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let yaml = String::from_utf8(out.stdout)?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// Server-side applies one rendered object (`dry_run`: validated and admitted, not stored).
pub async fn apply(client: &Client, doc: &Value, dry_run: bool) -> Result<()> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind(doc));
    let (resource, caps) = pinned_kind(client, &gvk).await?;
    let obj: DynamicObject = serde_json::from_value(doc.clone())?;
    let name = obj
        .metadata
        .name
        .clone()
        .context("rendered object without a name")?;
    let api: Api<DynamicObject> = match (&caps.scope, obj.metadata.namespace.as_deref()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply("karpenter-chart-test").force();
    if dry_run {
        params = params.dry_run();
    }
    api.patch(&name, &params, &Patch::Apply(&obj))
        .await
        .with_context(|| format!("applying {} {name}", kind(doc)))?;
    Ok(())
}

/// Whether the service account may do `verb` on `resource` (in `namespace`, or cluster-wide).
pub async fn allowed(
    client: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<bool> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}
