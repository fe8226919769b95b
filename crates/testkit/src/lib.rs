//! Test kit for tests that need a real Kubernetes API server.
//!
//! [`TestCluster::start`] connects to the local control plane of `hack/control-plane`
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok): the one named by
//! `KARPENTER_TEST_KUBECONFIG` (what `hack/test.sh` does), or else one it starts itself with
//! `hack/control-plane/up`, once per test binary. When neither works it returns `None` after
//! printing `SKIPPED: no control plane: <why>`, except under `CI=true`, where it panics: CI must
//! never pass by skipping.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let Some(cluster) = karpenter_testkit::TestCluster::start().await else { return Ok(()) };
//! let ns = cluster.namespace().await?;
//! // ... create objects in ns.name(), then poll with cluster.wait_for(...)
//! ns.cleanup().await?;
//! # Ok(()) }
//! ```

mod error;
mod plane;
pub mod proxy;
mod wait;
pub mod workloads;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub use error::Error;
pub use plane::{KUBECONFIG_ENV, NO_START_ENV, STATE_DIR_ENV};
pub use wait::{wait_crd_established, wait_for};

use plane::Plane;

/// Label put on every namespace the kit creates, to find leftovers.
pub const NAMESPACE_LABEL: &str = "karpenter-testkit";
/// Field manager of the kit's server-side applies.
pub const FIELD_MANAGER: &str = "karpenter-testkit";
/// How many log lines of each component are printed when a wait fails.
const LOG_TAIL_LINES: usize = 50;

/// A connection to the test control plane, valid for the current tokio runtime (one test).
#[derive(Clone)]
pub struct TestCluster {
    client: Client,
    plane: Arc<Plane>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("kubeconfig", &self.plane.kubeconfig)
            .finish_non_exhaustive()
    }
}

/// True when a missing control plane must fail the run instead of skipping (`CI=true`).
pub fn control_plane_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

impl TestCluster {
    /// Connects to (or starts) the control plane. `None` means "skip this test" and has
    /// already been reported on stderr; under `CI=true` this panics instead.
    ///
    /// # Panics
    /// When no plane is available and `CI=true`, or when `KARPENTER_TEST_KUBECONFIG` names a
    /// plane that cannot be reached (an explicit choice that is broken is never skipped).
    pub async fn start() -> Option<TestCluster> {
        match Self::try_start().await {
            Ok(cluster) => Some(cluster),
            Err(StartError::Unavailable(reason)) if !control_plane_required() => {
                eprintln!(
                    "\n******** SKIPPED: no control plane: {reason} ********\n\
                     (run ./hack/test.sh, or hack/control-plane/up and export \
                     {KUBECONFIG_ENV}=<printed kubeconfig>)\n"
                );
                None
            }
            Err(StartError::Unavailable(reason)) => {
                panic!("no control plane, and CI=true forbids skipping: {reason}")
            }
            Err(StartError::Broken(e)) => panic!("control plane unusable: {e}"),
        }
    }

    async fn try_start() -> Result<TestCluster, StartError> {
        let found = tokio::task::spawn_blocking(plane::plane)
            .await
            .map_err(|e| StartError::Unavailable(format!("starting the plane panicked: {e}")))?;
        let plane = match found {
            Ok(plane) => plane,
            Err(u) if u.explicit => {
                return Err(StartError::Broken(Error::NoControlPlane(u.reason)));
            }
            Err(u) => return Err(StartError::Unavailable(u.reason)),
        };
        let client = client_for(&plane.kubeconfig)
            .await
            .map_err(StartError::Broken)?;
        // Fail here, with the logs, rather than in the first request of the test.
        if let Err(e) = client.apiserver_version().await {
            plane.print_log_tails(LOG_TAIL_LINES);
            return Err(StartError::Broken(e.into()));
        }
        Ok(TestCluster { client, plane })
    }

    /// An admin (`system:masters`) client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Path of the admin kubeconfig (e.g. to hand to a controller process under test).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.plane.kubeconfig
    }

    /// A kube config for this plane (e.g. to build a client with other credentials).
    pub async fn config(&self) -> Result<Config, Error> {
        config_for(&self.plane.kubeconfig).await
    }

    /// Creates a fresh namespace (unique name) with its `default` ServiceAccount, so pods can
    /// be created at once without waiting for the controller manager to make it.
    pub async fn namespace(&self) -> Result<TestNamespace, Error> {
        let name = unique_name("kt");
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        // From here on the namespace exists: the guard deletes it even if the rest fails.
        let guard = TestNamespace {
            name: name.clone(),
            client: self.client.clone(),
            kubeconfig: self.plane.kubeconfig.clone(),
            armed: true,
        };
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match Api::<ServiceAccount>::namespaced(self.client.clone(), &name)
            .create(&PostParams::default(), &sa)
            .await
        {
            // 409: the controller manager was quicker; same result.
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        Ok(guard)
    }

    /// Creates or updates (server-side apply) each CRD, then waits until every one is
    /// Established, i.e. its resources are served.
    pub async fn apply_crds(&self, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
        let api = Api::<CustomResourceDefinition>::all(self.client.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut names = Vec::with_capacity(crds.len());
        for crd in crds {
            let name = crd.metadata.name.clone().ok_or_else(|| {
                Error::InvalidInput(format!("CRD {} has no metadata.name", crd.spec.names.kind))
            })?;
            // Server-side apply rejects a body carrying server-owned fields.
            let mut body = crd.clone();
            body.metadata.resource_version = None;
            body.metadata.uid = None;
            body.metadata.managed_fields = None;
            body.metadata.creation_timestamp = None;
            body.status = None;
            api.patch(&name, &params, &Patch::Apply(&body)).await?;
            names.push(name);
        }
        for name in names {
            if let Err(e) = wait_crd_established(&api, &name, Duration::from_secs(60)).await {
                eprintln!("karpenter-testkit: {e}; control-plane logs follow");
                self.print_logs();
                return Err(e);
            }
        }
        Ok(())
    }

    /// [`wait_for`], plus the tail of every control-plane log on stderr when it times out.
    pub async fn wait_for<T, E, F, Fut>(
        &self,
        timeout: Duration,
        what: impl Into<String>,
        check: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, E>>,
        E: std::fmt::Display,
    {
        let result = wait_for(timeout, what, check).await;
        if let Err(e) = &result {
            eprintln!("karpenter-testkit: {e}; control-plane logs follow");
            self.print_logs();
        }
        result
    }

    /// Prints the tail of every control-plane log to stderr.
    pub fn print_logs(&self) {
        self.plane.print_log_tails(LOG_TAIL_LINES);
    }
}

enum StartError {
    /// No plane could be found or started: skip (or fail under CI).
    Unavailable(String),
    /// A plane exists but does not work: always a failure.
    Broken(Error),
}

/// A namespace that is deleted when dropped (or earlier, with [`TestNamespace::cleanup`]).
/// Deleting it removes everything in it (the controller manager's namespace controller).
pub struct TestNamespace {
    name: String,
    client: Client,
    kubeconfig: std::path::PathBuf,
    /// False once deleted by [`TestNamespace::cleanup`]: nothing left for drop to do.
    armed: bool,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An `Api` for a namespaced resource kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace now (preferred over relying on drop: errors are reported).
    pub async fn cleanup(mut self) -> Result<(), Error> {
        self.armed = false;
        delete_namespace(self.client.clone(), &self.name).await
    }
}

async fn delete_namespace(client: Client, name: &str) -> Result<(), Error> {
    match Api::<Namespace>::all(client)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down (its client with it),
        // so delete from a short-lived thread with its own runtime and client.
        let name = std::mem::take(&mut self.name);
        let kubeconfig = self.kubeconfig.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = client_for(&kubeconfig).await.map_err(|e| e.to_string())?;
                tokio::time::timeout(Duration::from_secs(10), delete_namespace(client, &name))
                    .await
                    .map_err(|_| format!("deleting namespace {name} timed out"))?
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("karpenter-testkit: namespace cleanup failed: {e}"),
            Err(_) => eprintln!("karpenter-testkit: namespace cleanup thread panicked"),
        }
    }
}

/// A name unique within the plane's lifetime (for namespaces, and for cluster-scoped test
/// objects such as Nodes or NodePools): `<prefix>-<hex>`, valid as a DNS-1123 label.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // pid + time keep parallel test binaries apart; the counter keeps tests within one apart.
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default();
    let mix = (t ^ (u64::from(std::process::id()) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{prefix}-{:08x}{n:x}", mix >> 32)
}

async fn config_for(kubeconfig: &Path) -> Result<Config, Error> {
    let file = Kubeconfig::read_from(kubeconfig).map_err(|source| Error::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        source,
    })?;
    Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: kubeconfig.to_path_buf(),
            source,
        })
}

async fn client_for(kubeconfig: &Path) -> Result<Client, Error> {
    let config = config_for(kubeconfig).await?;
    Client::try_from(config).map_err(|source| Error::ClientConfig {
        path: kubeconfig.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_distinct_dns_labels() {
        let a = unique_name("kt");
        let b = unique_name("kt");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
        }
    }
}
