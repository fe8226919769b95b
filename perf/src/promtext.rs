//! Reading counters out of the Prometheus text format: the API server's
//! `apiserver_request_total` and the controller's `karpenter_*` counters.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Sums the samples of metric `name` grouped by the value of `label` (missing label: "").
pub fn sum_by(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name{...} v` or `name v`; anything else is another metric sharing the prefix.
        let (labels, value) = match rest.chars().next() {
            Some('{') => match rest.rfind('}') {
                Some(end) => (&rest[1..end], rest[end + 1..].trim()),
                None => continue,
            },
            Some(' ') => ("", rest.trim()),
            _ => continue,
        };
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        *out.entry(label_value(labels, label).unwrap_or_default())
            .or_insert(0.0) += v;
    }
    out
}

/// The value of `key` in `a="x",b="y"` (values here never hold escaped quotes that matter).
fn label_value(labels: &str, key: &str) -> Option<String> {
    let mut rest = labels;
    while let Some(eq) = rest.find("=\"") {
        let k = rest[..eq].trim_start_matches(',').trim();
        let after = &rest[eq + 2..];
        let end = after.find('"')?;
        if k == key {
            return Some(after[..end].to_string());
        }
        rest = &after[end + 1..];
    }
    None
}

/// `after - before` per key (keys only in `after` count from 0).
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)).max(0.0) as u64,
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The API server's `/metrics` through the admin client.
pub async fn apiserver(client: &kube::Client) -> Result<String> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .context("building the /metrics request")?;
    client
        .request_text(req)
        .await
        .context("scraping the API server's /metrics")
}

/// `GET http://127.0.0.1:port/metrics` with plain HTTP/1.0 (the controller's endpoint; no
/// HTTP client crate needed for one unauthenticated GET).
pub async fn local_http(port: u16) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .context("malformed HTTP response from the metrics endpoint")?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_label() {
        let text = "# HELP x\n\
            apiserver_request_total{code=\"200\",resource=\"pods\",verb=\"GET\"} 3\n\
            apiserver_request_total{code=\"201\",resource=\"pods\",verb=\"POST\"} 2\n\
            apiserver_request_total{code=\"404\",resource=\"nodes\",verb=\"GET\"} 1\n\
            apiserver_request_total_other{verb=\"GET\"} 100\n";
        let by = sum_by(text, "apiserver_request_total", "verb");
        assert_eq!(by.get("GET"), Some(&4.0));
        assert_eq!(by.get("POST"), Some(&2.0));
        let d = delta(&BTreeMap::new(), &by);
        assert_eq!(d.get("GET"), Some(&4));
    }
}
