//! Bottlerocket: its settings are TOML. Ours go into `[settings.kubernetes]` of the user's
//! document; the user's other keys are kept, except the ones the node must have from us
//! (cluster, endpoint, CA, max pods, registration taint).

use std::collections::BTreeMap;

use super::{NodeBootstrap, UserDataError};

/// A TOML value, tables sorted by key so the output is deterministic.
#[derive(Debug, Clone, PartialEq)]
pub enum Toml {
    /// String.
    Str(String),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// Date-time, as written.
    Datetime(String),
    /// Array.
    Array(Vec<Toml>),
    /// Table.
    Table(BTreeMap<String, Toml>),
}

/// Parses a TOML document into a [`Toml::Table`].
pub fn parse(text: &str) -> Result<BTreeMap<String, Toml>, UserDataError> {
    let doc = toml_edit::Document::parse(text).map_err(|e| UserDataError::Toml(e.to_string()))?;
    Ok(from_table(doc.as_table()))
}

fn from_table(t: &toml_edit::Table) -> BTreeMap<String, Toml> {
    let mut out = BTreeMap::new();
    for (k, item) in t.iter() {
        let v = match item {
            toml_edit::Item::None => continue,
            toml_edit::Item::Value(v) => from_value(v),
            toml_edit::Item::Table(t) => Toml::Table(from_table(t)),
            toml_edit::Item::ArrayOfTables(a) => {
                Toml::Array(a.iter().map(|t| Toml::Table(from_table(t))).collect())
            }
        };
        out.insert(k.to_owned(), v);
    }
    out
}

fn from_value(v: &toml_edit::Value) -> Toml {
    match v {
        toml_edit::Value::String(s) => Toml::Str(s.value().clone()),
        toml_edit::Value::Integer(i) => Toml::Int(*i.value()),
        toml_edit::Value::Float(f) => Toml::Float(*f.value()),
        toml_edit::Value::Boolean(b) => Toml::Bool(*b.value()),
        toml_edit::Value::Datetime(d) => Toml::Datetime(d.value().to_string()),
        toml_edit::Value::Array(a) => Toml::Array(a.iter().map(from_value).collect()),
        toml_edit::Value::InlineTable(t) => Toml::Table(
            t.iter()
                .map(|(k, v)| (k.to_owned(), from_value(v)))
                .collect(),
        ),
    }
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare { k.to_owned() } else { quote(k) }
}

fn inline(v: &Toml) -> String {
    match v {
        Toml::Str(s) => quote(s),
        Toml::Int(i) => i.to_string(),
        Toml::Float(f) if f.is_nan() => "nan".to_owned(),
        Toml::Float(f) if f.is_infinite() => if *f > 0.0 { "inf" } else { "-inf" }.to_owned(),
        // `{:?}` always has a `.` or an exponent, which TOML needs to read a float back.
        Toml::Float(f) => format!("{f:?}"),
        Toml::Bool(b) => b.to_string(),
        Toml::Datetime(d) => d.clone(),
        Toml::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        Toml::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{} = {}", key(k), inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Writes a table as a TOML document: plain keys first, then one `[header]` per sub-table.
pub fn write(root: &BTreeMap<String, Toml>) -> String {
    let mut out = String::new();
    write_table(&mut out, &mut Vec::new(), root);
    out
}

fn write_table(out: &mut String, path: &mut Vec<String>, t: &BTreeMap<String, Toml>) {
    let (tables, values): (Vec<_>, Vec<_>) =
        t.iter().partition(|(_, v)| matches!(v, Toml::Table(_)));
    if !path.is_empty() && (!values.is_empty() || tables.is_empty()) {
        let header: Vec<String> = path.iter().map(|k| key(k)).collect();
        out.push_str(&format!("[{}]\n", header.join(".")));
    }
    for (k, v) in &values {
        out.push_str(&format!("{} = {}\n", key(k), inline(v)));
    }
    for (k, v) in tables {
        if let Toml::Table(sub) = v {
            path.push(k.clone());
            write_table(out, path, sub);
            path.pop();
        }
    }
}

/// The table at `path` under `root`, created when missing; an error when a non-table is there.
fn table_at<'a>(
    root: &'a mut BTreeMap<String, Toml>,
    path: &[&str],
) -> Result<&'a mut BTreeMap<String, Toml>, UserDataError> {
    let mut t = root;
    for (i, k) in path.iter().enumerate() {
        let entry = t
            .entry((*k).to_owned())
            .or_insert_with(|| Toml::Table(BTreeMap::new()));
        t = match entry {
            Toml::Table(sub) => sub,
            _ => {
                return Err(UserDataError::Toml(format!(
                    "{} must be a table",
                    path[..=i].join(".")
                )));
            }
        };
    }
    Ok(t)
}

fn merge_map(
    k8s: &mut BTreeMap<String, Toml>,
    name: &str,
    ours: &BTreeMap<String, String>,
) -> Result<(), UserDataError> {
    if ours.is_empty() {
        return Ok(());
    }
    let t = table_at(k8s, &[name])?;
    for (k, v) in ours {
        t.insert(k.clone(), Toml::Str(v.clone()));
    }
    Ok(())
}

/// The settings document: the user's TOML with ours merged into `[settings.kubernetes]`.
pub fn render(b: &NodeBootstrap<'_>) -> Result<String, UserDataError> {
    let mut root = match b.user_data.filter(|d| !d.trim().is_empty()) {
        Some(d) => parse(d)?,
        None => BTreeMap::new(),
    };
    let k8s = table_at(&mut root, &["settings", "kubernetes"])?;
    let c = b.cluster;
    k8s.insert("cluster-name".into(), Toml::Str(c.name.clone()));
    k8s.insert("api-server".into(), Toml::Str(c.endpoint.clone()));
    k8s.insert("cluster-certificate".into(), Toml::Str(c.ca_bundle.clone()));
    let k = &b.kubelet;
    if let Some(n) = k.max_pods {
        k8s.insert("max-pods".into(), Toml::Int(n));
    }
    match k.cluster_dns.as_slice() {
        [] => {}
        [one] => {
            k8s.insert("cluster-dns-ip".into(), Toml::Str(one.clone()));
        }
        many => {
            let ips = many.iter().cloned().map(Toml::Str).collect();
            k8s.insert("cluster-dns-ip".into(), Toml::Array(ips));
        }
    }
    let labels: BTreeMap<String, String> = b
        .node_labels()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    merge_map(k8s, "node-labels", &labels)?;
    merge_map(k8s, "kube-reserved", &k.kube_reserved)?;
    merge_map(k8s, "system-reserved", &k.system_reserved)?;
    merge_map(k8s, "eviction-hard", &k.eviction_hard)?;
    merge_map(k8s, "eviction-soft", &k.eviction_soft)?;
    // Bottlerocket's taints: key → ["value:Effect", ...]; the user's entries stay.
    let taints = table_at(k8s, &["node-taints"])?;
    for t in b.register_taints() {
        let entry = format!("{}:{}", t.value.unwrap_or_default(), t.effect);
        let list = taints
            .entry(t.key)
            .or_insert_with(|| Toml::Array(Vec::new()));
        match list {
            Toml::Array(a) if !a.contains(&Toml::Str(entry.clone())) => a.push(Toml::Str(entry)),
            Toml::Array(_) => {}
            other => *other = Toml::Array(vec![Toml::Str(entry)]),
        }
    }
    Ok(write(&root))
}

#[cfg(test)]
mod tests {
    use super::super::ImageFamily;
    use super::super::tests::{bootstrap, cluster};
    use super::*;

    fn get<'a>(t: &'a BTreeMap<String, Toml>, path: &[&str]) -> Option<&'a Toml> {
        let (last, init) = path.split_last()?;
        let mut cur = t;
        for k in init {
            match cur.get(*k)? {
                Toml::Table(sub) => cur = sub,
                _ => return None,
            }
        }
        cur.get(*last)
    }

    #[test]
    fn settings_merge_into_the_users_toml() -> Result<(), UserDataError> {
        let c = cluster();
        let user = "[settings.kubernetes]\ncluster-name = \"spoofed\"\nimage-gc-high-threshold-percent = 85\n\
                    [settings.kubernetes.node-labels]\nmine = \"yes\"\n\
                    [settings.kubernetes.node-taints]\ngpu = [\"false:NoExecute\"]\n\
                    [settings.host-containers.admin]\nenabled = true\n\
                    [[settings.bootstrap-containers.list]]\nname = \"a b\"\n";
        let b = bootstrap(&c, ImageFamily::Bottlerocket, Some(user));
        let out = b.render()?;
        // What we wrote parses back as TOML.
        let back = parse(&out)?;
        let k = |p: &[&str]| {
            let mut full = vec!["settings", "kubernetes"];
            full.extend_from_slice(p);
            get(&back, &full).cloned()
        };
        assert_eq!(k(&["cluster-name"]), Some(Toml::Str("demo".into())));
        assert_eq!(
            k(&["api-server"]),
            Some(Toml::Str("https://api.demo.example:443".into()))
        );
        assert_eq!(
            k(&["cluster-certificate"]),
            Some(Toml::Str(c.ca_bundle.clone()))
        );
        assert_eq!(k(&["max-pods"]), Some(Toml::Int(29)));
        assert_eq!(
            k(&["cluster-dns-ip"]),
            Some(Toml::Str("10.100.0.10".into()))
        );
        assert_eq!(k(&["image-gc-high-threshold-percent"]), Some(Toml::Int(85)));
        assert_eq!(k(&["node-labels", "mine"]), Some(Toml::Str("yes".into())));
        assert_eq!(k(&["node-labels", "team"]), Some(Toml::Str("a".into())));
        assert_eq!(
            k(&["node-labels", "karpenter.sh/nodepool"]),
            Some(Toml::Str("default".into()))
        );
        assert_eq!(
            k(&["node-taints", "gpu"]),
            Some(Toml::Array(vec![
                Toml::Str("false:NoExecute".into()),
                Toml::Str("true:NoSchedule".into())
            ]))
        );
        assert_eq!(
            k(&["node-taints", "karpenter.sh/unregistered"]),
            Some(Toml::Array(vec![Toml::Str(":NoExecute".into())]))
        );
        assert_eq!(
            k(&["eviction-hard", "memory.available"]),
            Some(Toml::Str("5%".into()))
        );
        assert_eq!(
            get(&back, &["settings", "host-containers", "admin", "enabled"]),
            Some(&Toml::Bool(true))
        );
        assert!(out.contains("[settings.kubernetes.node-labels]\n"), "{out}");
        assert_eq!(b.render()?, out, "deterministic");
        Ok(())
    }

    #[test]
    fn broken_user_toml_is_an_error() {
        let c = cluster();
        let b = bootstrap(&c, ImageFamily::Bottlerocket, Some("[settings\n"));
        assert!(matches!(b.render(), Err(UserDataError::Toml(_))));
        let b = bootstrap(&c, ImageFamily::Bottlerocket, Some("settings = 1\n"));
        assert!(matches!(b.render(), Err(UserDataError::Toml(m)) if m.contains("settings")));
    }
}
