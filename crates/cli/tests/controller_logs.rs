//! `karpenter controller --log-format text` with its standard output in a pipe (a log
//! collector, `| tee`, a file): plain text, no ANSI colour escapes.
//!
//! The controller runs for real, against a kubeconfig whose API server is a closed port on
//! 127.0.0.1 (nothing to connect to, so it logs its start and then connection errors), and is
//! killed once it has logged that it started.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Port 1 (tcpmux) is closed on any machine that runs these tests: connections are refused at
/// once, nothing leaves the host.
const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters:
  - name: nowhere
    cluster:
      server: https://127.0.0.1:1
users:
  - name: nobody
    user:
      token: not-a-token
contexts:
  - name: nowhere
    context:
      cluster: nowhere
      user: nobody
      namespace: default
current-context: nowhere
"#;

#[test]
fn text_logs_in_a_pipe_have_no_colour_codes() -> TestResult {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("controller-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, KUBECONFIG)?;

    let mut child = Command::new(env!("CARGO_BIN_EXE_karpenter"))
        .args(["controller", "--log-format", "text"])
        // Ephemeral ports: tests run in parallel and a real controller may hold 8080/8081.
        .args(["--metrics-port", "0", "--health-probe-port", "0"])
        .arg("--disable-leader-election")
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        // A terminal-less run must not colour even when the environment asks for nothing.
        .env_remove("NO_COLOR")
        .env_remove("CLOUD_PROVIDER")
        .env_remove("LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });

    // A deadline for a hung or silent controller, not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut started = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                started = String::from_utf8_lossy(&line).contains("karpenter controller starting");
                seen.push(line);
                if started {
                    break;
                }
            }
            Err(_) => break, // deadline, or the controller exited
        }
    }
    let _ = child.kill();
    let status = child.wait()?;
    let _ = reader.join();
    // Whatever it wrote before dying counts too.
    seen.extend(rx.try_iter());
    let stderr = child
        .stderr
        .take()
        .map(|mut e| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        })
        .unwrap_or_default();
    let text: String = seen.iter().map(|l| String::from_utf8_lossy(l)).collect();
    assert!(
        started,
        "the controller never logged its start ({status}); stdout:\n{text}\nstderr:\n{stderr}"
    );
    assert!(
        !seen.iter().flatten().any(|&b| b == 0x1b),
        "ANSI escape codes in piped text logs:\n{text:?}"
    );
    // Text, not JSON, and still saying what it is.
    let start_line = text
        .lines()
        .find(|l| l.contains("karpenter controller starting"))
        .ok_or("no start line")?;
    assert!(!start_line.starts_with('{'), "{start_line}");
    assert!(start_line.contains("INFO"), "{start_line}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
