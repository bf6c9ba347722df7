//! Where outside verifiers read a rotation's keys: publishing each issuer's
//! discovery document and JWKS there (`Effect::PublishOutside`), and
//! reading them back as an outsider would, for the core to confirm
//! (`Observed::publications`).
//!
//! Three kinds of location, each at a public base URL laid out by
//! [`ksa_core::discovery`]:
//! - the controller's own endpoint (`--oidc-public-url`), backed by the
//!   ConfigMap `<rotation>-oidc` that [`crate::serve`] answers from;
//! - an S3-compatible bucket (`spec.publish.s3`), written with the
//!   credentials of a Secret;
//! - a directory below `--publish-root` (`spec.publish.directory`).
//!
//! The spec is written by whoever may create rotations in a namespace, so
//! every host ksa contacts for it must be one the controller was started
//! with (`--publish-host`), a directory must lie below `--publish-root`,
//! reads have a deadline and a size limit, follow no redirect, and carry no
//! credentials; only an HTTP status or a short reason reaches the status,
//! never a body.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use ksa_core::KeyVersion;
use ksa_core::discovery::{self, IssuerPaths};
use ksa_core::issuer::Issuer;
use ksa_core::jwk::Jwks;
use ksa_core::key::PublicKey;
use ksa_core::rotation::PublicationView;
use ksa_kube::api::{DirectorySink, KSASigningKeyRotation, S3Sink};
use ksa_kube::keystore::owned_labels;
use kube::Resource as _;
use kube::ResourceExt as _;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutOptions};

/// How long outside verifiers may cache what ksa publishes by default,
/// served as `Cache-Control: max-age` and waited out in Trust. At most 30
/// s, so that kube-apiserver's JWT authenticator (which refetches a JWKS
/// for an unknown kid only when its copy expires within 30 s) sees a new
/// key on its first token.
pub const DEFAULT_MAX_AGE_SECONDS: u32 = 30;
/// The data key of the endpoint's ConfigMap: a JSON map from a document's
/// path below the rotation's base URL to its body.
pub const DOCUMENTS_KEY: &str = "documents.json";
/// Time allowed for one outsider read or one write.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most read of one published document.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The controller's own publishing settings, from its flags.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The public base URL of the controller's OIDC endpoint; each rotation
    /// is served under `<url>/<namespace>/<name>`. None: no endpoint.
    pub public_url: Option<String>,
    /// PEM certificates to read the endpoint's public URL with (its CA),
    /// besides the system's.
    pub public_ca: Option<Vec<u8>>,
    /// The directory below which `spec.publish.directory` paths lie.
    pub root: Option<PathBuf>,
    /// Hosts (`host` or `host:port`) a rotation's sinks may name.
    pub allowed_hosts: Vec<String>,
    /// The `max-age` written with every document.
    pub max_age_seconds: u32,
}

impl Settings {
    /// The `Cache-Control` value every published document carries.
    pub fn cache_control(&self) -> String {
        format!("public, max-age={}", self.max_age_seconds)
    }
}

/// Why a rotation's publishing spec is refused. Retrying changes nothing
/// until the spec or the controller's flags change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error(
        "{field}: {url:?} is not an http(s) URL with a host and no credentials, query or fragment"
    )]
    BadUrl { field: &'static str, url: String },
    #[error(
        "{field}: the host {host} is not one this controller publishes to; its administrator allows \
         hosts with --publish-host"
    )]
    HostNotAllowed { field: &'static str, host: String },
    #[error(
        "spec.publish.directory: the controller has no --publish-root; its administrator sets one to \
         allow directory sinks"
    )]
    NoRoot,
    #[error(
        "spec.publish.directory.path {path:?} must be a relative path of letters, digits and . _ ~ - \
         segments (no . or ..)"
    )]
    BadPath { path: String },
    #[error(
        "spec.publish.s3.credentialsSecret: Secret {name} must exist in this namespace with data keys \
         accessKeyID and secretAccessKey"
    )]
    Credentials { name: String },
    #[error("{field}: the CA bundle holds no PEM certificate")]
    BadCa { field: &'static str },
    #[error(transparent)]
    Layout(#[from] discovery::LayoutError),
}

/// A failure to write to a location (retried: the location may be down).
#[derive(Debug, thiserror::Error)]
#[error("publishing to {location}: {problem}")]
pub struct WriteError {
    location: String,
    problem: String,
}

/// Where one rotation publishes.
pub struct Locations {
    locations: Vec<Location>,
}

impl std::fmt::Debug for Locations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.locations.iter().map(|l| l.name.as_str()).collect();
        f.debug_struct("Locations")
            .field("locations", &names)
            .finish()
    }
}

struct Location {
    /// What kind of sink it is (`endpoint`, `s3`, `directory`): the
    /// metrics' label, bounded whatever the spec says.
    kind: &'static str,
    /// The `Cache-Control` its documents are written with.
    cache_control: String,
    /// What metrics and errors call it (its public URL, or the directory).
    name: String,
    /// Where outsiders read it. None: a directory with no public URL,
    /// confirmed by reading the files back.
    public_url: Option<String>,
    /// Where documents are laid out (the public URL, or a placeholder base
    /// for a directory without one).
    base: String,
    sink: Sink,
    /// An outsider: no credentials, no redirects, a deadline.
    reader: reqwest::Client,
}

enum Sink {
    /// The controller's endpoint: one ConfigMap holds every document.
    Endpoint {
        config_maps: Box<Api<ConfigMap>>,
        rotation: String,
        /// The rotation, so that its documents go when it does.
        owner: Option<OwnerReference>,
    },
    /// A bucket or a directory, below `prefix`.
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: String,
    },
}

/// A base for laying out a directory that has no public URL.
const NO_PUBLIC_URL: &str = "https://directory.invalid";

impl Locations {
    /// The locations of rotation `name` in `namespace`: the controller's
    /// endpoint when it has one, and the sinks of `spec`, each checked
    /// against the controller's settings before anything is contacted.
    pub async fn of(
        settings: &Settings,
        rotation: &KSASigningKeyRotation,
        client: &kube::Client,
    ) -> Result<Locations, PublishError> {
        let namespace = rotation.namespace().unwrap_or_default();
        let name = rotation.name_any();
        let spec = &rotation.spec.publish;
        let mut locations = Vec::new();
        if let Some(url) = &settings.public_url {
            let base = format!("{}/{namespace}/{name}", url.trim_end_matches('/'));
            locations.push(Location {
                kind: "endpoint",
                cache_control: settings.cache_control(),
                name: base.clone(),
                public_url: Some(base.clone()),
                base,
                sink: Sink::Endpoint {
                    config_maps: Box::new(Api::namespaced(client.clone(), &namespace)),
                    rotation: name.clone(),
                    owner: rotation.controller_owner_ref(&()),
                },
                reader: reader(settings.public_ca.as_deref(), "--oidc-ca-file")?,
            });
        }
        if let Some(s3) = &spec.s3 {
            locations.push(bucket(settings, s3, client, &namespace).await?);
        }
        if let Some(directory) = &spec.directory {
            locations.push(directory_location(settings, directory, &namespace, &name)?);
        }
        Ok(Locations { locations })
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Publishes, at every location, the JWKS of `keys` and a discovery
    /// document for each of `issuers`, and removes the documents of
    /// `withdrawn` issuers. Writes only what differs. Returns the kinds of
    /// the locations written to.
    pub async fn publish(
        &self,
        keys: &[PublicKey],
        issuers: &[Issuer],
        withdrawn: &[Issuer],
    ) -> Result<Vec<&'static str>, WriteError> {
        let jwks = Jwks::from_public_keys(keys).to_json();
        let mut written = Vec::new();
        for location in &self.locations {
            let fail = |problem: String| WriteError {
                location: location.name.clone(),
                problem,
            };
            let mut documents = BTreeMap::new();
            for issuer in issuers {
                let paths = discovery::issuer_paths(&location.base, issuer)
                    .map_err(|e| fail(e.to_string()))?;
                if documents.contains_key(&paths.discovery_key()) {
                    return Err(fail(format!(
                        "two issuers would share the documents at {}; rotate to an issuer \
                         with another host or path",
                        paths.discovery_url
                    )));
                }
                let document = discovery::discovery_document(issuer, &paths.jwks_url, keys);
                documents.insert(paths.discovery_key(), document);
                documents.insert(paths.jwks_key(), jwks.clone());
            }
            let mut gone = Vec::new();
            for issuer in withdrawn.iter().filter(|i| !issuers.contains(i)) {
                if let Ok(paths) = discovery::issuer_paths(&location.base, issuer) {
                    gone.extend([paths.discovery_key(), paths.jwks_key()]);
                }
            }
            location.write(&documents, &gone).await.map_err(fail)?;
            written.push(location.kind);
        }
        Ok(written)
    }

    /// What an outsider reads at each location for each of `issuers`,
    /// knowing keys by the kids of `stored`.
    pub async fn observe(
        &self,
        stored: &BTreeMap<KeyVersion, PublicKey>,
        issuers: &[Issuer],
    ) -> Vec<(&'static str, PublicationView)> {
        let kids: BTreeMap<String, KeyVersion> = stored
            .iter()
            .map(|(version, key)| (key.kid().to_string(), *version))
            .collect();
        let mut views = Vec::new();
        for location in &self.locations {
            for issuer in issuers {
                let view = match discovery::issuer_paths(&location.base, issuer) {
                    Ok(paths) => location.read(issuer, &paths, &kids).await,
                    Err(error) => PublicationView {
                        url: format!("{} ({error})", location.name),
                        serves: None,
                        max_age_seconds: 0,
                    },
                };
                views.push((location.kind, view));
            }
        }
        views
    }
}

impl Location {
    async fn write(
        &self,
        documents: &BTreeMap<String, String>,
        gone: &[String],
    ) -> Result<(), String> {
        match &self.sink {
            Sink::Endpoint {
                config_maps,
                rotation,
                owner,
            } => {
                let name = endpoint_config_map(rotation);
                let config_map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(owned_labels(rotation)),
                        owner_references: owner.clone().map(|owner| vec![owner]),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(
                        DOCUMENTS_KEY.to_owned(),
                        serde_json::to_string(documents).map_err(|e| e.to_string())?,
                    )])),
                    ..ConfigMap::default()
                };
                config_maps
                    .patch(
                        &name,
                        &PatchParams::apply(ksa_kube::keystore::FIELD_MANAGER).force(),
                        &Patch::Apply(&config_map),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            Sink::Store { store, prefix } => {
                for (key, body) in documents {
                    let path = object_path(prefix, key)?;
                    let current = read_bounded(store.as_ref(), &path)
                        .await
                        .map_err(|e| store_problem(&e))?;
                    if current.as_deref() == Some(body.as_bytes()) {
                        continue;
                    }
                    let content_type = if key.ends_with(discovery::JWKS_PATH) {
                        "application/jwk-set+json"
                    } else {
                        "application/json"
                    };
                    let attributes = Attributes::from_iter([
                        (Attribute::ContentType, content_type.to_owned()),
                        (Attribute::CacheControl, self.cache_control.clone()),
                    ]);
                    let options = PutOptions {
                        attributes,
                        ..PutOptions::default()
                    };
                    store
                        .put_opts(&path, body.clone().into(), options)
                        .await
                        .map_err(|e| store_problem(&e))?;
                }
                for key in gone {
                    match store.delete(&object_path(prefix, key)?).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(error) => return Err(store_problem(&error)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Reads `issuer`'s documents as an outsider: the discovery document
    /// must name the issuer and point `jwks_uri` at the JWKS ksa published
    /// beside it; the keys served are known by their kids.
    async fn read(
        &self,
        issuer: &Issuer,
        paths: &IssuerPaths,
        kids: &BTreeMap<String, KeyVersion>,
    ) -> PublicationView {
        let Some(_) = &self.public_url else {
            return self.read_back(issuer, paths, kids).await;
        };
        let mut view = PublicationView {
            url: paths.discovery_url.clone(),
            serves: None,
            max_age_seconds: 0,
        };
        let Ok((document, max_age)) = fetch(&self.reader, &paths.discovery_url).await else {
            return view;
        };
        view.max_age_seconds = max_age;
        if !names(&document, issuer, &paths.jwks_url) {
            return view;
        }
        let Ok((jwks, max_age)) = fetch(&self.reader, &paths.jwks_url).await else {
            return view;
        };
        view.max_age_seconds = view.max_age_seconds.max(max_age);
        view.serves = served_versions(&jwks, kids);
        view
    }

    /// A directory without a public URL: its files, read back.
    async fn read_back(
        &self,
        issuer: &Issuer,
        paths: &IssuerPaths,
        kids: &BTreeMap<String, KeyVersion>,
    ) -> PublicationView {
        let mut view = PublicationView {
            url: format!("{}/{}", self.name, paths.discovery_key()),
            serves: None,
            max_age_seconds: 0,
        };
        let Sink::Store { store, prefix } = &self.sink else {
            return view;
        };
        let read = async |key: String| -> Option<String> {
            let path = object_path(prefix, &key).ok()?;
            let bytes = read_bounded(store.as_ref(), &path).await.ok()??;
            String::from_utf8(bytes).ok()
        };
        let Some(document) = read(paths.discovery_key()).await else {
            return view;
        };
        if names(&document, issuer, &paths.jwks_url)
            && let Some(jwks) = read(paths.jwks_key()).await
        {
            view.serves = served_versions(&jwks, kids);
        }
        view
    }
}

/// The object at `path` when it exists and holds at most
/// [`MAX_DOCUMENT_BYTES`] (a larger one reads as absent: it is overwritten,
/// never read whole).
async fn read_bounded(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
) -> Result<Option<Vec<u8>>, object_store::Error> {
    match store.head(path).await {
        Ok(meta) if meta.size > MAX_DOCUMENT_BYTES as u64 => return Ok(None),
        Ok(_) => {}
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error),
    }
    let options = object_store::GetOptions {
        range: Some((0..MAX_DOCUMENT_BYTES as u64 + 1).into()),
        ..object_store::GetOptions::default()
    };
    match store.get_opts(path, options).await {
        Ok(found) => {
            let bytes = found.bytes().await?;
            Ok((bytes.len() <= MAX_DOCUMENT_BYTES).then(|| bytes.to_vec()))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The ConfigMap behind the endpoint of rotation `name`.
pub fn endpoint_config_map(name: &str) -> String {
    format!("{name}-oidc")
}

/// Whether `document` is a discovery document of `issuer` pointing at
/// `jwks_url`.
fn names(document: &str, issuer: &Issuer, jwks_url: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    serde_json::from_str::<Discovery>(document)
        .is_ok_and(|d| d.issuer == issuer.as_str() && d.jwks_uri == jwks_url)
}

/// The stored key versions a JWKS serves, by kid; `None` when it is not a
/// JWKS.
fn served_versions(
    jwks: &str,
    kids: &BTreeMap<String, KeyVersion>,
) -> Option<BTreeSet<KeyVersion>> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<Key>,
    }
    #[derive(serde::Deserialize)]
    struct Key {
        #[serde(default)]
        kid: Option<String>,
    }
    let set: Set = serde_json::from_str(jwks).ok()?;
    Some(
        set.keys
            .iter()
            .filter_map(|key| kids.get(key.kid.as_deref()?).copied())
            .collect(),
    )
}

/// GETs `url` as an outsider: the body (at most [`MAX_DOCUMENT_BYTES`]) and
/// the `max-age` it may be cached for.
async fn fetch(reader: &reqwest::Client, url: &str) -> Result<(String, u64), String> {
    let mut response = reader.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status().as_u16()));
    }
    let max_age = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map_or(0, max_age);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err("too large".to_owned());
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|_| "not UTF-8".to_owned())?;
    Ok((text, max_age))
}

/// The `max-age` of a `Cache-Control` value, in seconds; 0 when absent or
/// when caching is not allowed.
pub fn max_age(cache_control: &str) -> u64 {
    let directives: Vec<String> = cache_control
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    if directives
        .iter()
        .any(|d| d == "no-store" || d == "no-cache")
    {
        return 0;
    }
    directives
        .iter()
        .filter_map(|d| {
            let value = d
                .strip_prefix("max-age=")
                .or_else(|| d.strip_prefix("s-maxage="))?;
            value.trim_matches('"').parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// An outsider's HTTP client, trusting `ca` besides the system's roots.
fn reader(ca: Option<&[u8]>, field: &'static str) -> Result<reqwest::Client, PublishError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT);
    if let Some(ca) = ca {
        let certificates =
            reqwest::Certificate::from_pem_bundle(ca).map_err(|_| PublishError::BadCa { field })?;
        if certificates.is_empty() {
            return Err(PublishError::BadCa { field });
        }
        builder = builder.tls_certs_merge(certificates);
    }
    builder.build().map_err(|_| PublishError::BadCa { field })
}

/// `url`, checked: http(s), a host the controller allows, no credentials,
/// query or fragment.
fn allowed_url(
    settings: &Settings,
    field: &'static str,
    url: &str,
) -> Result<url::Url, PublishError> {
    // Never echoed whole: a URL may carry credentials.
    let shown = match url.split_once('@') {
        Some((_, host)) => format!("(credentials)@{host}"),
        None => url.to_owned(),
    };
    let bad = || PublishError::BadUrl {
        field,
        url: shown.clone(),
    };
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(bad)?;
    if !matches!(parsed.scheme(), "https" | "http")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || url.contains(['?', '#'])
    {
        return Err(bad());
    }
    let with_port = parsed
        .port()
        .map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"));
    // A host listed without a port allows only the scheme's default port.
    let allowed = settings
        .allowed_hosts
        .iter()
        .any(|allowed| *allowed == with_port || (*allowed == host && parsed.port().is_none()));
    if allowed {
        Ok(parsed)
    } else {
        Err(PublishError::HostNotAllowed {
            field,
            host: with_port,
        })
    }
}

/// A relative path of safe segments (no `.`, `..` or empty one).
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
        })
}

async fn bucket(
    settings: &Settings,
    s3: &S3Sink,
    client: &kube::Client,
    namespace: &str,
) -> Result<Location, PublishError> {
    let endpoint = allowed_url(settings, "spec.publish.s3.endpoint", &s3.endpoint)?;
    let prefix = s3.prefix.as_deref().unwrap_or("").trim_matches('/');
    if !prefix.is_empty() && !safe_relative(prefix) {
        return Err(PublishError::BadPath {
            path: prefix.to_owned(),
        });
    }
    let default_public = {
        let base = format!("{}/{}", s3.endpoint.trim_end_matches('/'), s3.bucket);
        if prefix.is_empty() {
            base
        } else {
            format!("{base}/{prefix}")
        }
    };
    let public_url = s3.public_url.clone().unwrap_or(default_public);
    allowed_url(settings, "spec.publish.s3.publicUrl", &public_url)?;
    let public_url = public_url.trim_end_matches('/').to_owned();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let missing = || PublishError::Credentials {
        name: s3.credentials_secret.clone(),
    };
    let secret = secrets
        .get_opt(&s3.credentials_secret)
        .await
        .ok()
        .flatten()
        .ok_or_else(missing)?;
    let data = secret.data.unwrap_or_default();
    let field = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
    };
    let (Some(access_key), Some(secret_key)) = (field("accessKeyID"), field("secretAccessKey"))
    else {
        return Err(missing());
    };
    // One client for the writes and the outsider's reads: no redirects,
    // a deadline, the bucket's CA.
    let http = reader(
        s3.ca_bundle.as_deref().map(str::as_bytes),
        "spec.publish.s3.caBundle",
    )?;
    let store = s3_store(s3, &endpoint, http.clone(), access_key, secret_key)?;
    Ok(Location {
        kind: "s3",
        cache_control: settings.cache_control(),
        name: public_url.clone(),
        public_url: Some(public_url.clone()),
        base: public_url,
        sink: Sink::Store {
            store: Arc::new(store),
            prefix: prefix.to_owned(),
        },
        reader: http,
    })
}

/// The bucket's store, writing through `http`. object_store's own client
/// would follow a redirect that the endpoint sends, to any host, and
/// resend the request there.
fn s3_store(
    s3: &S3Sink,
    endpoint: &url::Url,
    http: reqwest::Client,
    access_key: String,
    secret_key: String,
) -> Result<object_store::aws::AmazonS3, PublishError> {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint.trim_end_matches('/'))
        .with_region(&s3.region)
        .with_bucket_name(&s3.bucket)
        .with_access_key_id(access_key)
        .with_secret_access_key(secret_key)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(endpoint.scheme() == "http")
        .with_http_connector(Connector(http))
        .build()
        .map_err(|_| PublishError::BadUrl {
            field: "spec.publish.s3.endpoint",
            url: s3.endpoint.clone(),
        })
}

/// Gives object_store the controller's HTTP client instead of one of its
/// own making.
#[derive(Debug)]
struct Connector(reqwest::Client);

impl object_store::client::HttpConnector for Connector {
    fn connect(
        &self,
        _: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(self.0.clone()))
    }
}

/// The directory sink of rotation `name` in `namespace`: below
/// `--publish-root/NAMESPACE/NAME`, so that no rotation can write where
/// another one publishes.
fn directory_location(
    settings: &Settings,
    directory: &DirectorySink,
    namespace: &str,
    name: &str,
) -> Result<Location, PublishError> {
    let root = settings.root.as_ref().ok_or(PublishError::NoRoot)?;
    let path = directory.path.trim_end_matches('/');
    if !safe_relative(path) {
        return Err(PublishError::BadPath {
            path: directory.path.clone(),
        });
    }
    let public_url = match &directory.public_url {
        Some(url) => {
            allowed_url(settings, "spec.publish.directory.publicUrl", url)?;
            Some(url.trim_end_matches('/').to_owned())
        }
        None => None,
    };
    let dir = root.join(namespace).join(name).join(path);
    std::fs::create_dir_all(&dir).map_err(|_| PublishError::BadPath {
        path: directory.path.clone(),
    })?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|_| {
        PublishError::BadPath {
            path: directory.path.clone(),
        }
    })?;
    Ok(Location {
        kind: "directory",
        cache_control: settings.cache_control(),
        name: format!("directory {path}"),
        base: public_url
            .clone()
            .unwrap_or_else(|| NO_PUBLIC_URL.to_owned()),
        public_url,
        sink: Sink::Store {
            store: Arc::new(store),
            prefix: String::new(),
        },
        reader: reader(None, "spec.publish.directory")?,
    })
}

fn object_path(prefix: &str, key: &str) -> Result<object_store::path::Path, String> {
    let full = if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}/{key}")
    };
    object_store::path::Path::parse(full).map_err(|_| "not a safe object key".to_owned())
}

/// An object store error without what it may echo of a request.
fn store_problem(error: &object_store::Error) -> String {
    match error {
        object_store::Error::NotFound { .. } => "not found".to_owned(),
        object_store::Error::PermissionDenied { .. } => "permission denied".to_owned(),
        object_store::Error::Unauthenticated { .. } => {
            "the credentials were not accepted".to_owned()
        }
        other => {
            // Other errors may carry what the store answered: logged, never
            // shown in the status.
            tracing::warn!(error = %other, "the object store answered an error");
            "the store could not be reached or answered an error (see the controller's log)"
                .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `app` on a free loopback port; returns `host:port`.
    async fn serve(app: axum::Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// An endpoint that redirects every request to another host: the
    /// write fails, and nothing reaches that host.
    #[tokio::test]
    async fn the_bucket_follows_no_redirect_to_another_host() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let reached = Arc::new(AtomicUsize::new(0));
        let counter = reached.clone();
        let other = serve(axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "" }
        }))
        .await;
        let endpoint = serve(
            axum::Router::new().fallback(move |uri: http::Uri| async move {
                (
                    http::StatusCode::TEMPORARY_REDIRECT,
                    [(http::header::LOCATION, format!("http://{other}{uri}"))],
                )
            }),
        )
        .await;
        let s3 = S3Sink {
            endpoint: format!("http://{endpoint}"),
            region: "us-east-1".into(),
            bucket: "oidc".into(),
            prefix: None,
            public_url: None,
            credentials_secret: "s3".into(),
            ca_bundle: None,
        };
        let url = url::Url::parse(&s3.endpoint).expect("a URL");
        let http = reader(None, "spec.publish.s3.caBundle").expect("a client");
        let store = s3_store(&s3, &url, http, "id".into(), "secret".into()).expect("a store");
        let path = object_store::path::Path::from("openid/v1/jwks");
        let written = store.put(&path, b"{}".to_vec().into()).await;
        assert!(written.is_err(), "{written:?}");
        let read = store.get(&path).await;
        assert!(read.is_err(), "{:?}", read.map(|r| r.meta));
        assert_eq!(
            reached.load(Ordering::SeqCst),
            0,
            "a request was redirected"
        );
    }

    #[test]
    fn max_age_reads_cache_control_as_caches_do() {
        assert_eq!(max_age("public, max-age=60"), 60);
        assert_eq!(max_age("max-age=\"30\""), 30);
        assert_eq!(max_age("Max-Age=5, must-revalidate"), 5);
        assert_eq!(max_age("no-store"), 0);
        assert_eq!(max_age("max-age=60, no-cache"), 0);
        assert_eq!(max_age("private"), 0);
        assert_eq!(max_age("max-age=x"), 0);
        // A shared cache (a CDN) may keep it for s-maxage.
        assert_eq!(max_age("max-age=30, s-maxage=300"), 300);
    }

    #[test]
    fn sinks_reach_only_hosts_the_controller_allows() {
        let settings = Settings {
            allowed_hosts: vec!["s3.example".into(), "127.0.0.1:9000".into()],
            ..Settings::default()
        };
        assert!(allowed_url(&settings, "f", "https://s3.example/b").is_ok());
        assert!(allowed_url(&settings, "f", "https://s3.example:443/b").is_ok());
        assert!(allowed_url(&settings, "f", "http://127.0.0.1:9000").is_ok());
        for refused in [
            "http://127.0.0.1:9001",
            "https://169.254.169.254/latest",
            "https://kubernetes.default.svc",
            "https://s3.example.evil/b",
            "https://s3.example:10250/b",
        ] {
            assert!(
                matches!(
                    allowed_url(&settings, "f", refused),
                    Err(PublishError::HostNotAllowed { .. })
                ),
                "{refused}"
            );
        }
        for bad in [
            "file:///etc/passwd",
            "https://u:p@s3.example",
            "https://s3.example/?x",
            "s3.example",
        ] {
            assert!(
                matches!(
                    allowed_url(&settings, "f", bad),
                    Err(PublishError::BadUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn directories_stay_below_the_root() {
        let root = tempfile::tempdir().expect("a temp dir");
        let settings = Settings {
            root: Some(root.path().to_owned()),
            ..Settings::default()
        };
        for path in [
            "../x",
            "a/../../x",
            "/etc",
            "a//b",
            ".",
            "a/./b",
            "a\\..",
            "",
        ] {
            let sink = DirectorySink {
                path: path.to_owned(),
                public_url: None,
            };
            assert!(
                matches!(
                    directory_location(&settings, &sink, "ns", "r"),
                    Err(PublishError::BadPath { .. })
                ),
                "{path}"
            );
        }
        let none = Settings::default();
        let sink = DirectorySink {
            path: "prod".into(),
            public_url: None,
        };
        assert!(matches!(
            directory_location(&none, &sink, "ns", "r"),
            Err(PublishError::NoRoot)
        ));
        assert!(directory_location(&settings, &sink, "ns", "r").is_ok());
        // Each rotation's own directory: another namespace naming the same
        // path writes elsewhere.
        assert!(root.path().join("ns/r/prod").is_dir());
        assert!(directory_location(&settings, &sink, "other", "r").is_ok());
        assert!(root.path().join("other/r/prod").is_dir());
    }

    #[test]
    fn a_document_counts_only_when_it_names_its_issuer_and_jwks() {
        let issuer = Issuer::new("https://a.example").expect("issuer");
        let jwks = "https://ksa.example/ns/r/a.example/openid/v1/jwks";
        let good = format!(r#"{{"issuer":"https://a.example","jwks_uri":"{jwks}"}}"#);
        assert!(names(&good, &issuer, jwks));
        let other_issuer = format!(r#"{{"issuer":"https://b.example","jwks_uri":"{jwks}"}}"#);
        assert!(!names(&other_issuer, &issuer, jwks));
        let elsewhere = r#"{"issuer":"https://a.example","jwks_uri":"https://evil.example/jwks"}"#;
        assert!(!names(elsewhere, &issuer, jwks));
        assert!(!names("not json", &issuer, jwks));
    }
}
