//! The chart with the Cluster API provider (`controller.cloudProvider=clusterapi`), rendered by
//! a real `helm` and applied to the local control plane; the API server (SubjectAccessReview)
//! says what the controller's service account may then do on Cluster API objects:
//!
//! - management cluster = this one, every namespace: Machines created, listed, patched and
//!   deleted anywhere, MachineDeployments read, templates read and their clones created; not
//!   more (no update, no deleting MachineDeployments or infrastructure, no Secrets);
//! - `clusterapi.namespace`: the same, only in that namespace (a Role);
//! - `clusterapi.kubeconfigSecret`: nothing on Cluster API here, the kubeconfig mounted from
//!   the Secret and named by `CLUSTERAPI_KUBECONFIG`;
//! - the kwok provider: nothing on Cluster API.
//!
//! The rules are also those of `examples/clusterapi/rbac.yaml` (what the README tells users of
//! a separate management cluster to bind), compared as sets of (group, resource, verb); the
//! Cluster API e2e (crates/clusterapi/tests) runs its provider under that file's rules.
//!
//! Without helm (no Go toolchain) the test prints SKIPPED, except under `CI=true`.

mod chart;

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use chart::{Render, allowed, apply, helm, kind, render, repo_root};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use karpenter_testkit::{TestCluster, unique_name};
use kube::api::{ApiResource, DeleteParams, DynamicObject};
use kube::{Api, Client};
use serde_json::Value;

/// (apiGroup, resource, verb), one per combination a rule grants.
type Grants = BTreeSet<(String, String, String)>;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn grants(rules: &Value) -> Grants {
    let mut out = Grants::new();
    for rule in rules.as_array().into_iter().flatten() {
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

/// The grants of the rendered object of `kind` (named `name` when given).
fn grants_of(docs: &[Value], k: &str, name: Option<&str>) -> Result<Grants> {
    let doc = docs
        .iter()
        .find(|d| kind(d) == k && name.is_none_or(|n| d["metadata"]["name"] == n))
        .with_context(|| format!("no {k} {name:?} rendered"))?;
    Ok(grants(&doc["rules"]))
}

fn env_of(docs: &[Value]) -> Result<Vec<(String, Value)>> {
    let deployment = docs
        .iter()
        .find(|d| kind(d) == "Deployment")
        .context("no Deployment rendered")?;
    Ok(
        deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_string(),
                    e["value"].clone(),
                )
            })
            .collect(),
    )
}

/// `examples/clusterapi/rbac.yaml`'s ClusterRole rules.
fn example_grants() -> Result<Grants> {
    let path = repo_root().join("examples/clusterapi/rbac.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)?;
    let role = docs
        .iter()
        .find(|d| kind(d) == "ClusterRole")
        .context("no ClusterRole in examples/clusterapi/rbac.yaml")?;
    Ok(grants(&role["rules"]))
}

fn is_capi_group(g: &str) -> bool {
    g.ends_with("cluster.x-k8s.io")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_grants_the_cluster_api_provider_what_it_does() -> Result<()> {
    let Some(helm) = helm()? else {
        return Ok(());
    };
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let client = cluster.client();
    let ns = cluster.namespace().await?;
    let capi_ns = cluster.namespace().await?;
    let version = client.apiserver_version().await?.git_version;
    let names = [
        unique_name("karpenter-capi"),
        unique_name("karpenter-capi-ns"),
        unique_name("karpenter-capi-remote"),
        unique_name("karpenter-kwok"),
    ];
    let result = body(&helm, &version, &client, ns.name(), capi_ns.name(), &names).await;
    // Cluster-scoped objects are not removed with the namespaces.
    for name in &names {
        for ar in [
            ApiResource::erase::<ClusterRole>(&()),
            ApiResource::erase::<ClusterRoleBinding>(&()),
        ] {
            let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
            let _ = api.delete(name, &DeleteParams::background()).await;
        }
    }
    let cleaned = ns.cleanup().await.and(capi_ns.cleanup().await);
    result.and(cleaned.map_err(Into::into))
}

/// Renders with `set`, applies (the Deployment by dry-run) and returns the documents.
async fn install(
    helm: &std::path::Path,
    version: &str,
    client: &Client,
    ns: &str,
    fullname: &str,
    set: &[&str],
) -> Result<Vec<Value>> {
    let r = Render {
        helm,
        kube_version: version,
        namespace: ns,
        fullname,
    };
    let docs = render(&r, set)?;
    for doc in docs.iter().filter(|d| kind(d) != "Deployment") {
        apply(client, doc, false).await?;
    }
    for doc in docs.iter().filter(|d| kind(d) == "Deployment") {
        apply(client, doc, true).await?;
    }
    Ok(docs)
}

async fn body(
    helm: &std::path::Path,
    version: &str,
    client: &Client,
    ns: &str,
    capi_ns: &str,
    names: &[String; 4],
) -> Result<()> {
    let [everywhere, one_ns, remote, kwok] = names;
    let example = example_grants()?;
    // What the provider's code does, written down by hand (crates/clusterapi/src/provider).
    let must = [
        ("list", "cluster.x-k8s.io", "machinedeployments"),
        // The provider's cache: one watch on MachineDeployments, one on our Machines.
        ("watch", "cluster.x-k8s.io", "machinedeployments"),
        ("watch", "cluster.x-k8s.io", "machines"),
        ("get", "cluster.x-k8s.io", "machinedeployments"),
        // Scale mode: replicas and the ledger, conditioned merge patches.
        ("patch", "cluster.x-k8s.io", "machinedeployments"),
        ("create", "cluster.x-k8s.io", "machines"),
        ("get", "cluster.x-k8s.io", "machines"),
        ("list", "cluster.x-k8s.io", "machines"),
        ("patch", "cluster.x-k8s.io", "machines"),
        ("delete", "cluster.x-k8s.io", "machines"),
        (
            "get",
            "infrastructure.cluster.x-k8s.io",
            "devmachinetemplates",
        ),
        ("create", "infrastructure.cluster.x-k8s.io", "devmachines"),
        (
            "get",
            "bootstrap.cluster.x-k8s.io",
            "kubeadmconfigtemplates",
        ),
        ("create", "bootstrap.cluster.x-k8s.io", "kubeadmconfigs"),
        ("create", "events.k8s.io", "events"),
    ];
    let must_not = [
        ("update", "cluster.x-k8s.io", "machines"),
        ("update", "cluster.x-k8s.io", "machinedeployments"),
        ("delete", "cluster.x-k8s.io", "machinedeployments"),
        ("create", "cluster.x-k8s.io", "machinesets"),
        ("delete", "cluster.x-k8s.io", "clusters"),
        ("delete", "infrastructure.cluster.x-k8s.io", "devmachines"),
        (
            "update",
            "infrastructure.cluster.x-k8s.io",
            "devmachinetemplates",
        ),
        ("get", "", "secrets"),
    ];
    let user = |name: &str| format!("system:serviceaccount:{ns}:{name}");

    // Management cluster = this one, every namespace: a ClusterRole.
    let docs = install(
        helm,
        version,
        client,
        ns,
        everywhere,
        &["controller.cloudProvider=clusterapi"],
    )
    .await?;
    for (verb, group, resource) in must {
        for namespace in [capi_ns, "any"] {
            assert!(
                allowed(
                    client,
                    &user(everywhere),
                    verb,
                    group,
                    resource,
                    Some(namespace),
                    None
                )
                .await?,
                "{verb} {group}/{resource} in {namespace} must be allowed"
            );
        }
    }
    for (verb, group, resource) in must_not {
        assert!(
            !allowed(
                client,
                &user(everywhere),
                verb,
                group,
                resource,
                Some("any"),
                None
            )
            .await?,
            "{verb} {group}/{resource} must be denied"
        );
    }
    let env = env_of(&docs)?;
    assert!(
        env.contains(&("CLOUD_PROVIDER".into(), "clusterapi".into())),
        "{env:?}"
    );
    assert!(
        env.contains(&("CLUSTERAPI_LAUNCH_TIMEOUT".into(), "15m".into())),
        "{env:?}"
    );
    assert!(
        !env.iter()
            .any(|(n, _)| n == "CLUSTERAPI_NAMESPACE" || n == "CLUSTERAPI_KUBECONFIG")
    );
    let with_capi = grants_of(&docs, "ClusterRole", None)?;

    // The kwok provider: nothing on Cluster API.
    let docs = install(helm, version, client, ns, kwok, &[]).await?;
    for (verb, group, resource) in must.iter().filter(|m| is_capi_group(m.1)) {
        assert!(
            !allowed(
                client,
                &user(kwok),
                verb,
                group,
                resource,
                Some("any"),
                None
            )
            .await?,
            "kwok: {verb} {group}/{resource} must be denied"
        );
    }
    let without = grants_of(&docs, "ClusterRole", None)?;
    assert!(
        !without.iter().any(|(g, _, _)| is_capi_group(g)),
        "{without:?}"
    );
    assert!(
        !env_of(&docs)?
            .iter()
            .any(|(n, _)| n.starts_with("CLUSTERAPI_"))
    );

    // The example grants what the chart adds for Cluster API, and the chart grants all of it.
    let added: Grants = with_capi.difference(&without).cloned().collect();
    let example_new: Grants = example.difference(&without).cloned().collect();
    assert_eq!(added, example_new, "chart vs examples/clusterapi/rbac.yaml");
    assert!(
        example.is_subset(&with_capi),
        "{example:?} vs {with_capi:?}"
    );

    // One namespace: a Role there with exactly the example's rules, nothing elsewhere.
    let docs = install(
        helm,
        version,
        client,
        ns,
        one_ns,
        &[
            "controller.cloudProvider=clusterapi",
            &format!("clusterapi.namespace={capi_ns}"),
        ],
    )
    .await?;
    let role = format!("{one_ns}-clusterapi");
    assert_eq!(grants_of(&docs, "Role", Some(&role))?, example);
    assert_eq!(
        grants_of(&docs, "ClusterRole", None)?,
        without_kwok(&without)
    );
    for (verb, group, resource) in must {
        assert!(
            allowed(
                client,
                &user(one_ns),
                verb,
                group,
                resource,
                Some(capi_ns),
                None
            )
            .await?,
            "{verb} {group}/{resource} in {capi_ns} must be allowed"
        );
    }
    for (verb, group, resource) in must.iter().filter(|m| is_capi_group(m.1)) {
        assert!(
            !allowed(
                client,
                &user(one_ns),
                verb,
                group,
                resource,
                Some("any"),
                None
            )
            .await?,
            "{verb} {group}/{resource} outside {capi_ns} must be denied"
        );
    }
    let env = env_of(&docs)?;
    assert!(
        env.contains(&("CLUSTERAPI_NAMESPACE".into(), capi_ns.into())),
        "{env:?}"
    );

    // Another management cluster: its kubeconfig from the Secret, no Cluster API rules here.
    let docs = install(
        helm,
        version,
        client,
        ns,
        remote,
        &[
            "controller.cloudProvider=clusterapi",
            "clusterapi.kubeconfigSecret.name=management",
            "clusterapi.kubeconfigSecret.key=config",
        ],
    )
    .await?;
    for (verb, group, resource) in must.iter().filter(|m| is_capi_group(m.1)) {
        assert!(
            !allowed(
                client,
                &user(remote),
                verb,
                group,
                resource,
                Some("any"),
                None
            )
            .await?,
            "remote management cluster: {verb} {group}/{resource} must be denied here"
        );
    }
    assert!(!docs.iter().any(|d| {
        kind(d) == "Role"
            && d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-clusterapi"))
    }));
    let env = env_of(&docs)?;
    let path = env
        .iter()
        .find(|(n, _)| n == "CLUSTERAPI_KUBECONFIG")
        .and_then(|(_, v)| v.as_str())
        .context("no CLUSTERAPI_KUBECONFIG")?
        .to_string();
    let pod = &docs
        .iter()
        .find(|d| kind(d) == "Deployment")
        .context("no Deployment")?["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|p| path.starts_with(&format!("{p}/")))
        })
        .with_context(|| format!("no volume mounted above {path}"))?;
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .context("the mount's volume")?;
    assert_eq!(volume["secret"]["secretName"], "management");
    let file = path.rsplit('/').next().unwrap_or_default();
    assert_eq!(
        volume["secret"]["items"],
        serde_json::json!([{"key": "config", "path": file}])
    );
    Ok(())
}

/// The kwok ClusterRole's grants without the kwok provider's own rule (a clusterapi render
/// has every other base rule).
fn without_kwok(g: &Grants) -> Grants {
    g.iter()
        .filter(|(group, _, _)| group != "karpenter.kwok.sh")
        .cloned()
        .collect()
}
