//! The cloud provider decorator: every call of the [`CloudProvider`] trait timed into
//! `karpenter_cloudprovider_duration_seconds{controller,method,provider}` and every error
//! counted in `karpenter_cloudprovider_errors_total{controller,method,provider,error}`, as
//! upstream's `pkg/cloudprovider/metrics` does. Providers stay unaware of it.
//!
//! The `controller` label is the loop making the call: each loop runs inside
//! [`with_controller`], and the decorator reads that task-local name (`unknown` outside one,
//! e.g. in a task a loop spawned).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_providers::{CloudProvider, CloudProviderError, NodeGroupFloor, RepairPolicy};
use karpenter_solver::InstanceType;

use super::{MethodLabels, Metrics, ProviderError};

tokio::task_local! {
    static CONTROLLER: &'static str;
}

/// Runs `fut` as the loop `name`: the provider calls it makes are labelled `controller=name`.
pub fn with_controller<F: Future>(name: &'static str, fut: F) -> impl Future<Output = F::Output> {
    CONTROLLER.scope(name, fut)
}

fn controller() -> &'static str {
    CONTROLLER.try_with(|c| *c).unwrap_or("unknown")
}

/// A provider whose calls are timed and whose errors are counted.
pub struct Instrumented {
    inner: Arc<dyn CloudProvider>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: Arc<dyn CloudProvider>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// Records one call of `method` that started at `start`; `error` is its error's kind.
    fn record(&self, method: &str, start: Instant, error: Option<&CloudProviderError>) {
        let labels = MethodLabels {
            controller: controller().to_string(),
            method: method.to_string(),
            provider: self.inner.name().to_string(),
        };
        self.metrics
            .cloudprovider_duration
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        if let Some(e) = error {
            self.metrics
                .cloudprovider_errors
                .get_or_create(&ProviderError {
                    controller: labels.controller,
                    method: labels.method,
                    provider: labels.provider,
                    error: e.kind().to_string(),
                })
                .inc();
        }
    }

    fn timed<T>(
        &self,
        method: &str,
        start: Instant,
        r: Result<T, CloudProviderError>,
    ) -> Result<T, CloudProviderError> {
        self.record(method, start, r.as_ref().err());
        r
    }
}

#[async_trait]
impl CloudProvider for Instrumented {
    async fn create(&self, claim: &NodeClaim) -> Result<NodeClaim, CloudProviderError> {
        let start = Instant::now();
        let r = self.inner.create(claim).await;
        self.timed("Create", start, r)
    }

    async fn delete(&self, claim: &NodeClaim) -> Result<(), CloudProviderError> {
        let start = Instant::now();
        let r = self.inner.delete(claim).await;
        // "Not found" is how a finished deletion answers, not a failure worth alerting on; it
        // is still counted, under its own `error` label, as upstream counts it.
        self.timed("Delete", start, r)
    }

    async fn get(&self, provider_id: &str) -> Result<NodeClaim, CloudProviderError> {
        let start = Instant::now();
        let r = self.inner.get(provider_id).await;
        self.timed("Get", start, r)
    }

    async fn list(&self) -> Result<Vec<NodeClaim>, CloudProviderError> {
        let start = Instant::now();
        let r = self.inner.list().await;
        self.timed("List", start, r)
    }

    async fn instance_types(
        &self,
        pool: &NodePool,
    ) -> Result<Vec<InstanceType>, CloudProviderError> {
        let start = Instant::now();
        let r = self.inner.instance_types(pool).await;
        self.timed("GetInstanceTypes", start, r)
    }

    async fn is_drifted(&self, claim: &NodeClaim) -> Result<Option<String>, CloudProviderError> {
        let start = Instant::now();
        let r = self.inner.is_drifted(claim).await;
        self.timed("IsDrifted", start, r)
    }

    fn reservations(&self) -> Option<karpenter_providers::cloudprovider::ReservationLabel> {
        self.inner.reservations()
    }

    async fn node_group_floors(&self) -> Result<Vec<NodeGroupFloor>, CloudProviderError> {
        let start = Instant::now();
        let r = self.inner.node_group_floors().await;
        self.timed("NodeGroupFloors", start, r)
    }

    async fn are_drifted(
        &self,
        claims: &[NodeClaim],
    ) -> Vec<Result<Option<String>, CloudProviderError>> {
        // One timing for the batch (the provider may answer it with one cloud call); each
        // failed answer counts as an error.
        let start = Instant::now();
        let answers = self.inner.are_drifted(claims).await;
        let first_error = answers.iter().find_map(|a| a.as_ref().err());
        self.record("IsDrifted", start, first_error);
        for e in answers.iter().filter_map(|a| a.as_ref().err()).skip(1) {
            self.metrics
                .cloudprovider_errors
                .get_or_create(&ProviderError {
                    controller: controller().to_string(),
                    method: "IsDrifted".to_string(),
                    provider: self.inner.name().to_string(),
                    error: e.kind().to_string(),
                })
                .inc();
        }
        answers
    }

    fn repair_policies(&self) -> Vec<RepairPolicy> {
        self.inner.repair_policies()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}
