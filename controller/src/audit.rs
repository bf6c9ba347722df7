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
//! [`READ_TIMEOUT`], [`MAX_READS`] bodies at a time and at most
//! [`MAX_READS_PER_ROTATION`] of one rotation's, and it must parse as
//! an `audit.k8s.io/v1` `EventList` of at most [`MAX_ITEMS`] events, each
//! read into this module's own minimal structs (which never take in
//! `responseObject`) and made into a record or nothing before the next is
//! read. Of its events only a node's successful TokenRequest bound to a
//! pod is kept ([`token_request`]): the pod's uid and when the API server
//! received the request, at most [`MAX_PODS`] pods a rotation and
//! [`MAX_RECORDS`] in all, in memory ([`AuditFeeds`]), and only while the
//! rotation is in RefreshTokens, from when the step began: older records
//! are dropped. Nothing of a request reaches logs, Events, status or
//! metrics but counts. The listener speaks HTTP/1.1 only, which has a
//! header read timeout ([`crate::serve::serve_https`]).
//!
//! Only the leader reconciles, so only it registers rotations: a replica
//! that does not lead answers every POST 503, and the API server's webhook
//! backend retries (on another replica, through the Service). The leader
//! answers 401 alike for a wrong token and a rotation it has not
//! registered (deleted, not observing, another shard's, or not reconciled
//! yet since it began to lead: that batch is lost), so that no one without
//! a token learns which rotations exist. Records are in memory: after a
//! restart, refreshes seen before are gone, and RefreshTokens ends by the
//! window (`RefreshNotObserved`).

use std::cell::Cell;
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
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

/// The largest body a POST may carry. The policy ksa writes logs only the
/// nodes' TokenRequests, at `Request` level: an event is about 1.5 KiB, so
/// a batch of the API server's default `--audit-webhook-batch-max-size`
/// (400 events) is about 600 KiB. 2 MiB leaves room for longer names and
/// annotations; a larger body (a policy merged with others', a larger
/// batch size) is refused with 413, and the batch is lost: that
/// rotation's RefreshTokens ends by the window.
pub const MAX_BODY: usize = 2 << 20;
/// How long a client has to send its body: a 2 MiB batch from an API
/// server takes well under a second; a slow sender holds a turn no longer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most events one body may hold: 25 times the API server's default
/// batch (400). More is refused (413) as the parse reaches the first one
/// past it; each event is made into a record, or nothing, as it is read.
pub const MAX_ITEMS: usize = 10_000;
/// How many bodies are read at a time, across every rotation: at most
/// `MAX_READS` × [`MAX_BODY`] of bodies are held. A post beyond it waits
/// up to [`READ_SLOT_WAIT`] for a turn, then gets 503 (the API server's
/// webhook backend retries).
pub const MAX_READS: usize = 4;
/// How many of those turns one rotation's posts may hold at once (its
/// user cluster's API server instances post side by side), so that one
/// rotation's token holder cannot take every turn and keep the other
/// rotations' batches out.
pub const MAX_READS_PER_ROTATION: usize = 2;
/// How long a post waits for a turn to have its body read.
pub const READ_SLOT_WAIT: Duration = Duration::from_secs(2);
/// The most pods one rotation's records hold; past it, new pods are not
/// recorded (counted in the log), and RefreshTokens ends by the window.
pub const MAX_PODS: usize = 200_000;
/// The most pods every rotation's records hold together (at about 120
/// bytes a record, 60 MB): past it, new pods are not recorded.
pub const MAX_RECORDS: usize = 500_000;
/// The data entry holding the audit policy.
pub const POLICY_KEY: &str = "audit-policy.yaml";
/// The data entry holding the webhook kubeconfig.
pub const KUBECONFIG_KEY: &str = "audit-webhook.kubeconfig";
/// The longest name a request is taken with (a DNS subdomain).
const MAX_NAME: usize = 253;
/// The longest pod uid recorded (Kubernetes uids are 36 characters).
const MAX_UID: usize = 64;
/// The path every rotation's is below: `--audit-public-url` ends with it.
const AUDIT_PATH: &str = "/audit";

/// Where the audit endpoint listens and how the API servers reach it.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// The audit webhook's public base URL, as the user clusters'
    /// kube-apiservers reach it: https://HOST[:PORT][/PREFIX]/audit; each
    /// rotation that observes its kubelets' refreshes is told to post to
    /// URL/NAMESPACE/NAME. Unset: no audit endpoint, and
    /// `tokenRefresh.observe` waits out the window.
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
    /// `--audit-public-url` as parsed and serialized again, without a
    /// trailing `/`: no whitespace or control character, ending in
    /// `/audit`.
    pub public_url: String,
    /// `--audit-ca-file`'s PEM.
    pub ca: Option<Vec<u8>>,
}

/// `--audit-public-url`, checked: the URL's own serialization (never the
/// flag's text, which the URL parser reads past newlines and tabs in), of
/// an https URL with a host, no credentials, query or fragment, whose path
/// ends in `/audit`; without a trailing `/`. Public for the chart's test,
/// which checks the URL the chart renders as the controller will.
pub fn public_url(flag: &str) -> anyhow::Result<String> {
    let public = flag;
    let flag = &without_credentials(public);
    if public.chars().any(|c| c.is_control() || c.is_whitespace()) {
        anyhow::bail!(
            "--audit-public-url {flag:?} holds a space, newline or other control character: \
             give the URL alone, e.g. https://ksa.example:9443/audit"
        );
    }
    let parsed = url::Url::parse(public)
        .with_context(|| format!("--audit-public-url {flag:?} is not a URL"))?;
    if parsed.scheme() != "https"
        || parsed.host_str().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        anyhow::bail!(
            "--audit-public-url {flag:?}: give an https:// URL with a host and no user, query or \
             fragment (the bearer token must not cross plain HTTP)"
        );
    }
    if !parsed.path().trim_end_matches('/').ends_with(AUDIT_PATH) {
        anyhow::bail!(
            "--audit-public-url {flag:?}: its path must end in {AUDIT_PATH} (the endpoint serves \
             POST {AUDIT_PATH}/NAMESPACE/NAME; a proxy in front may add a prefix before it), \
             e.g. https://ksa.example:9443/audit"
        );
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// `url` as an error shows it: any `user:password@` before its host
/// replaced, since errors reach the log.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://REDACTED@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

impl AuditArgs {
    /// The endpoint's settings and its certificate and key files; `None`
    /// without `--audit-public-url`.
    pub fn settings(&self) -> anyhow::Result<Option<(Settings, PathBuf, PathBuf)>> {
        let Some(url) = &self.audit_public_url else {
            return Ok(None);
        };
        let public_url = public_url(url)?;
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
                public_url,
                ca,
            },
            cert.clone(),
            key.clone(),
        )))
    }
}

/// One TokenRequest a node made for a pod: what a record keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The pod's uid.
    pub uid: String,
    /// When the API server received the request.
    pub received: Timestamp,
}

/// A rotation's turns to have a body read ([`MAX_READS_PER_ROTATION`]).
#[derive(Clone)]
struct Turns(Arc<Semaphore>);

impl Default for Turns {
    fn default() -> Turns {
        Turns(Arc::new(Semaphore::new(MAX_READS_PER_ROTATION)))
    }
}

#[derive(Default)]
struct Feed {
    /// SHA-256 of the rotation's bearer token.
    token: [u8; 32],
    /// Its posts' turns to be read.
    turns: Turns,
    /// While the rotation is in RefreshTokens: when the step began.
    /// Records from before it are of no use to it (a refresh counts only
    /// after the step began): they are dropped and not taken in. `None`:
    /// nothing is recorded (posts are answered, their events let go).
    since: Option<Timestamp>,
    /// By pod uid: the latest request received.
    requests: HashMap<Box<str>, Timestamp>,
}

/// Every registered rotation's records, and whether this replica leads.
#[derive(Default)]
struct Registry {
    /// Only the leader registers rotations and records; a replica that
    /// does not lead answers every post 503.
    leading: bool,
    rotations: HashMap<(String, String), Feed>,
}

/// Every registered rotation's records, shared by the endpoint and the
/// reconciler.
#[derive(Clone, Default)]
pub struct AuditFeeds(Arc<Mutex<Registry>>);

impl std::fmt::Debug for AuditFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditFeeds").finish_non_exhaustive()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// What one post's events came to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Recorded {
    /// Taken in, or a later time for a pod already recorded.
    kept: usize,
    /// Received before the step began, or the rotation not in
    /// RefreshTokens: let go.
    stale: usize,
    /// New pods past [`MAX_PODS`] or [`MAX_RECORDS`]: not recorded.
    dropped: usize,
}

impl AuditFeeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic elsewhere leaves the records as they were: still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This replica leads: posts are answered by their token (401 for a
    /// rotation not registered, as for a wrong token).
    pub fn lead(&self) {
        self.lock().leading = true;
    }

    /// Leadership lost: forgets every rotation, and answers every post 503
    /// (the API servers retry, on the leader).
    pub fn stand_by(&self) {
        let mut registry = self.lock();
        registry.leading = false;
        registry.rotations.clear();
    }

    fn leading(&self) -> bool {
        self.lock().leading
    }

    /// Accepts posts for rotation `namespace/name` bearing `token`; a new
    /// token forgets what the old one recorded. `since`: when its
    /// RefreshTokens began, while it is in it; records from before are
    /// dropped. `None`: nothing is recorded, and what was is forgotten.
    pub fn register(&self, namespace: &str, name: &str, token: &[u8], since: Option<Timestamp>) {
        let token = digest(token);
        let mut registry = self.lock();
        let feed = registry
            .rotations
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        if feed.token != token {
            *feed = Feed {
                token,
                ..Feed::default()
            };
        }
        if feed.since != since {
            feed.since = since;
            match since {
                None => feed.requests = HashMap::new(),
                Some(since) => {
                    feed.requests.retain(|_, received| *received >= since);
                    feed.requests.shrink_to_fit();
                }
            }
        }
    }

    /// Stops accepting posts for rotation `namespace/name` and forgets its
    /// records (deleted, no longer observing, or not this controller's).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock()
            .rotations
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Forgets every rotation `keep` is false for; returns them (namespace,
    /// name).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        let mut registry = self.lock();
        let gone: Vec<(String, String)> = registry
            .rotations
            .keys()
            .filter(|(namespace, name)| !keep(namespace, name))
            .cloned()
            .collect();
        for key in &gone {
            registry.rotations.remove(key);
        }
        gone
    }

    /// The feed of rotation `namespace/name`, for its world.
    pub fn feed(&self, namespace: &str, name: &str) -> RotationFeed {
        RotationFeed {
            feeds: self.clone(),
            key: (namespace.to_owned(), name.to_owned()),
        }
    }

    /// Whether `presented` is rotation `namespace/name`'s token; false for
    /// a rotation not registered here.
    /// The rotation's turns to have a body read, when `presented` is its
    /// token.
    fn authenticate(&self, namespace: &str, name: &str, presented: &[u8]) -> Option<Turns> {
        let presented = digest(presented);
        let registry = self.lock();
        let feed = registry
            .rotations
            .get(&(namespace.to_owned(), name.to_owned()));
        // Compared against something either way.
        let token = feed.map(|feed| feed.token).unwrap_or_default();
        let matches = bool::from(token.ct_eq(&presented));
        feed.filter(|_| matches).map(|feed| feed.turns.clone())
    }

    /// Records `seen` for rotation `namespace/name`.
    fn record(&self, namespace: &str, name: &str, seen: Vec<Seen>) -> Recorded {
        let mut registry = self.lock();
        let mut total: usize = registry
            .rotations
            .values()
            .map(|feed| feed.requests.len())
            .sum();
        let mut recorded = Recorded::default();
        let Some(feed) = registry
            .rotations
            .get_mut(&(namespace.to_owned(), name.to_owned()))
        else {
            return recorded;
        };
        let Some(since) = feed.since else {
            recorded.stale = seen.len();
            return recorded;
        };
        for request in seen {
            if request.received < since {
                recorded.stale += 1;
                continue;
            }
            let room = feed.requests.len() < MAX_PODS && total < MAX_RECORDS;
            match feed.requests.get_mut(request.uid.as_str()) {
                Some(known) => {
                    if request.received > *known {
                        *known = request.received;
                    }
                    recorded.kept += 1;
                }
                None if room => {
                    feed.requests
                        .insert(request.uid.into_boxed_str(), request.received);
                    total += 1;
                    recorded.kept += 1;
                }
                None => recorded.dropped += 1,
            }
        }
        recorded
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
        let registry = self.feeds.lock();
        registry
            .rotations
            .get(&self.key)
            .map(|feed| {
                feed.requests
                    .iter()
                    .map(|(uid, received)| (uid.to_string(), *received))
                    .collect()
            })
            .unwrap_or_default()
    }
}

// The parts of an `audit.k8s.io/v1` EventList that are read. Everything
// else, `responseObject` first (at RequestResponse level it holds the
// token), is skipped unread into nothing. `items` is read one event at a
// time, each made into a record or nothing before the next is read
// ([`Items`]), at most [`MAX_ITEMS`] of them: a body of many small events
// never becomes as many structs.

/// The fields of the list that are read.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum ListField {
    ApiVersion,
    Kind,
    Items,
    #[serde(other)]
    Other,
}

/// An EventList, as read: its kind and version, and its events' records.
#[derive(Default)]
struct EventList {
    api_version: Option<String>,
    kind: Option<String>,
    seen: Vec<Seen>,
}

/// Reads an EventList; sets `over` when its items are past [`MAX_ITEMS`].
struct ListReader<'a> {
    over: &'a Cell<bool>,
}

impl<'de> Visitor<'de> for ListReader<'_> {
    type Value = EventList;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an audit.k8s.io/v1 EventList")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<EventList, M::Error> {
        let mut list = EventList::default();
        let mut items = false;
        while let Some(field) = map.next_key::<ListField>()? {
            match field {
                ListField::ApiVersion if list.api_version.is_some() => {
                    return Err(de::Error::duplicate_field("apiVersion"));
                }
                ListField::ApiVersion => list.api_version = Some(map.next_value()?),
                ListField::Kind if list.kind.is_some() => {
                    return Err(de::Error::duplicate_field("kind"));
                }
                ListField::Kind => list.kind = Some(map.next_value()?),
                ListField::Items if items => return Err(de::Error::duplicate_field("items")),
                ListField::Items => {
                    items = true;
                    list.seen = map.next_value_seed(Items { over: self.over })?;
                }
                ListField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(list)
    }
}

/// Reads `items` one event at a time into the records of the
/// TokenRequests among them.
struct Items<'a> {
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = Vec<Seen>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Seen>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = Vec<Seen>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of audit events")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Vec<Seen>, S::Error> {
        let mut seen = Vec::new();
        for _ in 0..MAX_ITEMS {
            // Each event on its own: one of a shape this does not read (a
            // patch's requestObject is a JSON Patch list, say, when the
            // operator's merged policy logs more than ksa's) is no
            // TokenRequest, never the whole batch refused.
            match seq.next_element::<&'de serde_json::value::RawValue>()? {
                Some(raw) => seen.extend(
                    serde_json::from_str::<Event>(raw.get())
                        .ok()
                        .and_then(|event| token_request(&event)),
                ),
                None => return Ok(seen),
            }
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            self.over.set(true);
            return Err(de::Error::invalid_length(MAX_ITEMS + 1, &self));
        }
        Ok(seen)
    }
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
        || bound.uid.is_empty()
        || bound.uid.len() > MAX_UID
    {
        return None;
    }
    let received = event
        .request_received_timestamp
        .as_deref()?
        .parse::<Timestamp>()
        .ok()?;
    Some(Seen {
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
    /// More than [`MAX_ITEMS`] events.
    TooManyItems,
}

/// The pods' TokenRequests in `body` (an `audit.k8s.io/v1` EventList).
fn token_requests(body: &[u8]) -> Result<Vec<Seen>, BadBody> {
    let over = Cell::new(false);
    let mut reader = serde_json::Deserializer::from_slice(body);
    let list = reader
        .deserialize_map(ListReader { over: &over })
        .and_then(|list| reader.end().map(|()| list))
        .map_err(|error| {
            if over.get() {
                BadBody::TooManyItems
            } else {
                BadBody::Unparsable {
                    line: error.line(),
                    column: error.column(),
                }
            }
        })?;
    if list.api_version.as_deref() != Some("audit.k8s.io/v1")
        || list.kind.as_deref() != Some("EventList")
    {
        return Err(BadBody::NotAnEventList);
    }
    Ok(list.seen)
}

/// What the endpoint's handler shares.
#[derive(Clone)]
struct Endpoint {
    feeds: AuditFeeds,
    /// Turns to have a body read ([`MAX_READS`]).
    reads: Arc<Semaphore>,
    /// How long a post waits for one ([`READ_SLOT_WAIT`]).
    wait: Duration,
}

/// The endpoint's routes.
pub fn router(feeds: AuditFeeds) -> Router {
    router_with(feeds, MAX_READS, READ_SLOT_WAIT)
}

fn router_with(feeds: AuditFeeds, reads: usize, wait: Duration) -> Router {
    Router::new()
        .route("/audit/{namespace}/{name}", post(handle))
        .with_state(Endpoint {
            feeds,
            reads: Arc::new(Semaphore::new(reads)),
            wait,
        })
}

fn answer(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

/// One POST of the API server's webhook backend.
async fn handle(
    State(endpoint): State<Endpoint>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let feeds = &endpoint.feeds;
    if !ksa_kube::names::is_dns1123_label(&namespace) || name.is_empty() || name.len() > MAX_NAME {
        return answer(StatusCode::NOT_FOUND, "no such rotation");
    }
    // Decided by leadership alone: whether a rotation is registered is
    // told to no one without its token.
    if !feeds.leading() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            // A new connection for the retry, which the Service may send
            // to the leader.
            [(header::RETRY_AFTER, "5"), (header::CONNECTION, "close")],
            "this replica does not lead: it records nothing; retry",
        )
            .into_response();
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    // The same answer for a rotation not registered and a wrong token.
    let Some(turns) = feeds.authenticate(&namespace, &name, presented) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the bearer token is not this rotation's: mount the rotation's own \
             NAME-audit-webhook Secret",
        )
            .into_response();
    };
    let too_large = || {
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than 2 MiB: lower --audit-webhook-batch-max-size",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return too_large();
    }
    // Held until the body is parsed and dropped: one of this rotation's
    // turns, then one of every rotation's.
    let turn = async {
        let own = turns.0.acquire().await?;
        let any = endpoint.reads.acquire().await?;
        Ok::<_, tokio::sync::AcquireError>((own, any))
    };
    let Ok(Ok(_turn)) = tokio::time::timeout(endpoint.wait, turn).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "busy reading other posts; retry",
        )
            .into_response();
    };
    let read = tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await;
    let body = match read {
        Err(_) => return answer(StatusCode::REQUEST_TIMEOUT, "the body took too long"),
        Ok(Err(_)) => return too_large(),
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
        Err(BadBody::TooManyItems) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "more than 10000 events in one body: lower --audit-webhook-batch-max-size",
            );
        }
        Err(BadBody::Unparsable { line, column }) => {
            tracing::warn!(rotation = %name, %namespace, line, column, "an audit POST that does not parse");
            return answer(StatusCode::BAD_REQUEST, "the body is not an EventList");
        }
    };
    drop(body);
    let recorded = feeds.record(&namespace, &name, seen);
    if recorded.dropped > 0 {
        tracing::warn!(rotation = %name, %namespace, dropped = recorded.dropped, "audit records full: pods not recorded; RefreshTokens ends by the window");
    }
    if recorded.kept > 0 {
        tracing::debug!(rotation = %name, %namespace, count = recorded.kept, "kubelet token requests recorded");
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
         server: {server}{ca}\nusers:\n- name: ksa-audit\n  user:\n    \
         token: {token}\ncontexts:\n- name: ksa-audit\n  context: {{cluster: ksa-controller, \
         user: ksa-audit}}\ncurrent-context: ksa-audit\n",
        // Quoted, though the URL was checked to hold no space or line
        // break: a YAML string that nothing in it can end.
        server = serde_json::Value::from(format!("{}/{namespace}/{name}", settings.public_url)),
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
/// the URL or CA changed), and registers its token, recording from `since`
/// (when its RefreshTokens began, while it is in it; `None`: recording
/// nothing, [`AuditFeeds::register`]); returns its feed. A Secret of that
/// name that ksa did not seal is refused, and nothing is registered.
pub async fn ensure(
    settings: &Settings,
    sealer: &Sealer,
    client: &kube::Client,
    namespace: &str,
    name: &str,
    since: Option<Timestamp>,
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
    settings
        .feeds
        .register(namespace, name, token.as_bytes(), since);
    Ok(settings.feeds.feed(namespace, name))
}

#[cfg(test)]
mod tests;
