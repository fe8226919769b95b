//! The Helm chart (`charts/karpenter`) rendered by a real `helm` (built from Go modules by
//! `hack/helm/build`, or `$HELM`) and applied to the local control plane: the API server
//! accepts every object (the Deployment by server-side dry-run: there is no image to run),
//! the RBAC grants the controller's service account what the code does and nothing broader,
//! and the defaults fit a base node group of one node.
//!
//! Without helm (no Go toolchain) the test prints SKIPPED, except under `CI=true`.
//!
//! `chart_installs_the_built_image`: `helm install` with the image `hack/image/check` built,
//! pushed and ran (`KARPENTER_TEST_IMAGE`, REPOSITORY@sha256:..., exported by hack/test.sh),
//! and the Deployment and the Pod the cluster makes from it name exactly that image. Without
//! the variable it prints SKIPPED, except under `CI=true`.

mod chart;

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use chart::{Render, allowed, apply, helm, kind, render, repo_root};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use karpenter_testkit::{TestCluster, control_plane_required, unique_name};
use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::{Api, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_renders_and_the_api_server_accepts_it() -> Result<()> {
    let Some(helm) = helm()? else {
        return Ok(());
    };
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let client = cluster.client();
    let ns = cluster.namespace().await?;
    let fullname = unique_name("karpenter");
    let version = client.apiserver_version().await?.git_version;
    let r = Render {
        helm: &helm,
        kube_version: &version,
        namespace: ns.name(),
        fullname: &fullname,
    };
    let result = body(&r, &client).await;
    // Cluster-scoped objects are not removed with the namespace.
    for api in [
        Api::<DynamicObject>::all_with(
            client.clone(),
            &kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRole>(&()),
        ),
        Api::<DynamicObject>::all_with(
            client.clone(),
            &kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&()),
        ),
    ] {
        let _ = api.delete(&fullname, &DeleteParams::background()).await;
    }
    let cleaned = ns.cleanup().await;
    result.and(cleaned.map_err(Into::into))
}

async fn body(r: &Render<'_>, client: &Client) -> Result<()> {
    let (ns, fullname) = (r.namespace, r.fullname);
    // Optional parts render when asked (the ServiceMonitor CRD is not installed here).
    let with_monitor = render(r, &["serviceMonitor.enabled=true"])?;
    assert!(with_monitor.iter().any(|d| kind(d) == "ServiceMonitor"));

    // The AWS provider: its settings reach the container, it may read EC2NodeClasses and
    // write their status, and a missing cluster name stops the render with a message.
    let no_name = render(r, &["controller.cloudProvider=aws"]);
    let err = no_name
        .err()
        .context("aws without settings.clusterName must not render")?;
    assert!(err.to_string().contains("settings.clusterName"), "{err}");
    let no_endpoint = render(
        r,
        &["controller.cloudProvider=aws", "settings.clusterName=demo"],
    );
    let err = no_endpoint
        .err()
        .context("aws without settings.clusterEndpoint must not render")?;
    assert!(
        err.to_string().contains("settings.clusterEndpoint"),
        "{err}"
    );
    let aws = render(
        r,
        &[
            "controller.cloudProvider=aws",
            "settings.clusterName=demo",
            "settings.clusterEndpoint=https://demo.example.com",
            "settings.clusterCIDR=10.100.0.0/16",
            "settings.interruptionQueue=demo-queue",
            "settings.featureGates.nodeOverlay=true",
            "settings.featureGates.nodeRepair=true",
            "settings.featureGates.staticCapacity=true",
            "settings.featureGates.capacityBuffer=true",
            "settings.legacyNodeRepair=true",
        ],
    )?;
    let env = aws
        .iter()
        .find(|d| kind(d) == "Deployment")
        .map(|d| d["spec"]["template"]["spec"]["containers"][0]["env"].clone())
        .context("the aws Deployment")?;
    let env_value = |name: &str| {
        env.as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name))
            .map(|v| v["value"].clone())
    };
    assert_eq!(env_value("CLOUD_PROVIDER"), Some("aws".into()));
    assert_eq!(env_value("CLUSTER_NAME"), Some("demo".into()));
    assert_eq!(
        env_value("CLUSTER_ENDPOINT"),
        Some("https://demo.example.com".into())
    );
    assert_eq!(env_value("CLUSTER_CIDR"), Some("10.100.0.0/16".into()));
    assert_eq!(env_value("INTERRUPTION_QUEUE"), Some("demo-queue".into()));
    assert_eq!(
        env_value("FEATURE_GATES"),
        Some(
            "SpotToSpotConsolidation=false,NodeOverlay=true,NodeRepair=true,StaticCapacity=true,\
             CapacityBuffer=true"
                .into()
        )
    );
    assert_eq!(env_value("LEGACY_NODE_REPAIR"), Some("true".into()));
    let aws_rules = aws
        .iter()
        .find(|d| kind(d) == "ClusterRole")
        .map(|d| d["rules"].to_string())
        .context("the aws ClusterRole")?;
    assert!(aws_rules.contains("ec2nodeclasses/status"), "{aws_rules}");
    assert!(!aws_rules.contains("kwoknodeclasses"), "{aws_rules}");

    let docs = render(r, &[])?;
    let kinds: Vec<&str> = docs.iter().map(kind).collect();
    for k in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    assert!(
        !kinds.contains(&"ServiceMonitor"),
        "optional, off by default"
    );
    assert!(
        !kinds.iter().any(|k| k.contains("Webhook")),
        "no webhook: nothing to certify"
    );

    // One replica, and nothing that needs a second node to schedule.
    let deployment = docs
        .iter()
        .find(|d| kind(d) == "Deployment")
        .context("the Deployment")?;
    assert_eq!(deployment["spec"]["replicas"], 1);
    let spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .context("spread constraints")?;
    assert!(!spread.is_empty());
    for c in spread {
        assert_eq!(c["whenUnsatisfiable"], "ScheduleAnyway", "{c}");
    }
    let affinity = &deployment["spec"]["template"]["spec"]["affinity"];
    assert!(
        affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_null()
    );

    // RBAC first (the Deployment's service account must exist for its admission).
    for doc in docs.iter().filter(|d| kind(d) != "Deployment") {
        apply(client, doc, false).await?;
    }
    apply(client, deployment, true).await?;

    // The service account may do what the controller does, and not more.
    let user = format!("system:serviceaccount:{ns}:{fullname}");
    let lease = "karpenter-leader-election";
    let must = [
        ("create", "", "pods/eviction", Some("any"), None),
        ("delete", "", "pods", Some("any"), None),
        ("watch", "", "pods", None, None),
        ("create", "", "nodes", None, None),
        ("patch", "", "nodes", None, None),
        ("create", "karpenter.sh", "nodeclaims", None, None),
        ("patch", "karpenter.sh", "nodeclaims/status", None, None),
        ("watch", "karpenter.sh", "nodepools", None, None),
        ("patch", "karpenter.sh", "nodepools", None, None),
        ("patch", "karpenter.sh", "nodepools/status", None, None),
        ("get", "karpenter.sh", "nodeclaims", None, None),
        ("watch", "policy", "poddisruptionbudgets", None, None),
        ("watch", "karpenter.sh", "provisioners", None, None),
        ("watch", "karpenter.sh", "nodeoverlays", None, None),
        ("patch", "karpenter.sh", "nodeoverlays/status", None, None),
        (
            "watch",
            "autoscaling.x-k8s.io",
            "capacitybuffers",
            None,
            None,
        ),
        (
            "patch",
            "autoscaling.x-k8s.io",
            "capacitybuffers/status",
            None,
            None,
        ),
        ("watch", "", "podtemplates", None, None),
        ("watch", "apps", "replicasets", None, None),
        ("watch", "apps", "deployments", None, None),
        ("get", "karpenter.kwok.sh", "kwoknodeclasses", None, None),
        ("list", "apps", "daemonsets", None, None),
        ("create", "events.k8s.io", "events", Some("any"), None),
        ("create", "coordination.k8s.io", "leases", Some(ns), None),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            Some(ns),
            Some(lease),
        ),
    ];
    for (verb, group, resource, namespace, name) in must {
        assert!(
            allowed(client, &user, verb, group, resource, namespace, name).await?,
            "{verb} {group}/{resource} must be allowed"
        );
    }
    let must_not = [
        ("update", "karpenter.sh", "nodepools", None, None),
        ("delete", "karpenter.sh", "nodepools", None, None),
        ("update", "karpenter.sh", "nodepools/scale", None, None),
        ("update", "karpenter.sh", "provisioners", None, None),
        ("patch", "karpenter.sh", "nodeoverlays", None, None),
        ("delete", "karpenter.sh", "nodeoverlays", None, None),
        (
            "patch",
            "autoscaling.x-k8s.io",
            "capacitybuffers",
            None,
            None,
        ),
        ("create", "", "podtemplates", Some("any"), None),
        ("get", "", "secrets", Some(ns), None),
        ("update", "", "nodes", None, None),
        ("create", "", "pods", Some("any"), None),
        ("delete", "apps", "daemonsets", Some("any"), None),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            Some(ns),
            Some("someone-else"),
        ),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            Some("kube-system"),
            Some(lease),
        ),
    ];
    for (verb, group, resource, namespace, name) in must_not {
        assert!(
            !allowed(client, &user, verb, group, resource, namespace, name).await?,
            "{verb} {group}/{resource} must be denied"
        );
    }
    Ok(())
}

/// The image `hack/image/check` pushed, by digest: (repository, `sha256:...`).
fn built_image() -> Result<Option<(String, String)>> {
    let image = std::env::var("KARPENTER_TEST_IMAGE").unwrap_or_default();
    if image.is_empty() {
        if control_plane_required() {
            bail!(
                "KARPENTER_TEST_IMAGE is unset, and CI=true forbids skipping (hack/test.sh sets it from hack/image/check)"
            );
        }
        eprintln!(
            "\n******** SKIPPED: no KARPENTER_TEST_IMAGE (run hack/image/check, or ./hack/test.sh) ********\n"
        );
        return Ok(None);
    }
    let (repository, digest) = image
        .split_once('@')
        .with_context(|| format!("KARPENTER_TEST_IMAGE={image:?} is not REPOSITORY@sha256:..."))?;
    Ok(Some((repository.to_string(), digest.to_string())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_the_built_image() -> Result<()> {
    let Some((repository, digest)) = built_image()? else {
        return Ok(());
    };
    let Some(helm) = helm()? else {
        return Ok(());
    };
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let client = cluster.client();
    let ns = cluster.namespace().await?;
    let release = unique_name("karpenter");
    let install = |args: &[&str]| -> Result<()> {
        let out = Command::new(&helm)
            .args(args)
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig_path())
            .args(["--namespace", ns.name()])
            .output()
            .context("running helm")?;
        if !out.status.success() {
            bail!(
                "helm {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let chart = repo_root().join("charts/karpenter");
    let chart = chart.to_str().context("a non-UTF-8 repository path")?;
    let result = async {
        install(&[
            "install",
            &release,
            chart,
            "--set",
            &format!("image.repository={repository}"),
            "--set",
            &format!("image.digest={digest}"),
        ])?;
        installed_objects_use(
            &cluster,
            &client,
            ns.name(),
            &release,
            &format!("{repository}@{digest}"),
        )
        .await
    }
    .await;
    // helm removes what it made, the cluster-scoped RBAC included.
    let uninstalled = install(&["uninstall", &release, "--wait"]);
    let cleaned = ns.cleanup().await;
    result.and(uninstalled).and(cleaned.map_err(Into::into))
}

async fn installed_objects_use(
    cluster: &TestCluster,
    client: &Client,
    ns: &str,
    release: &str,
    image: &str,
) -> Result<()> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(release)
        .await
        .context("the chart's Deployment")?;
    let pod_spec = deployment
        .spec
        .and_then(|s| s.template.spec)
        .context("a Deployment without a pod template")?;
    let container = pod_spec
        .containers
        .first()
        .context("a pod template without containers")?;
    assert_eq!(container.image.as_deref(), Some(image));
    assert_eq!(container.args, Some(vec!["controller".to_string()]));
    // The image's user (hack/image/build) is the one the chart runs as.
    let run_as = pod_spec.security_context.and_then(|s| s.run_as_user);
    assert_eq!(run_as, Some(65532));

    // The cluster's own controllers turn it into a Pod with that image: what a kubelet pulls.
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let selector = format!("app.kubernetes.io/instance={release}");
    let pod_images = cluster
        .wait_for(
            std::time::Duration::from_secs(60),
            "the chart's Deployment to create a Pod",
            || async {
                let list = pods.list(&ListParams::default().labels(&selector)).await?;
                let images: Vec<Option<String>> = list
                    .items
                    .iter()
                    .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()))
                    .map(|c| c.image.clone())
                    .collect();
                Ok::<_, kube::Error>((!images.is_empty()).then_some(images))
            },
        )
        .await?;
    for got in pod_images {
        assert_eq!(got.as_deref(), Some(image));
    }
    Ok(())
}
