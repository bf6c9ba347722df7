//! The controller's HTTP endpoints: `/healthz`, `/readyz`, Prometheus
//! `/metrics`, and each rotation's public keys for outside verifiers:
//! `/jwks/{namespace}/{name}` and
//! `/jwks/{namespace}/{name}/.well-known/openid-configuration`, served from
//! the ConfigMap the controller publishes, with cache headers.
//!
//! The JWKS paths are unauthenticated and the controller reads with its own
//! credentials, so the path is never trusted: both segments must be names
//! (else 400, before any API call), and only a ConfigMap ksa published,
//! labelled for the rotation, is served (else 404).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::ConfigMap;
use ksa_kube::keystore::LABEL_ROTATION;
use ksa_kube::names::{is_dns1123_label, is_dns1123_subdomain};
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
    let app = router(metrics, client, ready);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics, health and JWKS");
    axum::serve(listener, app).await
}

/// Every endpoint, reading ConfigMaps through `client`.
pub fn router(metrics: Arc<Metrics>, client: kube::Client, ready: Arc<AtomicBool>) -> Router {
    Router::new()
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
        })
}

/// Why a `/jwks/{namespace}/{name}` path is refused. Says which segment
/// is wrong, without echoing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadJwksPath {
    #[error("the namespace is not a namespace name (a DNS-1123 label of at most 63 characters)")]
    Namespace,
    #[error(
        "the name is not a rotation name (a DNS-1123 subdomain of at most {} characters)",
        MAX_ROTATION_NAME
    )]
    Name,
}

/// The longest rotation name whose `<name>-jwks` is still a name.
const MAX_ROTATION_NAME: usize = ksa_kube::names::MAX_SUBDOMAIN - "-jwks".len();

/// The ConfigMap that holds the JWKS of rotation `name` in `namespace`,
/// when both are names.
pub fn jwks_config_map(namespace: &str, name: &str) -> Result<String, BadJwksPath> {
    if !is_dns1123_label(namespace) {
        return Err(BadJwksPath::Namespace);
    }
    if name.len() > MAX_ROTATION_NAME || !is_dns1123_subdomain(name) {
        return Err(BadJwksPath::Name);
    }
    Ok(format!("{name}-jwks"))
}

/// Whether ksa published this ConfigMap for rotation `name`: it carries
/// `ksa.dev/rotation: <name>`, as every version of ksa has written it (so
/// an upgrade serves what an older version published; new ones also carry
/// `app.kubernetes.io/managed-by: ksa`).
pub fn published_by_ksa(config_map: &ConfigMap, name: &str) -> bool {
    config_map
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(LABEL_ROTATION))
        .is_some_and(|rotation| rotation == name)
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
    let config_map_name = match jwks_config_map(namespace, name) {
        Ok(config_map_name) => config_map_name,
        Err(bad) => return (StatusCode::BAD_REQUEST, bad.to_string()).into_response(),
    };
    let not_found = || (StatusCode::NOT_FOUND, "no such rotation").into_response();
    let api: Api<ConfigMap> = Api::namespaced(state.client.clone(), namespace);
    match api.get_opt(&config_map_name).await {
        Ok(Some(config_map)) if published_by_ksa(&config_map, name) => {
            match config_map.data.and_then(|mut d| d.remove(key)) {
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
            }
        }
        Ok(_) => not_found(),
        // A namespace the controller may not read holds no rotation of its.
        Err(kube::Error::Api(status)) if status.code == 403 => not_found(),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    /// A fake API server that records every path it is asked for and
    /// answers ConfigMaps `ns/good-jwks` (published by ksa) and
    /// `ns/decoy-jwks` (labelled for another rotation); 404 for anything
    /// else.
    fn api_server() -> (kube::Client, Arc<Mutex<Vec<String>>>) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let path = request.uri().path().to_owned();
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path.clone());
            let config_map = |labels: serde_json::Value| {
                serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "x", "namespace": "ns", "labels": labels},
                    "data": {"jwks.json": "{\"keys\":[]}"},
                })
            };
            let (status, body) = match path.as_str() {
                "/api/v1/namespaces/ns/configmaps/good-jwks" => (
                    200,
                    config_map(serde_json::json!({
                        "app.kubernetes.io/managed-by": "ksa",
                        "ksa.dev/rotation": "good",
                    })),
                ),
                "/api/v1/namespaces/ns/configmaps/decoy-jwks" => (
                    200,
                    config_map(serde_json::json!({
                        "app.kubernetes.io/managed-by": "ksa",
                        "ksa.dev/rotation": "good",
                    })),
                ),
                _ => (
                    404,
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "Status", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "not found",
                    }),
                ),
            };
            async move {
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .unwrap_or_default(),
                )
            }
        });
        (kube::Client::new(service, "default"), asked)
    }

    async fn status_of(client: &kube::Client, path: &str) -> (StatusCode, String) {
        let app = router(
            Arc::new(Metrics::default()),
            client.clone(),
            Arc::new(AtomicBool::new(true)),
        );
        let request = http::Request::get(path).body(Body::empty()).expect("works");
        let response = app.oneshot(request).await.expect("works");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("works");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn paths_that_are_not_names_are_refused_before_any_api_call() {
        let (client, asked) = api_server();
        let long_namespace = format!("/jwks/{}/good", "a".repeat(64));
        let long_name = format!("/jwks/ns/{}", "a".repeat(249));
        for path in [
            "/jwks/ns/a%2F..%2F..%2Fsecrets%2Fkey",
            "/jwks/ns%2Fconfigmaps%2Fgood-jwks/x",
            "/jwks/ns/good%3Fwatch=true",
            "/jwks/ns/good%23x",
            "/jwks/ns/%2E%2E",
            "/jwks/%2E%2E/good",
            "/jwks/ns/a..b",
            "/jwks/ns/Good",
            "/jwks/NS/good",
            "/jwks/ns.x/good",
            "/jwks/ns/-good",
            "/jwks/ns/good%00",
            "/jwks/ns/g%20ood",
            "/jwks/ns/%E2%80%8Bgood",
            "/jwks/ns/%2E%2E/.well-known/openid-configuration",
            &long_namespace,
            &long_name,
        ] {
            let (status, body) = status_of(&client, path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert!(!body.contains("secrets"), "{path}: the body echoes: {body}");
        }
        assert_eq!(
            asked.lock().expect("works").as_slice(),
            [] as [String; 0],
            "no API request"
        );
    }

    #[tokio::test]
    async fn only_configmaps_ksa_published_are_served() {
        let (client, asked) = api_server();
        let (status, body) = status_of(&client, "/jwks/ns/good").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"keys\":[]}"));
        let (status, _) = status_of(&client, "/jwks/ns/decoy").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = status_of(&client, "/jwks/ns/absent").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let longest = format!("/jwks/ns/{}", "a".repeat(248));
        let (status, _) = status_of(&client, &longest).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            asked.lock().expect("works").as_slice(),
            [
                "/api/v1/namespaces/ns/configmaps/good-jwks".to_owned(),
                "/api/v1/namespaces/ns/configmaps/decoy-jwks".to_owned(),
                "/api/v1/namespaces/ns/configmaps/absent-jwks".to_owned(),
                format!("/api/v1/namespaces/ns/configmaps/{}-jwks", "a".repeat(248)),
            ]
        );
    }

    #[test]
    fn jwks_config_map_names() {
        assert_eq!(jwks_config_map("ns", "r").as_deref(), Ok("r-jwks"));
        assert_eq!(jwks_config_map("ns", "a.b").as_deref(), Ok("a.b-jwks"));
        assert_eq!(jwks_config_map("n/s", "r"), Err(BadJwksPath::Namespace));
        assert_eq!(jwks_config_map("ns", "r/x"), Err(BadJwksPath::Name));
        assert_eq!(
            jwks_config_map("ns", &"a".repeat(249)),
            Err(BadJwksPath::Name)
        );
    }
}
