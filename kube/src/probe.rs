//! What one API server instance is asked, to confirm a step on it: the
//! keys its `/openid/v1/jwks` serves, the kid and `iss` of a fresh
//! TokenRequest it answers, the issuer its OIDC discovery document names,
//! and whether its TokenReview accepts a token carrying a given issuer.
//!
//! Every answer comes from the instance itself (a client whose server is
//! that instance's address); an instance that does not answer confirms
//! nothing, so a failed request is `None`, never a guess.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use ksa_core::crypto::{AwsLc, SigningKey};
use ksa_core::issuer::Issuer;
use ksa_core::key::PublicKey;
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::token::{self, BoundToken, ObjectRef};
use ksa_core::{KeyId, KeyVersion};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::error::{Error, Result};

/// The namespace and name of the service account whose tokens ksa asks
/// the API servers about.
pub const PROBE_NAMESPACE: &str = "kube-system";
pub const PROBE_ACCOUNT: &str = "ksa-rotation-probe";

/// The audience of the tokens ksa mints to ask an instance whether it
/// accepts an issuer. The review names it, so the answer does not depend
/// on the instance's `--api-audiences`.
pub const PROBE_AUDIENCE: &str = "ksa.dev/issuer-probe";

/// How long a probe token lives: the shortest a bound token may (it needs
/// only one review, and is worthless soon if it leaked).
const PROBE_TOKEN_SECONDS: i64 = 600;

/// How far a fresh token's `iat` may be from ksa's clock: the lifetime
/// ksa asks for, beyond which a token is a replay or a clock far off.
const FRESH_IAT_SPREAD: i64 = PROBE_TOKEN_SECONDS;

/// Makes sure the probe service account exists and returns its UID (a
/// bound token names it, and kube-apiserver checks it).
pub async fn ensure_probe_account(client: &kube::Client) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), PROBE_NAMESPACE);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(PROBE_ACCOUNT.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    let account = match api.create(&PostParams::default(), &account).await {
        Ok(created) => created,
        Err(kube::Error::Api(s)) if s.code == 409 => api.get(PROBE_ACCOUNT).await?,
        Err(e) => return Err(e.into()),
    };
    account.metadata.uid.ok_or_else(|| Error::BadResponse {
        what: "probe service account",
        detail: "it has no uid".into(),
    })
}

/// What a fresh token an instance issued says about it.
#[derive(Clone, PartialEq, Eq)]
pub struct FreshToken {
    /// The `kid` its header names: what the instance says it signed with,
    /// unverified; [`FreshToken::signed_with`] checks it.
    pub kid: Option<KeyId>,
    /// `None` when the `iss` is absent or not an issuer.
    pub iss: Option<Issuer>,
    /// The token itself, which `Debug` never prints.
    token: String,
}

impl std::fmt::Debug for FreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshToken")
            .field("kid", &self.kid)
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

impl FreshToken {
    /// The version among `keys` that signed the token: the one its `kid`
    /// names, if that key verifies its signature. A header names any kid
    /// it likes; only the signature says which key signed. The token is
    /// judged at its own `iat`, since the instance's clock is not ksa's,
    /// but that `iat` must be within [`FRESH_IAT_SPREAD`] of now: an old
    /// token signed with the key, replayed, is not the instance signing
    /// with it now (SECURITY.md finding 25).
    pub fn signed_with(&self, keys: &BTreeMap<KeyVersion, PublicKey>) -> Option<KeyVersion> {
        self.signed_with_at(keys, Timestamp::now().as_second())
    }

    fn signed_with_at(
        &self,
        keys: &BTreeMap<KeyVersion, PublicKey>,
        now: i64,
    ) -> Option<KeyVersion> {
        let kid = self.kid.as_ref()?;
        let (version, key) = keys.iter().find(|(_, key)| key.kid() == kid)?;
        let set = KeySet::new(
            [TrustedKey::derived(key.clone()).with_version(*version)],
            &AwsLc::new(),
        )
        .ok()?;
        // A TokenRequest's token always carries `iat`.
        let issued = token::decode(&self.token).ok()?.claims.iat?;
        if issued.abs_diff(now) > FRESH_IAT_SPREAD.unsigned_abs() {
            return None;
        }
        token::verify(&self.token, &set, &token::Expectations::at(issued))
            .ok()
            .and(Some(*version))
    }
}

/// Requests a fresh token from the instance `client` talks to.
pub async fn fresh_token(client: &kube::Client) -> Result<FreshToken> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), PROBE_NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(PROBE_TOKEN_SECONDS),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let response = api
        .create_token_request(PROBE_ACCOUNT, &PostParams::default(), &request)
        .await?;
    let token = response.status.map(|s| s.token).unwrap_or_default();
    FreshToken::from_token(token)
}

impl FreshToken {
    /// The token an instance answered, its header and claims read.
    fn from_token(token: String) -> Result<FreshToken> {
        let decoded = token::decode(&token).map_err(|e| Error::BadResponse {
            what: "fresh TokenRequest token",
            detail: e.to_string(),
        })?;
        let fresh = FreshToken {
            kid: decoded.header.kid.map(KeyId::new),
            iss: decoded.claims.iss.and_then(|iss| Issuer::new(iss).ok()),
            token: String::new(),
        };
        Ok(FreshToken { token, ..fresh })
    }
}

/// The issuer the instance's `/.well-known/openid-configuration` names.
pub async fn discovery_issuer(client: &kube::Client) -> Result<Option<Issuer>> {
    let request = http::Request::get("/.well-known/openid-configuration").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let discovery: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::BadResponse {
            what: "OIDC discovery document",
            detail: e.to_string(),
        })?;
    Ok(discovery["issuer"]
        .as_str()
        .and_then(|issuer| Issuer::new(issuer).ok()))
}

/// A short-lived token for the probe account carrying `issuer`, signed
/// with `signer` (the key the cluster signs with now, which every instance
/// accepts at every step): whether an instance accepts it depends on the
/// issuer alone.
pub fn issuer_probe_token(
    issuer: &Issuer,
    account_uid: &str,
    signer: &dyn SigningKey,
    now: Timestamp,
) -> Result<String> {
    let claims = BoundToken {
        issuer: issuer.as_str().to_owned(),
        audiences: vec![PROBE_AUDIENCE.to_owned()],
        namespace: PROBE_NAMESPACE.to_owned(),
        service_account: ObjectRef {
            name: PROBE_ACCOUNT.to_owned(),
            uid: account_uid.to_owned(),
        },
        pod: None,
        node: None,
        secret: None,
        issued_at: now.as_second(),
        lifetime_seconds: PROBE_TOKEN_SECONDS,
        // Unique per token, so no instance answers from a cache of an
        // earlier review.
        jti: format!("ksa-issuer-probe-{}", now.as_nanosecond()),
    }
    .claims()
    .map_err(|e| Error::BadResponse {
        what: "issuer probe token",
        detail: e.to_string(),
    })?;
    Ok(token::mint(&claims, signer)?)
}

/// Whether the instance's TokenReview authenticates `token` for
/// [`PROBE_AUDIENCE`].
pub async fn accepts(client: &kube::Client, token: &str) -> Result<bool> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![PROBE_AUDIENCE.to_owned()]),
        },
        ..TokenReview::default()
    };
    let answered = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answered
        .status
        .and_then(|s| s.authenticated)
        .unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksa_core::crypto::{AwsLc, SigningBackend as _};
    use ksa_core::key::KeySpec;

    #[test]
    fn a_probe_token_carries_the_issuer_the_probe_account_and_the_probe_audience() {
        let backend = AwsLc::new();
        let key = backend.generate(KeySpec::EcP256).expect("a key");
        let signer = backend.signing_key(&key).expect("a signer");
        let issuer = Issuer::new("https://b.example").expect("an issuer");
        let now: Timestamp = "2026-11-30T06:00:00Z".parse().expect("a time");
        let token = issuer_probe_token(&issuer, "uid-1", signer.as_ref(), now).expect("mints");
        let decoded = token::decode(&token).expect("decodes");
        let claims = decoded.claims;
        assert_eq!(claims.iss.as_deref(), Some("https://b.example"));
        assert_eq!(claims.aud, Some(vec![PROBE_AUDIENCE.to_owned()]));
        assert_eq!(
            claims.sub.as_deref(),
            Some("system:serviceaccount:kube-system:ksa-rotation-probe")
        );
        let account = claims.kubernetes.expect("bound claims").serviceaccount;
        assert_eq!(
            (account.name.as_str(), account.uid.as_str()),
            (PROBE_ACCOUNT, "uid-1")
        );
        assert_eq!(claims.exp, Some(now.as_second() + PROBE_TOKEN_SECONDS));
        assert_eq!(decoded.header.kid.as_deref(), Some(key.kid().as_str()));
    }

    #[test]
    fn a_fresh_token_is_signed_with_the_key_that_verifies_it_not_the_one_its_header_names() {
        use base64::Engine as _;
        let backend = AwsLc::new();
        let one = backend.generate(KeySpec::EcP256).expect("a key");
        let two = backend.generate(KeySpec::EcP256).expect("a key");
        let keys: BTreeMap<KeyVersion, PublicKey> = [
            (KeyVersion::new(1), one.public_key().clone()),
            (KeyVersion::new(2), two.public_key().clone()),
        ]
        .into();
        let issuer = Issuer::new("https://b.example").expect("an issuer");
        let signer = backend.signing_key(&two).expect("a signer");
        let token =
            issuer_probe_token(&issuer, "uid-1", signer.as_ref(), Timestamp::now()).expect("mints");
        let fresh = FreshToken::from_token(token.clone()).expect("reads");
        assert_eq!(fresh.signed_with(&keys), Some(KeyVersion::new(2)));
        // The same signature under a header that names key 1.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = token.split('.');
        let header: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts.next().expect("a header")).expect("b64"))
                .expect("json");
        let mut forged = header.clone();
        forged["kid"] = one.kid().as_str().into();
        let forged = format!(
            "{}.{}.{}",
            b64.encode(serde_json::to_vec(&forged).expect("json")),
            parts.next().expect("claims"),
            parts.next().expect("a signature")
        );
        let fresh = FreshToken::from_token(forged).expect("reads");
        assert_eq!(fresh.kid.as_ref(), Some(one.kid()));
        assert_eq!(
            fresh.signed_with(&keys),
            None,
            "the header's word was taken"
        );
        assert!(
            !format!("{fresh:?}").contains(&token[..20]),
            "Debug printed the token"
        );
        // A key the store does not hold signs nothing it knows.
        let three = backend.generate(KeySpec::EcP256).expect("a key");
        let signer = backend.signing_key(&three).expect("a signer");
        let token =
            issuer_probe_token(&issuer, "uid-1", signer.as_ref(), Timestamp::now()).expect("mints");
        let fresh = FreshToken::from_token(token).expect("reads");
        assert_eq!(fresh.signed_with(&keys), None);
    }

    #[test]
    fn an_old_token_signed_with_the_key_is_not_the_instance_signing_with_it_now() {
        let backend = AwsLc::new();
        let two = backend.generate(KeySpec::EcP256).expect("a key");
        let keys: BTreeMap<KeyVersion, PublicKey> =
            [(KeyVersion::new(2), two.public_key().clone())].into();
        let issuer = Issuer::new("https://b.example").expect("an issuer");
        let signer = backend.signing_key(&two).expect("a signer");
        let issued = Timestamp::now();
        let token = issuer_probe_token(&issuer, "uid-1", signer.as_ref(), issued).expect("mints");
        let fresh = FreshToken::from_token(token).expect("reads");
        let at = issued.as_second();
        assert_eq!(
            fresh.signed_with_at(&keys, at + FRESH_IAT_SPREAD),
            Some(KeyVersion::new(2))
        );
        // Replayed an hour later, or judged by a clock an hour behind.
        assert_eq!(fresh.signed_with_at(&keys, at + 3600), None);
        assert_eq!(fresh.signed_with_at(&keys, at - 3600), None);
        assert_eq!(fresh.signed_with_at(&keys, at + FRESH_IAT_SPREAD + 1), None);
    }
}
