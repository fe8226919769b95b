//! Pure: the scale-the-MachineDeployment launch mode ([`crate::shape::LaunchMode::Scale`]):
//! what to write on a MachineDeployment and its Machines, and which Machine a NodeClaim takes.
//! No I/O, so all of it is unit-tested on plain objects; `provider::scale` does the calls.
//!
//! The MachineDeployment owns the Machines, so a NodeClaim cannot name its Machine. Instead:
//!
//! - **The ledger** ([`CLAIMS_ANNOTATION`] on the MachineDeployment) records every NodeClaim
//!   the MachineDeployment was scaled up for, when, and (once taken) its Machine. A scale-up
//!   adds the entry and raises `spec.replicas` in **one** write conditioned on the
//!   MachineDeployment's resourceVersion, so a crash can never leave a raised replica count
//!   without its record (or the reverse), and a retried launch that finds its entry never
//!   scales again. A release removes the entry and lowers `spec.replicas` in one conditioned
//!   write, so a retried delete never scales down twice.
//! - **Claiming**: the NodeClaim takes the oldest free Machine of the MachineDeployment created
//!   no earlier than its scale-up (less [`CLOCK_SKEW`]) by annotating it
//!   ([`NODE_CLAIM_ANNOTATION`]) in a write conditioned on the Machine's resourceVersion: of two
//!   NodeClaims racing for one Machine, one wins and the other, conflicted, looks again.
//!   Oldest first (not newest): the Machines a NodeClaim may take are those created after its
//!   scale-up, so the set of an earlier NodeClaim contains every later one's; each taking its
//!   oldest leaves the newer Machines to the later NodeClaims, which can take nothing older.
//!   Machines created long before the scale-up (replicas the user runs) are never taken.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use karpenter_api::labels::NODE_POOL_LABEL;
use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use crate::machine::MACHINE_DEPLOYMENT_LABEL;

/// Ours, on a MachineDeployment in scale mode: the ledger of the NodeClaims it was scaled up
/// for (JSON: `{"<NodeClaim>": {"since": "<RFC 3339>", "machine": "<Machine>"}}`). Written only
/// by karpenter-rs; do not edit it.
pub const CLAIMS_ANNOTATION: &str = "clusterapi.karpenter.sh/claims";
/// Ours, on a Machine a NodeClaim took in scale mode: the NodeClaim's name.
pub const NODE_CLAIM_ANNOTATION: &str = "clusterapi.karpenter.sh/node-claim";
/// CAPI: a MachineSet scaling down deletes Machines carrying this first.
pub const DELETE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/delete-machine";
/// CAPI: the MachineDeployment a MachineSet's Machine belongs to.
pub const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";
/// How much older than a scale-up (by our clock) a Machine may be and still be taken for it:
/// Machines carry the API server's creation time, and the two clocks may differ a little.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(30);

/// The ledger annotation cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("MachineDeployment {machine_deployment}: annotation {CLAIMS_ANNOTATION}: {reason}")]
pub struct LedgerError {
    /// `namespace/name`.
    pub machine_deployment: String,
    /// What is wrong.
    pub reason: String,
}

/// One NodeClaim the MachineDeployment was scaled up for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When (our clock) the MachineDeployment was scaled up for it.
    pub since: Timestamp,
    /// The Machine it took, once it took one.
    pub machine: Option<String>,
}

/// [`CLAIMS_ANNOTATION`] read: NodeClaim name → entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ledger(pub BTreeMap<String, Entry>);

fn md_key(md: &DynamicObject) -> String {
    format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any())
}

impl Ledger {
    /// The MachineDeployment's ledger (empty without the annotation).
    pub fn read(md: &DynamicObject) -> Result<Ledger, LedgerError> {
        let err = |reason: String| LedgerError {
            machine_deployment: md_key(md),
            reason,
        };
        let Some(text) = md.annotations().get(CLAIMS_ANNOTATION) else {
            return Ok(Ledger::default());
        };
        let value: Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let map = value
            .as_object()
            .ok_or_else(|| err("not a JSON object".into()))?;
        let mut out = BTreeMap::new();
        for (claim, e) in map {
            let since = e
                .get("since")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Timestamp>().ok())
                .ok_or_else(|| err(format!("{claim}: no readable \"since\" time")))?;
            let machine = e.get("machine").and_then(Value::as_str).map(str::to_string);
            out.insert(claim.clone(), Entry { since, machine });
        }
        Ok(Ledger(out))
    }

    /// The annotation's value.
    pub fn to_annotation(&self) -> String {
        let map: serde_json::Map<String, Value> = self
            .0
            .iter()
            .map(|(claim, e)| {
                let mut v = json!({"since": e.since.to_string()});
                if let Some(m) = &e.machine {
                    v["machine"] = json!(m);
                }
                (claim.clone(), v)
            })
            .collect();
        Value::Object(map).to_string()
    }
}

/// `spec.replicas` (0 when unset).
pub fn replicas(md: &DynamicObject) -> i64 {
    md.data
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// A merge patch writing `ledger` and `replicas`, applied only if the MachineDeployment is
/// still at the resourceVersion it was read at (else the API server answers 409 Conflict).
fn conditioned(md: &DynamicObject, ledger: &Ledger, replicas: i64) -> Value {
    json!({
        "metadata": {
            "resourceVersion": md.resource_version(),
            "annotations": {CLAIMS_ANNOTATION: ledger.to_annotation()},
        },
        "spec": {"replicas": replicas},
    })
}

/// What a launch does to a MachineDeployment in scale mode.
#[derive(Debug, Clone, PartialEq)]
pub enum ScaleUp {
    /// Scaled up for this NodeClaim before (an earlier attempt, maybe by a controller that
    /// crashed since): nothing to write.
    Done(Entry),
    /// At its max size: `spec.replicas` may not grow.
    AtMaxSize {
        /// `spec.replicas`.
        size: i64,
        /// The max size.
        max: i64,
    },
    /// The conditioned merge patch raising `spec.replicas` by one and recording the NodeClaim.
    Patch(Value),
}

/// Plans the scale-up of `md` (as just read) for NodeClaim `claim` at `now`.
pub fn scale_up(
    md: &DynamicObject,
    claim: &str,
    now: Timestamp,
    max_size: Option<i64>,
) -> Result<ScaleUp, LedgerError> {
    let mut ledger = Ledger::read(md)?;
    if let Some(e) = ledger.0.get(claim) {
        return Ok(ScaleUp::Done(e.clone()));
    }
    let size = replicas(md);
    if let Some(max) = max_size
        && size >= max
    {
        return Ok(ScaleUp::AtMaxSize { size, max });
    }
    ledger.0.insert(
        claim.to_string(),
        Entry {
            since: now,
            machine: None,
        },
    );
    Ok(ScaleUp::Patch(conditioned(md, &ledger, size + 1)))
}

/// The conditioned patch recording that `claim` took `machine` (`None` when the ledger says so
/// already, or no longer holds the NodeClaim).
pub fn record_machine(
    md: &DynamicObject,
    claim: &str,
    machine: &str,
) -> Result<Option<Value>, LedgerError> {
    let mut ledger = Ledger::read(md)?;
    let Some(e) = ledger.0.get_mut(claim) else {
        return Ok(None);
    };
    if e.machine.as_deref() == Some(machine) {
        return Ok(None);
    }
    e.machine = Some(machine.to_string());
    Ok(Some(conditioned(md, &ledger, replicas(md))))
}

/// The conditioned patch releasing `claim`: its entry removed and `spec.replicas` one lower
/// (`None` when it was released before: a retried delete never scales down twice).
pub fn release(md: &DynamicObject, claim: &str) -> Result<Option<Value>, LedgerError> {
    let mut ledger = Ledger::read(md)?;
    if ledger.0.remove(claim).is_none() {
        return Ok(None);
    }
    Ok(Some(conditioned(md, &ledger, (replicas(md) - 1).max(0))))
}

/// The NodeClaim a Machine was taken for, in scale mode.
pub fn claim_of(machine: &DynamicObject) -> Option<&str> {
    machine
        .annotations()
        .get(NODE_CLAIM_ANNOTATION)
        .map(String::as_str)
}

/// The NodeClaim a Machine of ours serves: the one that took it (scale mode), else the one it
/// is named after (machine mode).
pub fn node_claim_name(machine: &DynamicObject) -> String {
    claim_of(machine).map_or_else(|| machine.name_any(), str::to_string)
}

/// Whether a Machine is on its way out: deleting, or marked for the MachineSet to delete.
pub fn leaving(machine: &DynamicObject) -> bool {
    machine.metadata.deletion_timestamp.is_some()
        || machine
            .annotations()
            .contains_key(DELETE_MACHINE_ANNOTATION)
}

/// Which Machine of the MachineDeployment named `md_name` a NodeClaim has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick<'a> {
    /// It took this one before.
    Taken(&'a DynamicObject),
    /// This one is free: take it (conditioned on its resourceVersion).
    Free(&'a DynamicObject),
    /// None yet: the MachineSet has not created it.
    Nothing,
}

/// The Machine NodeClaim `claim`, for which `md_name` was scaled up at `since`, has or may
/// take, among `machines` (those of the MachineDeployment's namespace; see the module docs).
pub fn pick<'a>(
    machines: &'a [DynamicObject],
    md_name: &str,
    claim: &str,
    since: Timestamp,
) -> Pick<'a> {
    if let Some(m) = machines
        .iter()
        .find(|m| claim_of(m) == Some(claim) && m.metadata.deletion_timestamp.is_none())
    {
        return Pick::Taken(m);
    }
    let not_before = since.checked_sub(CLOCK_SKEW).unwrap_or(since);
    machines
        .iter()
        .filter(|m| m.labels().get(DEPLOYMENT_NAME_LABEL).map(String::as_str) == Some(md_name))
        .filter(|m| claim_of(m).is_none() && !leaving(m))
        .filter_map(|m| {
            let created = m.metadata.creation_timestamp.as_ref()?.0;
            (created >= not_before).then_some((created, m.name_any(), m))
        })
        .min_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
        .map_or(Pick::Nothing, |(_, _, m)| Pick::Free(m))
}

/// The patch taking `machine` for `claim` (NodePool `pool`) from MachineDeployment `md_name`,
/// conditioned on the Machine's resourceVersion: it also gets our MachineDeployment label, so
/// listing, lookups by providerID and garbage collection find it like any Machine of ours.
pub fn take(machine: &DynamicObject, claim: &str, md_name: &str, pool: &str) -> Value {
    json!({"metadata": {
        "resourceVersion": machine.resource_version(),
        "annotations": {NODE_CLAIM_ANNOTATION: claim},
        "labels": {MACHINE_DEPLOYMENT_LABEL: md_name, NODE_POOL_LABEL: pool},
    }})
}

/// The patch marking `machine` for its MachineSet to delete first, conditioned on its
/// resourceVersion (a spare Machine another NodeClaim takes meanwhile is not marked).
pub fn mark(machine: &DynamicObject) -> Value {
    json!({"metadata": {
        "resourceVersion": machine.resource_version(),
        "annotations": {DELETE_MACHINE_ANNOTATION: "true"},
    }})
}

/// Machines of MachineDeployment `md_name` marked for deletion that their MachineSet has not
/// started deleting: while there are any, a scale-up waits, or the MachineSet could see the
/// lowered and the raised replica count as no change at all and keep the marked Machine, while
/// the NodeClaim waits for a Machine that never comes.
pub fn marked_not_deleting<'a>(
    machines: &'a [DynamicObject],
    md_name: &str,
) -> impl Iterator<Item = &'a DynamicObject> {
    machines.iter().filter(move |m| {
        m.labels().get(DEPLOYMENT_NAME_LABEL).map(String::as_str) == Some(md_name)
            && m.metadata.deletion_timestamp.is_none()
            && m.annotations().contains_key(DELETE_MACHINE_ANNOTATION)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn md(replicas: i64, ledger: Option<&str>) -> DynamicObject {
        let mut annotations = serde_json::Map::new();
        if let Some(l) = ledger {
            annotations.insert(CLAIMS_ANNOTATION.into(), json!(l));
        }
        serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
            "metadata": {"name": "md", "namespace": "ns", "resourceVersion": "41",
                         "annotations": annotations},
            "spec": {"replicas": replicas}
        }))
        .unwrap()
    }

    fn machine(name: &str, md: &str, created: &str) -> DynamicObject {
        let mut m: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7",
                         "labels": {DEPLOYMENT_NAME_LABEL: md}},
            "spec": {}
        }))
        .unwrap();
        m.metadata.creation_timestamp = Some(Time(t(created)));
        m
    }

    /// Applies a merge patch the way the API server would (objects merge, the rest replaces).
    fn apply(md: &DynamicObject, patch: &Value) -> DynamicObject {
        fn merge(into: &mut Value, patch: &Value) {
            match (into, patch) {
                (Value::Object(a), Value::Object(p)) => {
                    for (k, v) in p {
                        merge(a.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
                (slot, p) => *slot = p.clone(),
            }
        }
        let mut v = serde_json::to_value(md).unwrap();
        merge(&mut v, patch);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn scale_up_raises_replicas_and_records_the_claim_in_one_conditioned_write() {
        let now = t("2026-01-01T00:00:00Z");
        let before = md(2, None);
        let ScaleUp::Patch(p) = scale_up(&before, "c1", now, Some(5)).unwrap() else {
            panic!("a patch expected")
        };
        assert_eq!(p["metadata"]["resourceVersion"], "41", "conditioned");
        assert_eq!(p["spec"]["replicas"], 3);
        let after = apply(&before, &p);
        let ledger = Ledger::read(&after).unwrap();
        assert_eq!(
            ledger.0["c1"],
            Entry {
                since: now,
                machine: None
            }
        );
        // The retry (or the restarted controller) finds its entry: never a second scale-up.
        let later = t("2026-01-01T00:05:00Z");
        assert_eq!(
            scale_up(&after, "c1", later, Some(5)).unwrap(),
            ScaleUp::Done(ledger.0["c1"].clone())
        );
        // Another NodeClaim scales once more, keeping c1's entry.
        let ScaleUp::Patch(p2) = scale_up(&after, "c2", later, Some(5)).unwrap() else {
            panic!()
        };
        let both = apply(&after, &p2);
        assert_eq!(replicas(&both), 4);
        assert_eq!(
            Ledger::read(&both).unwrap().0.keys().collect::<Vec<_>>(),
            ["c1", "c2"]
        );
    }

    #[test]
    fn scale_up_stops_at_max_size() {
        let now = t("2026-01-01T00:00:00Z");
        assert_eq!(
            scale_up(&md(3, None), "c1", now, Some(3)).unwrap(),
            ScaleUp::AtMaxSize { size: 3, max: 3 }
        );
        assert!(matches!(
            scale_up(&md(2, None), "c1", now, Some(3)).unwrap(),
            ScaleUp::Patch(_)
        ));
        assert!(matches!(
            scale_up(&md(100, None), "c1", now, None).unwrap(),
            ScaleUp::Patch(_)
        ));
    }

    #[test]
    fn release_lowers_replicas_once() {
        let now = t("2026-01-01T00:00:00Z");
        let start = md(1, None);
        let ScaleUp::Patch(p) = scale_up(&start, "c1", now, None).unwrap() else {
            panic!()
        };
        let scaled = apply(&start, &p);
        let recorded = apply(
            &scaled,
            &record_machine(&scaled, "c1", "md-abc").unwrap().unwrap(),
        );
        assert_eq!(
            Ledger::read(&recorded).unwrap().0["c1"].machine.as_deref(),
            Some("md-abc")
        );
        assert_eq!(record_machine(&recorded, "c1", "md-abc").unwrap(), None);
        let r = release(&recorded, "c1").unwrap().unwrap();
        assert_eq!(r["metadata"]["resourceVersion"], "41");
        let released = apply(&recorded, &r);
        assert_eq!(replicas(&released), 1, "back to the user's one replica");
        assert!(Ledger::read(&released).unwrap().0.is_empty());
        assert_eq!(release(&released, "c1").unwrap(), None, "released once");
        assert_eq!(
            release(&md(0, Some("{}")), "c1").unwrap(),
            None,
            "never below zero, never for a stranger"
        );
    }

    #[test]
    fn an_unreadable_ledger_is_an_error_naming_it() {
        for bad in ["not json", "[]", r#"{"c1": {"since": "yesterday"}}"#] {
            let e = Ledger::read(&md(1, Some(bad))).unwrap_err();
            assert!(
                e.to_string().contains("ns/md") && e.to_string().contains(CLAIMS_ANNOTATION),
                "{e}"
            );
        }
    }

    #[test]
    fn pick_takes_the_oldest_free_machine_created_after_the_scale_up() {
        let since = t("2026-01-01T00:10:00Z");
        let machines = vec![
            // The user's replica, long before: never taken.
            machine("md-old", "md", "2026-01-01T00:00:00Z"),
            machine("md-b", "md", "2026-01-01T00:10:02Z"),
            machine("md-a", "md", "2026-01-01T00:10:01Z"),
            // Within the clock skew allowance before the scale-up.
            machine("md-skew", "md", "2026-01-01T00:09:45Z"),
            machine("other-x", "other", "2026-01-01T00:10:00Z"),
        ];
        let Pick::Free(m) = pick(&machines, "md", "c1", since) else {
            panic!()
        };
        assert_eq!(m.name_any(), "md-skew");
        let only_after = &machines[..3];
        let Pick::Free(m) = pick(only_after, "md", "c1", since) else {
            panic!()
        };
        assert_eq!(m.name_any(), "md-a", "the oldest of md-a and md-b");
        assert_eq!(pick(&machines[..1], "md", "c1", since), Pick::Nothing);
        assert_eq!(
            pick(&machines[4..], "md", "c1", since),
            Pick::Nothing,
            "another MachineDeployment's Machine"
        );
    }

    #[test]
    fn pick_skips_taken_and_leaving_machines_and_finds_its_own() {
        let since = t("2026-01-01T00:10:00Z");
        let mut taken = machine("md-a", "md", "2026-01-01T00:10:01Z");
        taken
            .annotations_mut()
            .insert(NODE_CLAIM_ANNOTATION.into(), "c0".into());
        let mut marked = machine("md-b", "md", "2026-01-01T00:10:02Z");
        marked
            .annotations_mut()
            .insert(DELETE_MACHINE_ANNOTATION.into(), String::new());
        let free = machine("md-c", "md", "2026-01-01T00:10:03Z");
        let machines = vec![taken, marked, free];
        let Pick::Free(m) = pick(&machines, "md", "c1", since) else {
            panic!()
        };
        assert_eq!(m.name_any(), "md-c");
        // c0 finds the Machine it took (a restarted controller adopts it).
        let Pick::Taken(m) = pick(&machines, "md", "c0", since) else {
            panic!()
        };
        assert_eq!(m.name_any(), "md-a");
        let m = mark(&machines[2]);
        assert_eq!(m["metadata"]["resourceVersion"], "7", "conditioned");
        assert_eq!(
            m["metadata"]["annotations"][DELETE_MACHINE_ANNOTATION],
            "true"
        );
        assert_eq!(
            marked_not_deleting(&machines, "md")
                .map(|m| m.name_any())
                .collect::<Vec<_>>(),
            ["md-b"]
        );
    }

    #[test]
    fn two_claims_racing_each_get_a_machine() {
        // c1 scaled at :00, c2 at :20; the MachineSet made m1 at :01 and m2 at :21. Whichever
        // looks first, each ends with its own Machine: c2 may not take m1 (older than its
        // scale-up beyond the skew), and c1 takes the oldest, m1.
        let (s1, s2) = (t("2026-01-01T00:10:00Z"), t("2026-01-01T00:11:20Z"));
        let mut machines = vec![
            machine("m1", "md", "2026-01-01T00:10:01Z"),
            machine("m2", "md", "2026-01-01T00:11:21Z"),
        ];
        let Pick::Free(m) = pick(&machines, "md", "c2", s2) else {
            panic!()
        };
        assert_eq!(m.name_any(), "m2");
        let p = take(m, "c2", "md", "pool");
        assert_eq!(p["metadata"]["resourceVersion"], "7", "conditioned");
        assert_eq!(p["metadata"]["labels"][MACHINE_DEPLOYMENT_LABEL], "md");
        machines[1] = apply(&machines[1], &p);
        assert_eq!(claim_of(&machines[1]), Some("c2"));
        let Pick::Free(m) = pick(&machines, "md", "c1", s1) else {
            panic!()
        };
        assert_eq!(m.name_any(), "m1");
        // The other order: c1 takes m1 (the oldest), leaving m2 for c2.
        let fresh = vec![
            machine("m1", "md", "2026-01-01T00:10:01Z"),
            machine("m2", "md", "2026-01-01T00:11:21Z"),
        ];
        let Pick::Free(m) = pick(&fresh, "md", "c1", s1) else {
            panic!()
        };
        assert_eq!(m.name_any(), "m1");
    }
}
