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
//!
//! - `locations`: each location built from the spec and checked against
//!   the controller's settings before anything is contacted;
//! - `sinks`: writing a location's documents, never over another's;
//! - `outsider`: reading them back as an outside verifier would. Whether
//!   what it reads counts is the core's decision
//!   ([`ksa_core::discovery::is_document_of`], `served_versions`,
//!   `max_age`).

mod locations;
mod outsider;
mod sinks;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ksa_core::KeyVersion;
use ksa_core::discovery;
use ksa_core::issuer::Issuer;
use ksa_core::jwk::Jwks;
use ksa_core::key::PublicKey;
use ksa_core::rotation::PublicationView;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::provenance::Sealer;
use kube::ResourceExt as _;

use locations::Location;

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
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most read of one published document.
pub(super) const MAX_DOCUMENT_BYTES: usize = 1 << 20;

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
            locations.push(locations::endpoint(settings, rotation, client, url)?);
        }
        if let Some(s3) = &spec.s3 {
            locations.push(locations::bucket(settings, s3, client, &namespace, &name).await?);
        }
        if let Some(directory) = &spec.directory {
            locations.push(locations::directory(
                settings, directory, &namespace, &name,
            )?);
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

/// The ConfigMap behind the endpoint of rotation `name`.
pub fn endpoint_config_map(name: &str) -> String {
    format!("{name}-oidc")
}
