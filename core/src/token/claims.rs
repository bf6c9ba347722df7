//! The claims of Kubernetes service-account tokens, in the JSON member order
//! kube-apiserver writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The issuer every legacy (Secret) token carries.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// A name and UID, as the `kubernetes.io` claim refers to objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim of a bound token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    pub serviceaccount: ObjectRef,
    /// When a kubelet should refresh the token (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Every claim of a token: the registered ones, both Kubernetes forms, and
/// anything else kept as JSON. Times are seconds since the epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "audience"
    )]
    pub aud: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes: Option<KubernetesClaims>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/namespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_namespace: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/secret.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_secret_name: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_service_account_name: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.uid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_service_account_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `aud` is a string or an array of strings (RFC 7519 section 4.1.3).
fn audience<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Audience {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<Audience>::deserialize(d)?.map(|a| match a {
        Audience::One(one) => vec![one],
        Audience::Many(many) => many,
    }))
}

/// Which kind of service-account token the claims describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// A long-lived token stored in a `kubernetes.io/service-account-token` Secret.
    Legacy,
    /// A TokenRequest (projected, bound) token with an expiry.
    Bound,
    /// Not a Kubernetes service-account token.
    Other,
}

/// The service account a token speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceAccountIdentity<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl ServiceAccountIdentity<'_> {
    /// The user name kube-apiserver authenticates the token as.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl Claims {
    pub fn kind(&self) -> TokenKind {
        if self.kubernetes.is_some() {
            TokenKind::Bound
        } else if self.iss.as_deref() == Some(LEGACY_ISSUER) && self.legacy_namespace.is_some() {
            TokenKind::Legacy
        } else {
            TokenKind::Other
        }
    }

    pub fn service_account(&self) -> Option<ServiceAccountIdentity<'_>> {
        if let Some(k) = &self.kubernetes {
            return Some(ServiceAccountIdentity {
                namespace: &k.namespace,
                name: &k.serviceaccount.name,
                uid: &k.serviceaccount.uid,
            });
        }
        Some(ServiceAccountIdentity {
            namespace: self.legacy_namespace.as_deref()?,
            name: self.legacy_service_account_name.as_deref()?,
            uid: self
                .legacy_service_account_uid
                .as_deref()
                .unwrap_or_default(),
        })
    }

    /// The claims of a legacy token for a service account, as
    /// kube-controller-manager's token controller writes them into a
    /// `kubernetes.io/service-account-token` Secret.
    pub fn legacy(namespace: &str, service_account: &ObjectRef, secret_name: &str) -> Claims {
        Claims {
            iss: Some(LEGACY_ISSUER.to_owned()),
            legacy_namespace: Some(namespace.to_owned()),
            legacy_secret_name: Some(secret_name.to_owned()),
            legacy_service_account_name: Some(service_account.name.clone()),
            legacy_service_account_uid: Some(service_account.uid.clone()),
            sub: Some(format!(
                "system:serviceaccount:{namespace}:{}",
                service_account.name
            )),
            ..Claims::default()
        }
    }
}

/// Smallest lifetime of a projected token (`expirationSeconds`).
pub const MIN_BOUND_TOKEN_SECONDS: i64 = 600;
/// The projected-volume default `expirationSeconds`.
pub const DEFAULT_BOUND_TOKEN_SECONDS: i64 = 3600;

/// What a bound token is issued for; turned into [`Claims`] by
/// [`BoundToken::claims`]. The token id comes in as an argument because the
/// core draws no randomness.
#[derive(Clone, Debug, PartialEq)]
pub struct BoundToken {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub namespace: String,
    pub service_account: ObjectRef,
    pub pod: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub issued_at: i64,
    pub lifetime_seconds: i64,
    pub jti: String,
}

/// Why a bound token request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BoundTokenError {
    #[error(
        "token lifetime of {0} s is too short; at least {MIN_BOUND_TOKEN_SECONDS} s is required"
    )]
    LifetimeTooShort(i64),
    #[error("a bound token needs at least one audience")]
    NoAudience,
}

impl BoundToken {
    pub fn claims(&self) -> Result<Claims, BoundTokenError> {
        if self.lifetime_seconds < MIN_BOUND_TOKEN_SECONDS {
            return Err(BoundTokenError::LifetimeTooShort(self.lifetime_seconds));
        }
        if self.audiences.is_empty() {
            return Err(BoundTokenError::NoAudience);
        }
        Ok(Claims {
            aud: Some(self.audiences.clone()),
            exp: Some(self.issued_at.saturating_add(self.lifetime_seconds)),
            iat: Some(self.issued_at),
            iss: Some(self.issuer.clone()),
            jti: Some(self.jti.clone()),
            kubernetes: Some(KubernetesClaims {
                namespace: self.namespace.clone(),
                node: self.node.clone(),
                pod: self.pod.clone(),
                secret: self.secret.clone(),
                serviceaccount: self.service_account.clone(),
                warnafter: None,
                other: BTreeMap::new(),
            }),
            nbf: Some(self.issued_at),
            sub: Some(format!(
                "system:serviceaccount:{}:{}",
                self.namespace, self.service_account.name
            )),
            ..Claims::default()
        })
    }
}
