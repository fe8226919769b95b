//! `karpenter simulate -o html` in a real headless browser (Debian's chromium, installed by
//! `hack/install-deps.sh`; `CHROMIUM=path` picks another). For each input the binary runs twice,
//! `-o json` and `-o html`, and chromium loads the page from a file with the network off:
//!
//! - it renders without console messages: the page has no script, so any `CONSOLE` line on
//!   chromium's stderr (`--enable-logging=stderr`) is an error, a blocked fetch or an injected
//!   script refused by the page's Content-Security-Policy;
//! - every figure in the rendered DOM marked `data-json="<JSON pointer>"` equals the JSON
//!   output's value there (numbers exactly, text exactly), the key figures are all present,
//!   the cost per NodePool is the sum of the JSON's prices, and the chart bars count the JSON's
//!   nodes per utilisation bucket;
//! - text from the input (a pod named `<script>...`) is shown as text;
//! - a screenshot is written under `$CARGO_TARGET_TMPDIR/simulate-html/` (path printed).
//!
//! Without chromium the test prints SKIPPED, except under `CI=true`, where it fails.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use karpenter_testkit::control_plane_required as ci;
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium, or `None` (reported) when it is absent and skipping is allowed.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into()));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !ci(),
        "no chromium at {} (CHROMIUM), and CI=true forbids skipping: run hack/install-deps.sh",
        path.display()
    );
    eprintln!(
        "\n******** SKIPPED: no chromium at {} (run hack/install-deps.sh, or set CHROMIUM) ********\n",
        path.display()
    );
    None
}

fn out_dir() -> Result<PathBuf, std::io::Error> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("simulate-html");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// What chromium made of a page.
struct Rendered {
    dom: String,
    console: Vec<String>,
    screenshot: PathBuf,
}

/// Loads `page` headless, offline, in a fresh profile: the DOM after load, the console lines,
/// and a screenshot.
fn browse(
    chromium: &Path,
    page: &Path,
    name: &str,
) -> Result<Rendered, Box<dyn std::error::Error>> {
    let dir = out_dir()?;
    let profile = dir.join(format!("{name}.profile"));
    let _ = std::fs::remove_dir_all(&profile);
    let screenshot = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&screenshot);
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            "--window-size=1280,1900",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read both pipes while it runs (a full pipe would stall it), and never wait forever.
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            return Err("chromium did not finish within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = out.join().map_err(|_| "stdout reader panicked")??;
    let log = err.join().map_err(|_| "stderr reader panicked")??;
    let _ = std::fs::remove_dir_all(&profile);
    if !status.success() {
        return Err(format!("chromium failed ({status}):\n{log}").into());
    }
    let console = log
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    Ok(Rendered {
        dom,
        console,
        screenshot,
    })
}

/// Undoes the escaping of serialised HTML text and attribute values.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// One element carrying attribute `attr`: its attributes and its text up to the next tag.
struct Marked {
    attrs: BTreeMap<String, String>,
    text: String,
}

/// Every element with attribute `attr` in serialised HTML (attributes double-quoted, as
/// chromium serialises them).
fn marked(html: &str, attr: &str) -> Vec<Marked> {
    let needle = format!(" {attr}=\"");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = html[from..].find(&needle).map(|i| i + from) {
        let start = html[..i].rfind('<').unwrap_or(0);
        let end = html[i..].find('>').map_or(html.len(), |e| i + e);
        let tag = &html[start..end];
        let mut attrs = BTreeMap::new();
        let mut rest = tag;
        while let Some(eq) = rest.find("=\"") {
            let name = rest[..eq].rsplit(' ').next().unwrap_or_default().to_owned();
            let value_end = rest[eq + 2..].find('"').map_or(rest.len(), |v| eq + 2 + v);
            attrs.insert(name, unescape(&rest[eq + 2..value_end]));
            rest = &rest[(value_end + 1).min(rest.len())..];
        }
        let after = (end + 1).min(html.len());
        let text_end = html[after..].find('<').map_or(html.len(), |t| after + t);
        found.push(Marked {
            attrs,
            text: unescape(&html[after..text_end]),
        });
        from = end;
    }
    found
}

/// Every `data-json` figure of the page equals the JSON's value at its pointer; returns the
/// pointers seen.
fn check_figures(dom: &str, json: &Value) -> Vec<String> {
    let mut seen = Vec::new();
    for m in marked(dom, "data-json") {
        let ptr = &m.attrs["data-json"];
        let expected = json
            .pointer(ptr)
            .unwrap_or_else(|| panic!("{ptr} is not in the JSON"));
        let shown = m.attrs.get("data-value").unwrap_or(&m.text);
        match expected {
            Value::Number(n) => {
                let page: f64 = shown
                    .parse()
                    .unwrap_or_else(|e| panic!("{ptr}: {shown:?} is not a number: {e}"));
                assert_eq!(Some(page), n.as_f64(), "{ptr}");
            }
            Value::String(s) => assert_eq!(shown, s, "{ptr}"),
            other => panic!("{ptr}: the page shows {shown:?} for {other}"),
        }
        seen.push(ptr.clone());
    }
    seen
}

/// The figures every page must show for this JSON.
fn required(json: &Value) -> Vec<String> {
    let mut need: Vec<String> = ["pricePerHour", "lowerBoundPerHour", "nodeClaims", "pods"]
        .iter()
        .map(|k| format!("/summary/{k}"))
        .collect();
    if !json["summary"]["costRatio"].is_null() {
        need.push("/summary/costRatio".into());
    }
    let len = |p: &str| {
        json.pointer(p)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    for i in 0..len("/nodeClaims") {
        need.push(format!("/nodeClaims/{i}/pricePerHour"));
        need.push(format!("/nodeClaims/{i}/instanceType"));
    }
    for i in 0..len("/unschedulable") {
        need.push(format!("/unschedulable/{i}/pod"));
        need.push(format!("/unschedulable/{i}/reason"));
    }
    for i in 0..len("/disruptions") {
        need.push(format!("/disruptions/{i}/reason"));
        need.push(format!("/disruptions/{i}/savingsPerHour"));
        for j in 0..len(&format!("/disruptions/{i}/nodes")) {
            need.push(format!("/disruptions/{i}/nodes/{j}"));
        }
    }
    for when in ["before", "after"] {
        for i in 0..len(&format!("/utilization/{when}")) {
            for k in [
                "cpuRequestedMillis",
                "cpuAllocatableMillis",
                "memoryRequestedBytes",
                "memoryAllocatableBytes",
            ] {
                need.push(format!("/utilization/{when}/{i}/{k}"));
            }
        }
    }
    if json.get("repack").is_some() {
        for k in ["currentPricePerHour", "pricePerHour", "lowerBoundPerHour"] {
            need.push(format!("/repack/{k}"));
        }
    }
    need
}

/// The cost per NodePool shown equals the sum of the JSON's NodeClaim prices.
fn check_cost_by_pool(dom: &str, json: &Value) {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for c in json["nodeClaims"].as_array().into_iter().flatten() {
        *sums
            .entry(c["nodePool"].as_str().unwrap_or_default().to_owned())
            .or_default() += f64_of(&c["pricePerHour"]);
    }
    let shown: BTreeMap<String, f64> = marked(dom, "data-cost-pool")
        .into_iter()
        .map(|m| {
            (
                m.attrs["data-cost-pool"].clone(),
                m.text.parse().unwrap_or(f64::NAN),
            )
        })
        .collect();
    assert_eq!(
        shown.keys().collect::<Vec<_>>(),
        sums.keys().collect::<Vec<_>>()
    );
    for (pool, sum) in &sums {
        assert!(
            (shown[pool] - sum).abs() < 1e-9,
            "{pool}: {} vs {sum}",
            shown[pool]
        );
    }
}

/// Each chart's bars count the JSON's nodes per 10 % bucket of requested / allocatable.
fn check_charts(dom: &str, json: &Value) {
    for (chart, requested, allocatable) in [
        ("cpu", "cpuRequestedMillis", "cpuAllocatableMillis"),
        ("memory", "memoryRequestedBytes", "memoryAllocatableBytes"),
    ] {
        let start = dom
            .find(&format!("data-chart=\"{chart}\""))
            .unwrap_or_else(|| panic!("no {chart} chart"));
        let end = dom[start..].find("</svg>").map_or(dom.len(), |e| start + e);
        let bars = marked(&dom[start..end], "data-bucket");
        for when in ["before", "after"] {
            let mut expected = [0u64; 10];
            for n in json["utilization"][when].as_array().into_iter().flatten() {
                let (u, a) = (f64_of(&n[requested]), f64_of(&n[allocatable]));
                let pct = if a > 0.0 {
                    100.0 * u / a
                } else if u > 0.0 {
                    100.0
                } else {
                    0.0
                };
                expected[((pct / 10.0).floor() as usize).min(9)] += 1;
            }
            let mut shown = [0u64; 10];
            for b in bars.iter().filter(|b| b.attrs["class"] == when) {
                let i: usize = b.attrs["data-bucket"].parse().unwrap_or(99);
                shown[i] = b.attrs["data-count"].parse().unwrap_or(u64::MAX);
            }
            assert_eq!(shown, expected, "{chart} {when}");
        }
    }
}

/// Runs the binary both ways on `args`/`stdin`, renders the page in chromium and checks it.
fn check(
    name: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Option<Rendered>, Box<dyn std::error::Error>> {
    let Some(chromium) = chromium() else {
        return Ok(None);
    };
    let json = common::json(args, stdin)?;
    let mut html_args = args.to_vec();
    html_args.extend(["-o", "html"]);
    let out = simulate(&html_args, stdin)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = out_dir()?.join(format!("{name}.html"));
    std::fs::write(&page, &out.stdout)?;

    let r = browse(&chromium, &page, name)?;
    assert!(
        r.console.is_empty(),
        "console messages:\n{}",
        r.console.join("\n")
    );
    assert!(
        r.dom.contains("<section id=\"summary\">"),
        "not rendered:\n{}",
        r.dom
    );
    assert!(
        !r.dom.contains("<script"),
        "the page has no script of its own"
    );
    let seen = check_figures(&r.dom, &json);
    let missing: Vec<_> = required(&json)
        .into_iter()
        .filter(|p| !seen.contains(p))
        .collect();
    assert!(missing.is_empty(), "not on the page: {missing:?}");
    check_cost_by_pool(&r.dom, &json);
    check_charts(&r.dom, &json);

    let png = std::fs::read(&r.screenshot)?;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "screenshot"
    );
    println!("screenshot: {}", r.screenshot.display());
    Ok(Some(r))
}

#[test]
fn bundled_example_renders_with_the_json_figures() -> TestResult {
    check("bundled", &[], None)?;
    Ok(())
}

#[test]
fn disruption_and_repack_render_with_the_json_figures() -> TestResult {
    let dir = repo_root()
        .join("examples/disruption")
        .display()
        .to_string();
    let Some(r) = check("disruption", &["-f", &dir, "--repack"], None)? else {
        return Ok(());
    };
    assert!(r.dom.contains("<section id=\"disruptions\">"));
    assert!(r.dom.contains("<section id=\"repack\">"));
    Ok(())
}

#[test]
fn pod_names_from_the_input_are_text() -> TestResult {
    let evil = "<script>console.error('injected')</script>";
    let input = format!(
        "{KWOK_POOL}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: \"{evil}\", namespace: \"a&b\"}}\n\
         spec:\n  containers:\n  - name: c\n    resources: {{requests: {{cpu: \"900\"}}}}\n{}",
        pod("fits-0", "1", "")
    );
    let Some(r) = check("escaping", &["-f", "-"], Some(&input))? else {
        return Ok(());
    };
    // check() compared the shown text with the JSON's; here: it is that name, as text.
    let pods: Vec<String> = marked(&r.dom, "data-json")
        .into_iter()
        .filter(|m| m.attrs["data-json"] == "/unschedulable/0/pod")
        .map(|m| m.text)
        .collect();
    assert_eq!(pods, [format!("a&b/{evil}")]);
    assert!(
        r.dom
            .contains("a&amp;b/&lt;script&gt;console.error('injected')&lt;/script&gt;")
    );
    Ok(())
}

/// The checks above can fail: a console error is seen, and a figure that differs from the
/// JSON is caught.
#[test]
fn the_checks_catch_console_errors_and_wrong_figures() -> TestResult {
    let Some(chromium) = chromium() else {
        return Ok(());
    };
    let page = out_dir()?.join("console.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><p>x</p><script>console.error('seen')</script></body></html>",
    )?;
    let r = browse(&chromium, &page, "console")?;
    assert!(
        r.console.iter().any(|l| l.contains("seen")),
        "console.error not on chromium's stderr"
    );

    let json = common::json(&[], None)?;
    let out = simulate(&["-o", "html"], None)?;
    let html = String::from_utf8(out.stdout)?;
    check_figures(&html, &json); // the page as written passes
    let price = json["summary"]["pricePerHour"].to_string();
    let wrong = html.replace(
        &format!("data-json=\"/summary/pricePerHour\">{price}<"),
        "data-json=\"/summary/pricePerHour\">0.5<",
    );
    assert_ne!(wrong, html);
    assert!(std::panic::catch_unwind(|| check_figures(&wrong, &json)).is_err());
    Ok(())
}
