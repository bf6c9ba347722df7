//! A second, real kube-apiserver playing a cloud IAM that federates with
//! the user cluster: it trusts the user cluster's service-account tokens
//! (for its own audience) through structured authentication
//! (`--authentication-config`, `AuthenticationConfiguration`
//! `apiserver.config.k8s.io/v1`), one JWT authenticator per trusted
//! issuer, each finding its keys through an OIDC discovery document at a
//! `discoveryURL` (the bucket ksa publishes into, [`crate::s3`]) over
//! https. It asks nothing of the user cluster: what it accepts depends only
//! on what is published, as for a real cloud IAM. A token is put to it as
//! a workload would use it, as the bearer of a request: a
//! `SelfSubjectReview` ([`OutsideApiServer::review`]) says whom it
//! authenticated, or 401.
//!
//! It is a [`ControlPlane`] of its own (its own etcd and one instance on
//! 127.0.0.1), with a service-account issuer of its own
//! ([`OUTSIDE_SA_ISSUER`]): kube-apiserver refuses a JWT authenticator whose
//! issuer is one of its own `--service-account-issuer`s, and the user
//! cluster's is [`crate::ISSUER`] too.
//!
//! # How the JWT authenticator behaves (k8s.io/apiserver v0.36.3)
//!
//! Read from `plugin/pkg/authenticator/token/oidc/oidc.go`,
//! `pkg/kubeapiserver/{authenticator/config.go,options/authentication.go}`
//! and the go-oidc v2 (`github.com/coreos/go-oidc`) it uses; the
//! end-to-end tests depend on it:
//!
//! - **Start**: the API server starts (and is ready) whether or not the
//!   discovery URL answers. Each authenticator fetches the discovery
//!   document in the background, at once and then **every 10 s** until it
//!   succeeds; until then a token with that `iss` fails ("authenticator
//!   not initialized"), which a request sees as 401. So a document
//!   published after the start is picked up within about 10 s.
//! - **Discovery is read once**: the document's `issuer` must equal the
//!   authenticator's `issuer.url` byte for byte (otherwise it retries
//!   every 10 s, forever), and its `jwks_uri` is kept for the life of the
//!   authenticator: a `jwks_uri` changed later is never followed.
//! - **Keys**: the JWKS is fetched on first use. A token is checked against
//!   the cached keys first, *whatever their age*; only when no cached key
//!   verifies it (an unknown `kid`) is the JWKS fetched again, and only if
//!   the cached copy expires within 30 s. Its expiry comes from the JWKS
//!   response: `Cache-Control: max-age` (or `s-maxage`, `Expires`), and
//!   without those the HTTP heuristic, 10% of the time since
//!   `Last-Modified` (at most 24 h) — which S3 always sends, so an object
//!   published without `Cache-Control` that was old when fetched is cached
//!   for a long time. `no-store` and `no-cache` do not shorten it. So:
//!   with `max-age` ≤ 30 s (or none and a fresh object) a new `kid` is
//!   accepted on its first token; with `max-age` = M > 30 s a new `kid` is
//!   rejected for up to M - 30 s after the JWKS was last fetched. Fetches
//!   are not rate limited (one at a time): every token of an unknown `kid`
//!   fetches again.
//! - **Retired keys stay trusted**: since the cache is tried before its
//!   expiry is looked at, a key removed from the JWKS is still accepted
//!   until some token of an unknown `kid` makes the authenticator fetch
//!   again.
//! - **Accepted tokens are remembered for 10 s**: kube-apiserver caches
//!   every successful token authentication (`TokenSuccessCacheTTL`, 10 s,
//!   no flag; failures are not cached), in front of all its token
//!   authenticators. A token it accepted is accepted again for 10 s
//!   whatever is published meanwhile; a check that a key was dropped must
//!   use a token it has not seen.
//! - **Reload**: the configuration file is watched (and re-read every
//!   minute); a changed one replaces the running authenticators only once
//!   every new authenticator's discovery has succeeded, polled every 10 s
//!   for at most a minute (otherwise the old ones stay and it retries on
//!   the next change or minute). The first poll comes before the new
//!   authenticators' own background discovery has finished, so a reload
//!   takes about 10 s even when every discovery document answers at once
//!   (measured: 10.2 s); the old authenticators serve until then.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::KeySpec;

use crate::{ApiServerKeys, ControlPlane, InstanceSpec, Signing};

/// The outside API server's own service-account issuer (unused, and
/// distinct from any issuer it trusts).
pub const OUTSIDE_SA_ISSUER: &str = "https://outside-iam.ksa.invalid";

/// The prefix of every username the outside API server's JWT
/// authenticators give: `outside:` then the token's `sub`.
pub const USERNAME_PREFIX: &str = "outside:";

/// One issuer the outside API server trusts, as a cloud IAM's OIDC
/// provider is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthenticator {
    /// The `iss` it accepts (`issuer.url`, https); the discovery document
    /// must name exactly this.
    pub issuer: String,
    /// Where the discovery document is (`issuer.discoveryURL`, https,
    /// different from `issuer`), e.g. the bucket's
    /// `.well-known/openid-configuration`.
    pub discovery_url: String,
    /// The CA (PEM) of the server(s) of the discovery document and JWKS.
    pub ca_pem: String,
    /// The audience a token must name (`issuer.audiences`).
    pub audience: String,
}

/// What the outside API server made of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// Authenticated as this user ([`USERNAME_PREFIX`] and `sub`).
    Accepted { username: String },
    /// 401: no authenticator accepted it (or the one for its issuer is
    /// not initialized yet).
    Rejected,
}

/// The `AuthenticationConfiguration` (JSON, which is YAML) with one JWT
/// authenticator each; refuses what kube-apiserver would refuse to start
/// with, saying why.
pub fn authentication_config(authenticators: &[JwtAuthenticator]) -> Result<String> {
    let mut jwt = Vec::new();
    for (index, a) in authenticators.iter().enumerate() {
        if authenticators[..index].iter().any(|b| b.issuer == a.issuer) {
            bail!(
                "two authenticators for issuer {}: kube-apiserver refuses duplicate issuer URLs",
                a.issuer
            );
        }
        if a.discovery_url == a.issuer {
            bail!(
                "the discovery URL of {} must differ from the issuer",
                a.issuer
            );
        }
        for url in [&a.issuer, &a.discovery_url] {
            if !url.starts_with("https://") {
                bail!(
                    "{url} is not https; kube-apiserver requires https issuer and discovery URLs"
                );
            }
        }
        jwt.push(serde_json::json!({
            "issuer": {
                "url": a.issuer,
                "discoveryURL": a.discovery_url,
                "certificateAuthority": a.ca_pem,
                "audiences": [a.audience],
            },
            "claimMappings": {
                "username": {"claim": "sub", "prefix": USERNAME_PREFIX},
            },
        }));
    }
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AuthenticationConfiguration",
        "jwt": jwt,
    }))?)
}

/// The outside kube-apiserver (and its etcd); stopped when dropped.
#[allow(
    missing_debug_implementations,
    reason = "holds a control plane; nothing useful to print"
)]
pub struct OutsideApiServer {
    plane: ControlPlane,
    config: PathBuf,
    /// A client with no credentials of its own: each review adds the
    /// token as its bearer.
    bare: kube::Client,
    _dir: tempfile::TempDir,
}

impl OutsideApiServer {
    /// Starts it trusting `authenticators`. It does not wait for their
    /// discovery documents, which may not be published yet (see the module
    /// documentation for when it picks them up).
    pub async fn start(authenticators: &[JwtAuthenticator]) -> Result<OutsideApiServer> {
        let dir = tempfile::Builder::new().prefix("ksa-outside-").tempdir()?;
        let config = dir.path().join("authentication-config.yaml");
        std::fs::write(&config, authentication_config(authenticators)?)?;
        let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
        let spec = InstanceSpec::new(Signing::KeyFiles(ApiServerKeys::single(key)))
            .with_issuers(&[OUTSIDE_SA_ISSUER], None);
        let plane = ControlPlane::start_with_spec(
            spec,
            vec![format!("--authentication-config={}", config.display())],
        )
        .await
        .context("starting the outside kube-apiserver")?;
        let mut bare = kube::Config::new(plane.server_url().parse()?);
        bare.root_cert = Some(vec![crate::control_plane::pem_to_der(plane.ca_cert_pem())?]);
        bare.read_timeout = Some(Duration::from_secs(20));
        let bare = kube::Client::try_from(bare)?;
        Ok(OutsideApiServer {
            plane,
            config,
            bare,
            _dir: dir,
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.plane.server_url()
    }

    /// The control plane it runs on (its logs are in its directory).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// Rewrites the configuration to trust `authenticators` instead. The
    /// API server reloads it in the background, and only once every new
    /// authenticator's discovery succeeds (see the module documentation):
    /// poll [`OutsideApiServer::review`] for the effect.
    pub fn set_authenticators(&self, authenticators: &[JwtAuthenticator]) -> Result<()> {
        let text = authentication_config(authenticators)?;
        // Written whole and renamed, so the watcher never reads half a file.
        let partial = self.config.with_extension("partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, &self.config)?;
        Ok(())
    }

    /// Puts `token` to the outside API server as a workload would: a
    /// `SelfSubjectReview` with it as the bearer. 401 is
    /// [`Review::Rejected`]; any other failure is an error.
    pub async fn review(&self, token: &str) -> Result<Review> {
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
        }))?;
        let request = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)?;
        match self.bare.request::<SelfSubjectReview>(request).await {
            Ok(review) => {
                let username = review
                    .status
                    .and_then(|s| s.user_info)
                    .and_then(|u| u.username)
                    .context("the SelfSubjectReview names no user")?;
                Ok(Review::Accepted { username })
            }
            Err(kube::Error::Api(status)) if status.code == 401 => Ok(Review::Rejected),
            Err(error) => Err(error).context("SelfSubjectReview on the outside API server"),
        }
    }

    /// Reviews `token` until it is accepted, at most for `timeout` (the
    /// authenticator initializes in the background, and polls discovery
    /// every 10 s); returns the username and how long it took.
    pub async fn wait_accepts(&self, token: &str, timeout: Duration) -> Result<(String, Duration)> {
        let started = Instant::now();
        loop {
            match self.review(token).await? {
                Review::Accepted { username } => return Ok((username, started.elapsed())),
                Review::Rejected if started.elapsed() > timeout => bail!(
                    "the outside API server still rejects the token after {timeout:?}; its log: {}",
                    self.plane.dir().join("kube-apiserver.log").display()
                ),
                Review::Rejected => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust() -> JwtAuthenticator {
        JwtAuthenticator {
            issuer: "https://issuer.example".to_owned(),
            discovery_url: "https://bucket.example/issuer/.well-known/openid-configuration"
                .to_owned(),
            ca_pem: String::new(),
            audience: "sts.example".to_owned(),
        }
    }

    #[test]
    fn the_config_has_one_jwt_authenticator_per_issuer() {
        let config = authentication_config(&[trust()]).expect("a valid configuration");
        let parsed: serde_json::Value = serde_json::from_str(&config).expect("JSON");
        assert_eq!(parsed["apiVersion"], "apiserver.config.k8s.io/v1");
        assert_eq!(parsed["kind"], "AuthenticationConfiguration");
        let jwt = &parsed["jwt"][0];
        assert_eq!(jwt["issuer"]["url"], "https://issuer.example");
        assert_eq!(jwt["issuer"]["discoveryURL"], trust().discovery_url);
        assert_eq!(jwt["issuer"]["audiences"][0], "sts.example");
        assert_eq!(jwt["claimMappings"]["username"]["claim"], "sub");
        assert_eq!(jwt["claimMappings"]["username"]["prefix"], USERNAME_PREFIX);
    }

    #[test]
    fn the_config_refuses_what_kube_apiserver_refuses() {
        assert!(authentication_config(&[trust(), trust()]).is_err());
        let same = JwtAuthenticator {
            discovery_url: trust().issuer,
            ..trust()
        };
        assert!(authentication_config(&[same]).is_err());
        let plain = JwtAuthenticator {
            discovery_url: "http://127.0.0.1/discovery".to_owned(),
            ..trust()
        };
        let error = authentication_config(&[plain]).expect_err("http accepted");
        assert!(error.to_string().contains("https"), "{error}");
    }
}
