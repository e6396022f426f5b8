//! The operator's view of a running bot, over HTTP (`--ops-listen ADDR`): `/healthz` (the process answers),
//! `/readyz` (the database answers and every configured platform is connected; 503 with the reasons otherwise)
//! and `/metrics` (Prometheus text, rendered by `metrics-exporter-prometheus` from what the engine, the scheduler,
//! the store and the adapters recorded through the `metrics` facade).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::engine::{Engine, metric};

/// Whether each configured platform is connected, as its adapter last said.
#[derive(Debug, Default)]
pub struct Health {
    /// Platform → `None` when connected, or why it is not.
    platforms: Mutex<BTreeMap<String, Option<String>>>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A platform this process runs: not ready until it says it is connected.
    pub fn expect(&self, platform: &str) {
        self.set(platform, Some("not connected yet".into()));
    }

    pub fn connected(&self, platform: &str) {
        self.set(platform, None);
    }

    pub fn disconnected(&self, platform: &str, why: impl Into<String>) {
        self.set(platform, Some(why.into()));
    }

    fn set(&self, platform: &str, state: Option<String>) {
        self.platforms.lock().unwrap_or_else(PoisonError::into_inner).insert(platform.to_owned(), state);
    }

    /// Why a platform is not ready, one line each; empty when all are.
    pub fn problems(&self) -> Vec<String> {
        let platforms = self.platforms.lock().unwrap_or_else(PoisonError::into_inner);
        platforms.iter().filter_map(|(p, why)| why.as_ref().map(|w| format!("{p}: {w}"))).collect()
    }
}

/// The process's metrics recorder, installed once; every later call returns the same handle.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
            let builder = PrometheusBuilder::new()
                .set_buckets(&seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &sizes));
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                // Only an empty bucket list is refused, and these are not empty.
                Err(e) => {
                    tracing::error!(error = %e, "metrics buckets refused; using the defaults");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: /metrics shows nothing");
            }
            metric::describe();
            handle
        })
        .clone()
}

/// What the endpoints read.
#[derive(Clone)]
pub struct Ops {
    pub engine: Engine,
    pub health: Arc<Health>,
    pub metrics: PrometheusHandle,
    pub clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

/// How long `/readyz` waits for the database before calling it unready.
const DB_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(ops)
}

/// Serves the endpoints on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ops: Ops,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ops)).with_graceful_shutdown(stop).await
}

/// Binds `addr` (a clear error when it is taken) and serves the endpoints in the background.
pub async fn spawn(addr: SocketAddr, ops: Ops) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the ops endpoints: {e}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = serve(listener, ops, std::future::pending()).await {
            tracing::error!(error = %e, "the ops endpoints stopped");
        }
    });
    tracing::info!(addr = %bound, "ops endpoints: /healthz /readyz /metrics");
    Ok((bound, task))
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let mut problems = Vec::new();
    match tokio::time::timeout(DB_TIMEOUT, ops.engine.database_answers()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("database: {e}")),
        Err(_) => problems.push(format!("database: no answer within {} s", DB_TIMEOUT.as_secs())),
    }
    problems.extend(ops.health.problems());
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{}\n", problems.join("\n"))).into_response()
    }
}

async fn render_metrics(State(ops): State<Ops>) -> Response {
    // What is measured at the moment of the scrape: the due backlog and the pool.
    let now = (ops.clock)();
    match tokio::time::timeout(DB_TIMEOUT, ops.engine.due_backlog(now)).await {
        Ok(Ok(backlog)) => {
            metrics::gauge!(metric::DUE_BACKLOG).set(backlog.due as f64);
            let age = backlog.oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
            metrics::gauge!(metric::OLDEST_DUE_SECONDS).set(age);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the due backlog for /metrics"),
        Err(_) => tracing::warn!("the due backlog took too long for /metrics"),
    }
    let pool = ops.engine.pool_use();
    metrics::gauge!(metric::DB_CONNECTIONS, "state" => "open").set(f64::from(pool.open));
    metrics::gauge!(metric::DB_CONNECTIONS, "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!(metric::DB_CONNECTIONS, "state" => "in_use").set(f64::from(pool.open.saturating_sub(pool.idle)));
    ops.metrics.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], ops.metrics.render()).into_response()
}
