//! The controller's own API requests, from the API server's audit log. The plane is started
//! with `KARPENTER_CP_AUDIT_USER` so only the controller's user (it runs with
//! `karpenter.kubeconfig`, CN=karpenter-controller) is logged; `apiserver_request_total` has
//! no client label and would mix in kube-controller-manager, the scheduler and kwok.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::Deserialize;

/// The user the controller authenticates as.
pub const CONTROLLER_USER: &str = "karpenter-controller";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    stage: String,
    verb: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
}

/// Requests of one phase: by verb, and by `verb resource`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Requests {
    pub by_verb: BTreeMap<String, u64>,
    pub by_verb_resource: BTreeMap<String, u64>,
}

/// The log's current length (0 before the first request): where a phase starts.
pub fn offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Counts the requests logged after byte `from`. A request is counted once: at
/// `ResponseComplete`, or for a watch at `ResponseStarted` (a watch completes only when it ends).
pub fn requests_since(path: &Path, from: u64) -> Result<Requests> {
    let mut out = Requests::default();
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(out); // no request yet
    };
    f.seek(SeekFrom::Start(from))
        .with_context(|| format!("seeking in {}", path.display()))?;
    for line in BufReader::new(f).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        // The last line may be half-written while the API server appends.
        let Ok(e) = serde_json::from_str::<AuditEvent>(&line) else {
            continue;
        };
        let counted = match e.verb.as_str() {
            "watch" => e.stage == "ResponseStarted",
            _ => e.stage == "ResponseComplete",
        };
        if !counted {
            continue;
        }
        // `create pods/eviction` (a drain) apart from `create pods`.
        let resource = match e.object_ref {
            Some(ObjectRef {
                resource: Some(r),
                subresource: Some(sub),
            }) => format!("{r}/{sub}"),
            Some(ObjectRef {
                resource: Some(r), ..
            }) => r,
            _ => "-".into(),
        };
        *out.by_verb_resource
            .entry(format!("{} {resource}", e.verb))
            .or_default() += 1;
        *out.by_verb.entry(e.verb).or_default() += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_request_once() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("perf-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("audit.log");
        std::fs::write(
            &p,
            r#"{"stage":"ResponseComplete","verb":"create","objectRef":{"resource":"nodeclaims"}}
{"stage":"ResponseStarted","verb":"watch","objectRef":{"resource":"pods"}}
{"stage":"ResponseComplete","verb":"watch","objectRef":{"resource":"pods"}}
{"stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods","subresource":"eviction"}}
{"stage":"ResponseComplete","verb":"get"}
{"stage":"Resp"#,
        )?;
        let r = requests_since(&p, 0)?;
        assert_eq!(r.by_verb.get("create"), Some(&2));
        assert_eq!(r.by_verb_resource.get("create pods/eviction"), Some(&1));
        assert_eq!(r.by_verb.get("watch"), Some(&1));
        assert_eq!(r.by_verb.get("get"), Some(&1));
        assert_eq!(r.by_verb_resource.get("create nodeclaims"), Some(&1));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
