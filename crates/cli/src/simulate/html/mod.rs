//! `-o html`: the report as one self-contained page (inline CSS and SVG, no script, nothing
//! fetched: a Content-Security-Policy forbids it). It is rendered from the same [`Report`] the
//! JSON serialises, and every figure taken from it carries `data-json="<JSON pointer>"`, so a
//! test can hold the page to `-o json` figure by figure. Derived figures (sums per NodePool,
//! percentages) are computed from those same rounded values.

mod chart;
mod markup;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chart::{Resource, meter, utilization_histogram};
use markup::{Esc, field, num, pct, table};

use super::output::{NodeClaimReport, Report, round};
use super::utilization::{NodeKind, NodeUtilization};

const STYLE: &str = include_str!("style.css");

/// Nothing may be fetched or run: styles are inline, images are inline SVG.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const GI: f64 = (1u64 << 30) as f64;

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>karpenter simulate</title><style>{STYLE}</style></head><body>\
         <header><h1>karpenter simulate</h1>\
         <p>What Karpenter would launch for the pending pods, what it would remove or replace, \
         and how full the nodes are before and after.</p></header>\n"
    );
    summary(&mut out, report);
    utilization(&mut out, report);
    cost(&mut out, report);
    node_claims(&mut out, report);
    existing(&mut out, report);
    unschedulable(&mut out, report);
    disruptions(&mut out, report);
    repack(&mut out, report);
    out.push_str("</body></html>\n");
    out
}

/// Opens a `<details>` of `rows` rows: open unless the list is long enough to bury the
/// sections after it.
fn details(out: &mut String, what: &str, rows: usize) {
    let open = if rows <= 50 { " open" } else { "" };
    let _ = write!(
        out,
        "<details{open}><summary>{} ({rows})</summary>",
        Esc(what)
    );
}

fn card(out: &mut String, label: &str, value: &str) {
    let _ = write!(
        out,
        "<div class=\"card\"><div class=\"v\">{value}</div><div class=\"l\">{}</div></div>",
        Esc(label)
    );
}

fn summary(out: &mut String, r: &Report) {
    let s = &r.summary;
    out.push_str("<section id=\"summary\"><h2>Summary</h2><div class=\"cards\">");
    card(
        out,
        "new nodes",
        &field("/summary/nodeClaims", s.node_claims),
    );
    card(
        out,
        "per hour for new nodes",
        &format!("${}", field("/summary/pricePerHour", num(s.price_per_hour))),
    );
    card(
        out,
        "lower bound per hour",
        &format!(
            "${}",
            field("/summary/lowerBoundPerHour", num(s.lower_bound_per_hour))
        ),
    );
    let ratio = match s.cost_ratio {
        Some(x) => format!("{}&times;", field("/summary/costRatio", num(x))),
        None => "n/a".to_owned(),
    };
    card(out, "cost / bound", &ratio);
    card(out, "pending pods placed", &field("/summary/pods", s.pods));
    card(
        out,
        "unschedulable",
        &field("/summary/unschedulable", s.unschedulable),
    );
    if !r.disruptions.is_empty() {
        let saved = round(r.disruptions.iter().map(|d| d.savings_per_hour).sum());
        card(
            out,
            &format!("saved per hour by {} disruption(s)", r.disruptions.len()),
            &format!(
                "$<span data-derived=\"savingsPerHour\">{}</span>",
                num(saved)
            ),
        );
    }
    out.push_str("</div></section>\n");
}

/// Σ requested / Σ allocatable of `r` over `nodes`, in percent ("n/a" without nodes).
fn overall(nodes: &[NodeUtilization], r: Resource) -> String {
    if nodes.is_empty() {
        return "n/a".to_owned();
    }
    let (used, alloc) = nodes
        .iter()
        .map(|n| r.of(n))
        .fold((0.0, 0.0), |acc, x| (acc.0 + x.0, acc.1 + x.1));
    format!("{:.1}%", pct(used, alloc))
}

fn utilization(out: &mut String, r: &Report) {
    let u = &r.utilization;
    out.push_str("<section id=\"utilization\"><h2>Nodes by utilisation</h2>");
    let _ = write!(
        out,
        "<p>Requests of the pods on each node over its allocatable. Before: the {} existing \
         node(s) of the input. After: those that remain with the pending pods placed on them, \
         the new NodeClaims{}.</p>",
        u.before.len(),
        if r.disruptions.is_empty() {
            ""
        } else {
            ", and the disruption commands carried out"
        }
    );
    out.push_str("<div class=\"charts\">");
    for res in [Resource::Cpu, Resource::Memory] {
        out.push_str(&utilization_histogram(&u.before, &u.after, res));
    }
    out.push_str("</div>");
    let _ = write!(
        out,
        "<p class=\"overall\">Overall: cpu {} before, {} after; memory {} before, {} after \
         (of allocatable, over all nodes).</p>",
        overall(&u.before, Resource::Cpu),
        overall(&u.after, Resource::Cpu),
        overall(&u.before, Resource::Memory),
        overall(&u.after, Resource::Memory),
    );
    for (when, nodes) in [("before", &u.before), ("after", &u.after)] {
        if nodes.is_empty() {
            continue;
        }
        details(out, &format!("Every node {when}"), nodes.len());
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| node_row(&format!("/utilization/{when}/{i}"), n))
            .collect();
        table(
            out,
            &[
                "node",
                "kind",
                "nodepool",
                "instance type",
                "pods",
                "cpu requested / allocatable",
                "memory requested / allocatable",
            ],
            &[4, 5, 6],
            &rows,
        );
        out.push_str("</details>");
    }
    out.push_str("</section>\n");
}

/// A figure shown in other units than the JSON's: the JSON value is in `data-value`.
fn scaled(ptr: &str, raw: i64, shown: String) -> String {
    format!(
        "<span data-json=\"{}\" data-value=\"{raw}\">{shown}</span>",
        Esc(ptr)
    )
}

fn node_row(ptr: &str, n: &NodeUtilization) -> Vec<String> {
    let kind = match n.kind {
        NodeKind::Existing => "existing",
        NodeKind::New => "new",
        NodeKind::Replacement => "replacement",
    };
    let share = |(used, alloc): (f64, f64)| pct(used, alloc);
    let cpu = format!(
        "{} / {} cores ({:.0}%) {}",
        scaled(
            &format!("{ptr}/cpuRequestedMillis"),
            n.cpu_requested_millis,
            format!("{:.2}", n.cpu_requested_millis as f64 / 1000.0)
        ),
        scaled(
            &format!("{ptr}/cpuAllocatableMillis"),
            n.cpu_allocatable_millis,
            format!("{:.2}", n.cpu_allocatable_millis as f64 / 1000.0)
        ),
        share(Resource::Cpu.of(n)),
        meter(share(Resource::Cpu.of(n)))
    );
    let memory = format!(
        "{} / {} GiB ({:.0}%) {}",
        scaled(
            &format!("{ptr}/memoryRequestedBytes"),
            n.memory_requested_bytes,
            format!("{:.2}", n.memory_requested_bytes as f64 / GI)
        ),
        scaled(
            &format!("{ptr}/memoryAllocatableBytes"),
            n.memory_allocatable_bytes,
            format!("{:.2}", n.memory_allocatable_bytes as f64 / GI)
        ),
        share(Resource::Memory.of(n)),
        meter(share(Resource::Memory.of(n)))
    );
    vec![
        field(&format!("{ptr}/name"), &n.name),
        format!("<span class=\"kind {kind}\">{kind}</span>"),
        n.node_pool
            .as_deref()
            .map(Esc)
            .map_or(String::new(), |e| e.to_string()),
        n.instance_type
            .as_deref()
            .map(Esc)
            .map_or(String::new(), |e| e.to_string()),
        field(&format!("{ptr}/pods"), n.pods),
        cpu,
        memory,
    ]
}

/// The instance family: the catalog's `.../instance-family` label when it has one, else the
/// instance type's name up to its first `.` or `-` (`m5.large` → `m5`, `c-4x-...` → `c`).
fn family(c: &NodeClaimReport) -> String {
    c.labels
        .iter()
        .find(|(k, _)| k.ends_with("/instance-family"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            c.instance_type
                .split(['.', '-'])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
}

/// Group name → (nodes, Σ $/hour).
type Groups = BTreeMap<String, (usize, f64)>;

fn cost(out: &mut String, r: &Report) {
    out.push_str("<section id=\"cost\"><h2>Cost of the new nodes</h2>");
    if r.node_claims.is_empty() {
        out.push_str("<p>No new nodes needed.</p></section>\n");
        return;
    }
    let total = r.summary.price_per_hour;
    let mut groups: [(&str, &str, Groups); 2] = [
        ("NodePool", "pool", BTreeMap::new()),
        ("instance family", "family", BTreeMap::new()),
    ];
    for c in &r.node_claims {
        for (i, key) in [c.node_pool.clone(), family(c)].into_iter().enumerate() {
            let e = groups[i].2.entry(key).or_default();
            e.0 += 1;
            e.1 += c.price_per_hour;
        }
    }
    out.push_str("<div class=\"pair\">");
    for (title, attr, group) in &groups {
        let _ = write!(out, "<div><h3>By {}</h3>", Esc(title));
        let mut rows: Vec<Vec<String>> = group
            .iter()
            .map(|(name, (nodes, price))| {
                let price = round(*price);
                vec![
                    Esc(name).to_string(),
                    nodes.to_string(),
                    format!(
                        "$<span data-cost-{attr}=\"{}\">{}</span>",
                        Esc(name),
                        num(price)
                    ),
                    format!("{:.0}% {}", pct(price, total), meter(pct(price, total))),
                ]
            })
            .collect();
        rows.push(vec![
            "<b>total</b>".to_owned(),
            field("/summary/nodeClaims", r.summary.node_claims),
            format!("${}", field("/summary/pricePerHour", num(total))),
            String::new(),
        ]);
        table(out, &[title, "nodes", "$/hour", "share"], &[1, 2], &rows);
        out.push_str("</div>");
    }
    out.push_str("</div></section>\n");
}

fn node_claims(out: &mut String, r: &Report) {
    if r.node_claims.is_empty() {
        return;
    }
    out.push_str("<section id=\"nodeclaims\"><h2>New NodeClaims</h2>");
    details(out, "NodeClaims", r.node_claims.len());
    let rows: Vec<Vec<String>> = r
        .node_claims
        .iter()
        .enumerate()
        .map(|(i, c)| claim_row(&format!("/nodeClaims/{i}"), c))
        .collect();
    table(
        out,
        &[
            "nodeclaim",
            "nodepool",
            "instance type",
            "zone",
            "capacity",
            "$/hour",
            "pods",
        ],
        &[5],
        &rows,
    );
    out.push_str("</details></section>\n");
}

fn claim_row(ptr: &str, c: &NodeClaimReport) -> Vec<String> {
    let pods: Vec<String> = c
        .pods
        .iter()
        .enumerate()
        .map(|(j, p)| field(&format!("{ptr}/pods/{j}"), p))
        .collect();
    vec![
        field(&format!("{ptr}/name"), &c.name),
        field(&format!("{ptr}/nodePool"), &c.node_pool),
        field(&format!("{ptr}/instanceType"), &c.instance_type),
        field(&format!("{ptr}/zone"), &c.zone),
        field(&format!("{ptr}/capacityType"), &c.capacity_type),
        field(&format!("{ptr}/pricePerHour"), num(c.price_per_hour)),
        format!(
            "{} <span class=\"pods\">{}</span>",
            c.pods.len(),
            pods.join(", ")
        ),
    ]
}

fn existing(out: &mut String, r: &Report) {
    if r.existing_nodes.is_empty() {
        return;
    }
    out.push_str("<section id=\"existing\"><h2>Pending pods placed on existing nodes</h2>");
    let rows: Vec<Vec<String>> = r
        .existing_nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let pods: Vec<String> = n
                .pods
                .iter()
                .enumerate()
                .map(|(j, p)| field(&format!("/existingNodes/{i}/pods/{j}"), p))
                .collect();
            vec![
                field(&format!("/existingNodes/{i}/name"), &n.name),
                pods.join(", "),
            ]
        })
        .collect();
    details(out, "Nodes", rows.len());
    table(out, &["node", "pods"], &[], &rows);
    out.push_str("</details></section>\n");
}

fn unschedulable(out: &mut String, r: &Report) {
    out.push_str("<section id=\"unschedulable\"><h2>Unschedulable pods</h2>");
    if r.unschedulable.is_empty() {
        out.push_str("<p>Every pending pod has a place.</p></section>\n");
        return;
    }
    let rows: Vec<Vec<String>> = r
        .unschedulable
        .iter()
        .enumerate()
        .map(|(i, u)| {
            vec![
                field(&format!("/unschedulable/{i}/pod"), &u.pod),
                format!(
                    "<span class=\"reason\">{}</span>",
                    field(&format!("/unschedulable/{i}/reason"), &u.reason)
                ),
            ]
        })
        .collect();
    table(out, &["pod", "reason"], &[], &rows);
    out.push_str("</section>\n");
}

fn disruptions(out: &mut String, r: &Report) {
    if r.disruptions.is_empty() && r.protected.is_empty() {
        return;
    }
    out.push_str("<section id=\"disruptions\"><h2>Disruption of existing nodes</h2>");
    if !r.disruptions.is_empty() {
        let rows: Vec<Vec<String>> = r
            .disruptions
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let ptr = format!("/disruptions/{i}");
                let nodes: Vec<String> = d
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(j, n)| field(&format!("{ptr}/nodes/{j}"), n))
                    .collect();
                let with: Vec<String> = d
                    .replacements
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        let p = format!("{ptr}/replacements/{j}");
                        format!(
                            "{} ({} {} {}, ${}/h, {} pods)",
                            field(&format!("{p}/name"), &c.name),
                            field(&format!("{p}/instanceType"), &c.instance_type),
                            field(&format!("{p}/zone"), &c.zone),
                            field(&format!("{p}/capacityType"), &c.capacity_type),
                            field(&format!("{p}/pricePerHour"), num(c.price_per_hour)),
                            c.pods.len()
                        )
                    })
                    .collect();
                vec![
                    field(&format!("{ptr}/reason"), &d.reason),
                    nodes.join("<br>"),
                    if with.is_empty() {
                        "&ndash;".to_owned()
                    } else {
                        with.join("<br>")
                    },
                    field(&format!("{ptr}/savingsPerHour"), num(d.savings_per_hour)),
                ]
            })
            .collect();
        table(
            out,
            &["reason", "remove nodes", "replace with", "$/hour saved"],
            &[3],
            &rows,
        );
    }
    if !r.protected.is_empty() {
        out.push_str("<h3>Kept from disruption</h3><ul>");
        for (node, why) in &r.protected {
            let _ = write!(out, "<li><b>{}</b>: {}</li>", Esc(node), Esc(why));
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>\n");
}

fn repack(out: &mut String, r: &Report) {
    let Some(p) = &r.repack else {
        return;
    };
    out.push_str("<section id=\"repack\"><h2>Repack: every running pod on the cheapest fleet</h2><div class=\"cards\">");
    card(out, "running pods", &field("/repack/pods", p.pods));
    card(out, "nodes today", &field("/repack/nodes", p.nodes));
    card(
        out,
        "per hour today",
        &format!(
            "${}",
            field("/repack/currentPricePerHour", num(p.current_price_per_hour))
        ),
    );
    card(
        out,
        "per hour repacked",
        &format!("${}", field("/repack/pricePerHour", num(p.price_per_hour))),
    );
    card(
        out,
        "lower bound per hour",
        &format!(
            "${}",
            field("/repack/lowerBoundPerHour", num(p.lower_bound_per_hour))
        ),
    );
    let saved = match p.savings_per_hour {
        Some(s) => format!("${}", field("/repack/savingsPerHour", num(s))),
        None => "not comparable".to_owned(),
    };
    card(out, "saved per hour", &saved);
    out.push_str("</div>");
    let rows: Vec<Vec<String>> = p
        .fleet
        .iter()
        .enumerate()
        .map(|(i, f)| {
            vec![
                field(&format!("/repack/fleet/{i}/instanceType"), &f.instance_type),
                field(&format!("/repack/fleet/{i}/capacityType"), &f.capacity_type),
                field(&format!("/repack/fleet/{i}/count"), f.count),
            ]
        })
        .collect();
    table(out, &["instance type", "capacity", "nodes"], &[2], &rows);
    if !p.unpriced_nodes.is_empty() {
        let _ = write!(
            out,
            "<p>Not in the catalog (unpriced): {}</p>",
            Esc(&p.unpriced_nodes.join(", "))
        );
    }
    for (i, u) in p.unschedulable.iter().enumerate() {
        let _ = write!(
            out,
            "<p>Cannot place {}: <span class=\"reason\">{}</span></p>",
            field(&format!("/repack/unschedulable/{i}/pod"), &u.pod),
            field(&format!("/repack/unschedulable/{i}/reason"), &u.reason)
        );
    }
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests;
