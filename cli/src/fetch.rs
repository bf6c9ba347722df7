//! Fetching a JWKS over HTTP(S) from a server that may be hostile or down.
//!
//! Every fetch has a connect timeout and an overall deadline, reads at most
//! [`ksa_core::MAX_INPUT_BYTES`], and follows redirects only within the
//! origin (scheme, host and port) of the URL the user gave: a server cannot
//! send ksa to another host, and an https URL is never downgraded to http.

use std::time::Duration;

use ureq::http::Uri;

/// Time allowed to open the connection (DNS, TCP, TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the whole fetch, redirects and body included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;
/// Largest body read.
pub const MAX_BODY_BYTES: u64 = ksa_core::MAX_INPUT_BYTES as u64;

/// Why a JWKS could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url} is not an http(s) URL with a host")]
    BadUrl { url: String },
    #[error("{url}: {source}")]
    Http { url: String, source: ureq::Error },
    #[error(
        "{url} answered more than {limit} bytes, the most ksa reads for a JWKS; \
         check the URL names a JWKS (such as /openid/v1/jwks)"
    )]
    TooLarge { url: String, limit: u64 },
    #[error("{url} redirected ({status}) with no usable Location header")]
    BadRedirect { url: String, status: u16 },
    #[error(
        "{url} redirected to {location}, another origin; ksa follows redirects \
         only within the same scheme, host and port: pass the final URL to --jwks"
    )]
    OtherOrigin { url: String, location: String },
    #[error("{url}: more than {MAX_REDIRECTS} redirects; pass the final URL to --jwks")]
    TooManyRedirects { url: String },
    #[error("{url}: the body is not UTF-8 text")]
    NotUtf8 { url: String },
}

/// The overall deadline: [`TOTAL_TIMEOUT`], or shorter for tests through
/// the undocumented `KSA_HTTP_TIMEOUT_SECONDS`.
fn total_timeout() -> Duration {
    std::env::var("KSA_HTTP_TIMEOUT_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .filter(|t| !t.is_zero())
        .map_or(TOTAL_TIMEOUT, |t| t.min(TOTAL_TIMEOUT))
}

/// The body of `url`, following same-origin redirects only.
pub fn fetch_jwks(url: &str) -> Result<String, FetchError> {
    let first: Uri = url
        .parse()
        .ok()
        .filter(|u: &Uri| origin(u).is_some())
        .ok_or_else(|| FetchError::BadUrl { url: url.into() })?;
    let total = total_timeout();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT.min(total)))
        .timeout_global(Some(total))
        .https_only(first.scheme_str() == Some("https"))
        .max_redirects(0)
        .build()
        .into();
    let mut current = first.clone();
    for _ in 0..=MAX_REDIRECTS {
        let shown = current.to_string();
        let http = |source| FetchError::Http {
            url: shown.clone(),
            source,
        };
        let mut response = agent.get(&current).call().map_err(http)?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| FetchError::BadRedirect {
                    url: shown.clone(),
                    status: status.as_u16(),
                })?;
            let next = resolve(&current, location).ok_or_else(|| FetchError::BadRedirect {
                url: shown.clone(),
                status: status.as_u16(),
            })?;
            if origin(&next) != origin(&first) {
                return Err(FetchError::OtherOrigin {
                    url: shown,
                    location: location.to_owned(),
                });
            }
            current = next;
            continue;
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(limit) => FetchError::TooLarge {
                    url: shown.clone(),
                    limit,
                },
                other => http(other),
            })?;
        return String::from_utf8(body).map_err(|_| FetchError::NotUtf8 { url: shown });
    }
    Err(FetchError::TooManyRedirects { url: url.into() })
}

/// (scheme, host, port) of an absolute http(s) URI, lowercased, with the
/// scheme's default port filled in.
fn origin(uri: &Uri) -> Option<(String, String, u16)> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = uri.host().filter(|h| !h.is_empty())?.to_ascii_lowercase();
    Some((scheme, host, uri.port_u16().unwrap_or(default_port)))
}

/// A `Location` header resolved against the URL that sent it: absolute,
/// scheme-relative (`//host/path`), absolute-path (`/path`) or relative.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let absolute = if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.contains("://") {
        location.to_owned()
    } else {
        let path = base.path();
        let directory = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{directory}{location}")
    };
    absolute.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> Uri {
        text.parse().expect("uri")
    }

    #[test]
    fn origins_differ_by_scheme_host_or_port() {
        let base = origin(&uri("https://issuer.example/openid/v1/jwks"));
        assert_eq!(base, origin(&uri("https://ISSUER.example:443/other")));
        assert_ne!(base, origin(&uri("http://issuer.example/openid/v1/jwks")));
        assert_ne!(base, origin(&uri("https://issuer.example:8443/jwks")));
        assert_ne!(base, origin(&uri("https://evil.example/jwks")));
        assert_eq!(origin(&uri("ftp://issuer.example/jwks")), None);
    }

    #[test]
    fn locations_resolve_against_the_url_that_sent_them() {
        let base = uri("https://issuer.example/openid/v1/jwks");
        let resolved = |l: &str| resolve(&base, l).map(|u| u.to_string());
        assert_eq!(
            resolved("/keys").as_deref(),
            Some("https://issuer.example/keys")
        );
        assert_eq!(
            resolved("keys.json").as_deref(),
            Some("https://issuer.example/openid/v1/keys.json")
        );
        assert_eq!(
            resolved("//evil.example/jwks").as_deref(),
            Some("https://evil.example/jwks")
        );
        assert_eq!(
            resolved("http://issuer.example/jwks").as_deref(),
            Some("http://issuer.example/jwks")
        );
        // A downgrade to http is another origin.
        let downgraded = resolve(&base, "http://issuer.example/openid/v1/jwks").expect("uri");
        assert_ne!(origin(&downgraded), origin(&base));
    }
}
