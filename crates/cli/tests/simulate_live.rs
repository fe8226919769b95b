//! `karpenter simulate --from-cluster` against the local control plane (hack/control-plane):
//! what it reads gives the same JSON as `simulate -f` on the same objects dumped with the real
//! `kubectl` (or, on a machine without one, listed through the API), with Karpenter's CRDs
//! absent and present; `--snapshot` replays to the same JSON; the ClusterRole `--print-rbac`
//! prints is enough to run it.
//!
//! The plane is shared with other tests, so everything made here carries a unique run label,
//! and pending pods select it: other tests' leftovers can neither take these pods nor be
//! taken into the assertions (except the whole-output equalities, which hold for any content).
//! Pending pods name a scheduler that does not exist, so kube-scheduler leaves them Pending;
//! running pods are bound by `spec.nodeName` to kwok nodes, which kwok keeps Ready.
//! The tests run one at a time (one of them removes Karpenter's CRDs).

mod common;
mod live_support;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use karpenter_testkit::{TestCluster, unique_name};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::config::Kubeconfig;
use kube::{Api, Client};
use serde_json::{Value, json};

use live_support::*;

#[tokio::test]
async fn without_karpenter_nodes_are_the_capacity_and_the_read_equals_kubectl() -> Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    remove_karpenter_crds(&cluster).await?;
    let ns = cluster.namespace().await?;
    let run = unique_name("run");
    let node_a = format!("{run}-a");
    ready_node(&cluster, &kwok_node(&node_a, &run, &[])?).await?;
    create_pods(
        &cluster,
        &ns,
        &[
            pod("running", &run, "1", Some(&node_a))?,
            pod("fits", &run, "1", None)?,
            pod("too-big", &run, "16", None)?,
        ],
    )
    .await?;

    let kc = cluster.kubeconfig_path().display().to_string();
    let dir = std::env::temp_dir().join(unique_name("sim-live"));
    std::fs::create_dir_all(&dir)?;
    let dumped_file = dir.join("dump.yaml");
    let (live, _) = agreeing(&cluster, "--from-cluster vs -f kubectl dump", || {
        // Pages of 2 objects: every kind with more than two objects takes continue tokens.
        let live = simulate_json(&[
            "--from-cluster",
            "--kubeconfig",
            &kc,
            "--repack",
            "--page-size",
            "2",
        ])?;
        dump(cluster.kubeconfig_path(), &CORE_KINDS, &dumped_file)?;
        let dumped = simulate_json(&["-f", &dumped_file.display().to_string(), "--repack"])?;
        Ok((live, dumped))
    })
    .await?;

    // Expected from the objects made above: the 1-cpu pod fits beside the running one on the
    // 4-cpu node; 16 cpu fits on no node, and without NodePools nothing is bought.
    let ns_name = ns.name().to_owned();
    let on_a: Vec<String> = entries(&live, "existingNodes")
        .iter()
        .filter(|e| e["name"] == node_a.as_str())
        .flat_map(|e| strings(&e["pods"]))
        .collect();
    ensure!(on_a == [format!("{ns_name}/fits")], "on {node_a}: {on_a:?}");
    ensure!(
        entries(&live, "unschedulable")
            .iter()
            .any(|u| u["pod"] == format!("{ns_name}/too-big").as_str()),
        "too-big must be unschedulable: {live:#}"
    );
    ensure!(
        entries(&live, "nodeClaims").is_empty(),
        "no NodePools, no claims"
    );
    // The node's own instance type is priced from the catalog; the running pod is repacked.
    let repack = &live["repack"];
    ensure!(
        !strings(&repack["unpricedNodes"]).contains(&node_a),
        "{node_a} is a kwok catalog type: {repack:#}"
    );
    ensure!(
        repack["pods"].as_u64().is_some_and(|n| n >= 1),
        "{repack:#}"
    );

    clean_up(&cluster, ns, &[&node_a]).await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn with_karpenter_the_read_equals_kubectl_and_the_snapshot_replays() -> Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let ns = cluster.namespace().await?;
    let run = unique_name("run");
    let pool = run.clone();
    let dynamic = |group, version, kind, plural| dynamic(&cluster, (group, version, kind, plural));
    // Budgets allow no disruption at all: the empty node stays unless budgets are ignored.
    kwok_pool(&cluster, &run, "0").await?;
    // Read with the rest: on-demand types of more than 4 vCPU cost 1/h more (only the 6-cpu
    // pod's claim is of such a type; no other test's plan here uses one).
    let overlay: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1alpha1", "kind": "NodeOverlay",
        "metadata": {"name": run},
        "spec": {
            "requirements": [
                {"key": "karpenter.kwok.sh/instance-cpu", "operator": "Gt", "values": ["4"]},
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}
            ],
            "priceAdjustment": "+1"
        }
    }))?;
    let overlays = dynamic("karpenter.sh", "v1alpha1", "NodeOverlay", "nodeoverlays");
    overlays.create(&PostParams::default(), &overlay).await?;
    let node_b = format!("{run}-b");
    let managed = [
        ("karpenter.sh/nodepool", pool.as_str()),
        ("karpenter.sh/capacity-type", "on-demand"),
    ];
    ready_node(&cluster, &kwok_node(&node_b, &run, &managed)?).await?;
    // 6 cpu does not fit on the 4-cpu node: a new NodeClaim of this run's NodePool.
    create_pods(&cluster, &ns, &[pod("grow", &run, "6", None)?]).await?;

    let kc = cluster.kubeconfig_path().display().to_string();
    let dir = std::env::temp_dir().join(unique_name("sim-live"));
    std::fs::create_dir_all(&dir)?;
    let snapshot = dir.join("snapshot.yaml");
    let snap = snapshot.display().to_string();
    let live = simulate_json(&["--from-cluster", "--kubeconfig", &kc, "--snapshot", &snap])?;
    let replayed = simulate_json(&["-f", &snap])?;
    ensure!(live == replayed, "live:\n{live:#}\nreplayed:\n{replayed:#}");
    let text = std::fs::read_to_string(&snapshot)?;
    ensure!(
        !text.contains("left out of the snapshot"),
        "container env must not be in the snapshot"
    );

    // The same cluster read through KUBECONFIG, budgets ignored, against kubectl's dump.
    let dumped_file = dir.join("dump.yaml");
    let (ignoring, _) = agreeing(&cluster, "--from-cluster vs -f kubectl dump", || {
        let out = karpenter(
            &[
                "simulate",
                "--from-cluster",
                "--ignore-budgets",
                "--repack",
                "-o",
                "json",
            ],
            &[("KUBECONFIG", cluster.kubeconfig_path())],
        )?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let live: Value = serde_json::from_slice(&out.stdout)?;
        let kinds: Vec<Kind> = KARPENTER_KINDS.iter().chain(&CORE_KINDS).copied().collect();
        dump(cluster.kubeconfig_path(), &kinds, &dumped_file)?;
        let dumped = simulate_json(&[
            "-f",
            &dumped_file.display().to_string(),
            "--ignore-budgets",
            "--repack",
        ])?;
        Ok((live, dumped))
    })
    .await?;

    // Expected from the objects: one claim of this run's NodePool for the 6-cpu pod, carrying
    // the template label and taint; the empty node is removed only when budgets are ignored.
    let ns_name = ns.name().to_owned();
    let claims: Vec<&Value> = entries(&live, "nodeClaims")
        .iter()
        .filter(|c| c["nodePool"] == pool.as_str())
        .collect();
    ensure!(claims.len() == 1, "claims of {pool}: {claims:?}");
    let claim = claims[0];
    ensure!(
        strings(&claim["pods"]) == [format!("{ns_name}/grow")],
        "{claim:#}"
    );
    ensure!(claim["labels"][RUN_LABEL] == run.as_str(), "{claim:#}");
    ensure!(claim["capacityType"] == "on-demand", "{claim:#}");
    // The NodeOverlay was read: the cheapest type for 6 cpu is c-8x (8 vCPU, 16 GiB), on-demand
    // 0.025·8 + 0.001·17.179869184 = 0.217179869, plus the overlay's 1.
    ensure!(claim["instanceType"] == "c-8x-amd64-linux", "{claim:#}");
    let price = claim["pricePerHour"].as_f64().unwrap_or(f64::NAN);
    ensure!((price - 1.217_179_869).abs() < 1e-6, "{claim:#}");
    ensure!(
        entries(claim, "taints")
            .iter()
            .any(|t| t["key"] == RUN_LABEL && t["effect"] == "NoSchedule"),
        "{claim:#}"
    );
    let removes_b = |v: &Value| -> Vec<String> {
        entries(v, "disruptions")
            .iter()
            .filter(|d| strings(&d["nodes"]).contains(&node_b))
            .filter_map(|d| d["reason"].as_str().map(str::to_owned))
            .collect()
    };
    ensure!(removes_b(&live).is_empty(), "budget 0 must hold: {live:#}");
    ensure!(removes_b(&ignoring) == ["empty"], "{ignoring:#}");
    // The managed node's labels name a kwok catalog type: it is in today's repack cost.
    ensure!(
        !strings(&ignoring["repack"]["unpricedNodes"]).contains(&node_b),
        "{ignoring:#}"
    );

    overlays
        .delete(&run, &kube::api::DeleteParams::default())
        .await?;
    clean_up(&cluster, ns, &[&node_b]).await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn the_printed_cluster_role_is_enough_to_read_the_cluster() -> Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let ns = cluster.namespace().await?;
    let out = karpenter(&["simulate", "--print-rbac"], &[])?;
    ensure!(out.status.success(), "--print-rbac failed");
    let text = String::from_utf8(out.stdout)?;
    let mut docs = text.split("\n---\n");
    let (Some(role), Some(binding)) = (docs.next(), docs.next()) else {
        bail!("expected a ClusterRole and a ClusterRoleBinding:\n{text}");
    };
    let mut role: ClusterRole = serde_saphyr::from_str(role)?;
    let sa = "reader";
    let user = format!("system:serviceaccount:{}:{sa}", ns.name());
    let mut binding: ClusterRoleBinding =
        serde_saphyr::from_str(&binding.replace("REPLACE-WITH-YOUR-USER", &user))?;
    // Unique names: the plane may outlive this run.
    let name = unique_name("simulate-reader");
    role.metadata.name = Some(name.clone());
    binding.metadata.name = Some(name.clone());
    binding.role_ref.name = name.clone();
    Api::<ClusterRole>::all(cluster.client())
        .create(&PostParams::default(), &role)
        .await?;
    Api::<ClusterRoleBinding>::all(cluster.client())
        .create(&PostParams::default(), &binding)
        .await?;
    let accounts: Api<ServiceAccount> = ns.api();
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": sa}}))?;
    accounts.create(&PostParams::default(), &account).await?;
    let token = accounts
        .create_token_request(
            sa,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await?
        .status
        .context("no token in the TokenRequest")?
        .token;

    // The admin kubeconfig's server and CA, with the ServiceAccount's token as the only
    // credential.
    let mut kubeconfig = Kubeconfig::read_from(cluster.kubeconfig_path())?;
    for auth in &mut kubeconfig.auth_infos {
        auth.auth_info = serde_json::from_value(json!({ "token": token }))?;
    }
    let dir = std::env::temp_dir().join(unique_name("sim-live"));
    std::fs::create_dir_all(&dir)?;
    let reader = dir.join("reader.kubeconfig");
    std::fs::write(&reader, serde_json::to_vec(&kubeconfig)?)?;
    let reader_arg = reader.display().to_string();

    // RBAC reaches the authorizer through its informers: poll until the role is in effect.
    cluster
        .wait_for(WAIT, "the read-only user's role in effect", || async {
            let out = karpenter(
                &[
                    "simulate",
                    "--from-cluster",
                    "--kubeconfig",
                    &reader_arg,
                    "-o",
                    "json",
                ],
                &[],
            )?;
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            if out.status.success() {
                Ok(Some(()))
            } else if stderr.contains("not allowed to list") {
                Ok(None) // not in effect yet
            } else {
                Err(anyhow::anyhow!("simulate failed: {stderr}"))
            }
        })
        .await?;
    let kc = cluster.kubeconfig_path().display().to_string();
    agreeing(&cluster, "the reader's and the admin's reads", || {
        let as_reader = simulate_json(&["--from-cluster", "--kubeconfig", &reader_arg])?;
        let as_admin = simulate_json(&["--from-cluster", "--kubeconfig", &kc])?;
        Ok((as_reader, as_admin))
    })
    .await?;

    // And the role allows nothing else: the reader may not create a pod.
    let mut config = cluster.config().await?;
    config.auth_info = serde_json::from_value(json!({ "token": token }))?;
    let reader_client = Client::try_from(config)?;
    let denied = Api::<Pod>::namespaced(reader_client, ns.name())
        .create(&PostParams::default(), &pod("p", "x", "1", None)?)
        .await;
    ensure!(
        matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403),
        "create must be forbidden: {denied:?}"
    );
    std::fs::remove_dir_all(&dir)?;
    let delete = kube::api::DeleteParams::default();
    Api::<ClusterRoleBinding>::all(cluster.client())
        .delete(&name, &delete)
        .await?;
    Api::<ClusterRole>::all(cluster.client())
        .delete(&name, &delete)
        .await?;
    clean_up(&cluster, ns, &[]).await?;
    Ok(())
}

#[tokio::test]
async fn a_capacity_buffer_is_read_with_its_pod_template() -> Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let ns = cluster.namespace().await?;
    let run = unique_name("run");
    kwok_pool(&cluster, &run, "10%").await?;
    // Chunks of 1 cpu that only this run's NodePool can take; two of them.
    let template: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PodTemplate",
        "metadata": {"name": "chunk", "namespace": ns.name()},
        "template": {"spec": {
            "nodeSelector": {RUN_LABEL: run},
            "tolerations": [{"key": RUN_LABEL, "operator": "Equal", "value": run, "effect": "NoSchedule"}],
            "containers": [{"name": "c", "image": "busybox",
                            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
        }}
    }))?;
    Api::<DynamicObject>::namespaced_with(
        cluster.client(),
        ns.name(),
        &ApiResource::erase::<k8s_openapi::api::core::v1::PodTemplate>(&()),
    )
    .create(&PostParams::default(), &template)
    .await?;
    let buffer: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling.x-k8s.io/v1beta1", "kind": "CapacityBuffer",
        "metadata": {"name": "spare", "namespace": ns.name()},
        "spec": {"podTemplateRef": {"name": "chunk"}, "replicas": 2}
    }))?;
    let gvk = GroupVersionKind::gvk("autoscaling.x-k8s.io", "v1beta1", "CapacityBuffer");
    Api::<DynamicObject>::namespaced_with(
        cluster.client(),
        ns.name(),
        &ApiResource::from_gvk_with_plural(&gvk, "capacitybuffers"),
    )
    .create(&PostParams::default(), &buffer)
    .await?;

    let kc = cluster.kubeconfig_path().display().to_string();
    let dir = std::env::temp_dir().join(unique_name("sim-live"));
    std::fs::create_dir_all(&dir)?;
    let dumped_file = dir.join("dump.yaml");
    let (live, _) = agreeing(&cluster, "--from-cluster vs -f kubectl dump", || {
        let live = simulate_json(&["--from-cluster", "--kubeconfig", &kc])?;
        let kinds: Vec<Kind> = KARPENTER_KINDS.iter().chain(&CORE_KINDS).copied().collect();
        dump(cluster.kubeconfig_path(), &kinds, &dumped_file)?;
        let dumped = simulate_json(&["-f", &dumped_file.display().to_string()])?;
        Ok((live, dumped))
    })
    .await?;

    // The buffer's two virtual pods, named as the controller names them, each on a NodeClaim
    // of this run's NodePool (the only one they tolerate).
    let ns_name = ns.name().to_owned();
    let want = [
        format!("{ns_name}/capacity-buffer:spare:1"),
        format!("{ns_name}/capacity-buffer:spare:2"),
    ];
    ensure!(strings(&live["bufferPods"]) == want, "{live:#}");
    let mut placed: Vec<String> = entries(&live, "nodeClaims")
        .iter()
        .filter(|c| c["nodePool"] == run.as_str())
        .flat_map(|c| strings(&c["pods"]))
        .collect();
    placed.sort();
    ensure!(placed == want, "buffer pods on {run}'s claims: {live:#}");

    clean_up(&cluster, ns, &[]).await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
