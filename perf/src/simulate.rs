//! What `karpenter simulate` plans for the same manifests: the reference the live fleet is
//! priced against.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// `summary` of `karpenter simulate -o json` (design contract, section 6).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub price_per_hour: f64,
    pub lower_bound_per_hour: f64,
    pub node_claims: usize,
    pub pods: usize,
    pub unschedulable: usize,
}

#[derive(Deserialize)]
struct Output {
    summary: Plan,
}

/// Runs `bin simulate -f dir -o json --catalog kwok` and returns its summary.
pub fn plan(bin: &Path, dir: &Path) -> Result<Plan> {
    let out = Command::new(bin)
        .args(["simulate", "--catalog", "kwok", "-o", "json", "-f"])
        .arg(dir)
        .output()
        .with_context(|| format!("running {} simulate", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} simulate -f {} failed ({}): {}",
            bin.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let parsed: Output =
        serde_json::from_slice(&out.stdout).context("parsing the simulate JSON output")?;
    if parsed.summary.unschedulable > 0 {
        tracing::warn!(
            unschedulable = parsed.summary.unschedulable,
            "simulate left pods unschedulable"
        );
    }
    Ok(parsed.summary)
}
