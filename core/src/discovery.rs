//! Where ksa publishes an issuer's OIDC discovery document and JWKS for
//! outside verifiers, and what those documents say.
//!
//! A *location* is a public base URL that outside verifiers read (the
//! controller's endpoint for one rotation, a bucket, a directory served by a
//! static host). Each issuer gets its own pair of documents there, at paths
//! that mirror kube-apiserver's own:
//!
//! ```text
//! <base>/<issuer path>/.well-known/openid-configuration
//! <base>/<issuer path>/openid/v1/jwks
//! ```
//!
//! The issuer path is what the issuer adds to the base when it lies under
//! it (an issuer equal to the base gets the base itself, so an issuer hosted
//! where ksa publishes needs no discovery override, as IRSA-style
//! federation requires), and otherwise the issuer's host and path
//! (`https://kubernetes.default.svc` under `https://oidc.example` is
//! `https://oidc.example/kubernetes.default.svc/...`, which verifiers are
//! pointed at with their discovery-URL setting). Each issuer keeps its path
//! across rotations, so verifiers are configured once.
//!
//! The discovery document names the issuer it is published for and points
//! `jwks_uri` at the JWKS beside it, under the same base.
//!
//! What an outsider reads back there counts only as this module says
//! ([`is_document_of`], [`served_versions`], [`max_age`]): the controller
//! fetches, the decisions are here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::KeyVersion;
use crate::issuer::Issuer;
use crate::key::PublicKey;

/// The discovery document's path under an issuer's path.
pub const DISCOVERY_PATH: &str = ".well-known/openid-configuration";
/// The JWKS's path under an issuer's path, as kube-apiserver serves it.
pub const JWKS_PATH: &str = "openid/v1/jwks";

/// Why an issuer's documents cannot be placed under a base URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum LayoutError {
    #[error(
        "the public URL {base:?} is not an http(s) URL with a host and no query, fragment or credentials"
    )]
    BadBase { base: String },
    #[error(
        "the issuer {issuer:?} cannot be published under {base}: its path segment {segment:?} is not \
         made of letters, digits and . _ ~ : - (or is . or ..)"
    )]
    BadSegment {
        issuer: Issuer,
        base: String,
        segment: String,
    },
}

/// Where one issuer's documents live at one location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerPaths {
    /// The issuer's path under the base: empty, or `/`-separated safe
    /// segments (no `.`, `..` or empty one), so it can name an object key or
    /// a file below a directory and never leave it.
    pub relative: String,
    /// The discovery document's public URL.
    pub discovery_url: String,
    /// The JWKS's public URL (the document's `jwks_uri`).
    pub jwks_url: String,
}

impl IssuerPaths {
    /// The discovery document's key below the location (object key or
    /// file path).
    pub fn discovery_key(&self) -> String {
        join(&self.relative, DISCOVERY_PATH)
    }

    /// The JWKS's key below the location.
    pub fn jwks_key(&self) -> String {
        join(&self.relative, JWKS_PATH)
    }
}

fn join(relative: &str, path: &str) -> String {
    if relative.is_empty() {
        path.to_owned()
    } else {
        format!("{relative}/{path}")
    }
}

/// Where `issuer`'s documents live under the public URL `base`.
pub fn issuer_paths(base: &str, issuer: &Issuer) -> Result<IssuerPaths, LayoutError> {
    let base = checked_base(base)?;
    let text = issuer.as_str();
    let relative = match text.strip_prefix(base) {
        Some("" | "/") => "",
        Some(rest) if rest.starts_with('/') => rest.trim_matches('/'),
        // Not under the base: the issuer's host and path.
        _ => text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .unwrap_or(text)
            .trim_matches('/'),
    };
    for segment in relative.split('/').filter(|_| !relative.is_empty()) {
        let safe = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~:-".contains(&b));
        if !safe {
            return Err(LayoutError::BadSegment {
                issuer: issuer.clone(),
                base: base.to_owned(),
                segment: segment.to_owned(),
            });
        }
    }
    let under = if relative.is_empty() {
        base.to_owned()
    } else {
        format!("{base}/{relative}")
    };
    Ok(IssuerPaths {
        relative: relative.to_owned(),
        discovery_url: format!("{under}/{DISCOVERY_PATH}"),
        jwks_url: format!("{under}/{JWKS_PATH}"),
    })
}

/// `base` without a final `/`, when it is an http(s) URL with a host and
/// no query, fragment or credentials.
fn checked_base(base: &str) -> Result<&str, LayoutError> {
    let bad = || LayoutError::BadBase {
        base: base.to_owned(),
    };
    let url = url::Url::parse(base).map_err(|_| bad())?;
    let fine = matches!(url.scheme(), "https" | "http")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && !base.contains(['?', '#'])
        && base.bytes().all(|b| b.is_ascii_graphic());
    if fine {
        Ok(base.trim_end_matches('/'))
    } else {
        Err(bad())
    }
}

/// The OIDC discovery document of `issuer` whose keys are at `jwks_url`,
/// as kube-apiserver writes its own (the fields OIDC clients require, and
/// the algorithms of `keys`).
pub fn discovery_document(issuer: &Issuer, jwks_url: &str, keys: &[PublicKey]) -> String {
    #[derive(Serialize)]
    struct Discovery<'a> {
        issuer: &'a str,
        jwks_uri: &'a str,
        response_types_supported: [&'static str; 1],
        subject_types_supported: [&'static str; 1],
        id_token_signing_alg_values_supported: Vec<&'static str>,
    }
    let mut algorithms: Vec<&'static str> = keys.iter().map(|k| k.algorithm().as_str()).collect();
    algorithms.sort_unstable();
    algorithms.dedup();
    let document = Discovery {
        issuer: issuer.as_str(),
        jwks_uri: jwks_url,
        response_types_supported: ["id_token"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: algorithms,
    };
    serde_json::to_string(&document).unwrap_or_default()
}

/// Whether `document`, read where `issuer`'s discovery document is
/// published, counts as one: it names `issuer` and points `jwks_uri` at
/// `jwks_url`, the JWKS ksa published beside it.
pub fn is_document_of(document: &str, issuer: &Issuer, jwks_url: &str) -> bool {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    serde_json::from_str::<Discovery>(document)
        .is_ok_and(|d| d.issuer == issuer.as_str() && d.jwks_uri == jwks_url)
}

/// The stored key versions a JWKS serves, by kid (`kids` maps each stored
/// key's kid to its version); `None` when it is not a JWKS, or serves a key
/// whose kid is not a stored key's: a kid ksa did not make is drift, and
/// the location counts as serving nothing.
pub fn served_versions(
    jwks: &str,
    kids: &BTreeMap<String, KeyVersion>,
) -> Option<BTreeSet<KeyVersion>> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<Key>,
    }
    #[derive(Deserialize)]
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

/// The `max-age` of a `Cache-Control` value, in seconds, as a cache that
/// keeps it longest reads it (`s-maxage` for a shared cache); 0 when
/// absent or when caching is not allowed.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_document_counts_only_when_it_names_its_issuer_and_jwks() {
        let issuer = Issuer::new("https://a.example").expect("issuer");
        let jwks = "https://ksa.example/ns/r/a.example/openid/v1/jwks";
        let good = format!(r#"{{"issuer":"https://a.example","jwks_uri":"{jwks}"}}"#);
        assert!(is_document_of(&good, &issuer, jwks));
        let other_issuer = format!(r#"{{"issuer":"https://b.example","jwks_uri":"{jwks}"}}"#);
        assert!(!is_document_of(&other_issuer, &issuer, jwks));
        let elsewhere = r#"{"issuer":"https://a.example","jwks_uri":"https://evil.example/jwks"}"#;
        assert!(!is_document_of(elsewhere, &issuer, jwks));
        assert!(!is_document_of("not json", &issuer, jwks));
    }

    fn issuer(text: &str) -> Issuer {
        Issuer::new(text).expect("an issuer")
    }

    #[test]
    fn an_issuer_under_the_base_keeps_its_own_url() {
        let paths = issuer_paths(
            "https://oidc.example/prod/",
            &issuer("https://oidc.example/prod"),
        )
        .expect("placed");
        assert_eq!(paths.relative, "");
        assert_eq!(
            paths.discovery_url,
            "https://oidc.example/prod/.well-known/openid-configuration"
        );
        assert_eq!(paths.jwks_url, "https://oidc.example/prod/openid/v1/jwks");
        assert_eq!(paths.discovery_key(), ".well-known/openid-configuration");
        let below = issuer_paths("https://oidc.example", &issuer("https://oidc.example/b/"))
            .expect("placed");
        assert_eq!(below.relative, "b");
        assert_eq!(below.jwks_key(), "b/openid/v1/jwks");
    }

    #[test]
    fn another_issuer_goes_under_its_host_and_path() {
        let paths = issuer_paths(
            "https://ksa.example/ns/r",
            &issuer("https://kubernetes.default.svc.cluster.local"),
        )
        .expect("placed");
        assert_eq!(
            paths.discovery_url,
            "https://ksa.example/ns/r/kubernetes.default.svc.cluster.local/.well-known/openid-configuration"
        );
        let port = issuer_paths("https://ksa.example", &issuer("https://a.example:8443/x"))
            .expect("placed");
        assert_eq!(port.relative, "a.example:8443/x");
        // An issuer that is not a URL at all, as kube-apiserver allows.
        let bare = issuer_paths("https://ksa.example", &issuer("kubernetes")).expect("placed");
        assert_eq!(bare.relative, "kubernetes");
    }

    #[test]
    fn nothing_escapes_the_location() {
        for text in [
            "https://a.example/../x",
            "https://a.example/./x",
            "https://a.example//x",
            "https://a.example/%2e%2e/x",
            "https://a.example/x\\..",
            "..",
            "https://a.example/x/..",
        ] {
            let error = issuer_paths("https://ksa.example", &issuer(text));
            assert!(
                matches!(error, Err(LayoutError::BadSegment { .. })),
                "{text}: {error:?}"
            );
        }
        for base in [
            "ftp://ksa.example",
            "https://u:p@ksa.example",
            "https://ksa.example/?x",
            "https://ksa.example/#x",
            "ksa.example",
            "https://",
        ] {
            assert!(
                matches!(
                    issuer_paths(base, &issuer("https://a.example")),
                    Err(LayoutError::BadBase { .. })
                ),
                "{base}"
            );
        }
    }
}
