//! e2e: every PromQL expression in the chart's Grafana dashboards (`charts/karpenter/dashboards`)
//! parses, and every metric it references is one a running controller exposes. The controller
//! provisions a pod first, so the node, NodePool, cost, pod startup and cloud provider series
//! exist and carry the test pool's labels.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use common::{Env, TIMEOUT};
use k8s_openapi::api::core::v1::Pod;
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_controller::Metrics;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/karpenter/dashboards")
}

/// Grafana's variables as PromQL the parser accepts: interval variables (`$__rate_interval`)
/// become a duration, others (`$nodepool`, `${datasource}`) a regex matching anything (they
/// only appear in `=~` matchers).
fn substitute(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(b) => match b.split_once('}') {
                Some((n, t)) => (n, t),
                None => (b, ""),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        out.push_str(if name.starts_with("__") { "5m" } else { ".*" });
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Collects the metric names of every selector.
#[derive(Default)]
struct Names(BTreeSet<String>);

impl Names {
    fn selector(&mut self, vs: &VectorSelector) {
        let by_matcher = vs
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__")
            .map(|m| m.value.clone());
        if let Some(name) = vs.name.clone().or(by_matcher) {
            self.0.insert(name);
        }
    }
}

impl ExprVisitor for Names {
    type Error = std::convert::Infallible;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs),
            _ => {}
        }
        Ok(true)
    }
}

/// Every PromQL expression of a dashboard: the panels' targets, and the metric of each
/// `label_values(metric, label)` variable query (Grafana's, not PromQL).
fn expressions(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    for p in &panels {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.to_string());
            }
        }
    }
    let vars = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for v in vars {
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        if let Some(inner) = q
            .and_then(|q| q.strip_prefix("label_values("))
            .and_then(|q| q.split(',').next())
        {
            out.push(inner.trim().to_string());
        }
    }
    out
}

/// The metric names referenced by every dashboard, each expression parsed with a PromQL parser.
fn dashboard_metrics() -> Result<BTreeSet<String>> {
    let mut names = Names::default();
    let mut files = 0;
    for entry in std::fs::read_dir(dashboards_dir()).context("reading the dashboards")? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path)?;
        let dashboard: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let exprs = expressions(&dashboard);
        if exprs.is_empty() {
            bail!("{}: no PromQL expressions", path.display());
        }
        for e in exprs {
            let ast = promql_parser::parser::parse(&substitute(&e))
                .map_err(|err| anyhow::anyhow!("{}: {e:?}: {err}", path.display()))?;
            let found = names_in(&ast);
            // Every expression must read one of our metrics (an expression reading none is a
            // mistake; a misspelt name is caught against the controller's exposition).
            if !found.iter().any(|n| n.starts_with("karpenter_")) {
                bail!("{}: {e:?} references no karpenter metric", path.display());
            }
            names.0.extend(found);
        }
    }
    if files < 3 {
        bail!("expected the capacity, cost and performance dashboards, found {files} files");
    }
    Ok(names.0)
}

fn names_in(ast: &Expr) -> BTreeSet<String> {
    let mut n = Names::default();
    let _ = walk_expr(&mut n, ast);
    n.0
}

/// The names a query can use for what the exposition declares: counters with `_total`,
/// histograms' `_bucket`/`_sum`/`_count`, summaries' quantiles, `_sum` and `_count`.
fn exposed(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

/// The value of the first sample of `metric` whose labels include every `labels` pair.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        let value = rest.rsplit(' ').next()?.parse().ok()?;
        all.then_some(value)
    })
}

#[test]
fn dashboards_parse_and_reference_karpenter_metrics() -> Result<()> {
    let names = dashboard_metrics()?;
    for n in [
        "karpenter_nodes_allocatable",
        "karpenter_nodepools_cost_per_hour",
    ] {
        assert!(names.contains(n), "{n} not in {names:?}");
    }
    assert_eq!(
        substitute("a[$__rate_interval]{x=~\"${np}\"}"),
        "a[5m]{x=~\".*\"}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboards_reference_only_exposed_metrics() -> Result<()> {
    let wanted = dashboard_metrics()?;
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env, &wanted).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// Metrics that have series only after an event this test does not provoke (a provider error,
/// a voluntary disruption): they are checked to be registered by the controller's own
/// registration code, on a fresh set of metrics given one series each.
fn event_only() -> Result<BTreeSet<String>> {
    use karpenter_controller::metrics::{Decision, ProviderError};
    let (m, r) = Metrics::new();
    m.cloudprovider_errors
        .get_or_create(&ProviderError {
            controller: "c".into(),
            method: "Create".into(),
            provider: "kwok".into(),
            error: "transient".into(),
        })
        .inc();
    m.disruption_decisions
        .get_or_create(&Decision {
            decision: "delete".into(),
            reason: "empty".into(),
            consolidation_type: String::new(),
        })
        .inc();
    let names = exposed(&karpenter_controller::metrics::encode(&r, Some(&m))?);
    let want = [
        "karpenter_cloudprovider_errors_total",
        "karpenter_voluntary_disruption_decisions_total",
    ];
    for w in want {
        assert!(names.contains(w), "{w} is not registered");
    }
    Ok(want.iter().map(|w| w.to_string()).collect())
}

/// Scrapes the controller's metrics until `ready` holds for the text.
async fn scrape_until(env: &Env, what: &str, ready: impl Fn(&str) -> bool) -> Result<String> {
    let metrics = env.controller.context.metrics.clone();
    let registry = metrics.registry();
    let text = env
        .cluster
        .wait_for(TIMEOUT, what, || {
            let text = karpenter_controller::metrics::encode(&registry, Some(&metrics));
            let ok = text.as_deref().is_ok_and(&ready);
            async move { Ok::<_, std::fmt::Error>(ok.then_some(text?)) }
        })
        .await?;
    Ok(text)
}

async fn body(env: &Env, wanted: &BTreeSet<String>) -> Result<()> {
    let pool = env.pool.as_str();
    // A limit, so `karpenter_nodepools_limit` has a series for this pool.
    let limits = serde_json::json!({"spec": {"limits": {"cpu": "100"}}});
    Api::<NodePool>::all(env.client.clone())
        .patch(pool, &PatchParams::default(), &Patch::Merge(&limits))
        .await?;
    Api::<Pod>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &env.pod("metrics", "500m"))
        .await?;
    env.wait_running("metrics", 1).await?;
    let running = scrape_until(env, "the pool's node, NodePool and cost series", |text| {
        let cpu = |m| sample(text, m, &[("nodepool", pool), ("resource_type", "cpu")]);
        cpu("karpenter_nodes_allocatable").is_some_and(|v| v > 0.0)
            && cpu("karpenter_nodes_total_pod_requests").is_some_and(|v| v >= 0.5)
            && cpu("karpenter_nodes_total_daemon_requests") == Some(0.0)
            && cpu("karpenter_nodepools_usage").is_some_and(|v| v > 0.0)
            && cpu("karpenter_nodepools_limit") == Some(100.0)
            && sample(
                text,
                "karpenter_nodepools_cost_per_hour",
                &[("nodepool", pool)],
            )
            .is_some_and(|v| v > 0.0)
            && sample(text, "karpenter_pods_startup_duration_seconds_count", &[])
                .is_some_and(|v| v >= 1.0)
    })
    .await?;
    let create = [
        ("controller", "nodeclaim.lifecycle"),
        ("method", "Create"),
        ("provider", "kwok"),
    ];
    assert!(
        sample(
            &running,
            "karpenter_cloudprovider_duration_seconds_count",
            &create
        )
        .is_some(),
        "no timed Create call:\n{running}"
    );
    assert_eq!(
        sample(&running, "karpenter_cluster_state_synced", &[]),
        Some(1.0)
    );
    assert!(sample(&running, "karpenter_cluster_state_node_count", &[]).is_some_and(|n| n >= 1.0));

    // Terminating the pool's node drains it (an eviction) and ends its NodeClaim (termination
    // counters and durations); its per-node series must then go.
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    for c in env.node_claims().await? {
        claims
            .delete(&c.name_any(), &DeleteParams::background())
            .await?;
    }
    let terminated = scrape_until(env, "termination series, node series gone", |text| {
        let in_pool = [("nodepool", pool)];
        sample(text, "karpenter_nodeclaims_terminated_total", &in_pool).is_some()
            && sample(
                text,
                "karpenter_nodeclaims_termination_duration_seconds_count",
                &in_pool,
            )
            .is_some()
            && sample(text, "karpenter_pods_eviction_requests_total", &[]).is_some()
            && sample(text, "karpenter_nodes_allocatable", &in_pool).is_none()
    })
    .await?;
    let mut have = exposed(&running);
    have.extend(exposed(&terminated));
    have.extend(event_only()?);
    let missing: Vec<_> = wanted.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "dashboards reference metrics the controller does not expose: {missing:?}"
    );
    Ok(())
}
