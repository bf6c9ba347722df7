//! Reading a location as an outside verifier does: no credentials, no
//! redirects, a deadline and a size limit. Whether what it reads counts is
//! the core's decision ([`discovery::is_document_of`],
//! [`discovery::served_versions`], [`discovery::max_age`]).

use std::collections::{BTreeMap, BTreeSet};

use ksa_core::KeyVersion;
use ksa_core::discovery::{self, IssuerPaths};
use ksa_core::issuer::Issuer;
use ksa_core::rotation::PublicationView;

use super::locations::Location;
use super::sinks::{Sink, object_path, read_bounded};
use super::{MAX_DOCUMENT_BYTES, PublishError, REQUEST_TIMEOUT};

impl Location {
    /// Reads `issuer`'s documents as an outsider: the discovery document
    /// must name the issuer and point `jwks_uri` at the JWKS ksa published
    /// beside it; the keys served are known by their kids.
    pub(super) async fn read(
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
        if !discovery::is_document_of(&document, issuer, &paths.jwks_url) {
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
        if discovery::is_document_of(&document, issuer, &paths.jwks_url)
            && let Some(jwks) = read(paths.jwks_key()).await
        {
            view.serves = served_at(&view.url, &jwks, kids);
        }
        view
    }
}

/// The stored key versions the JWKS read at `location` serves; `None`, with
/// a warning, when it is not a JWKS ksa made (a kid ksa did not make is
/// drift: the location then counts as serving nothing, and is rewritten).
fn served_at(
    location: &str,
    jwks: &str,
    kids: &BTreeMap<String, KeyVersion>,
) -> Option<BTreeSet<KeyVersion>> {
    let served = discovery::served_versions(jwks, kids);
    if served.is_none() {
        tracing::warn!(
            %location,
            "the JWKS read there is not one ksa publishes (it serves a key ksa did not make, \
             or is not a JWKS); it is republished"
        );
    }
    served
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
        .map_or(0, discovery::max_age);
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

/// An outsider's HTTP client, trusting `ca` besides the system's roots.
pub(super) fn reader(
    ca: Option<&[u8]>,
    field: &'static str,
) -> Result<reqwest::Client, PublishError> {
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
