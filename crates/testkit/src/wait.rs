use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use tokio::time::Instant;

use crate::Error;

/// First and largest pause between two checks. Short at first because most conditions in a
/// local control plane hold within a few hundred milliseconds; capped so a slow one does not
/// hammer the API server.
const FIRST_INTERVAL: Duration = Duration::from_millis(50);
const MAX_INTERVAL: Duration = Duration::from_millis(500);

/// Polls `check` until it returns `Ok(Some(value))` or `timeout` has passed.
///
/// `Ok(None)` means "not yet"; `Err(e)` also means "not yet" (objects may not exist yet, a CRD
/// may not be served yet), and the last such error is reported if time runs out. Each check is
/// itself cut off at the deadline, so a hung request cannot stretch the wait.
///
/// ```no_run
/// # async fn f(pods: kube::Api<k8s_openapi::api::core::v1::Pod>) -> Result<(), karpenter_testkit::Error> {
/// use std::time::Duration;
/// let node = karpenter_testkit::wait_for(Duration::from_secs(30), "pod bound", || async {
///     let pod = pods.get("web-0").await?;
///     Ok::<_, kube::Error>(pod.spec.and_then(|s| s.node_name))
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn wait_for<T, E, F, Fut>(
    timeout: Duration,
    what: impl Into<String>,
    mut check: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
    E: Display,
{
    let deadline = Instant::now() + timeout;
    let mut interval = FIRST_INTERVAL;
    let mut last: Option<String> = None;
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => last = Some(e.to_string()),
            Err(_elapsed) => last = Some("the last check itself did not finish in time".into()),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: what.into(),
                timeout,
                last,
            });
        }
        tokio::time::sleep_until((now + interval).min(deadline)).await;
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

/// Waits until CRD `name` is Established (its resources are served).
pub async fn wait_crd_established(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    timeout: Duration,
) -> Result<(), Error> {
    wait_for(timeout, format!("CRD {name} Established"), || async {
        let crd = api.get(name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok::<_, kube::Error>(established.then_some(()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_ready() {
        let calls = AtomicU32::new(0);
        let got = wait_for(Duration::from_secs(5), "third call", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                Err(format!("call {n}"))
            } else {
                Ok(Some(n))
            }
        })
        .await;
        assert_eq!(got.ok(), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_the_last_reason() {
        let err = wait_for(Duration::from_secs(2), "never", || async {
            Err::<Option<()>, _>("still pending")
        })
        .await
        .expect_err("must time out");
        let msg = err.to_string();
        assert!(msg.contains("waiting for never"), "{msg}");
        assert!(msg.contains("still pending"), "{msg}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_check_does_not_outlive_the_deadline() {
        let err = wait_for(Duration::from_secs(1), "hang", || async {
            std::future::pending::<Result<Option<()>, String>>().await
        })
        .await
        .expect_err("must time out");
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }
}
