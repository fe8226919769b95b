//! The moto server the AWS provider's integration tests talk to.
//!
//! `KARPENTER_TEST_MOTO_URL` (set by hack/test.sh) names a running server; otherwise the first
//! test of the binary starts one with `hack/aws/moto up` that stops when this process exits.
//! When neither works the tests print SKIPPED, except under `CI=true`, where they fail.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Region every test uses (the embedded catalog's region, whose zones moto knows).
pub const REGION: &str = "us-east-1";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| matches!(v.as_str(), "true" | "TRUE" | "True" | "1"))
}

/// Starts moto for this process, or says why it could not.
fn start() -> Result<String, String> {
    if let Ok(url) = std::env::var("KARPENTER_TEST_MOTO_URL")
        && !url.is_empty()
    {
        return Ok(url);
    }
    if std::env::var_os("KARPENTER_TEST_MOTO_NO_START").is_some() {
        return Err("KARPENTER_TEST_MOTO_NO_START is set (moto failed to start earlier)".into());
    }
    let dir = std::env::temp_dir().join(format!("karpenter-aws-moto-{}", std::process::id()));
    let out = Command::new(repo_root().join("hack/aws/moto"))
        .arg("up")
        .arg(&dir)
        .env("KARPENTER_MOTO_WATCH_PID", std::process::id().to_string())
        .output()
        .map_err(|e| format!("running hack/aws/moto: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "hack/aws/moto up failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if url.starts_with("http://") {
        Ok(url)
    } else {
        Err(format!("hack/aws/moto printed {url:?}"))
    }
}

/// The moto endpoint, or `None` (after a loud SKIPPED line) when moto is unavailable outside CI.
///
/// # Panics
/// Under `CI=true` when moto cannot be reached: a CI run must not pass by skipping.
pub fn moto(test: &str) -> Option<&'static str> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    match URL.get_or_init(start) {
        Ok(url) => Some(url.as_str()),
        Err(why) if ci() => panic!("{test}: moto is required under CI=true: {why}"),
        Err(why) => {
            // Straight to the process's stderr: libtest captures `eprintln!` of passing tests,
            // and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: moto unavailable: {why}");
            None
        }
    }
}

/// An EC2 client for moto (fixed fake credentials; moto accepts any).
#[cfg(feature = "sdk")]
pub async fn ec2(url: &str) -> karpenter_aws::sdk::aws_sdk_ec2::Client {
    use karpenter_aws::sdk::{aws_config, aws_sdk_ec2};
    let creds = aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "moto");
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(creds)
        .load()
        .await;
    aws_sdk_ec2::Client::new(&conf)
}

/// A cluster name no other test (or earlier run against the same server) uses, so tests can
/// share one moto without seeing each other's resources.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every AWS client the provider uses, pointed at moto.
#[cfg(feature = "sdk")]
pub async fn aws_clients(url: &str) -> karpenter_aws::sdk::AwsClients {
    use karpenter_aws::sdk::{aws_config, aws_sdk_ec2};
    let creds = aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "moto");
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(creds)
        .load()
        .await;
    karpenter_aws::sdk::AwsClients::new(&conf)
}

/// The API server endpoint the tests' nodes bootstrap against (nothing dials it).
pub const TEST_ENDPOINT: &str = "https://api.karpenter-test.example:443";
/// Base64 of the tests' (fake) PEM CA bundle.
pub const TEST_CA_BUNDLE: &str =
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCnRlc3QKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";

/// The cluster `name` as the provider's user data names it.
pub fn cluster_info(name: &str) -> karpenter_aws::userdata::ClusterInfo {
    match karpenter_aws::userdata::ClusterInfo::new(name, TEST_ENDPOINT, TEST_CA_BUNDLE) {
        Ok(c) => c.with_service_cidr(Some("10.100.0.0/16".into())),
        Err(e) => panic!("the test cluster settings are valid: {e}"),
    }
}

#[cfg(feature = "sdk")]
pub mod fixtures;
