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
use ksa_kube::keystore::{metadata_is_clean, owned_labels};
use ksa_kube::provenance::{Kind, NotOurs, Sealer, Subject};
use kube::Resource as _;
use kube::ResourceExt as _;
use kube::api::{Api, ObjectMeta};
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
    /// The controller's sealing key: the endpoint's ConfigMap and every
    /// bucket object are sealed with it, and only what it sealed is
    /// served or overwritten. None: nothing is written there.
    pub sealer: Option<Sealer>,
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
        namespace: String,
        rotation: String,
        sealer: Option<Sealer>,
        /// The rotation, so that its documents go when it does.
        owner: Option<OwnerReference>,
    },
    /// A bucket or a directory, below `prefix`.
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        /// A bucket's objects name their rotation and carry a seal; a
        /// directory (below the rotation's own) holds only the rotation's.
        owner: Option<Owner>,
    },
}

/// Whose a bucket's objects are. Buckets are shared (two clusters with the
/// same issuer and no prefix write the same keys), so each object ksa
/// writes carries, as user metadata, the rotation it was written for and
/// a seal over that, where it is, and its body; an object without both,
/// verified, is not overwritten or deleted.
struct Owner {
    /// `namespace/name`.
    rotation: String,
    namespace: String,
    bucket: String,
    sealer: Option<Sealer>,
}

/// The user metadata naming the rotation an object was written for.
const META_ROTATION: &str = "ksa-rotation";
/// The user metadata holding an object's seal.
const META_SEAL: &str = "ksa-seal";

impl Owner {
    fn sealer(&self) -> Result<&Sealer, String> {
        self.sealer
            .as_ref()
            .ok_or_else(|| "the controller has no sealing key".to_owned())
    }

    /// The seal of the object at `path` holding `body`, written for this
    /// rotation. Sealed as the endpoint's documents are, under a name no
    /// ConfigMap can have (it holds a `/`).
    fn seal(&self, sealer: &Sealer, path: &str, body: &[u8]) -> String {
        let name = format!("s3/{}/{path}", self.bucket);
        let subject = Subject {
            kind: Kind::Endpoint,
            namespace: &self.namespace,
            name: &name,
        };
        sealer.seal(
            &subject,
            [("rotation", self.rotation.as_bytes()), ("body", body)],
        )
    }

    /// The attributes an object written for this rotation carries.
    fn attributes(&self, sealer: &Sealer, path: &str, body: &[u8]) -> Vec<(Attribute, String)> {
        vec![
            (
                Attribute::Metadata(META_ROTATION.into()),
                self.rotation.clone(),
            ),
            (
                Attribute::Metadata(META_SEAL.into()),
                self.seal(sealer, path, body),
            ),
        ]
    }

    /// Why the object found at `path` may not be overwritten or deleted:
    /// it names another rotation, or its seal does not verify.
    fn refuses(&self, sealer: &Sealer, path: &str, found: &Stored) -> Option<String> {
        let meta = |key: &'static str| {
            found
                .attributes
                .get(&Attribute::Metadata(key.into()))
                .map(|v| v.as_ref().to_owned())
        };
        let object = format!("bucket {} key {path}", self.bucket);
        match meta(META_ROTATION) {
            Some(other) if other != self.rotation => {
                // Shown in the status: only when it reads as a rotation.
                let shown = if other.len() <= 320
                    && other.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-./".contains(&b)
                    }) {
                    other
                } else {
                    "(an unreadable name)".to_owned()
                };
                return Some(format!(
                    "{object} belongs to rotation {shown} (of this or another cluster): ksa \
                     will not overwrite it; give one of the rotations its own \
                     spec.publish.s3.prefix"
                ));
            }
            Some(_) => {}
            None => {
                return Some(format!(
                    "{object} was not written by ksa: ksa will not overwrite it; delete it if \
                     nobody needs it, or set spec.publish.s3.prefix"
                ));
            }
        }
        let sealed = match (&found.body, meta(META_SEAL)) {
            (Some(body), Some(seal)) => {
                let name = format!("s3/{}/{path}", self.bucket);
                let subject = Subject {
                    kind: Kind::Endpoint,
                    namespace: &self.namespace,
                    name: &name,
                };
                sealer.verify(
                    &subject,
                    [
                        ("rotation", self.rotation.as_bytes()),
                        ("body", body.as_slice()),
                    ],
                    &seal,
                )
            }
            _ => false,
        };
        (!sealed).then(|| {
            format!(
                "{object} names this rotation but its seal does not verify (written by another \
                 cluster's ksa, or changed since): ksa will not overwrite it; delete it if \
                 nobody needs it, or set spec.publish.s3.prefix"
            )
        })
    }
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
                    namespace: namespace.clone(),
                    rotation: name.clone(),
                    sealer: settings.sealer.clone(),
                    owner: rotation.controller_owner_ref(&()),
                },
                reader: reader(settings.public_ca.as_deref(), "--oidc-ca-file")?,
            });
        }
        if let Some(s3) = &spec.s3 {
            locations.push(bucket(settings, s3, client, &namespace, &name).await?);
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
                namespace,
                rotation,
                owner,
                sealer,
            } => {
                let sealer = sealer
                    .as_ref()
                    .ok_or_else(|| "the controller has no sealing key".to_owned())?;
                let name = endpoint_config_map(rotation);
                // Never written into, nor given an owner (which would have
                // it collected with the rotation), when it is another's.
                let current = config_maps
                    .get_opt(&name)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(current) = &current
                    && sealer
                        .check_config_map(Kind::Endpoint, namespace, current)
                        .is_err()
                {
                    let empty = current.data.as_ref().is_none_or(BTreeMap::is_empty)
                        && current.binary_data.as_ref().is_none_or(BTreeMap::is_empty);
                    if !empty || !metadata_is_clean(&current.metadata, &[]) {
                        let subject = Subject {
                            kind: Kind::Endpoint,
                            namespace,
                            name: &name,
                        };
                        return Err(NotOurs::new(
                            &subject,
                            "it has no valid seal and holds data or metadata ksa did not write",
                        )
                        .to_string());
                    }
                }
                let mut config_map = ConfigMap {
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
                sealer.seal_config_map(Kind::Endpoint, namespace, &mut config_map);
                // Created, or written on the condition that it is still the
                // one checked: never into one someone made meanwhile.
                ksa_kube::keystore::write_owned(config_maps, current.as_ref(), config_map, || {
                    NotOurs::new(
                        &Subject {
                            kind: Kind::Endpoint,
                            namespace,
                            name: &name,
                        },
                        "someone else created it while ksa was writing it",
                    )
                })
                .await
                .map_err(|e| e.to_string())?;
                Ok(())
            }
            Sink::Store {
                store,
                prefix,
                owner,
            } => {
                for (key, body) in documents {
                    let path = object_path(prefix, key)?;
                    let current = read_bounded(store.as_ref(), &path)
                        .await
                        .map_err(|e| store_problem(&e))?;
                    let sealer = owner.as_ref().map(Owner::sealer).transpose()?;
                    if let (Some(owner), Some(sealer), Some(current)) = (owner, sealer, &current)
                        && let Some(refused) = owner.refuses(sealer, path.as_ref(), current)
                    {
                        return Err(refused);
                    }
                    if current.and_then(|c| c.body).as_deref() == Some(body.as_bytes()) {
                        continue;
                    }
                    // A directory's files carry nothing but their bytes
                    // (the local store keeps no attributes).
                    let attributes = match (owner, sealer) {
                        (Some(owner), Some(sealer)) => {
                            let content_type = if key.ends_with(discovery::JWKS_PATH) {
                                "application/jwk-set+json"
                            } else {
                                "application/json"
                            };
                            let mut attributes = vec![
                                (Attribute::ContentType, content_type.to_owned()),
                                (Attribute::CacheControl, self.cache_control.clone()),
                            ];
                            attributes.extend(owner.attributes(
                                sealer,
                                path.as_ref(),
                                body.as_bytes(),
                            ));
                            Attributes::from_iter(attributes)
                        }
                        _ => Attributes::new(),
                    };
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
                    let path = object_path(prefix, key)?;
                    if let Some(owner) = owner {
                        let sealer = owner.sealer()?;
                        let current = read_bounded(store.as_ref(), &path)
                            .await
                            .map_err(|e| store_problem(&e))?;
                        let Some(current) = current else { continue };
                        if let Some(refused) = owner.refuses(sealer, path.as_ref(), &current) {
                            // Another's: left as it is.
                            tracing::warn!(problem = %refused, "not deleting a withdrawn document");
                            continue;
                        }
                    }
                    match store.delete(&path).await {
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
        view.serves = served_at(&paths.jwks_url, &jwks, kids);
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
        let Sink::Store { store, prefix, .. } = &self.sink else {
            return view;
        };
        let read = async |key: String| -> Option<String> {
            let path = object_path(prefix, &key).ok()?;
            let bytes = read_bounded(store.as_ref(), &path).await.ok()??.body?;
            String::from_utf8(bytes).ok()
        };
        let Some(document) = read(paths.discovery_key()).await else {
            return view;
        };
        if names(&document, issuer, &paths.jwks_url)
            && let Some(jwks) = read(paths.jwks_key()).await
        {
            view.serves = served_at(&view.url, &jwks, kids);
        }
        view
    }
}

/// An object found in a store.
#[derive(Debug)]
struct Stored {
    /// Its bytes; None when it holds more than [`MAX_DOCUMENT_BYTES`] (it
    /// is never read whole).
    body: Option<Vec<u8>>,
    /// Its attributes (a bucket's user metadata).
    attributes: Attributes,
}

/// The object at `path` when it exists, read as a stream that stops at
/// [`MAX_DOCUMENT_BYTES`] whatever the store says of its size.
async fn read_bounded(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
) -> Result<Option<Stored>, object_store::Error> {
    use futures::StreamExt as _;
    match store.head(path).await {
        // A ranged read of an empty object is refused by some stores.
        Ok(meta) if meta.size == 0 => {
            return Ok(Some(Stored {
                body: Some(Vec::new()),
                attributes: Attributes::new(),
            }));
        }
        Ok(_) => {}
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error),
    }
    let options = object_store::GetOptions {
        range: Some((0..MAX_DOCUMENT_BYTES as u64 + 1).into()),
        ..object_store::GetOptions::default()
    };
    let found = match store.get_opts(path, options).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let attributes = found.attributes.clone();
    let mut stream = found.into_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Ok(Some(Stored {
                body: None,
                attributes,
            }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(Stored {
        body: Some(body),
        attributes,
    }))
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

/// The stored key versions the JWKS read at `location` serves; `None`, with
/// a warning, when it is not a JWKS ksa made (a kid ksa did not make is
/// drift: the location then counts as serving nothing, and is rewritten).
fn served_at(
    location: &str,
    jwks: &str,
    kids: &BTreeMap<String, KeyVersion>,
) -> Option<BTreeSet<KeyVersion>> {
    let served = served_versions(jwks, kids);
    if served.is_none() {
        tracing::warn!(
            %location,
            "the JWKS read there is not one ksa publishes (it serves a key ksa did not make, \
             or is not a JWKS); it is republished"
        );
    }
    served
}

/// The stored key versions a JWKS serves, by kid; `None` when it is not a
/// JWKS, or serves a key whose kid is not a stored key's.
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
    set.keys
        .iter()
        .map(|key| kids.get(key.kid.as_deref()?).copied())
        .collect()
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
    let shown = shown_url(url);
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

/// `url` as messages show it: never its credentials, query or fragment,
/// which may carry secrets. Taken from the parsed URL, which finds the
/// credentials where a client would (the last `@` before the host).
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let credentials = if parsed.username().is_empty() && parsed.password().is_none() {
                ""
            } else {
                "(credentials)@"
            };
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let dropped = if parsed.query().is_some() || parsed.fragment().is_some() {
                "?(not shown)"
            } else {
                ""
            };
            format!(
                "{}://{credentials}{}{port}{}{dropped}",
                parsed.scheme(),
                parsed.host_str().unwrap_or_default(),
                parsed.path()
            )
        }
        Err(_) if url.contains(['@', '?', '#']) => {
            "(not a URL; not shown, as it may hold credentials)".to_owned()
        }
        Err(_) => url.to_owned(),
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
    name: &str,
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
            owner: Some(Owner {
                rotation: format!("{namespace}/{name}"),
                namespace: namespace.to_owned(),
                bucket: s3.bucket.clone(),
                sealer: settings.sealer.clone(),
            }),
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
            url: shown_url(&s3.endpoint),
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
            owner: None,
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

    /// Issue 29, finding 2: a JWKS that serves a kid ksa did not make does
    /// not count as serving the stored keys, so it is rewritten.
    #[test]
    fn a_jwks_with_a_kid_ksa_did_not_make_serves_nothing() {
        let kids = BTreeMap::from([("K1".to_owned(), KeyVersion::new(1))]);
        assert_eq!(
            served_versions(r#"{"keys":[{"kid":"K1"}]}"#, &kids),
            Some(BTreeSet::from([KeyVersion::new(1)]))
        );
        assert_eq!(
            served_versions(r#"{"keys":[{"kid":"K1"},{"kid":"ATTACKER"}]}"#, &kids),
            None
        );
        assert_eq!(
            served_versions(r#"{"keys":[{"kid":"K1"},{"kty":"EC"}]}"#, &kids),
            None
        );
    }

    /// Issue 29, finding 9: a URL's credentials never reach a message,
    /// wherever its `@`s are.
    #[test]
    fn credentials_are_redacted_from_the_parsed_url() {
        let settings = Settings {
            allowed_hosts: vec!["s3.example".into()],
            ..Settings::default()
        };
        for url in [
            "https://u:p@ss@s3.example/b",
            "https://u:p@ss@s3.example/b?x=secret",
            "https://u@p@s3.example",
            "ht!tp://u:p@ss@s3.example",
        ] {
            let error = allowed_url(&settings, "f", url).expect_err(url).to_string();
            assert!(
                !error.contains("ss") && !error.contains(":p") && !error.contains("secret"),
                "{url}: {error}"
            );
        }
    }

    /// A bucket that answers a read with a body that never ends: one that
    /// says it holds a small object, then streams for ever.
    async fn endless_bucket() -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let common = "ETag: \"e\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n";
                    if head.starts_with(b"HEAD") {
                        let answer =
                            format!("HTTP/1.1 200 OK\r\n{common}Content-Length: 10\r\n\r\n");
                        let _ = socket.write_all(answer.as_bytes()).await;
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 206 Partial Content\r\n{common}Content-Length: 1000000000000\r\n\
                         Content-Range: bytes 0-{MAX_DOCUMENT_BYTES}/1000000000000\r\n\r\n"
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    while socket.write_all(&chunk).await.is_ok() {}
                });
            }
        });
        addr
    }

    /// Issue 29, finding 4: an endless body is read up to the cap, not
    /// until the deadline.
    #[tokio::test]
    async fn an_endless_body_is_read_only_up_to_the_cap() {
        let addr = endless_bucket().await;
        let s3 = S3Sink {
            endpoint: format!("http://{addr}"),
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
        let read = tokio::time::timeout(Duration::from_secs(5), read_bounded(&store, &path))
            .await
            .expect("stopped at the cap, well before the request's deadline");
        assert!(
            matches!(read, Ok(Some(Stored { body: None, .. }))),
            "{read:?}"
        );
    }

    /// A fake API server: records each request's method and path; answers
    /// a GET of `ns/r-oidc` with `existing` (404 when None) and a PATCH
    /// with what it was sent.
    /// Each request's method, path and body.
    type Asked = Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

    fn api_server(existing: Option<serde_json::Value>) -> (kube::Client, Asked) {
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let log = log.clone();
            let existing = existing.clone();
            async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                let body = http_body_util::BodyExt::collect(request.into_body())
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_default();
                log.lock().unwrap_or_else(|e| e.into_inner()).push((
                    method.clone(),
                    path,
                    body.clone(),
                ));
                let not_found = serde_json::json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found",
                });
                let (status, answer) = match (method.as_str(), existing) {
                    ("GET", Some(existing)) => (200, existing.to_string()),
                    ("GET", None) => (404, not_found.to_string()),
                    ("PATCH", _) => (200, body),
                    // Created when absent (`keystore::write_owned`).
                    ("POST", None) => (201, body),
                    _ => (404, not_found.to_string()),
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(answer)
                        .unwrap_or_default(),
                )
            }
        });
        (kube::Client::new(service, "default"), asked)
    }

    fn endpoint_location(client: &kube::Client) -> Location {
        Location {
            kind: "endpoint",
            cache_control: "public, max-age=30".into(),
            name: "https://ksa.example/ns/r".into(),
            public_url: Some("https://ksa.example/ns/r".into()),
            base: "https://ksa.example/ns/r".into(),
            sink: Sink::Endpoint {
                config_maps: Box::new(Api::namespaced(client.clone(), "ns")),
                namespace: "ns".into(),
                rotation: "r".into(),
                owner: None,
                sealer: Some(sealer()),
            },
            reader: reader(None, "f").expect("a client"),
        }
    }

    fn sealer() -> Sealer {
        Sealer::from_bytes(&[7; 32]).expect("32 bytes")
    }

    fn documents() -> BTreeMap<String, String> {
        BTreeMap::from([(
            "a.example/openid/v1/jwks".to_owned(),
            "{\"keys\":[]}".to_owned(),
        )])
    }

    /// Issue 29, finding 6: a `NAME-oidc` ksa did not make, holding data of
    /// another's, is neither written into nor given an owner.
    #[tokio::test]
    async fn a_foreign_endpoint_config_map_is_never_written() {
        let foreign = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "r-oidc", "namespace": "ns"},
            "data": {"settings": "theirs"},
        });
        let (client, asked) = api_server(Some(foreign));
        let written = endpoint_location(&client).write(&documents(), &[]).await;
        let asked = asked.lock().expect("works").clone();
        assert!(
            asked.iter().all(|(method, _, _)| method == "GET"),
            "only read: {asked:?}"
        );
        let problem = written.expect_err("refused");
        assert!(
            problem.contains("ns/r-oidc") && problem.contains("delete it"),
            "{problem}"
        );
    }

    /// What the endpoint writes is sealed, and an empty `NAME-oidc` of
    /// nobody's (nothing to lose) or its own is written.
    #[tokio::test]
    async fn the_endpoint_config_map_is_sealed_and_only_taken_over_when_empty() {
        let empty = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "r-oidc", "namespace": "ns"},
        });
        for existing in [None, Some(empty)] {
            let (client, asked) = api_server(existing);
            endpoint_location(&client)
                .write(&documents(), &[])
                .await
                .expect("written");
            let asked = asked.lock().expect("works").clone();
            // Created when absent, applied over the one read otherwise.
            let (_, _, body) = asked
                .iter()
                .find(|(method, _, _)| method == "PATCH" || method == "POST")
                .expect("a write");
            let written: ConfigMap = serde_json::from_str(body).expect("a ConfigMap");
            assert_eq!(
                sealer().check_config_map(Kind::Endpoint, "ns", &written),
                Ok(())
            );
            // Its own, written again.
            let (client, asked) = api_server(Some(serde_json::to_value(&written).expect("json")));
            let mut changed = documents();
            changed.insert("b".into(), "{}".into());
            endpoint_location(&client)
                .write(&changed, &[])
                .await
                .expect("written");
            assert!(
                asked
                    .lock()
                    .expect("works")
                    .iter()
                    .any(|(m, _, _)| m == "PATCH")
            );
        }
        // Empty, but with an owner of another's: refused.
        let owned = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "r-oidc", "namespace": "ns", "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}]},
        });
        let (client, _) = api_server(Some(owned));
        assert!(
            endpoint_location(&client)
                .write(&documents(), &[])
                .await
                .is_err()
        );
    }

    fn bucket_location(store: Arc<dyn ObjectStore>, rotation: &str) -> Location {
        Location {
            kind: "s3",
            cache_control: "public, max-age=30".into(),
            name: "https://s3.example/b".into(),
            public_url: Some("https://s3.example/b".into()),
            base: "https://s3.example/b".into(),
            sink: Sink::Store {
                store,
                prefix: String::new(),
                owner: Some(Owner {
                    rotation: format!("ns/{rotation}"),
                    namespace: "ns".into(),
                    bucket: "b".into(),
                    sealer: Some(sealer()),
                }),
            },
            reader: reader(None, "f").expect("a client"),
        }
    }

    /// Issue 29, finding 7: two rotations sharing a bucket never overwrite
    /// each other's objects, nor an object ksa did not write.
    #[tokio::test]
    async fn a_bucket_object_of_another_rotation_is_never_overwritten() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let a = bucket_location(store.clone(), "a");
        let b = bucket_location(store.clone(), "b");
        a.write(&documents(), &[]).await.expect("the first writer");
        let mut changed = documents();
        changed.insert("a.example/openid/v1/jwks".into(), "{\"keys\":[1]}".into());
        a.write(&changed, &[]).await.expect("its own object");
        let refused = b
            .write(&documents(), &[])
            .await
            .expect_err("another rotation's");
        assert!(
            refused.contains("bucket b key a.example/openid/v1/jwks")
                && refused.contains("rotation ns/a"),
            "{refused}"
        );
        let path = object_store::path::Path::from("a.example/openid/v1/jwks");
        let kept = store
            .get(&path)
            .await
            .expect("there")
            .bytes()
            .await
            .expect("read");
        assert_eq!(kept.as_ref(), b"{\"keys\":[1]}");
        // An object ksa did not write.
        let path = object_store::path::Path::from("c.example/openid/v1/jwks");
        store
            .put(&path, b"theirs".to_vec().into())
            .await
            .expect("written");
        let theirs = BTreeMap::from([("c.example/openid/v1/jwks".to_owned(), "{}".to_owned())]);
        let refused = a.write(&theirs, &[]).await.expect_err("not ksa's");
        assert!(refused.contains("not written by ksa"), "{refused}");
        // Another cluster's ksa, same rotation name, another sealing key.
        let mut other_cluster = bucket_location(store.clone(), "a");
        if let Sink::Store {
            owner: Some(owner), ..
        } = &mut other_cluster.sink
        {
            owner.sealer = Sealer::from_bytes(&[8; 32]);
        }
        let refused = other_cluster
            .write(&documents(), &[])
            .await
            .expect_err("another cluster's");
        assert!(refused.contains("seal does not verify"), "{refused}");
        // Withdrawn documents of another rotation are left alone.
        let gone = ["a.example/openid/v1/jwks".to_owned()];
        b.write(&BTreeMap::new(), &gone)
            .await
            .expect("nothing of its");
        assert!(
            store
                .head(&object_store::path::Path::from("a.example/openid/v1/jwks"))
                .await
                .is_ok()
        );
        a.write(&BTreeMap::new(), &gone).await.expect("its own");
        assert!(
            store
                .head(&object_store::path::Path::from("a.example/openid/v1/jwks"))
                .await
                .is_err()
        );
    }

    /// A directory's files are the documents, with nothing else (the
    /// local store keeps no attributes, and refuses to be given any).
    #[tokio::test]
    async fn a_directory_is_written_with_the_documents() {
        let root = tempfile::tempdir().expect("a temp dir");
        let settings = Settings {
            root: Some(root.path().to_owned()),
            ..Settings::default()
        };
        let sink = DirectorySink {
            path: "prod".into(),
            public_url: None,
        };
        let location = directory_location(&settings, &sink, "ns", "r").expect("a directory");
        location.write(&documents(), &[]).await.expect("written");
        let written =
            std::fs::read_to_string(root.path().join("ns/r/prod/a.example/openid/v1/jwks"))
                .expect("a file");
        assert_eq!(written, "{\"keys\":[]}");
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
