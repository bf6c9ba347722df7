//! The controller's HTTP endpoints: `/livez` (and its alias `/healthz`),
//! `/readyz`, Prometheus
//! `/metrics`, and each rotation's public keys for outside verifiers:
//! `/jwks/{namespace}/{name}` and
//! `/jwks/{namespace}/{name}/.well-known/openid-configuration`, served from
//! the ConfigMap the controller publishes, with cache headers.
//!
//! The JWKS paths are unauthenticated and the controller reads with its own
//! credentials, so the path is never trusted: both segments must be names
//! (else 400, before any API call), and only a ConfigMap whose seal
//! verifies (`ksa_kube::provenance`: ksa wrote it, for that name, holding
//! exactly that) is served; any other is a 404 and a warning naming it.
//! A name or a label proves nothing.
//!
//! Nor may a stranger make the controller busy: each ConfigMap read is
//! reused for [`CACHE_TTL`] by every request (one API request at a time
//! per ConfigMap, [`MAX_LOOKUPS`] in all), at most [`MAX_IN_FLIGHT`]
//! document requests are served at once (more get 503), and a client
//! must send its request's headers within [`HEADER_READ_TIMEOUT`].
//!
//! A short-lived cache rather than a watch: a watch of ConfigMaps would
//! need `list`/`watch` on ConfigMaps in every namespace the endpoint
//! serves (the controller has only `get`, and only in namespaces bound to
//! `ksa-controller-rotation`); the cache keeps that grant as it is and
//! bounds the API requests to one per ConfigMap per [`CACHE_TTL`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::api::core::v1::ConfigMap;
use ksa_core::discovery;
use ksa_core::rotation::Step;
use ksa_kube::names::{is_dns1123_label, is_dns1123_subdomain};
use ksa_kube::provenance::{Kind, Sealer};
use kube::api::Api;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{OnceCell, Semaphore};

use crate::liveness::Liveness;
use crate::publish;

/// How long outside verifiers may cache a JWKS. Short, so that a new key
/// published in Trust reaches them well within a typical trust lead time.
const JWKS_MAX_AGE_SECONDS: u32 = 60;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub namespace: String,
    pub name: String,
}

/// One kind of location a rotation publishes to (`endpoint`, `s3`,
/// `directory`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocationLabels {
    pub namespace: String,
    pub name: String,
    pub sink: String,
}

/// A rotation and one of its steps.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub namespace: String,
    pub name: String,
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

/// The steps a rotation's state set has a series for.
const STEPS: [Step; 6] = [
    Step::Generate,
    Step::Trust,
    Step::Sign,
    Step::RefreshTokens,
    Step::Retire,
    Step::Completed,
];

/// The locations a rotation may have a series for.
const SINKS: [&str; 3] = ["endpoint", "s3", "directory"];

/// The controller's Prometheus metrics. No label or value carries key
/// material. Every series of a rotation is labelled with its namespace and
/// name, and removed once the rotation is gone ([`Metrics::retain`]), so
/// the number of series is bounded by the rotations there are.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The step as a state set: 1 for the step each rotation is in, 0 for
    /// the others.
    step: Family<StepLabels, Gauge>,
    /// The key version each rotation is at or rotating to.
    pub key_version: Family<RotationLabels, Gauge>,
    /// When each rotation last completed (Unix seconds).
    pub last_completion: Family<RotationLabels, Gauge>,
    /// How long each step of each rotation took, from entering it to its
    /// confirmation.
    pub step_seconds: Family<StepLabels, Histogram>,
    /// Rotations not completed.
    pub in_progress: Family<RotationLabels, Gauge>,
    reconciles: Family<RotationLabels, Counter>,
    reconcile_errors: Family<RotationLabels, Counter>,
    reconcile_seconds: Family<RotationLabels, Histogram>,
    /// Seconds since each rotation's signing key was created, set from
    /// `signing_keys` when scraped.
    key_age: Family<RotationLabels, Gauge>,
    /// Each rotation's signing key version and when it was created.
    signing_keys: std::sync::Mutex<HashMap<RotationLabels, (u64, jiff::Timestamp)>>,
    pub secrets_refreshed: Counter,
    pub leader: Gauge<i64, AtomicI64>,
    /// When each location was last written (Unix seconds).
    pub publish_written: Family<LocationLabels, Gauge>,
    /// When an outsider's read of each location last served a JWKS ksa
    /// recognises (Unix seconds).
    pub publish_confirmed: Family<LocationLabels, Gauge>,
    /// The rotations that have series.
    rotations: std::sync::Mutex<std::collections::HashSet<RotationLabels>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("ksa");
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                commit: env!("KSA_COMMIT").to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The controller's version and commit (always 1)",
            build,
        );
        let metrics = Metrics {
            registry: Registry::default(),
            step: Family::default(),
            key_version: Family::default(),
            last_completion: Family::default(),
            step_seconds: Family::new_with_constructor(|| {
                Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0])
            }),
            in_progress: Family::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_seconds: Family::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
            }),
            key_age: Family::default(),
            signing_keys: std::sync::Mutex::default(),
            secrets_refreshed: Counter::default(),
            leader: Gauge::default(),
            publish_written: Family::default(),
            publish_confirmed: Family::default(),
            rotations: std::sync::Mutex::default(),
        };
        registry.register(
            "rotation_step",
            "1 for the step each rotation is in (Generate .. Completed), 0 for the others",
            metrics.step.clone(),
        );
        registry.register(
            "rotation_key_version",
            "The key version each rotation is at or rotating to",
            metrics.key_version.clone(),
        );
        registry.register(
            "rotation_last_completion_timestamp_seconds",
            "When each rotation last completed",
            metrics.last_completion.clone(),
        );
        registry.register(
            "rotation_step_duration_seconds",
            "Time from entering a step to its confirmation",
            metrics.step_seconds.clone(),
        );
        registry.register(
            "rotation_in_progress",
            "1 while a rotation is not completed",
            metrics.in_progress.clone(),
        );
        registry.register(
            "rotation_signing_key_age_seconds",
            "Seconds since the key each rotation signs with was created (for an imported key, since its import)",
            metrics.key_age.clone(),
        );
        registry.register(
            "reconcile",
            "Reconciles of each rotation",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles of each rotation that failed (refusals included)",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long each reconcile of a rotation took",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "legacy_secrets_refreshed",
            "Legacy token Secrets re-minted",
            metrics.secrets_refreshed.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        registry.register(
            "publish_last_write_timestamp_seconds",
            "When ksa last wrote a rotation's documents to a location",
            metrics.publish_written.clone(),
        );
        registry.register(
            "publish_last_confirmation_timestamp_seconds",
            "When an outsider's read of a location last served keys ksa recognises",
            metrics.publish_confirmed.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl RotationLabels {
    pub fn new(namespace: &str, name: &str) -> RotationLabels {
        RotationLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn step(&self, step: Step) -> StepLabels {
        StepLabels {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            step: step.to_string(),
        }
    }

    fn location(&self, sink: &str) -> LocationLabels {
        LocationLabels {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            sink: sink.to_owned(),
        }
    }
}

impl Metrics {
    /// Notes that `rotation` has series, so that [`Metrics::retain`]
    /// removes them once it is gone.
    pub fn track(&self, rotation: &RotationLabels) {
        self.rotations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rotation.clone());
    }

    /// One reconcile of `rotation`: how long it took, and whether it
    /// failed.
    pub fn reconciled(&self, rotation: &RotationLabels, took: Duration, failed: bool) {
        self.track(rotation);
        self.reconciles.get_or_create(rotation).inc();
        if failed {
            self.reconcile_errors.get_or_create(rotation).inc();
        }
        self.reconcile_seconds
            .get_or_create(rotation)
            .observe(took.as_secs_f64());
    }

    /// The step `rotation` is in: 1 in its state set, 0 for the others.
    pub fn set_step(&self, rotation: &RotationLabels, current: Step) {
        self.track(rotation);
        for step in STEPS {
            self.step
                .get_or_create(&rotation.step(step))
                .set(i64::from(step == current));
        }
    }

    /// The key version `rotation` signs with, and when that key was
    /// created.
    pub fn set_signing_key(
        &self,
        rotation: &RotationLabels,
        version: u64,
        created: jiff::Timestamp,
    ) {
        self.track(rotation);
        self.signing_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rotation.clone(), (version, created));
    }

    /// The key version whose creation [`Metrics::set_signing_key`] last
    /// recorded for `rotation`.
    pub fn signing_key_version(&self, rotation: &RotationLabels) -> Option<u64> {
        self.signing_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rotation)
            .map(|(version, _)| *version)
    }

    /// Removes every series of each rotation `keep` says is gone; returns
    /// those rotations.
    pub fn retain(&self, keep: impl Fn(&RotationLabels) -> bool) -> Vec<RotationLabels> {
        let gone: Vec<RotationLabels> = {
            let mut rotations = self.rotations.lock().unwrap_or_else(|e| e.into_inner());
            let gone = rotations.iter().filter(|r| !keep(r)).cloned().collect();
            rotations.retain(|r| keep(r));
            gone
        };
        for rotation in &gone {
            self.forget(rotation);
        }
        gone
    }

    fn forget(&self, rotation: &RotationLabels) {
        for family in [
            &self.key_version,
            &self.last_completion,
            &self.in_progress,
            &self.key_age,
        ] {
            family.remove(rotation);
        }
        self.reconciles.remove(rotation);
        self.reconcile_errors.remove(rotation);
        self.reconcile_seconds.remove(rotation);
        for step in STEPS {
            self.step.remove(&rotation.step(step));
            self.step_seconds.remove(&rotation.step(step));
        }
        for sink in SINKS {
            self.publish_written.remove(&rotation.location(sink));
            self.publish_confirmed.remove(&rotation.location(sink));
        }
        self.signing_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(rotation);
    }

    /// The exposition (OpenMetrics text) as of `now`.
    pub fn encode(&self, now: jiff::Timestamp) -> Result<String, std::fmt::Error> {
        for (rotation, (_, created)) in self
            .signing_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let age = now.duration_since(*created).as_secs().max(0);
            self.key_age.get_or_create(rotation).set(age);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// How long a read of a published ConfigMap is reused.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// The most ConfigMap reads remembered (names are the requester's choice).
const MAX_CACHED: usize = 4096;
/// The most API requests the endpoints make at once.
const MAX_LOOKUPS: usize = 8;
/// The most document requests served at once; more are answered 503.
const MAX_IN_FLIGHT: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client of [`serve_https`] may take over its TLS handshake,
/// holding one of [`MAX_HTTPS_CONNECTIONS`] meanwhile.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections [`serve_https`] holds open at once (the audit
/// webhook: a few API servers' posts); more are closed as they come.
pub const MAX_HTTPS_CONNECTIONS: usize = 256;

/// The ConfigMaps ksa published, as the endpoints serve them: read through
/// the API with the controller's credentials, checked against their seal,
/// and reused for [`CACHE_TTL`].
#[derive(Clone)]
pub struct Published(Arc<Cache>);

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Published(..)")
    }
}

struct Cache {
    client: kube::Client,
    sealer: Sealer,
    /// One cell per ConfigMap (and kind: endpoint or not): the first
    /// request reads it, the others wait for that read.
    entries: std::sync::Mutex<HashMap<CacheKey, Arc<OnceCell<Entry>>>>,
    lookups: Semaphore,
}

/// Whether it is an endpoint's ConfigMap, its namespace, its name.
type CacheKey = (bool, String, String);

#[derive(Clone)]
struct Entry {
    at: Instant,
    found: Found,
}

/// What a read found.
#[derive(Clone)]
enum Found {
    /// A ConfigMap whose seal verifies: its data.
    Sealed(Arc<BTreeMap<String, String>>),
    /// None, or none of ksa's.
    Absent,
    /// The API server did not answer.
    Unavailable,
}

impl Published {
    pub fn new(client: kube::Client, sealer: Sealer) -> Published {
        Published(Arc::new(Cache {
            client,
            sealer,
            entries: std::sync::Mutex::default(),
            lookups: Semaphore::new(MAX_LOOKUPS),
        }))
    }

    /// The data of ConfigMap `name` in `namespace` when ksa sealed it as
    /// `kind`.
    async fn data(&self, kind: Kind, namespace: &str, name: &str) -> Found {
        let key = (
            kind == Kind::Endpoint,
            namespace.to_owned(),
            name.to_owned(),
        );
        let fresh = |cell: &OnceCell<Entry>| cell.get().is_none_or(|e| e.at.elapsed() < CACHE_TTL);
        let cell = {
            let mut entries = self.0.entries.lock().unwrap_or_else(|e| e.into_inner());
            match entries.get(&key) {
                Some(cell) if fresh(cell) => cell.clone(),
                _ => {
                    if entries.len() >= MAX_CACHED {
                        entries.retain(|_, cell| fresh(cell));
                    }
                    let cell = Arc::new(OnceCell::new());
                    // Full of fresh reads: this one is not remembered.
                    if entries.len() < MAX_CACHED {
                        entries.insert(key, cell.clone());
                    }
                    cell
                }
            }
        };
        cell.get_or_init(|| self.read(kind, namespace, name))
            .await
            .found
            .clone()
    }

    async fn read(&self, kind: Kind, namespace: &str, name: &str) -> Entry {
        let _permit = self.0.lookups.acquire().await.ok();
        let api: Api<ConfigMap> = Api::namespaced(self.0.client.clone(), namespace);
        let found = match api.get_opt(name).await {
            Ok(Some(config_map)) => {
                match self.0.sealer.check_config_map(kind, namespace, &config_map) {
                    Ok(()) => Found::Sealed(Arc::new(config_map.data.unwrap_or_default())),
                    Err(refused) => {
                        // Names the object, never its content.
                        tracing::warn!(%refused, "not serving a ConfigMap ksa did not write");
                        Found::Absent
                    }
                }
            }
            Ok(None) => Found::Absent,
            // A namespace the controller may not read holds no rotation of its.
            Err(kube::Error::Api(status)) if status.code == 403 => Found::Absent,
            Err(error) => {
                tracing::warn!(%error, "reading a published ConfigMap");
                Found::Unavailable
            }
        };
        Entry {
            at: Instant::now(),
            found,
        }
    }
}

/// Sheds what the endpoints cannot serve now: a request beyond
/// [`MAX_IN_FLIGHT`] gets 503 at once rather than a place in a queue.
async fn shed(State(in_flight): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = in_flight.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "busy",
        )
            .into_response();
    };
    next.run(request).await
}

/// A fresh [`shed`] layer: each router limits its own requests.
macro_rules! shedding {
    () => {
        axum::middleware::from_fn_with_state(Arc::new(Semaphore::new(MAX_IN_FLIGHT)), shed)
    };
}

/// An HTTP server that gives a client [`HEADER_READ_TIMEOUT`] to send its
/// request's headers.
fn with_header_timeout<A>(
    mut server: axum_server::Server<SocketAddr, A>,
) -> axum_server::Server<SocketAddr, A> {
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    server
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    published: Published,
    ready: Arc<AtomicBool>,
    liveness: Arc<Liveness>,
}

/// What the health endpoints answer from: `ready` turns `/readyz` to 200,
/// `liveness` says what `/livez` answers.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub ready: Arc<AtomicBool>,
    pub liveness: Arc<Liveness>,
}

/// Serves until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    published: Published,
    health: Health,
) -> std::io::Result<()> {
    let app = router(metrics, published, health);
    tracing::info!(%addr, "serving metrics, health and JWKS");
    with_header_timeout(axum_server::bind(addr))
        .serve(app.into_make_service())
        .await
}

/// How the OIDC endpoint is served: over HTTPS with a certificate and key
/// read from files (a mounted Secret), reloaded when they change; plain
/// HTTP only when asked for.
#[derive(Clone, Debug)]
pub enum OidcTransport {
    Https { cert: PathBuf, key: PathBuf },
    InsecureHttp,
}

/// How often the certificate files are looked at for a change.
const CERT_RELOAD_PERIOD: Duration = Duration::from_secs(10);

/// Serves each rotation's discovery documents and JWKS at
/// `/{namespace}/{name}/{path}` until the process ends.
pub async fn serve_oidc(
    addr: SocketAddr,
    transport: OidcTransport,
    published: Published,
    cache_control: String,
) -> std::io::Result<()> {
    let app = oidc_router(published, cache_control);
    match transport {
        OidcTransport::InsecureHttp => {
            tracing::info!(%addr, "serving OIDC discovery over plain HTTP");
            with_header_timeout(axum_server::bind(addr))
                .serve(app.into_make_service())
                .await
        }
        OidcTransport::Https { cert, key } => {
            // The process's provider, unless one is installed already.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let config = RustlsConfig::from_pem_file(&cert, &key).await?;
            tokio::spawn(reload_certificate(config.clone(), cert, key, false));
            tracing::info!(%addr, "serving OIDC discovery over HTTPS");
            with_header_timeout(axum_server::bind_rustls(addr, config))
                .serve(app.into_make_service())
                .await
        }
    }
}

/// Serves `app` (the `what` endpoint) over HTTPS with the certificate and
/// key read from files, reloaded when they change, over HTTP/1.1 alone
/// (the only protocol ALPN offers; HTTP/2 has no header read timeout
/// here), each request's headers read within [`HEADER_READ_TIMEOUT`], at
/// most [`MAX_IN_FLIGHT`] requests and [`MAX_HTTPS_CONNECTIONS`]
/// connections at a time; until the process ends.
pub async fn serve_https(
    what: &'static str,
    addr: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    app: Router,
) -> std::io::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = RustlsConfig::from_pem_file(&cert, &key).await?;
    http1_only(&config);
    tokio::spawn(reload_certificate(config.clone(), cert, key, true));
    tracing::info!(%addr, "serving the {what} endpoint over HTTPS");
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .acceptor(Limited::new(MAX_HTTPS_CONNECTIONS));
    with_header_timeout(axum_server::bind(addr).acceptor(acceptor).http1_only())
        .serve(app.route_layer(shedding!()).into_make_service())
        .await
}

/// Makes `config` offer HTTP/1.1 alone in ALPN.
fn http1_only(config: &RustlsConfig) {
    let mut inner = (*config.get_inner()).clone();
    inner.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.reload_from_config(Arc::new(inner));
}

/// An acceptor that holds at most as many connections as it has permits:
/// one beyond is closed at once.
#[derive(Clone)]
struct Limited(Arc<Semaphore>);

impl Limited {
    fn new(connections: usize) -> Limited {
        Limited(Arc::new(Semaphore::new(connections)))
    }
}

impl<I, S> axum_server::accept::Accept<I, S> for Limited {
    type Stream = Counted<I>;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Counted<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        std::future::ready(match self.0.clone().try_acquire_owned() {
            Ok(permit) => Ok((
                Counted {
                    stream,
                    _permit: permit,
                },
                service,
            )),
            Err(_) => Err(std::io::Error::other("too many connections")),
        })
    }
}

/// A connection, holding its place among [`Limited`]'s until dropped.
struct Counted<I> {
    stream: I,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Reloads the certificate and key when either file changes (a Secret
/// volume is updated in place); a pair that does not load is logged and
/// the previous one kept; with `http1`, offering HTTP/1.1 alone.
async fn reload_certificate(config: RustlsConfig, cert: PathBuf, key: PathBuf, http1: bool) {
    let read = |cert: &PathBuf, key: &PathBuf| -> Option<(Vec<u8>, Vec<u8>)> {
        Some((std::fs::read(cert).ok()?, std::fs::read(key).ok()?))
    };
    let mut current = read(&cert, &key);
    loop {
        tokio::time::sleep(CERT_RELOAD_PERIOD).await;
        let now = read(&cert, &key);
        if now.is_none() || now == current {
            continue;
        }
        // Loaded aside and its ALPN set before it is served.
        let loaded = RustlsConfig::from_pem_file(&cert, &key).await.map(|new| {
            if http1 {
                http1_only(&new);
            }
            config.reload_from_config(new.get_inner());
        });
        match loaded {
            Ok(()) => {
                tracing::info!(cert = %cert.display(), "reloaded an endpoint's certificate");
                current = now;
            }
            Err(error) => {
                tracing::warn!(%error, cert = %cert.display(), "the new certificate does not load; keeping the old one")
            }
        }
    }
}

/// The OIDC endpoint's routes, serving what `published` holds, every
/// document served with `cache_control`.
pub fn oidc_router(published: Published, cache_control: String) -> Router {
    Router::new()
        .route("/{namespace}/{name}/{*path}", get(oidc_document))
        .route_layer(shedding!())
        .with_state(OidcState {
            published,
            cache_control,
        })
}

#[derive(Clone)]
struct OidcState {
    published: Published,
    cache_control: String,
}

/// One published document: found in the rotation's endpoint ConfigMap by
/// its exact path (no file system is involved), with `ETag`,
/// `Cache-Control` and conditional GET.
async fn oidc_document(
    State(OidcState {
        published,
        cache_control,
    }): State<OidcState>,
    Path((namespace, name, path)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(bad) = jwks_config_map(&namespace, &name) {
        return (StatusCode::BAD_REQUEST, bad.to_string()).into_response();
    }
    let not_found = || (StatusCode::NOT_FOUND, "not published").into_response();
    let config_map = publish::endpoint_config_map(&name);
    let data = match published
        .data(Kind::Endpoint, &namespace, &config_map)
        .await
    {
        Found::Sealed(data) => data,
        Found::Absent => return not_found(),
        Found::Unavailable => return unavailable(),
    };
    let documents: BTreeMap<String, String> = data
        .get(publish::DOCUMENTS_KEY)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let Some(body) = documents.get(&path) else {
        return not_found();
    };
    let etag = entity_tag(body);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control)],
        )
            .into_response();
    }
    let content_type = if path.ends_with(discovery::JWKS_PATH) {
        "application/jwk-set+json"
    } else {
        "application/json"
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CACHE_CONTROL, cache_control),
            (header::ETAG, etag),
        ],
        body.clone(),
    )
        .into_response()
}

/// A strong entity tag of `body`: the start of its SHA-256, quoted.
fn entity_tag(body: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(body.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the API server is unavailable",
    )
        .into_response()
}

/// Every endpoint, serving what `published` holds.
pub fn router(metrics: Arc<Metrics>, published: Published, health: Health) -> Router {
    Router::new()
        .route("/jwks/{namespace}/{name}", get(jwks))
        .route_layer(shedding!())
        .route("/livez", get(livez))
        .route("/healthz", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState {
            metrics,
            published,
            ready: health.ready,
            liveness: health.liveness,
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

/// 200 while the watch and the reconcile loop make progress
/// ([`crate::liveness`]); 500 naming what is stuck otherwise.
async fn livez(State(state): State<AppState>) -> Response {
    let problems = state.liveness.problems(Instant::now());
    if problems.is_empty() {
        return (StatusCode::OK, "ok").into_response();
    }
    tracing::error!(problems = %problems.join("; "), "not live");
    let mut body = String::from("not live:\n");
    for problem in &problems {
        body.push_str(&format!("- {problem}\n"));
    }
    (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match state.metrics.encode(jiff::Timestamp::now()) {
        Ok(text) => (
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
    match state
        .published
        .data(Kind::Jwks, namespace, &config_map_name)
        .await
    {
        Found::Sealed(data) => match data.get(key).cloned() {
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
        Found::Absent => (StatusCode::NOT_FOUND, "no such rotation").into_response(),
        Found::Unavailable => unavailable(),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_bytes(&[7; 32]).expect("32 bytes")
    }

    /// `config_map` (JSON), sealed as `kind` in `ns` under the name `as_name`.
    fn sealed(kind: Kind, as_name: &str, config_map: serde_json::Value) -> serde_json::Value {
        let mut config_map: ConfigMap = serde_json::from_value(config_map).expect("a ConfigMap");
        let name = config_map.metadata.name.replace(as_name.to_owned());
        sealer().seal_config_map(kind, "ns", &mut config_map);
        config_map.metadata.name = name;
        serde_json::to_value(config_map).expect("JSON")
    }

    /// A fake API server that records every path it is asked for and
    /// answers ConfigMaps `ns/good-jwks` and `ns/good-oidc` (sealed by
    /// ksa), `ns/decoy-*` (labelled for `good`, unsealed or with the seal
    /// of `good-jwks`) and `ns/forged-*` (hand-made, with an ATTACKER
    /// kid); 404 for anything else.
    fn api_server() -> (Published, Arc<Mutex<Vec<String>>>) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let path = request.uri().path().to_owned();
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path.clone());
            let config_map = |name: &str, labels: serde_json::Value| {
                serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "ns", "labels": labels},
                    "data": {"jwks.json": "{\"keys\":[]}"},
                })
            };
            let documents = serde_json::json!({
                "a.example/.well-known/openid-configuration": "{\"issuer\":\"https://a.example\"}",
                "a.example/openid/v1/jwks": "{\"keys\":[]}",
            });
            let (status, body) = match path.as_str() {
                "/api/v1/namespaces/ns/configmaps/good-oidc" => (
                    200,
                    sealed(
                        Kind::Endpoint,
                        "good-oidc",
                        serde_json::json!({
                            "apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "good-oidc", "namespace": "ns",
                                "labels": {"ksa.dev/rotation": "good"}},
                            "data": {"documents.json": documents.to_string()},
                        }),
                    ),
                ),
                "/api/v1/namespaces/ns/configmaps/decoy-oidc" => (
                    200,
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "decoy-oidc", "namespace": "ns",
                            "labels": {"ksa.dev/rotation": "good"}},
                        "data": {"documents.json": documents.to_string()},
                    }),
                ),
                "/api/v1/namespaces/ns/configmaps/good-jwks" => (
                    200,
                    sealed(
                        Kind::Jwks,
                        "good-jwks",
                        config_map(
                            "good-jwks",
                            serde_json::json!({
                                "app.kubernetes.io/managed-by": "ksa",
                                "ksa.dev/rotation": "good",
                            }),
                        ),
                    ),
                ),
                "/api/v1/namespaces/ns/configmaps/forged-jwks" => (
                    200,
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "forged-jwks", "namespace": "ns",
                            "labels": {"app.kubernetes.io/managed-by": "ksa",
                                "ksa.dev/rotation": "forged"}},
                        "data": {"jwks.json": "{\"keys\":[{\"kid\":\"ATTACKER\"}]}"},
                    }),
                ),
                "/api/v1/namespaces/ns/configmaps/forged-oidc" => (
                    200,
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "forged-oidc", "namespace": "ns",
                            "labels": {"ksa.dev/rotation": "forged"}},
                        "data": {"documents.json": serde_json::json!({
                            "a.example/.well-known/openid-configuration":
                                "{\"issuer\":\"https://a.example\",\"jwks_uri\":\"https://evil.example/jwks\"}",
                            "a.example/openid/v1/jwks": "{\"keys\":[{\"kid\":\"ATTACKER\"}]}",
                        }).to_string()},
                    }),
                ),
                // The seal of good-jwks, copied.
                "/api/v1/namespaces/ns/configmaps/decoy-jwks" => (
                    200,
                    sealed(
                        Kind::Jwks,
                        "good-jwks",
                        config_map(
                            "decoy-jwks",
                            serde_json::json!({
                                "app.kubernetes.io/managed-by": "ksa",
                                "ksa.dev/rotation": "good",
                            }),
                        ),
                    ),
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
        let client = kube::Client::new(service, "default");
        (Published::new(client, sealer()), asked)
    }

    async fn status_of(published: &Published, path: &str) -> (StatusCode, String) {
        let app = router(
            Arc::new(Metrics::default()),
            published.clone(),
            Health::default(),
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
        let (published, asked) = api_server();
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
            &long_namespace,
            &long_name,
        ] {
            let (status, body) = status_of(&published, path).await;
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
        let (published, asked) = api_server();
        let (status, body) = status_of(&published, "/jwks/ns/good").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"keys\":[]}"));
        let (status, _) = status_of(&published, "/jwks/ns/decoy").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = status_of(&published, "/jwks/ns/absent").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let longest = format!("/jwks/ns/{}", "a".repeat(248));
        let (status, _) = status_of(&published, &longest).await;
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

    async fn oidc_get(
        published: &Published,
        path: &str,
        if_none_match: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = http::Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header("if-none-match", tag);
        }
        let response = oidc_router(published.clone(), "public, max-age=60".to_owned())
            .oneshot(request.body(Body::empty()).expect("works"))
            .await
            .expect("works");
        let (status, headers) = (response.status(), response.headers().clone());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("works");
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn oidc_documents_are_served_with_cache_headers_and_conditional_get() {
        let (published, asked) = api_server();
        let path = "/ns/good/a.example/openid/v1/jwks";
        let (status, headers, body) = oidc_get(&published, path, None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"keys\":[]}"));
        assert_eq!(headers["content-type"], "application/jwk-set+json");
        assert_eq!(headers["cache-control"], "public, max-age=60");
        let etag = headers["etag"].to_str().expect("ascii").to_owned();
        assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
        let (status, headers, body) = oidc_get(&published, path, Some(&etag)).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
        assert_eq!(headers["etag"], etag.as_str());
        let (status, _, _) = oidc_get(&published, path, Some("\"other\"")).await;
        assert_eq!(status, StatusCode::OK);
        let discovery = "/ns/good/a.example/.well-known/openid-configuration";
        let (status, headers, _) = oidc_get(&published, discovery, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        // Only the exact paths published; only ConfigMaps ksa published.
        for absent in [
            "/ns/good/a.example/openid/v1/jwks/",
            "/ns/good/b.example/openid/v1/jwks",
            "/ns/good/documents.json",
            "/ns/decoy/a.example/openid/v1/jwks",
        ] {
            let (status, _, _) = oidc_get(&published, absent, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{absent}");
        }
        asked.lock().expect("works").clear();
        for hostile in [
            "/ns/a%2F..%2Fsecrets/x",
            "/NS/good/x",
            "/ns/%2E%2E/x",
            "/ns/good%3Fwatch=true/x",
        ] {
            let (status, _, _) = oidc_get(&published, hostile, None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{hostile}");
        }
        assert!(asked.lock().expect("works").is_empty(), "no API request");
    }

    /// Issue 29, finding 2: a hand-made ConfigMap with the right name and
    /// label is never served.
    #[tokio::test]
    async fn a_forged_config_map_is_never_served() {
        let (published, _) = api_server();
        let (status, body) = status_of(&published, "/jwks/ns/forged").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(!body.contains("ATTACKER"));
        for path in [
            "/ns/forged/a.example/openid/v1/jwks",
            "/ns/forged/a.example/.well-known/openid-configuration",
        ] {
            let (status, _, body) = oidc_get(&published, path, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
            assert!(!body.contains("ATTACKER") && !body.contains("evil"));
        }
    }

    /// Issue 29, finding 5: many requests for a rotation's documents make
    /// at most one API request.
    #[tokio::test]
    async fn many_requests_make_at_most_one_api_request() {
        let (published, asked) = api_server();
        let app = oidc_router(published.clone(), "public".to_owned());
        let requests = (0..52).map(|_| {
            let app = app.clone();
            async move {
                let request = http::Request::get("/ns/good/a.example/openid/v1/jwks")
                    .body(Body::empty())
                    .expect("works");
                app.oneshot(request).await.expect("works").status()
            }
        });
        let statuses = futures::future::join_all(requests).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        let jwks = router(
            Arc::new(Metrics::default()),
            published.clone(),
            Health::default(),
        );
        for _ in 0..20 {
            let request = http::Request::get("/jwks/ns/good")
                .body(Body::empty())
                .expect("works");
            jwks.clone().oneshot(request).await.expect("works");
        }
        let asked = asked.lock().expect("works").clone();
        assert_eq!(
            asked,
            [
                "/api/v1/namespaces/ns/configmaps/good-oidc".to_owned(),
                "/api/v1/namespaces/ns/configmaps/good-jwks".to_owned(),
            ]
        );
    }

    /// Beyond the limit, a request is answered 503 at once.
    #[tokio::test]
    async fn requests_beyond_the_limit_are_shed() {
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::new(Semaphore::new(0)),
                shed,
            ));
        let request = http::Request::get("/").body(Body::empty()).expect("works");
        let response = app.oneshot(request).await.expect("works");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    /// A client that never finishes its headers is cut off.
    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (published, _) = api_server();
        let addr = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            socket.local_addr().expect("an address")
        };
        let server = tokio::spawn(serve_oidc(
            addr,
            OidcTransport::InsecureHttp,
            published,
            "public".into(),
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut socket = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(socket) => break socket,
                Err(error) => {
                    assert!(std::time::Instant::now() < deadline, "{error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        socket
            .write_all(b"GET /ns/good/x HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("written");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            HEADER_READ_TIMEOUT + Duration::from_secs(5),
            socket.read_to_end(&mut buf),
        )
        .await;
        assert!(read.is_ok(), "the connection was kept open");
        server.abort();
    }

    /// A self-signed certificate for 127.0.0.1: (certificate, key) PEM.
    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("a certificate");
        (cert.pem(), key.serialize_pem())
    }

    #[tokio::test]
    async fn the_oidc_endpoint_reloads_its_certificate_when_the_files_change() {
        let (published, _) = api_server();
        let dir = tempfile::tempdir().expect("a temp dir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (first_cert, first_key) = self_signed();
        std::fs::write(&cert, &first_cert).expect("written");
        std::fs::write(&key, &first_key).expect("written");
        let addr = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            socket.local_addr().expect("an address")
        };
        let transport = OidcTransport::Https {
            cert: cert.clone(),
            key: key.clone(),
        };
        let server = tokio::spawn(serve_oidc(addr, transport, published, "public".into()));
        // A client that trusts only `cert_pem`: it connects exactly when the
        // endpoint presents that certificate.
        let connects = async |cert_pem: &str| {
            let certificate = reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("a cert");
            let reader = reqwest::Client::builder()
                .tls_certs_only([certificate])
                .build()
                .expect("a client");
            reader
                .get(format!("https://{addr}/ns/good/a.example/openid/v1/jwks"))
                .send()
                .await
                .is_ok()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !connects(&first_cert).await {
            assert!(
                std::time::Instant::now() < deadline,
                "the endpoint never served"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (second_cert, second_key) = self_signed();
        assert!(!connects(&second_cert).await, "not the new certificate yet");
        std::fs::write(&cert, &second_cert).expect("written");
        std::fs::write(&key, &second_key).expect("written");
        let deadline = std::time::Instant::now() + CERT_RELOAD_PERIOD * 3;
        while !connects(&second_cert).await {
            assert!(
                std::time::Instant::now() < deadline,
                "the new certificate was not served"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(!connects(&first_cert).await, "the old certificate is gone");
        server.abort();
    }

    /// The ALPN protocol a client offering `offered` negotiates with the
    /// HTTPS endpoint at `addr` whose certificate is `cert` (DER); `Err`
    /// when the handshake fails.
    fn negotiate(
        addr: SocketAddr,
        cert: Vec<u8>,
        offered: &[&[u8]],
    ) -> Result<Option<Vec<u8>>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(cert))
            .expect("a root");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = offered.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("a client");
        let mut socket = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        while conn.is_handshaking() {
            conn.complete_io(&mut socket).map_err(|e| e.to_string())?;
        }
        Ok(conn.alpn_protocol().map(<[u8]>::to_vec))
    }

    /// The audit endpoint speaks HTTP/1.1 alone, which has a header read
    /// timeout: ALPN offers nothing else, and a client asking for HTTP/2
    /// alone is refused.
    #[tokio::test]
    async fn the_https_endpoint_offers_only_http_1_1() {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("a certificate");
        let dir = tempfile::tempdir().expect("a temp dir");
        let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_file, cert.pem()).expect("written");
        std::fs::write(&key_file, key.serialize_pem()).expect("written");
        let addr = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            socket.local_addr().expect("an address")
        };
        let app = Router::new().route("/", get(|| async { "ok" }));
        let server = tokio::spawn(serve_https("test", addr, cert_file, key_file, app));
        let der = cert.der().to_vec();
        let offered: &[&[u8]] = &[b"h2", b"http/1.1"];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let negotiated = loop {
            let der = der.clone();
            match tokio::task::spawn_blocking(move || negotiate(addr, der, offered))
                .await
                .expect("ran")
            {
                Ok(negotiated) => break negotiated,
                Err(error) => {
                    assert!(std::time::Instant::now() < deadline, "{error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert_eq!(negotiated.as_deref(), Some(&b"http/1.1"[..]));
        let h2_only = tokio::task::spawn_blocking(move || negotiate(addr, der, &[b"h2"]))
            .await
            .expect("ran");
        assert!(h2_only.is_err(), "{h2_only:?}");
        server.abort();
    }

    /// Past its connections, the acceptor closes a new one; a connection
    /// closed makes room.
    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed() {
        use axum_server::accept::Accept as _;
        let limited = Limited::new(2);
        let first = limited
            .accept(tokio::io::duplex(64).0, ())
            .await
            .expect("one");
        let _second = limited
            .accept(tokio::io::duplex(64).0, ())
            .await
            .expect("two");
        assert!(limited.accept(tokio::io::duplex(64).0, ()).await.is_err());
        drop(first);
        assert!(limited.accept(tokio::io::duplex(64).0, ()).await.is_ok());
    }

    /// The sample lines of `metric` in `text`.
    fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|line| {
                line.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .collect()
    }

    #[test]
    fn the_step_is_a_state_set_and_reconciles_are_counted_by_rotation() {
        let metrics = Metrics::default();
        let a = RotationLabels::new("ns", "a");
        metrics.set_step(&a, Step::Trust);
        metrics.set_step(&a, Step::Sign);
        metrics.reconciled(&a, Duration::from_millis(300), false);
        metrics.reconciled(&a, Duration::from_secs(2), true);
        metrics
            .step_seconds
            .get_or_create(&a.step(Step::Trust))
            .observe(90.0);
        let text = metrics.encode(jiff::Timestamp::now()).expect("encodes");
        let steps = samples(&text, "ksa_rotation_step");
        assert_eq!(steps.len(), 6, "{text}");
        assert!(steps.contains(&r#"ksa_rotation_step{namespace="ns",name="a",step="Sign"} 1"#));
        assert!(steps.contains(&r#"ksa_rotation_step{namespace="ns",name="a",step="Trust"} 0"#));
        assert_eq!(steps.iter().filter(|l| l.ends_with(" 1")).count(), 1);
        assert!(text.contains("# TYPE ksa_rotation_step gauge"), "{text}");
        assert_eq!(
            samples(&text, "ksa_reconcile_total"),
            [r#"ksa_reconcile_total{namespace="ns",name="a"} 2"#]
        );
        assert_eq!(
            samples(&text, "ksa_reconcile_errors_total"),
            [r#"ksa_reconcile_errors_total{namespace="ns",name="a"} 1"#]
        );
        assert!(
            text.contains(r#"ksa_reconcile_duration_seconds_count{namespace="ns",name="a"} 2"#)
        );
        assert!(
            text.contains(
                r#"ksa_reconcile_duration_seconds_bucket{le="0.5",namespace="ns",name="a"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE ksa_rotation_step_duration_seconds histogram"));
        assert!(!text.contains("ksa_step_duration_seconds"));
        assert!(!text.contains("ksa_rotation_state"));
    }

    #[test]
    fn the_key_age_is_counted_from_the_keys_creation_when_scraped() {
        let metrics = Metrics::default();
        let a = RotationLabels::new("ns", "a");
        let created: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("a time");
        assert_eq!(metrics.signing_key_version(&a), None);
        metrics.set_signing_key(&a, 2, created);
        assert_eq!(metrics.signing_key_version(&a), Some(2));
        let at = |t: &str| {
            let text = metrics.encode(t.parse().expect("a time")).expect("encodes");
            samples(&text, "ksa_rotation_signing_key_age_seconds").join("\n")
        };
        assert_eq!(
            at("2026-01-01T01:00:00Z"),
            r#"ksa_rotation_signing_key_age_seconds{namespace="ns",name="a"} 3600"#
        );
        assert_eq!(
            at("2026-03-02T00:00:00Z"),
            r#"ksa_rotation_signing_key_age_seconds{namespace="ns",name="a"} 5184000"#
        );
    }

    #[test]
    fn a_rotation_that_is_gone_has_no_series() {
        let metrics = Metrics::default();
        let (a, b) = (
            RotationLabels::new("ns", "a"),
            RotationLabels::new("ns", "b"),
        );
        for rotation in [&a, &b] {
            metrics.set_step(rotation, Step::Completed);
            metrics.reconciled(rotation, Duration::from_secs(1), true);
            metrics.set_signing_key(rotation, 1, jiff::Timestamp::UNIX_EPOCH);
            metrics.key_version.get_or_create(rotation).set(1);
            metrics.in_progress.get_or_create(rotation).set(0);
            metrics.last_completion.get_or_create(rotation).set(1);
            metrics
                .step_seconds
                .get_or_create(&rotation.step(Step::Retire))
                .observe(3.0);
            metrics
                .publish_written
                .get_or_create(&rotation.location("s3"))
                .set(1);
            metrics
                .publish_confirmed
                .get_or_create(&rotation.location("endpoint"))
                .set(1);
        }
        metrics.retain(|rotation| rotation.name != "a");
        let text = metrics.encode(jiff::Timestamp::now()).expect("encodes");
        assert!(!text.contains(r#"name="a""#), "{text}");
        assert!(text.contains(r#"name="b""#), "{text}");
        assert_eq!(metrics.signing_key_version(&a), None);
        // A standby replica speaks for no rotation.
        metrics.retain(|_| false);
        let text = metrics.encode(jiff::Timestamp::now()).expect("encodes");
        assert!(!text.contains("namespace="), "{text}");
        assert!(text.contains("ksa_build_info{"), "{text}");
    }

    #[tokio::test]
    async fn livez_says_what_is_stuck() {
        let (published, _) = api_server();
        let health = Health::default();
        let app = router(Arc::new(Metrics::default()), published, health.clone());
        let get = |path: &'static str| {
            let app = app.clone();
            async move {
                let request = http::Request::get(path).body(Body::empty()).expect("works");
                let response = app.oneshot(request).await.expect("works");
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("works");
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        assert_eq!(get("/livez").await, (StatusCode::OK, "ok".to_owned()));
        assert_eq!(get("/healthz").await, (StatusCode::OK, "ok".to_owned()));
        // Leading for longer than the watch may take to list: not live.
        let (store, _writer) = kube::runtime::reflector::store();
        let long_ago = Instant::now()
            .checked_sub(crate::liveness::SYNC_BOUND * 2)
            .expect("the clock is past that");
        health.liveness.lead(store, long_ago);
        let (status, body) = get("/livez").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.starts_with(
                "not live:\n- the watch of KSASigningKeyRotations has not listed them"
            ),
            "{body}"
        );
        assert_eq!(get("/healthz").await.0, StatusCode::INTERNAL_SERVER_ERROR);
        health.liveness.stand_by();
        assert_eq!(get("/livez").await.0, StatusCode::OK);
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
