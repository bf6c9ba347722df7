//! The controller's HTTP endpoints: `/healthz`, `/readyz`, Prometheus
//! `/metrics`, and each rotation's public keys for outside verifiers:
//! `/jwks/{namespace}/{name}` and
//! `/jwks/{namespace}/{name}/.well-known/openid-configuration`, served from
//! the ConfigMap the controller publishes, with cache headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How long outside verifiers may cache a JWKS. Short, so that a new key
/// published in Trust reaches them well within a typical trust lead time.
const JWKS_MAX_AGE_SECONDS: u32 = 60;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

/// The controller's Prometheus metrics. No label or value carries key
/// material.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The current step of each rotation, 1 (Generate) to 6 (Completed).
    pub step: Family<RotationLabels, Gauge>,
    /// How long each step took, from entering it to its confirmation.
    pub step_seconds: Family<StepLabels, Histogram>,
    pub reconcile_errors: Counter,
    /// Rotations not completed.
    pub in_progress: Family<RotationLabels, Gauge>,
    pub secrets_refreshed: Counter,
    pub leader: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("ksa");
        let step = Family::<RotationLabels, Gauge>::default();
        let step_seconds = Family::<StepLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0])
        });
        let reconcile_errors = Counter::default();
        let in_progress = Family::<RotationLabels, Gauge>::default();
        let secrets_refreshed = Counter::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "rotation_step",
            "Current step of each rotation (1 Generate .. 6 Completed)",
            step.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Time from entering a step to its confirmation",
            step_seconds.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed",
            reconcile_errors.clone(),
        );
        registry.register(
            "rotation_in_progress",
            "1 while a rotation is not completed",
            in_progress.clone(),
        );
        registry.register(
            "legacy_secrets_refreshed",
            "Legacy token Secrets re-minted",
            secrets_refreshed.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        Metrics {
            registry,
            step,
            step_seconds,
            reconcile_errors,
            in_progress,
            secrets_refreshed,
            leader,
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    client: kube::Client,
    ready: Arc<AtomicBool>,
}

/// Serves until the process ends. `ready` turns `/readyz` to 200.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    client: kube::Client,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/jwks/{namespace}/{name}", get(jwks))
        .route(
            "/jwks/{namespace}/{name}/.well-known/openid-configuration",
            get(discovery),
        )
        .with_state(AppState {
            metrics,
            client,
            ready,
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics, health and JWKS");
    axum::serve(listener, app).await
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn published(
    state: &AppState,
    namespace: &str,
    name: &str,
    key: &str,
    content_type: &'static str,
) -> Response {
    let api: Api<ConfigMap> = Api::namespaced(state.client.clone(), namespace);
    match api.get_opt(&format!("{name}-jwks")).await {
        Ok(Some(config_map)) => match config_map.data.and_then(|mut d| d.remove(key)) {
            Some(body) => (
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (
                        header::CACHE_CONTROL,
                        format!("public, max-age={JWKS_MAX_AGE_SECONDS}"),
                    ),
                ],
                body,
            )
                .into_response(),
            None => (StatusCode::NOT_FOUND, "not published yet").into_response(),
        },
        Ok(None) => (StatusCode::NOT_FOUND, "no such rotation").into_response(),
        Err(error) => {
            tracing::warn!(%error, "reading the JWKS ConfigMap");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the API server is unavailable",
            )
                .into_response()
        }
    }
}

async fn jwks(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    published(
        &state,
        &namespace,
        &name,
        "jwks.json",
        "application/jwk-set+json",
    )
    .await
}

async fn discovery(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    published(
        &state,
        &namespace,
        &name,
        "openid-configuration.json",
        "application/json",
    )
    .await
}
