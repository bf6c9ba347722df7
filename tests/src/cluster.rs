//! Small helpers over the Kubernetes API that tests, the prober and the demo
//! share: namespaces, service accounts, TokenRequest and TokenReview.

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

/// Creates a namespace; one that exists already is fine.
pub async fn create_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

pub async fn create_service_account(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<ServiceAccount> {
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Ok(Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &account)
        .await?)
}

/// A bound token for a service account (TokenRequest). No audiences: the
/// API server's own.
pub async fn request_token(
    client: &kube::Client,
    namespace: &str,
    account: &str,
    audiences: Vec<String>,
    seconds: i64,
) -> Result<String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences,
            expiration_seconds: Some(seconds),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let response = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await?;
    Ok(response
        .status
        .context("TokenRequest returned no token")?
        .token)
}

/// Who the API server says a token authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewedUser {
    pub username: String,
    pub groups: Vec<String>,
}

/// Asks the API server whether it authenticates `token` (TokenReview);
/// `None` when it does not.
pub async fn review_token(
    client: &kube::Client,
    token: &str,
) -> Result<Option<ReviewedUser>, kube::Error> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            ..TokenReviewSpec::default()
        },
        ..TokenReview::default()
    };
    let status = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?
        .status
        .unwrap_or_default();
    if status.authenticated != Some(true) {
        return Ok(None);
    }
    let user = status.user.unwrap_or_default();
    Ok(Some(ReviewedUser {
        username: user.username.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
    }))
}

/// A watch backoff for tests that restart the API server on purpose:
/// resume 100 ms after an error, always. (The default waits up to 30 s, and
/// the writes made meanwhile would be seen only as a re-list.)
#[derive(Debug, Clone, Copy)]
pub struct QuickBackoff;

impl Iterator for QuickBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(100))
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {}
}
