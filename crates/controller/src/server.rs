//! HTTP endpoints: Prometheus `/metrics` (upstream port 8080) and `/healthz` `/readyz`
//! (upstream port 8081).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::metrics::Metrics;

/// Serves `/metrics` until the future is dropped: the registry, plus the summaries `metrics`
/// holds outside it ([`crate::metrics::encode`]).
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Arc<Registry>,
    metrics: Option<Arc<Metrics>>,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (registry, metrics) = (registry.clone(), metrics.clone());
            async move {
                match crate::metrics::encode(&registry, metrics.as_deref()) {
                    Ok(body) => (StatusCode::OK, body),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

/// Readiness check: true once the controller can act (stores synced, leader or not).
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serves `/healthz` (the process answers) and `/readyz` (`ready()` holds) until dropped.
pub async fn serve_health(addr: SocketAddr, ready: ReadyCheck) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
