//! Interop with a real kube-apiserver: it must accept our keys, our kid, our
//! legacy tokens and our JWKS, and reject what it should during a rotation.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::parse_jwks;
use ksa_core::key::{KeySpec, PrivateKey};
use ksa_core::keyset::KeySet;
use ksa_core::token::{self, Claims, Expectations, ObjectRef};
use ksa_tests::cluster::{create_namespace, create_service_account, request_token, review_token};
use ksa_tests::{ApiServerKeys, ControlPlane, ISSUER};
use kube::api::{Api, ObjectMeta, PostParams};

fn new_key() -> PrivateKey {
    AwsLc::new()
        .generate(KeySpec::Rsa2048)
        .expect("key generation")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

async fn get_json(client: &kube::Client, path: &str) -> Result<String> {
    Ok(client
        .request_text(http::Request::get(path).body(Vec::new())?)
        .await?)
}

#[tokio::test]
async fn apiserver_tokens_verify_with_ksa_core_and_carry_our_kid() -> Result<()> {
    let key = new_key();
    let plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    let client = plane.client().await?;
    create_service_account(&client, "default", "reader").await?;
    let jwt = request_token(&client, "default", "reader", vec!["vault".into()], 600).await?;

    let discovery: serde_json::Value =
        serde_json::from_str(&get_json(&client, "/.well-known/openid-configuration").await?)?;
    let issuer = discovery["issuer"]
        .as_str()
        .context("discovery has no issuer")?;
    assert_eq!(issuer, ISSUER);
    let trusted = parse_jwks(&get_json(&client, "/openid/v1/jwks").await?)?;
    assert_eq!(trusted.len(), 1);
    assert_eq!(
        trusted[0].kid,
        *key.kid(),
        "the served kid is the kid ksa-core derives"
    );

    let keys = KeySet::new(trusted, &AwsLc::new())?;
    let expect = Expectations {
        issuers: vec![issuer.to_owned()],
        audiences: vec!["vault".into()],
        ..Expectations::at(now())
    };
    let verified = token::verify(&jwt, &keys, &expect)?;
    assert_eq!(verified.kid, *key.kid());
    let sa = verified
        .claims
        .service_account()
        .context("a service-account token")?;
    assert_eq!((sa.namespace, sa.name), ("default", "reader"));
    let lifetime =
        verified.claims.exp.unwrap_or_default() - verified.claims.iat.unwrap_or_default();
    assert_eq!(lifetime, 600);

    let wrong_audience = Expectations {
        audiences: vec!["other".into()],
        ..expect
    };
    assert!(matches!(
        token::verify(&jwt, &keys, &wrong_audience),
        Err(token::TokenError::WrongAudience { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn legacy_token_minted_by_ksa_core_authenticates_and_is_authorized() -> Result<()> {
    let key = new_key();
    let plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    let client = plane.client().await?;
    create_namespace(&client, "apps").await?;
    let sa = create_service_account(&client, "apps", "legacy").await?;
    let uid = sa.metadata.uid.context("service account uid")?;

    let claims = Claims::legacy(
        "apps",
        &ObjectRef {
            name: "legacy".into(),
            uid: uid.clone(),
        },
        "legacy-token",
    );
    let jwt = token::mint(&claims, AwsLc::new().signing_key(&key)?.as_ref())?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "apps");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("legacy-token".into()),
            annotations: Some(BTreeMap::from([
                (
                    "kubernetes.io/service-account.name".to_owned(),
                    "legacy".to_owned(),
                ),
                ("kubernetes.io/service-account.uid".to_owned(), uid),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/service-account-token".into()),
        data: Some(BTreeMap::from([
            ("token".to_owned(), ByteString(jwt.clone().into_bytes())),
            ("namespace".to_owned(), ByteString(b"apps".to_vec())),
            (
                "ca.crt".to_owned(),
                ByteString(plane.ca_cert_pem().as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    };
    secrets.create(&PostParams::default(), &secret).await?;

    let reviewed = review_token(&client, &jwt)
        .await?
        .context("TokenReview rejected our legacy token")?;
    let (user, groups) = (reviewed.username, reviewed.groups);
    assert_eq!(user, "system:serviceaccount:apps:legacy");
    assert!(
        groups.contains(&"system:serviceaccounts".to_owned()),
        "{groups:?}"
    );
    assert!(
        groups.contains(&"system:serviceaccounts:apps".to_owned()),
        "{groups:?}"
    );

    // Authorized as that service account: it may list pods, nothing else.
    let roles: Api<Role> = Api::namespaced(client.clone(), "apps");
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: ObjectMeta {
                    name: Some("pod-reader".into()),
                    ..ObjectMeta::default()
                },
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["pods".into()]),
                    verbs: vec!["list".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await?;
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "apps");
    bindings
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: ObjectMeta {
                    name: Some("pod-reader".into()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "pod-reader".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "legacy".into(),
                    namespace: Some("apps".into()),
                    ..Subject::default()
                }]),
            },
        )
        .await?;
    let as_sa = plane.client_with_token(&jwt).await?;
    let review: Api<SelfSubjectReview> = Api::all(as_sa.clone());
    let me = review
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let username = me.status.and_then(|s| s.user_info).and_then(|u| u.username);
    assert_eq!(
        username.as_deref(),
        Some("system:serviceaccount:apps:legacy")
    );
    // RBAC changes take a moment to reach the authorizer's cache.
    let pods: Api<Pod> = Api::namespaced(as_sa.clone(), "apps");
    ksa_tests::eventually(
        "the service account may list pods",
        ksa_tests::OBSERVED_WITHIN,
        || async { Ok(pods.list(&Default::default()).await?) },
    )
    .await?;
    let forbidden = Api::<Secret>::namespaced(as_sa, "apps")
        .list(&Default::default())
        .await;
    assert!(
        matches!(forbidden, Err(kube::Error::Api(ref s)) if s.code == 403),
        "listing secrets must be forbidden: {forbidden:?}"
    );

    // One changed byte and the API server refuses it.
    let mut tampered = jwt.into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    assert_eq!(review_token(&client, &tampered).await?, None);
    Ok(())
}

#[tokio::test]
async fn overlap_accepts_both_keys_and_retiring_the_old_one_rejects_its_tokens() -> Result<()> {
    let old = new_key();
    let new = new_key();
    let mut plane = ControlPlane::start(ApiServerKeys::single(old.clone())).await?;
    let client = plane.client().await?;
    create_service_account(&client, "default", "app").await?;
    let old_token = request_token(&client, "default", "app", Vec::new(), 3600).await?;
    assert_eq!(
        token::decode(&old_token)?.header.kid.as_deref(),
        Some(old.kid().as_str())
    );

    // Trust and Sign: both public keys, signing with the new one.
    plane
        .restart_apiserver(ApiServerKeys {
            signing: new.clone(),
            public: vec![old.public_key().clone(), new.public_key().clone()],
        })
        .await?;
    let client = plane.client().await?;
    let new_token = request_token(&client, "default", "app", Vec::new(), 3600).await?;
    assert_eq!(
        token::decode(&new_token)?.header.kid.as_deref(),
        Some(new.kid().as_str())
    );
    for jwt in [&old_token, &new_token] {
        let reviewed = review_token(&client, jwt)
            .await?
            .context("accepted during the overlap")?;
        assert_eq!(reviewed.username, "system:serviceaccount:default:app");
    }

    // Retire: only the new public key.
    plane
        .restart_apiserver(ApiServerKeys::single(new.clone()))
        .await?;
    let client = plane.client().await?;
    assert_eq!(
        review_token(&client, &old_token).await?,
        None,
        "old-key token must be rejected"
    );
    assert!(
        review_token(&client, &new_token).await?.is_some(),
        "new-key token still works"
    );
    assert_eq!(plane.apiserver_starts, 3);
    Ok(())
}
