//! A plain-HTTP proxy in front of the test API server that makes chosen watches lag: every
//! event of a WATCH request on a matching path reaches the client `delay` after the API server
//! sent it. Lists, gets and writes pass at once. Point a client at [`DelayingProxy::config`]
//! to see the cluster through it (say, a controller whose NodeClaim watch lags its own
//! creates).
//!
//! Requests are forwarded with the test cluster's own (authenticated, TLS) client, so the proxy
//! needs no certificates of its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode, header};
use futures::StreamExt;
use kube::{Client, Config};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Error;

/// Which watches lag, and by how much.
#[derive(Debug, Clone)]
pub struct Lag {
    /// Watches whose path starts with this (e.g. `/apis/karpenter.sh/v1/nodeclaims`).
    pub path_prefix: String,
    /// How long each of their events is held back.
    pub delay: Duration,
}

/// The running proxy; dropping it stops it.
pub struct DelayingProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DelayingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DelayingProxy {
    /// Listens on an ephemeral local port and forwards through `upstream`.
    pub async fn start(upstream: Client, lag: Lag) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::Proxy(format!("binding a local port: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Proxy(format!("reading the local address: {e}")))?;
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (upstream, lag) = (upstream.clone(), lag.clone());
            async move { forward(upstream, &lag, req).await }
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("delaying proxy stopped: {e}");
            }
        });
        Ok(Self { addr, task })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client configuration that talks to the cluster through the proxy.
    pub fn config(&self) -> Result<Config, Error> {
        let url = format!("http://{}", self.addr)
            .parse()
            .map_err(|e| Error::Proxy(format!("proxy address as a URL: {e}")))?;
        Ok(Config::new(url))
    }
}

fn is_watch(req: &Request<Body>) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

async fn forward(upstream: Client, lag: &Lag, req: Request<Body>) -> Response<Body> {
    let lagging = is_watch(&req) && req.uri().path().starts_with(&lag.path_prefix);
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return failure(StatusCode::BAD_REQUEST, format!("reading the request: {e}")),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = Request::builder().method(parts.method).uri(path);
    for (name, value) in &parts.headers {
        // The upstream client sets its own host, authorization and framing.
        if name != header::HOST && name != header::AUTHORIZATION && name != header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    let out = match out.body(kube::client::Body::from(body.to_vec())) {
        Ok(r) => r,
        Err(e) => {
            return failure(
                StatusCode::BAD_REQUEST,
                format!("rebuilding the request: {e}"),
            );
        }
    };
    let response = match upstream.send(out).await {
        Ok(r) => r,
        Err(e) => return failure(StatusCode::BAD_GATEWAY, format!("forwarding: {e}")),
    };
    let (parts, body) = response.into_parts();
    let body = Body::new(body);
    let body = if lagging {
        delayed(body, lag.delay)
    } else {
        body
    };
    let mut resp = Response::builder().status(parts.status);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            resp = resp.header(name, value);
        }
    }
    resp.body(body).unwrap_or_else(|e| {
        failure(
            StatusCode::BAD_GATEWAY,
            format!("building the response: {e}"),
        )
    })
}

/// The body, each chunk released `delay` after it arrived (a delay line: order kept, no
/// chunk held longer than that).
fn delayed(body: Body, delay: Duration) -> Body {
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, Result<Bytes, axum::Error>)>();
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            if tx.send((Instant::now(), chunk)).is_err() {
                return;
            }
        }
    });
    let released = futures::stream::unfold(rx, move |mut rx| async move {
        let (arrived, chunk) = rx.recv().await?;
        tokio::time::sleep_until(arrived + delay).await;
        Some((chunk, rx))
    });
    Body::from_stream(released)
}

fn failure(status: StatusCode, message: String) -> Response<Body> {
    let mut r = Response::new(Body::from(message));
    *r.status_mut() = status;
    r
}
