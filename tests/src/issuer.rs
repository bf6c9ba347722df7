//! What the API server instances do with issuers (SPEC section 10), asked
//! of each instance on its own, since a client may reach any of them:
//! which `iss` its TokenReview accepts (on a token minted here with a
//! chosen issuer and key), which issuer its discovery document names, and
//! which `iss` the tokens it issues carry.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::ServiceAccount;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::PrivateKey;
use ksa_core::token::{self, BoundToken, ObjectRef};
use kube::api::Api;

use crate::InstanceClient;
use crate::cluster::{request_token, review_token};

/// How long minted tokens live.
const MINTED_SECONDS: i64 = 3600;

/// A bound token of service account `namespace/account` (its uid read
/// through `client`) carrying `iss` `issuer` and `aud` `audiences`, signed
/// with `key`: what an API server signing with `key` under `issuer` would
/// issue (no pod or node bound).
pub async fn mint_token(
    client: &kube::Client,
    namespace: &str,
    account: &str,
    issuer: &str,
    audiences: &[&str],
    key: &PrivateKey,
) -> Result<String> {
    static MINTED: AtomicU64 = AtomicU64::new(0);
    let uid = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .get(account)
        .await
        .with_context(|| format!("reading service account {namespace}/{account}"))?
        .metadata
        .uid
        .context("the service account has no uid")?;
    let claims = BoundToken {
        issuer: issuer.to_owned(),
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        namespace: namespace.to_owned(),
        service_account: ObjectRef {
            name: account.to_owned(),
            uid,
        },
        pod: None,
        node: None,
        secret: None,
        issued_at: jiff::Timestamp::now().as_second(),
        lifetime_seconds: MINTED_SECONDS,
        jti: format!(
            "ksa-tests-minted-{}-{}",
            std::process::id(),
            MINTED.fetch_add(1, Ordering::Relaxed)
        ),
    }
    .claims()?;
    Ok(token::mint(
        &claims,
        AwsLc::new().signing_key(key)?.as_ref(),
    )?)
}

/// Whether each instance, in order, authenticates `token` (TokenReview
/// with the API server's own audiences).
pub async fn verdicts(instances: &[InstanceClient], token: &str) -> Result<Vec<bool>> {
    let reviews = instances.iter().map(|instance| async move {
        review_token(&instance.client, token)
            .await
            .map(|user| user.is_some())
            .with_context(|| format!("TokenReview on {}", instance.url))
    });
    futures::future::try_join_all(reviews).await
}

/// The issuer each instance's `/.well-known/openid-configuration` names,
/// in order.
pub async fn discovery_issuers(instances: &[InstanceClient]) -> Result<Vec<String>> {
    let documents = instances.iter().map(|instance| async move {
        let request = http::Request::get("/.well-known/openid-configuration").body(Vec::new())?;
        let text = instance
            .client
            .request_text(request)
            .await
            .with_context(|| format!("discovery on {}", instance.url))?;
        let document: serde_json::Value = serde_json::from_str(&text)?;
        document["issuer"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "no issuer in the discovery document of {}: {text}",
                    instance.url
                )
            })
    });
    futures::future::try_join_all(documents).await
}

/// The `iss` of a fresh bound token of `namespace/account` (TokenRequest,
/// the API server's own audiences) from each instance, in order.
pub async fn issued_issuers(
    instances: &[InstanceClient],
    namespace: &str,
    account: &str,
) -> Result<Vec<String>> {
    let issued = instances.iter().map(|instance| async move {
        let jwt = request_token(&instance.client, namespace, account, Vec::new(), 3600)
            .await
            .with_context(|| format!("TokenRequest on {}", instance.url))?;
        token_issuer(&jwt)
    });
    futures::future::try_join_all(issued).await
}

/// The `iss` of a token.
pub fn token_issuer(jwt: &str) -> Result<String> {
    token::decode(jwt)?
        .claims
        .iss
        .context("the token has no iss")
}

/// The `aud` of a token.
pub fn token_audiences(jwt: &str) -> Result<Vec<String>> {
    Ok(token::decode(jwt)?.claims.aud.unwrap_or_default())
}
