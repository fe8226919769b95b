//! The controller's JSON log: disruption commands (each logs one `disrupting` line with the
//! Debug list of its nodes, crates/controller/src/disruption/command.rs) and the NodeClaims
//! provisioning launched (one `created nodeclaim` line each, with the pods it was planned for,
//! crates/controller/src/provisioning/mod.rs; disruption replacements do not log that line).

use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::path::Path;

use anyhow::{Context as _, Result};

/// The log's current length: where a phase's lines start.
pub fn offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// (reason, node count) of every command started after byte `from`.
pub fn commands_since(path: &Path, from: u64) -> Result<Vec<(String, usize)>> {
    lines_since(path, from, "disrupting", |v| {
        let reason = v
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .to_string();
        (reason, v.get("nodes").map(count_nodes).unwrap_or(0))
    })
}

/// The pods each NodeClaim launched by a provisioning round after byte `from` was planned for.
pub fn provisioning_launches_since(path: &Path, from: u64) -> Result<Vec<usize>> {
    lines_since(path, from, "created nodeclaim", |v| {
        v.get("pods")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    })
}

/// `read` of every JSON line after byte `from` whose message is `message`.
fn lines_since<T>(
    path: &Path,
    from: u64,
    message: &str,
    read: impl Fn(&serde_json::Value) -> T,
) -> Result<Vec<T>> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(from))?;
    let quoted = format!("\"{message}\"");
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        if !line.contains(&quoted) {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v.get("message").and_then(|m| m.as_str()) == Some(message) {
            out.push(read(&v));
        }
    }
    Ok(out)
}

/// `["a", "b"]` (a Debug string) or a JSON array.
fn count_nodes(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => a.len(),
        serde_json::Value::String(s) => s.matches('"').count() / 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_commands() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("perf-logscan-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("c.log");
        std::fs::write(
            &p,
            "{\"message\":\"started\"}\n\
             {\"message\":\"disrupting\",\"reason\":\"underutilized\",\"nodes\":\"[\\\"a\\\", \\\"b\\\"]\"}\n\
             {\"message\":\"disrupting\",\"reason\":\"empty\",\"nodes\":\"[\\\"c\\\"]\"}\n",
        )?;
        let got = commands_since(&p, 0)?;
        assert_eq!(got, vec![("underutilized".into(), 2), ("empty".into(), 1)]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn reads_provisioning_launches_after_the_offset() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("perf-logscan-nc-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join("c.log");
        let before = "{\"message\":\"created nodeclaim\",\"NodeClaim\":\"old\",\"pods\":9}\n";
        std::fs::write(
            &p,
            format!(
                "{before}\
                 {{\"message\":\"created nodeclaim\",\"NodeClaim\":\"a\",\"pods\":3}}\n\
                 {{\"message\":\"disrupting\",\"reason\":\"underutilized\",\"nodes\":\"[]\"}}\n\
                 {{\"message\":\"created nodeclaim\",\"NodeClaim\":\"b\",\"pods\":26}}\n"
            ),
        )?;
        let got = provisioning_launches_since(&p, before.len() as u64)?;
        assert_eq!(got, vec![3, 26]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
