//! `karpenter convert`: legacy `karpenter.sh/v1alpha5` Provisioners in, `karpenter.sh/v1`
//! NodePools (and EC2NodeClasses for inline providers) out. Other documents pass through
//! unchanged, so a whole manifest directory can be converted in one go.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use karpenter_api::read::{KarpenterObject, object_from_value, yaml_documents};
use serde_json::Value;

/// Reads every input, converts, and prints the result as multi-document YAML. Nothing is
/// printed unless every document converts.
pub fn run(files: &[PathBuf]) -> Result<()> {
    let mut out = String::new();
    for input in expand(files)? {
        let (label, text) = read_input(&input)?;
        for doc in convert_stream(&text).with_context(|| label.clone())? {
            out.push_str("---\n");
            out.push_str(&serde_saphyr::to_string(&doc).context("serializing output")?);
        }
    }
    crate::crds::write_stdout(&out)
}

/// Converts one multi-document YAML text; errors name the document index, the object and the
/// field.
pub fn convert_stream(text: &str) -> Result<Vec<Value>> {
    let mut bytes = text.as_bytes();
    let docs = yaml_documents::<_, Value>(&mut bytes).filter(|d| !matches!(d, Ok(Value::Null)));
    let mut out = Vec::new();
    for (index, doc) in docs.enumerate() {
        let doc = doc.context("invalid YAML")?;
        let object = object_from_value(doc.clone()).with_context(|| format!("document {index}"))?;
        match object {
            Some(KarpenterObject::Provisioner(p)) => {
                let converted = p.convert().with_context(|| format!("document {index}"))?;
                if let Some(nc) = converted.node_class {
                    out.push(serde_json::to_value(nc)?);
                }
                out.push(serde_json::to_value(converted.node_pool)?);
            }
            _ => out.push(doc),
        }
    }
    Ok(out)
}

fn expand(files: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for f in files {
        if f.as_os_str() == "-" || !f.is_dir() {
            out.push(f.clone());
            continue;
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(f)
            .with_context(|| format!("reading directory {}", f.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            })
            .collect();
        entries.sort();
        if entries.is_empty() {
            bail!("{}: no .yaml, .yml or .json files", f.display());
        }
        out.extend(entries);
    }
    Ok(out)
}

fn read_input(path: &Path) -> Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(("<stdin>".to_owned(), text));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY: &str = include_str!("../../../examples/legacy/provisioner.yaml");

    #[test]
    fn converts_provisioners_and_passes_other_documents_through() {
        let text =
            format!("{LEGACY}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n");
        let out = convert_stream(&text).expect("converts");
        let kinds: Vec<&str> = out.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["EC2NodeClass", "NodePool", "NodePool", "ConfigMap"]);
        assert_eq!(out[1]["apiVersion"], "karpenter.sh/v1");
        assert_eq!(out[1]["spec"]["template"]["spec"]["expireAfter"], "Never");
    }

    #[test]
    fn a_bad_document_is_named_by_index_object_and_field() {
        let text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n{}",
            LEGACY.replace(
                "ttlSecondsAfterEmpty: 30",
                "ttlSecondsAfterEmpty: 30\n  weight: 0"
            )
        );
        let err = convert_stream(&text).expect_err("weight 0 is invalid");
        let msg = format!("{err:#}");
        assert!(msg.contains("document 1"), "{msg}");
        assert!(
            msg.contains("Provisioner \"default\": spec.weight"),
            "{msg}"
        );
    }
}
