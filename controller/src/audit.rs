//! The audit webhook: how the `wait` policy sees the kubelets' token
//! refreshes.
//!
//! No Kubernetes API shows a kubelet's token refresh except the API
//! server's audit stream. A rotation with `spec.tokenRefresh.observe:
//! AuditWebhook` gets a Secret `NAME-audit-webhook` (sealed, [`secret`])
//! holding an audit policy that logs only `create serviceaccounts/token` by
//! nodes, at level `Request` (never `RequestResponse`: the response holds
//! the token), and a webhook kubeconfig naming this endpoint,
//! `POST {--audit-public-url}/NAMESPACE/NAME`, with a bearer token unique
//! to the rotation. The operator mounts it into the user cluster's
//! kube-apiservers (docs/rotation.md).
//!
//! Every POST is hostile until shown otherwise ([`handle`]): its bearer
//! token must be the one of the rotation its path names (compared in
//! constant time), its body at most [`MAX_BODY`] read within
//! [`READ_TIMEOUT`], and it must parse as an `audit.k8s.io/v1`
//! `EventList` into this module's own minimal structs, which never take in
//! `responseObject`. Of its events only a node's successful TokenRequest
//! bound to a pod is kept ([`token_request`]): the pod's namespace, name,
//! uid and when the API server received the request, at most
//! [`MAX_PODS`] pods a rotation, in memory ([`AuditFeeds`]). Nothing of
//! a request reaches logs, Events, status or metrics but counts.
//!
//! Only the leader reconciles, so only it registers rotations: a replica
//! that has not registered the rotation a POST names answers 503, and the
//! API server's webhook backend retries (on another replica, through the
//! Service). Records are in memory: after a restart, refreshes seen before
//! are gone, and RefreshTokens ends by the window
//! (`RefreshNotObserved`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use ksa_kube::keystore::owned_labels;
use ksa_kube::provenance::{Kind, NotOurs, Sealer, Subject};
use ksa_kube::world::RefreshFeed;
use kube::api::{Api, ObjectMeta};
use serde::Deserialize;
use serde::de::IgnoredAny;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The largest body a POST may carry.
pub const MAX_BODY: usize = 8 << 20;
/// How long a client has to send its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The most pods one rotation's records hold; past it, new pods are not
/// recorded (counted in the log), and RefreshTokens ends by the window.
pub const MAX_PODS: usize = 200_000;
/// The data entry holding the audit policy.
pub const POLICY_KEY: &str = "audit-policy.yaml";
/// The data entry holding the webhook kubeconfig.
pub const KUBECONFIG_KEY: &str = "audit-webhook.kubeconfig";
/// The longest name or uid a record keeps (a DNS subdomain).
const MAX_NAME: usize = 253;

/// Where the audit endpoint listens and how the API servers reach it.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// The audit webhook's public base URL, as the user clusters'
    /// kube-apiservers reach it (https://); each rotation that observes its
    /// kubelets' refreshes is told to post to URL/NAMESPACE/NAME. Unset: no
    /// audit endpoint, and `tokenRefresh.observe` waits out the window.
    #[arg(long, value_name = "URL")]
    pub audit_public_url: Option<String>,
    /// Where to serve the audit endpoint.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub audit_addr: SocketAddr,
    /// The endpoint's certificate chain (PEM), reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub audit_tls_cert_file: Option<PathBuf>,
    /// The endpoint's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub audit_tls_key_file: Option<PathBuf>,
    /// The CA (PEM) the kube-apiservers verify the endpoint with, written
    /// into the webhook kubeconfig. Unset: their system roots.
    #[arg(long, value_name = "FILE")]
    pub audit_ca_file: Option<PathBuf>,
}

/// What the reconciler needs to write the webhook Secrets.
#[derive(Clone, Debug)]
pub struct Settings {
    pub feeds: AuditFeeds,
    /// `--audit-public-url`, without a trailing `/`.
    pub public_url: String,
    /// `--audit-ca-file`'s PEM.
    pub ca: Option<Vec<u8>>,
}

impl AuditArgs {
    /// The endpoint's settings and its certificate and key files; `None`
    /// without `--audit-public-url`.
    pub fn settings(&self) -> anyhow::Result<Option<(Settings, PathBuf, PathBuf)>> {
        let Some(url) = &self.audit_public_url else {
            return Ok(None);
        };
        let parsed = url::Url::parse(url)
            .with_context(|| format!("--audit-public-url {url:?} is not a URL"))?;
        if parsed.scheme() != "https"
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            anyhow::bail!(
                "--audit-public-url {url:?}: give an https:// URL with a host and no query or \
                 fragment (the bearer token must not cross plain HTTP)"
            );
        }
        let (Some(cert), Some(key)) = (&self.audit_tls_cert_file, &self.audit_tls_key_file) else {
            anyhow::bail!(
                "--audit-public-url needs --audit-tls-cert-file and --audit-tls-key-file"
            );
        };
        let ca = match &self.audit_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading --audit-ca-file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Some((
            Settings {
                feeds: AuditFeeds::default(),
                public_url: url.trim_end_matches('/').to_owned(),
                ca,
            },
            cert.clone(),
            key.clone(),
        )))
    }
}

/// One TokenRequest a node made for a pod, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub received: Timestamp,
}

#[derive(Default)]
struct Feed {
    /// SHA-256 of the rotation's bearer token.
    token: [u8; 32],
    /// By pod uid: the latest request received.
    requests: HashMap<String, Seen>,
    /// Requests not recorded: past [`MAX_PODS`].
    dropped: u64,
}

/// Every registered rotation's records, shared by the endpoint and the
/// reconciler.
#[derive(Clone, Default)]
pub struct AuditFeeds(Arc<Mutex<HashMap<(String, String), Feed>>>);

impl std::fmt::Debug for AuditFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditFeeds").finish_non_exhaustive()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl AuditFeeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Feed>> {
        // A panic elsewhere leaves the records as they were: still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Accepts posts for rotation `namespace/name` bearing `token`; a new
    /// token forgets what the old one recorded.
    pub fn register(&self, namespace: &str, name: &str, token: &[u8]) {
        let token = digest(token);
        let mut feeds = self.lock();
        let feed = feeds
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        if feed.token != token {
            *feed = Feed {
                token,
                ..Feed::default()
            };
        }
    }

    /// Stops accepting posts for rotation `namespace/name` and forgets its
    /// records.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Forgets every rotation (leadership lost: a standby records nothing).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The feed of rotation `namespace/name`, for its world.
    pub fn feed(&self, namespace: &str, name: &str) -> RotationFeed {
        RotationFeed {
            feeds: self.clone(),
            key: (namespace.to_owned(), name.to_owned()),
        }
    }

    /// What was recorded for rotation `namespace/name`, by pod uid.
    pub fn records(&self, namespace: &str, name: &str) -> Vec<Seen> {
        let feeds = self.lock();
        let mut all: Vec<Seen> = feeds
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|feed| feed.requests.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.uid.cmp(&b.uid));
        all
    }

    /// Whether `presented` is rotation `namespace/name`'s token: `None`
    /// when no such rotation is registered here.
    fn authenticate(&self, namespace: &str, name: &str, presented: &[u8]) -> Option<bool> {
        let presented = digest(presented);
        let feeds = self.lock();
        let feed = feeds.get(&(namespace.to_owned(), name.to_owned()))?;
        Some(bool::from(feed.token.ct_eq(&presented)))
    }

    /// Records `seen` for rotation `namespace/name`; returns how many were
    /// dropped (past [`MAX_PODS`]).
    fn record(&self, namespace: &str, name: &str, seen: Vec<Seen>) -> u64 {
        let mut feeds = self.lock();
        let Some(feed) = feeds.get_mut(&(namespace.to_owned(), name.to_owned())) else {
            return 0;
        };
        let mut dropped = 0;
        for request in seen {
            let full = feed.requests.len() >= MAX_PODS;
            match feed.requests.get_mut(&request.uid) {
                Some(known) => {
                    if request.received > known.received {
                        *known = request;
                    }
                }
                None if !full => {
                    feed.requests.insert(request.uid.clone(), request);
                }
                None => dropped += 1,
            }
        }
        feed.dropped = feed.dropped.saturating_add(dropped);
        dropped
    }
}

/// One rotation's records, as its world's [`RefreshFeed`].
#[derive(Clone, Debug)]
pub struct RotationFeed {
    feeds: AuditFeeds,
    key: (String, String),
}

impl RefreshFeed for RotationFeed {
    fn token_requests(&self) -> BTreeMap<String, Timestamp> {
        let feeds = self.feeds.lock();
        feeds
            .get(&self.key)
            .map(|feed| {
                feed.requests
                    .iter()
                    .map(|(uid, seen)| (uid.clone(), seen.received))
                    .collect()
            })
            .unwrap_or_default()
    }
}

// The parts of an `audit.k8s.io/v1` EventList that are read. Everything
// else, `responseObject` first (at RequestResponse level it holds the
// token), is skipped unread into nothing.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventList {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    items: Vec<Event>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: User,
    #[serde(default)]
    impersonated_user: Option<IgnoredAny>,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    #[serde(default)]
    request_object: Option<TokenRequest>,
    #[serde(default)]
    request_received_timestamp: Option<String>,
}

#[derive(Default, Deserialize)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    subresource: String,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: Option<i64>,
}

#[derive(Deserialize)]
struct TokenRequest {
    #[serde(default)]
    spec: Option<TokenRequestSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestSpec {
    #[serde(default)]
    bound_object_ref: Option<BoundObjectRef>,
}

#[derive(Deserialize)]
struct BoundObjectRef {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
}

/// The pod a node's successful TokenRequest was bound to, and when it was
/// received; `None` for any other event.
fn token_request(event: &Event) -> Option<Seen> {
    let object = event.object_ref.as_ref()?;
    let code = event.response_status.as_ref()?.code?;
    let bound = event
        .request_object
        .as_ref()?
        .spec
        .as_ref()?
        .bound_object_ref
        .as_ref()?;
    let fits = |s: &str| !s.is_empty() && s.len() <= MAX_NAME;
    let node = event
        .user
        .username
        .strip_prefix("system:node:")
        .is_some_and(fits);
    if event.stage != "ResponseComplete"
        || event.verb != "create"
        || object.resource != "serviceaccounts"
        || object.subresource != "token"
        || code != 201
        || !node
        || event.impersonated_user.is_some()
        || bound.kind != "Pod"
        || !fits(&object.namespace)
        || !fits(&bound.name)
        || !fits(&bound.uid)
    {
        return None;
    }
    let received = event
        .request_received_timestamp
        .as_deref()?
        .parse::<Timestamp>()
        .ok()?;
    Some(Seen {
        namespace: object.namespace.clone(),
        pod: bound.name.clone(),
        uid: bound.uid.clone(),
        received,
    })
}

/// Why a body is refused.
#[derive(Debug, PartialEq, Eq)]
enum BadBody {
    /// Not JSON of an EventList; where it stopped.
    Unparsable { line: usize, column: usize },
    /// Another kind or version.
    NotAnEventList,
}

/// The pods' TokenRequests in `body` (an `audit.k8s.io/v1` EventList).
fn token_requests(body: &[u8]) -> Result<Vec<Seen>, BadBody> {
    let list: EventList = serde_json::from_slice(body).map_err(|error| BadBody::Unparsable {
        line: error.line(),
        column: error.column(),
    })?;
    if list.api_version != "audit.k8s.io/v1" || list.kind != "EventList" {
        return Err(BadBody::NotAnEventList);
    }
    Ok(list.items.iter().filter_map(token_request).collect())
}

/// The endpoint's routes.
pub fn router(feeds: AuditFeeds) -> Router {
    Router::new()
        .route("/audit/{namespace}/{name}", post(handle))
        .with_state(feeds)
}

fn answer(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

/// One POST of the API server's webhook backend.
async fn handle(
    State(feeds): State<AuditFeeds>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !ksa_kube::names::is_dns1123_label(&namespace) || name.is_empty() || name.len() > MAX_NAME {
        return answer(StatusCode::NOT_FOUND, "no such rotation");
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    match feeds.authenticate(&namespace, &name, presented) {
        // Not registered here (a standby replica, or before the leader's
        // first reconcile): the backend retries.
        None => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                // A new connection for the retry, which the Service may
                // send to the leader.
                [(header::RETRY_AFTER, "5"), (header::CONNECTION, "close")],
                "this replica does not record this rotation now; retry",
            )
                .into_response();
        }
        Some(false) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "the bearer token is not this rotation's: mount the rotation's own \
                 NAME-audit-webhook Secret",
            )
                .into_response();
        }
        Some(true) => {}
    }
    let read = tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await;
    let body = match read {
        Err(_) => return answer(StatusCode::REQUEST_TIMEOUT, "the body took too long"),
        Ok(Err(_)) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than 8 MiB: lower --audit-webhook-batch-max-size",
            );
        }
        Ok(Ok(body)) => body,
    };
    let seen = match token_requests(&body) {
        Ok(seen) => seen,
        Err(BadBody::NotAnEventList) => {
            return answer(
                StatusCode::BAD_REQUEST,
                "not an audit.k8s.io/v1 EventList: set --audit-webhook-version=audit.k8s.io/v1",
            );
        }
        Err(BadBody::Unparsable { line, column }) => {
            tracing::warn!(rotation = %name, %namespace, line, column, "an audit POST that does not parse");
            return answer(StatusCode::BAD_REQUEST, "the body is not an EventList");
        }
    };
    let count = seen.len();
    let dropped = feeds.record(&namespace, &name, seen);
    if dropped > 0 {
        tracing::warn!(rotation = %name, %namespace, dropped, "audit records full: pods not recorded; RefreshTokens ends by the window");
    }
    if count > 0 {
        tracing::debug!(rotation = %name, %namespace, count, "kubelet token requests recorded");
    }
    answer(StatusCode::OK, "ok")
}

/// Serves the audit endpoint over HTTPS until the process ends.
pub async fn serve(
    addr: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    feeds: AuditFeeds,
) -> std::io::Result<()> {
    crate::serve::serve_https("audit webhook", addr, cert, key, router(feeds)).await
}

/// The audit policy the API servers are given: a node's TokenRequests at
/// `Request` level (what they were bound to; never `RequestResponse`,
/// whose response holds the token), nothing else.
pub const POLICY: &str = "\
# Written by ksa-controller: only the kubelets' TokenRequests, at Request
# level (never RequestResponse: the response holds the token).
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Request
  userGroups: [\"system:nodes\"]
  verbs: [create]
  resources:
  - group: \"\"
    resources: [serviceaccounts/token]
- level: None
";

/// The webhook kubeconfig of rotation `namespace/name`.
fn kubeconfig(settings: &Settings, namespace: &str, name: &str, token: &str) -> String {
    let ca = settings
        .ca
        .as_ref()
        .map(|pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "# Written by ksa-controller for rotation {namespace}/{name}: \
         kube-apiserver --audit-webhook-config-file.\n\
         apiVersion: v1\nkind: Config\nclusters:\n- name: ksa-controller\n  cluster:\n    \
         server: {url}/{namespace}/{name}{ca}\nusers:\n- name: ksa-audit\n  user:\n    \
         token: {token}\ncontexts:\n- name: ksa-audit\n  context: {{cluster: ksa-controller, \
         user: ksa-audit}}\ncurrent-context: ksa-audit\n",
        url = settings.public_url,
    )
}

/// The bearer token in a kubeconfig [`kubeconfig`] wrote.
fn token_of(kubeconfig: &str) -> Option<&str> {
    kubeconfig
        .lines()
        .find_map(|line| line.strip_prefix("    token: "))
        .filter(|token| !token.is_empty())
}

/// A new random bearer token: 32 bytes, base64url.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no random bytes for the audit webhook's token"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The webhook Secret of rotation `namespace/name`, sealed.
fn secret(
    settings: &Settings,
    sealer: &Sealer,
    namespace: &str,
    name: &str,
    token: &str,
) -> Secret {
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(ksa_kube::api::audit_webhook_secret(name)),
            namespace: Some(namespace.to_owned()),
            labels: Some(owned_labels(name)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                POLICY_KEY.to_owned(),
                ByteString(POLICY.as_bytes().to_vec()),
            ),
            (
                KUBECONFIG_KEY.to_owned(),
                ByteString(kubeconfig(settings, namespace, name, token).into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    sealer.seal_secret(Kind::AuditWebhook, namespace, &mut secret);
    secret
}

/// Why a rotation's feed is not taken in.
#[derive(Debug, thiserror::Error)]
pub enum NoFeed {
    #[error(transparent)]
    NotOurs(#[from] NotOurs),
    #[error(transparent)]
    Kube(#[from] ksa_kube::Error),
}

/// Makes sure rotation `namespace/name` has its sealed webhook Secret
/// (written with a new token when missing, rewritten with its token when
/// the URL or CA changed), and registers its token; returns its feed. A
/// Secret of that name that ksa did not seal is refused, and nothing is
/// registered.
pub async fn ensure(
    settings: &Settings,
    sealer: &Sealer,
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<RotationFeed, NoFeed> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_name = ksa_kube::api::audit_webhook_secret(name);
    let current = api
        .get_opt(&secret_name)
        .await
        .map_err(ksa_kube::Error::from)?;
    let token = match &current {
        Some(found) => {
            sealer.check_secret(Kind::AuditWebhook, namespace, found)?;
            let kubeconfig = found
                .data
                .as_ref()
                .and_then(|d| d.get(KUBECONFIG_KEY))
                .and_then(|k| std::str::from_utf8(&k.0).ok())
                .and_then(token_of);
            match kubeconfig {
                Some(token) => token.to_owned(),
                None => new_token().map_err(|e| ksa_kube::Error::BadResponse {
                    what: "random bytes",
                    detail: e.to_string(),
                })?,
            }
        }
        None => new_token().map_err(|e| ksa_kube::Error::BadResponse {
            what: "random bytes",
            detail: e.to_string(),
        })?,
    };
    let wanted = secret(settings, sealer, namespace, name, &token);
    if current.as_ref().map(|c| &c.data) != Some(&wanted.data) {
        let subject = Subject {
            kind: Kind::AuditWebhook,
            namespace,
            name: &secret_name,
        };
        ksa_kube::keystore::write_owned(&api, current.as_ref(), wanted, || {
            NotOurs::new(&subject, "it was created by someone else meanwhile")
        })
        .await?;
        tracing::info!(rotation = %name, %namespace, secret = %secret_name, "wrote the audit webhook Secret");
    }
    settings.feeds.register(namespace, name, token.as_bytes());
    Ok(settings.feeds.feed(namespace, name))
}

#[cfg(test)]
mod tests;
