//! Disruption commands from the controller's JSON log: each command logs one `disrupting`
//! line with the Debug list of its nodes (crates/controller/src/disruption/command.rs).

use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::path::Path;

use anyhow::{Context as _, Result};

/// The log's current length: where a phase's lines start.
pub fn offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// (reason, node count) of every command started after byte `from`.
pub fn commands_since(path: &Path, from: u64) -> Result<Vec<(String, usize)>> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(from))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        if !line.contains("\"disrupting\"") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v.get("message").and_then(|m| m.as_str()) != Some("disrupting") {
            continue;
        }
        let reason = v
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .to_string();
        let nodes = v.get("nodes").map(count_nodes).unwrap_or(0);
        out.push((reason, nodes));
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
}
