//! An outside verifier that reads only the bucket, as a relying party that
//! federates with a cluster through OIDC discovery does (a cloud IAM's
//! simplest form, or a service checking tokens itself): it fetches the
//! discovery document anonymously over https (trusting the given CA
//! only), checks that it names the issuer it trusts, follows its
//! `jwks_uri`, and verifies a token's signature, issuer, audience and
//! lifetime with `ksa-core`.
//!
//! It caches the discovery document and the JWKS, each for as long as its
//! `Cache-Control: max-age` allows (`no-store`, `no-cache` or no `max-age`
//! at all: not cached; a changed `jwks_uri` drops the cached JWKS), and
//! does not fetch the JWKS again before then, even for a `kid` it does
//! not know: the strictest
//! reading of what a publisher promises with `max-age`. So a new key is
//! accepted here only once the cached copy that lacks it has expired; a
//! publisher must put the key out at least `max-age` before tokens signed
//! with it appear. (kube-apiserver's JWT authenticator is more lenient with
//! new keys and less with retired ones: see [`crate::outside`].)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ksa_core::crypto::AwsLc;
use ksa_core::keyset::KeySet;
use ksa_core::token::{self, Expectations};
use tokio::sync::Mutex;

use crate::outside::JwtAuthenticator;

/// The most of a discovery document or JWKS it reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// What the bucket verifier made of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a published key, of a trusted issuer and audience, and
    /// within its lifetime; its `sub`.
    Accepted { subject: String },
    /// Not: why.
    Rejected { reason: String },
}

/// The keys of one issuer as last fetched, and until when they may be used.
struct Cached {
    /// The discovery document's, and until when it may be used without
    /// reading the document again.
    jwks_uri: String,
    discovery_expires: Instant,
    keys: Arc<KeySet>,
    kids: Vec<String>,
    jwks_expires: Instant,
}

struct Issuer {
    trust: JwtAuthenticator,
    client: reqwest::Client,
    cache: Mutex<Option<Cached>>,
}

/// Verifies tokens against what the bucket publishes, for each trusted
/// issuer.
#[allow(
    missing_debug_implementations,
    reason = "holds HTTP clients and key sets; nothing useful to print"
)]
pub struct BucketVerifier {
    issuers: Vec<Issuer>,
    /// How many times a discovery document was fetched.
    fetches: std::sync::atomic::AtomicU64,
}

/// `max-age` of a `Cache-Control` value; zero when it says `no-store` or
/// `no-cache`, or has no `max-age`.
pub fn max_age(cache_control: Option<&str>) -> Duration {
    let Some(value) = cache_control else {
        return Duration::ZERO;
    };
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            max_age = seconds.trim_matches('"').parse().ok();
        }
    }
    Duration::from_secs(max_age.unwrap_or(0))
}

impl BucketVerifier {
    /// Trusts each of `authenticators` (issuer, discovery URL, CA,
    /// audience), as the outside API server is configured.
    pub fn new(authenticators: &[JwtAuthenticator]) -> Result<BucketVerifier> {
        let issuers = authenticators
            .iter()
            .map(|trust| {
                Ok(Issuer {
                    client: crate::s3::anonymous_client(&trust.ca_pem)?,
                    trust: trust.clone(),
                    cache: Mutex::new(None),
                })
            })
            .collect::<Result<_>>()?;
        Ok(BucketVerifier {
            issuers,
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many times it fetched a discovery document.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The kids it holds for `issuer` now (without fetching), if cached.
    pub async fn cached_kids(&self, issuer: &str) -> Option<Vec<String>> {
        let issuer = self.issuers.iter().find(|i| i.trust.issuer == issuer)?;
        let cache = issuer.cache.lock().await;
        cache
            .as_ref()
            .filter(|c| c.jwks_expires > Instant::now())
            .map(|c| c.kids.clone())
    }

    /// Verifies `token`: rejected when its issuer is not trusted or it does
    /// not verify; an error when the bucket cannot be read.
    pub async fn verify(&self, token: &str) -> Result<Verdict> {
        let iss = match token::decode(token) {
            Ok(decoded) => decoded.claims.iss.unwrap_or_default(),
            Err(error) => {
                return Ok(Verdict::Rejected {
                    reason: error.to_string(),
                });
            }
        };
        let Some(issuer) = self.issuers.iter().find(|i| i.trust.issuer == iss) else {
            return Ok(Verdict::Rejected {
                reason: format!("no trusted issuer {iss:?}"),
            });
        };
        let keys = self.keys(issuer).await?;
        let expect = Expectations {
            issuers: vec![issuer.trust.issuer.clone()],
            audiences: vec![issuer.trust.audience.clone()],
            ..Expectations::at(jiff::Timestamp::now().as_second())
        };
        Ok(match token::verify(token, &keys, &expect) {
            Ok(verified) => Verdict::Accepted {
                subject: verified.claims.sub.unwrap_or_default(),
            },
            Err(error) => Verdict::Rejected {
                reason: error.to_string(),
            },
        })
    }

    /// The issuer's keys: the `jwks_uri` of the discovery document and
    /// the JWKS there, each from the cache while its own `max-age` lasts,
    /// otherwise fetched (and cached as long as its response allows).
    async fn keys(&self, issuer: &Issuer) -> Result<Arc<KeySet>> {
        let mut cache = issuer.cache.lock().await;
        let now = Instant::now();
        let trust = &issuer.trust;
        let jwks_uri = match cache.as_ref() {
            Some(cached) if cached.discovery_expires > now => cached.jwks_uri.clone(),
            _ => {
                self.fetches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (discovery, max_age) = fetch(&issuer.client, &trust.discovery_url).await?;
                let jwks_uri = jwks_uri(&discovery, trust)?;
                if let Some(cached) = cache.as_mut()
                    && cached.jwks_uri == jwks_uri
                {
                    cached.discovery_expires = now + max_age;
                } else {
                    // A new jwks_uri: whatever was cached is of another
                    // document.
                    *cache = None;
                }
                jwks_uri
            }
        };
        if let Some(cached) = cache.as_ref()
            && cached.jwks_uri == jwks_uri
            && cached.jwks_expires > now
        {
            return Ok(cached.keys.clone());
        }
        let (jwks, max_age) = fetch(&issuer.client, &jwks_uri).await?;
        let trusted =
            ksa_core::jwk::parse_jwks(&jwks).with_context(|| format!("the JWKS at {jwks_uri}"))?;
        let kids = trusted.iter().map(|k| k.kid.as_str().to_owned()).collect();
        let (keys, refused) = KeySet::load_usable(trusted, &AwsLc::new());
        if let Some(bad) = refused.first() {
            bail!(
                "the JWKS at {jwks_uri} holds a key ksa-core refuses: {}: {}",
                bad.kid.as_str(),
                bad.error
            );
        }
        let keys = Arc::new(keys);
        let discovery_expires = cache.as_ref().map_or(now, |c| c.discovery_expires);
        *cache = Some(Cached {
            jwks_uri,
            discovery_expires,
            keys: keys.clone(),
            kids,
            jwks_expires: now + max_age,
        });
        Ok(keys)
    }
}

/// The `jwks_uri` of a discovery document, once it is checked to name the
/// trusted issuer (as go-oidc checks it).
fn jwks_uri(discovery: &str, trust: &JwtAuthenticator) -> Result<String> {
    let document: serde_json::Value = serde_json::from_str(discovery).with_context(|| {
        format!(
            "the discovery document at {} is not JSON",
            trust.discovery_url
        )
    })?;
    if document["issuer"].as_str() != Some(trust.issuer.as_str()) {
        bail!(
            "the discovery document at {} names issuer {} where {} is trusted",
            trust.discovery_url,
            document["issuer"],
            trust.issuer
        );
    }
    document["jwks_uri"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "the discovery document at {} has no jwks_uri",
                trust.discovery_url
            )
        })
}

/// GETs `url` anonymously: its body and its `Cache-Control` max-age.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<(String, Duration)> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let cache_control = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .bytes()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    if body.len() > MAX_BODY_BYTES {
        bail!(
            "GET {url}: {} bytes, more than the {MAX_BODY_BYTES} read",
            body.len()
        );
    }
    let text = String::from_utf8(body.to_vec()).with_context(|| format!("GET {url}: not UTF-8"))?;
    Ok((text, max_age(cache_control.as_deref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_and_no_caching_wins() {
        assert_eq!(max_age(None), Duration::ZERO);
        assert_eq!(max_age(Some("max-age=30")), Duration::from_secs(30));
        assert_eq!(max_age(Some("public, Max-Age=5")), Duration::from_secs(5));
        assert_eq!(max_age(Some("max-age=30, no-store")), Duration::ZERO);
        assert_eq!(max_age(Some("no-cache")), Duration::ZERO);
        assert_eq!(max_age(Some("public")), Duration::ZERO);
        assert_eq!(max_age(Some("max-age=soon")), Duration::ZERO);
    }
}
