//! End-to-end `karpenter simulate` cases: the upstream "diverse" shape written out as the files a
//! user would pass (one `Pod` document per pod, a NodePool, a catalog JSON of the 400 upstream
//! instance types), then the built `karpenter` binary run on them: read YAML → plan → bound →
//! JSON, timed from outside the process.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use karpenter_solver::{InstanceType, PodAffinityTerm, PodView, Resources, WhenUnsatisfiable};

use crate::workloads::{self, Rng};

/// Runs per case; the fastest and the median are reported (the machine is shared).
const RUNS: usize = 3;

/// A quantity the way a user writes it: `250m` / `2` for cpu, bytes with a binary suffix when
/// exact, plain numbers otherwise.
fn quantity(name: &str, v: i64) -> String {
    if name == "cpu" {
        return if v % 1000 == 0 {
            (v / 1000).to_string()
        } else {
            format!("{v}m")
        };
    }
    for (suffix, unit) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if v != 0 && v % unit == 0 {
            return format!("{}{suffix}", v / unit);
        }
    }
    v.to_string()
}

fn resources_yaml(r: &Resources, names: &[&str]) -> String {
    names
        .iter()
        .filter(|n| r.get(n) != 0)
        .map(|n| format!("{n}: {}", quantity(n, r.get(n))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn selector_yaml(t: &PodAffinityTerm) -> String {
    let labels = t
        .label_selector
        .as_ref()
        .map(|s| {
            s.match_labels
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!("{{matchLabels: {{{labels}}}}}")
}

/// One `Pod` document for a diverse pod (only the fields `diverse_pods` sets).
fn pod_yaml(out: &mut String, p: &PodView) {
    let labels = p
        .labels
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels: {{{labels}}}\nspec:\n  containers:\n  - name: app\n    image: nginx\n    resources:\n      requests: {{{}}}\n",
        p.name,
        p.namespace,
        resources_yaml(&p.requests, &["cpu", "memory"]),
    );
    if !p.topology_spread.is_empty() {
        out.push_str("  topologySpreadConstraints:\n");
        for c in &p.topology_spread {
            let when = match c.when_unsatisfiable {
                WhenUnsatisfiable::DoNotSchedule => "DoNotSchedule",
                WhenUnsatisfiable::ScheduleAnyway => "ScheduleAnyway",
            };
            let selector = c
                .label_selector
                .as_ref()
                .map(|s| {
                    s.match_labels
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  - {{maxSkew: {}, topologyKey: {}, whenUnsatisfiable: {when}, labelSelector: {{matchLabels: {{{selector}}}}}}}",
                c.max_skew, c.topology_key
            );
        }
    }
    if !p.pod_affinity.is_empty() || !p.pod_anti_affinity.is_empty() {
        out.push_str("  affinity:\n");
        for (field, terms) in [
            ("podAffinity", &p.pod_affinity),
            ("podAntiAffinity", &p.pod_anti_affinity),
        ] {
            if terms.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "    {field}:\n      requiredDuringSchedulingIgnoredDuringExecution:"
            );
            for t in terms {
                let _ = writeln!(
                    out,
                    "      - {{topologyKey: {}, labelSelector: {}}}",
                    t.topology_key,
                    selector_yaml(t)
                );
            }
        }
    }
}

/// The catalog JSON of `its` (design.md §6 format).
fn catalog_json(its: &[InstanceType]) -> String {
    let mut out = String::from("{\"instanceTypes\": [\n");
    for (i, it) in its.iter().enumerate() {
        let cap = |n: &str| quantity(n, it.capacity.get(n));
        let kube = |n: &str| quantity(n, it.overhead.kube_reserved.get(n));
        let labels = it
            .labels
            .iter()
            .map(|(k, v)| format!("\"{k}\": \"{v}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let offerings = it
            .offerings
            .iter()
            .map(|o| {
                format!(
                    "{{\"zone\": \"{}\", \"capacityType\": \"{}\", \"price\": {}, \"available\": {}}}",
                    o.zone, o.capacity_type, o.price, o.available
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "{}{{\"name\": \"{}\", \"capacity\": {{\"cpu\": \"{}\", \"memory\": \"{}\", \"pods\": \"{}\"}}, \"overhead\": {{\"kubeReserved\": {{\"cpu\": \"{}\", \"memory\": \"{}\"}}}}, \"labels\": {{{labels}}}, \"offerings\": [{offerings}]}}",
            if i == 0 { "" } else { "," },
            it.name,
            cap("cpu"),
            cap("memory"),
            cap("pods"),
            kube("cpu"),
            kube("memory"),
        );
    }
    out.push_str("]}\n");
    out
}

/// The bench's NodePool (no requirements, huge limits) as a karpenter.sh/v1 NodePool.
const NODE_POOL: &str = "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata:\n  name: default\n\
spec:\n  template:\n    spec:\n      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}\n      \
requirements: []\n  limits:\n    cpu: \"10000000\"\n    memory: 10000000Gi\n";

/// Writes `catalog.json`, `nodepool.yaml` and `pods.yaml` (n diverse pods, seed 42 as the
/// solver-only cases) into `dir`.
pub fn write_input(n: usize, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("catalog.json"),
        catalog_json(&workloads::upstream_catalog(400)),
    )?;
    std::fs::write(dir.join("nodepool.yaml"), NODE_POOL)?;
    let mut rng = Rng::new(42);
    let mut pods = String::with_capacity(n * 400);
    for p in workloads::diverse_pods(n, &mut rng) {
        pod_yaml(&mut pods, &p);
    }
    std::fs::write(dir.join("pods.yaml"), pods)
}

/// The `karpenter` binary: `$KARPENTER_BIN`, else the one next to this bench binary (same
/// target directory and profile: `cargo build --release -p karpenter -p karpenter-bench`).
fn karpenter_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KARPENTER_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("karpenter")))
        .unwrap_or_else(|| PathBuf::from("karpenter"))
}

/// User + system CPU seconds from `/proc/self/stat` (in USER_HZ = 100 ticks per second): of
/// this process (`children` false: utime + stime) or of its waited-for children (cutime +
/// cstime); `None` off Linux. On a shared machine this is what one core spent, where wall time
/// also counts waiting for a core.
pub fn cpu_seconds(children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // After the command name, fields count from 3 (state): utime is field 14, stime 15,
    // cutime 16, cstime 17.
    let first = if children { 13 } else { 11 };
    Some((ticks(first)? + ticks(first + 1)?) / 100.0)
}

fn children_cpu_seconds() -> Option<f64> {
    cpu_seconds(true)
}

/// A number after `"key":` in the JSON text (the summary's fields are unique keys).
fn json_number(text: &str, key: &str) -> Option<f64> {
    let at = text.rfind(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = text[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Case `simulate-diverse-N`: writes the input, runs `karpenter simulate -o json` [`RUNS`]
/// times and prints one JSON line.
pub fn run(n: usize) {
    let case = format!("simulate-diverse-{n}");
    let dir = std::env::temp_dir().join(format!("karpenter-bench-{case}"));
    if let Err(e) = write_input(n, &dir) {
        println!("{{\"case\":\"{case}\",\"error\":\"writing the input: {e}\"}}");
        return;
    }
    let bin = karpenter_bin();
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut stdout = String::new();
    for _ in 0..RUNS {
        let cpu_before = children_cpu_seconds();
        let t = Instant::now();
        let out = Command::new(&bin)
            .arg("simulate")
            .arg("-f")
            .arg(dir.join("nodepool.yaml"))
            .arg("-f")
            .arg(dir.join("pods.yaml"))
            .arg("--catalog")
            .arg(dir.join("catalog.json"))
            .args(["-o", "json"])
            .output();
        let secs = t.elapsed().as_secs_f64();
        match out {
            Ok(o) if o.status.success() => {
                times.push(secs);
                if let (Some(a), Some(b)) = (cpu_before, children_cpu_seconds()) {
                    cpu.push(b - a);
                }
                stdout = String::from_utf8_lossy(&o.stdout).into_owned();
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr).replace('"', "'");
                println!("{{\"case\":\"{case}\",\"error\":\"{}\"}}", err.trim());
                return;
            }
            Err(e) => {
                println!(
                    "{{\"case\":\"{case}\",\"error\":\"cannot run {}: {e}\"}}",
                    bin.display()
                );
                return;
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let cpu_min = cpu.iter().copied().fold(f64::NAN, f64::min);
    let num = |k: &str| json_number(&stdout, k).unwrap_or(f64::NAN);
    let bytes = std::fs::metadata(dir.join("pods.yaml")).map_or(0, |m| m.len());
    println!(
        "{{\"case\":\"{case}\",\"pods\":{n},\"input_bytes\":{bytes},\"seconds_min\":{:.3},\"seconds_median\":{:.3},\"cpu_seconds_min\":{cpu_min:.2},\"runs\":{RUNS},\"nodes\":{},\"cost\":{:.4},\"bound\":{:.4},\"cost_over_bound\":{:.4}}}",
        times[0],
        times[times.len() / 2],
        num("nodeClaims"),
        num("pricePerHour"),
        num("lowerBoundPerHour"),
        num("costRatio"),
    );
}
