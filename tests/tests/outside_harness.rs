//! The outside verifiers of issue #21, tested on their own, with no
//! product code: a discovery document and JWKS put into the S3 bucket by
//! hand, the outside kube-apiserver (a cloud IAM) and the bucket verifier
//! reading them, and the outside prober putting a real user cluster's
//! tokens to both. Each check here is one the end-to-end test of a
//! rotation relies on; the behaviours of kube-apiserver's JWT
//! authenticator that `ksa_tests::outside` documents are asserted, so a
//! Kubernetes upgrade that changes them fails here first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::Jwks;
use ksa_core::key::{KeySpec, PrivateKey};
use ksa_core::token::{self, Claims};
use ksa_tests::bucket_verifier::{BucketVerifier, Verdict};
use ksa_tests::cluster::{create_namespace, create_service_account, request_token};
use ksa_tests::outside::{JwtAuthenticator, OutsideApiServer, Review, USERNAME_PREFIX};
use ksa_tests::outside_prober::{OutsideProbeTarget, OutsideProber};
use ksa_tests::s3::S3Server;
use ksa_tests::{ApiServerKeys, ControlPlane, ISSUER};

/// The audience the outside verifiers trust.
const AUDIENCE: &str = "sts.outside.ksa.test";
/// An issuer of the test's own (never resolved: the discovery document is
/// read from the bucket, and names the bucket's JWKS).
const ISSUER_URL: &str = "https://issuer.outside-harness.ksa.test";
const SUBJECT: &str = "system:serviceaccount:harness:workload";
const DISCOVERY_KEY: &str = ".well-known/openid-configuration";
const JWKS_KEY: &str = "openid/v1/jwks";
/// How long the outside API server may take to pick up a discovery
/// document published after it started (it polls every 10 s).
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(60);

fn new_key() -> Result<PrivateKey> {
    Ok(AwsLc::new().generate(KeySpec::Rsa2048)?)
}

/// A new token of [`SUBJECT`] for `audience` from `issuer`, valid for ten
/// minutes, signed with `key` (its kid in the header).
fn sign(key: &PrivateKey, issuer: &str, audience: &str) -> Result<String> {
    // A jti of its own: two tokens signed in the same second differ.
    static SIGNED: AtomicU64 = AtomicU64::new(0);
    let now = jiff::Timestamp::now().as_second();
    let claims = Claims {
        jti: Some(format!(
            "outside-harness-{}",
            SIGNED.fetch_add(1, Ordering::Relaxed)
        )),
        iss: Some(issuer.to_owned()),
        sub: Some(SUBJECT.to_owned()),
        aud: Some(vec![audience.to_owned()]),
        iat: Some(now),
        nbf: Some(now),
        exp: Some(now + 600),
        ..Claims::default()
    };
    Ok(token::mint(
        &claims,
        AwsLc::new().signing_key(key)?.as_ref(),
    )?)
}

/// Puts the discovery document naming `issuer` and the bucket's JWKS.
async fn publish_discovery(s3: &S3Server, issuer: &str) -> Result<()> {
    let document = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": s3.object_url(JWKS_KEY),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    s3.put(
        DISCOVERY_KEY,
        serde_json::to_vec(&document)?,
        "application/json",
        Some("max-age=0"),
    )
    .await
}

/// Puts a JWKS of `keys` with this `Cache-Control`.
async fn publish_jwks(s3: &S3Server, keys: &[&PrivateKey], cache_control: &str) -> Result<()> {
    let jwks = Jwks::from_public_keys(keys.iter().map(|k| k.public_key()));
    s3.put(
        JWKS_KEY,
        jwks.to_json().into_bytes(),
        "application/json",
        Some(cache_control),
    )
    .await
}

fn accepted() -> Review {
    Review::Accepted {
        username: format!("{USERNAME_PREFIX}{SUBJECT}"),
    }
}

fn bucket_accepted() -> Verdict {
    Verdict::Accepted {
        subject: SUBJECT.to_owned(),
    }
}

fn is_rejected(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Rejected { .. })
}

#[tokio::test]
async fn outside_verifiers_follow_what_the_bucket_publishes() -> Result<()> {
    let started = Instant::now();
    let s3 = S3Server::start().await?;
    let trust = JwtAuthenticator {
        issuer: ISSUER_URL.to_owned(),
        discovery_url: s3.object_url(DISCOVERY_KEY),
        ca_pem: s3.ca_pem().to_owned(),
        audience: AUDIENCE.to_owned(),
    };
    // Started before anything is published: as during a rotation, the
    // document appears later.
    let outside = OutsideApiServer::start(std::slice::from_ref(&trust)).await?;
    let bucket = BucketVerifier::new(std::slice::from_ref(&trust))?;
    let (k1, k2, k3, other) = (new_key()?, new_key()?, new_key()?, new_key()?);
    let token1 = sign(&k1, ISSUER_URL, AUDIENCE)?;

    // Nothing published: the outside API server rejects (its
    // authenticator is not initialized), the bucket cannot be read.
    assert_eq!(outside.review(&token1).await?, Review::Rejected);
    let unpublished = bucket.verify(&token1).await;
    assert!(
        unpublished.is_err(),
        "the bucket verifier read an unpublished document: {unpublished:?}"
    );

    // Anonymous callers read the bucket; they may not write it.
    let intruder = s3
        .anonymous_client()?
        .put(s3.object_url(JWKS_KEY))
        .body("{\"keys\":[]}")
        .send()
        .await?;
    assert_eq!(
        intruder.status(),
        http::StatusCode::FORBIDDEN,
        "an anonymous PUT into the bucket"
    );

    // Published: both accept, naming the subject.
    publish_discovery(&s3, ISSUER_URL).await?;
    publish_jwks(&s3, &[&k1], "max-age=0").await?;
    let (username, took) = outside.wait_accepts(&token1, DISCOVERY_DEADLINE).await?;
    eprintln!("the outside API server accepted the first token {took:.1?} after publication");
    assert_eq!(Review::Accepted { username }, accepted());
    assert_eq!(bucket.verify(&token1).await?, bucket_accepted());

    // A key never published, or another audience: both reject.
    let foreign = sign(&other, ISSUER_URL, AUDIENCE)?;
    assert_eq!(outside.review(&foreign).await?, Review::Rejected);
    assert!(is_rejected(&bucket.verify(&foreign).await?));
    let elsewhere = sign(&k1, ISSUER_URL, "another-audience")?;
    assert_eq!(outside.review(&elsewhere).await?, Review::Rejected);
    assert!(is_rejected(&bucket.verify(&elsewhere).await?));

    // A second key published (max-age 0): its first token is accepted by
    // both (the outside API server fetches the JWKS again for an unknown
    // kid), and the first key's tokens still are.
    publish_jwks(&s3, &[&k1, &k2], "max-age=0").await?;
    let token2 = sign(&k2, ISSUER_URL, AUDIENCE)?;
    assert_eq!(outside.review(&token2).await?, accepted());
    assert_eq!(bucket.verify(&token2).await?, bucket_accepted());
    assert_eq!(outside.review(&token1).await?, accepted());
    assert_eq!(bucket.verify(&token1).await?, bucket_accepted());

    // The bucket verifier honours max-age: it caches a JWKS served with
    // max-age=10 and does not see a third key published meanwhile until
    // the ten seconds are over. The outside API server, whose copy
    // expires within 30 s, fetches again and accepts at once.
    publish_jwks(&s3, &[&k1, &k2], "max-age=10").await?;
    let served = s3
        .anonymous_client()?
        .get(s3.object_url(JWKS_KEY))
        .send()
        .await?;
    assert_eq!(
        served.headers().get(http::header::CACHE_CONTROL),
        Some(&http::HeaderValue::from_static("max-age=10")),
        "the bucket serves the Cache-Control the object was put with: {:?}",
        served.headers()
    );
    assert_eq!(bucket.verify(&token1).await?, bucket_accepted());
    let cached_at = Instant::now();
    publish_jwks(&s3, &[&k1, &k2, &k3], "max-age=0").await?;
    let token3 = sign(&k3, ISSUER_URL, AUDIENCE)?;
    let stale = bucket.verify(&token3).await?;
    assert!(
        is_rejected(&stale) || cached_at.elapsed() >= Duration::from_secs(10),
        "the bucket verifier fetched the JWKS again within its max-age: {stale:?}"
    );
    assert_eq!(outside.review(&token3).await?, accepted());
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cached_at.elapsed())).await;
    assert_eq!(bucket.verify(&token3).await?, bucket_accepted());

    // The first key retired: the bucket verifier (nothing cached) rejects
    // its tokens at once; the outside API server still accepts them from
    // its cache, until a token of an unknown kid makes it fetch again.
    // (Each check of the outside API server here uses a token it has not
    // seen: it remembers a token it accepted for 10 s.)
    publish_jwks(&s3, &[&k2, &k3], "max-age=0").await?;
    assert!(is_rejected(&bucket.verify(&token1).await?));
    let unseen = sign(&k1, ISSUER_URL, AUDIENCE)?;
    assert_eq!(
        outside.review(&unseen).await?,
        accepted(),
        "kube-apiserver dropped a retired key from its cache without being asked to fetch"
    );
    assert_eq!(outside.review(&foreign).await?, Review::Rejected);
    assert_eq!(
        outside.review(&sign(&k1, ISSUER_URL, AUDIENCE)?).await?,
        Review::Rejected
    );
    // The token accepted a moment ago is still remembered.
    assert_eq!(outside.review(&unseen).await?, accepted());
    assert_eq!(
        outside.review(&sign(&k2, ISSUER_URL, AUDIENCE)?).await?,
        accepted()
    );

    // A second issuer trusted on the fly, as before an issuer rotation
    // signs with it: its own discovery document in the bucket, the
    // configuration file rewritten; kube-apiserver reloads it.
    let issuer_b = "https://issuer-b.outside-harness.ksa.test";
    let discovery_b = format!("b/{DISCOVERY_KEY}");
    let document = serde_json::json!({
        "issuer": issuer_b,
        "jwks_uri": s3.object_url(JWKS_KEY),
    });
    s3.put(
        &discovery_b,
        serde_json::to_vec(&document)?,
        "application/json",
        None,
    )
    .await?;
    let trust_b = JwtAuthenticator {
        issuer: issuer_b.to_owned(),
        discovery_url: s3.object_url(&discovery_b),
        ..trust.clone()
    };
    let token_b = sign(&k2, issuer_b, AUDIENCE)?;
    assert_eq!(outside.review(&token_b).await?, Review::Rejected);
    outside.set_authenticators(&[trust.clone(), trust_b])?;
    let (_, took) = outside
        .wait_accepts(&token_b, Duration::from_secs(120))
        .await?;
    eprintln!(
        "the outside API server trusted a second issuer {took:.1?} after its configuration changed"
    );
    assert_eq!(
        outside.review(&sign(&k2, ISSUER_URL, AUDIENCE)?).await?,
        accepted()
    );
    eprintln!(
        "outside harness self-test passed in {:.1?} ({} bucket fetches)",
        started.elapsed(),
        bucket.fetches()
    );
    Ok(())
}

#[tokio::test]
async fn outside_prober_counts_a_user_clusters_tokens() -> Result<()> {
    let started = Instant::now();
    let s3 = S3Server::start().await?;
    let plane = ControlPlane::start(ApiServerKeys::single(new_key()?)).await?;
    let client = plane.client().await?;
    // What a publisher does: the cluster's own discovery issuer and JWKS,
    // copied into the bucket.
    let jwks = client
        .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new())?)
        .await?;
    publish_discovery(&s3, ISSUER).await?;
    s3.put(
        JWKS_KEY,
        jwks.into_bytes(),
        "application/json",
        Some("max-age=0"),
    )
    .await?;
    let trust = JwtAuthenticator {
        issuer: ISSUER.to_owned(),
        discovery_url: s3.object_url(DISCOVERY_KEY),
        ca_pem: s3.ca_pem().to_owned(),
        audience: AUDIENCE.to_owned(),
    };
    let outside = Arc::new(OutsideApiServer::start(std::slice::from_ref(&trust)).await?);
    let bucket = Arc::new(BucketVerifier::new(std::slice::from_ref(&trust))?);
    create_namespace(&client, "workloads").await?;
    create_service_account(&client, "workloads", "federated").await?;
    let first = request_token(
        &client,
        "workloads",
        "federated",
        vec![AUDIENCE.to_owned()],
        3600,
    )
    .await?;
    let (username, took) = outside.wait_accepts(&first, DISCOVERY_DEADLINE).await?;
    eprintln!("the outside API server accepted the cluster's token as {username} after {took:.1?}");
    assert_eq!(
        username,
        format!("{USERNAME_PREFIX}system:serviceaccount:workloads:federated")
    );

    let prober = OutsideProber::spawn(
        client.clone(),
        outside.clone(),
        bucket.clone(),
        OutsideProbeTarget {
            namespace: "workloads".to_owned(),
            service_account: "federated".to_owned(),
            audience: AUDIENCE.to_owned(),
        },
        Duration::from_millis(200),
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let healthy = prober.stats().await;
    eprintln!("while published: {}", healthy.report());
    assert!(healthy.tokens_issued >= 3, "{healthy:?}");
    assert!(healthy.outside_accepted >= 3, "{healthy:?}");
    assert!(healthy.bucket_accepted >= 3, "{healthy:?}");
    assert!(healthy.wrongly_rejected.is_empty(), "{healthy:?}");
    assert_eq!(healthy.errors, 0, "{healthy:?}");

    // The cluster's key withdrawn from the bucket while the cluster still
    // signs with it, as a rotation that retired a key too early would:
    // the prober must count the rejections.
    publish_jwks(&s3, &[&new_key()?], "max-age=0").await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let broken = loop {
        let stats = prober.stats().await;
        if stats.wrongly_rejected.len() > healthy.wrongly_rejected.len() + 2
            || Instant::now() > deadline
        {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("after withdrawal: {}", broken.report());
    assert!(
        broken
            .wrongly_rejected
            .iter()
            .any(|r| r.contains("bucket verifier")),
        "the prober did not see the bucket verifier reject valid tokens: {broken:?}"
    );
    // The outside API server goes on accepting them: the cluster signs
    // with no kid it does not know, so nothing makes it fetch the JWKS
    // again (see `ksa_tests::outside`).
    assert!(
        broken
            .wrongly_rejected
            .iter()
            .all(|r| !r.contains("outside API server")),
        "kube-apiserver dropped a withdrawn key without an unknown kid: {broken:?}"
    );
    drop(prober);
    eprintln!(
        "outside prober self-test passed in {:.1?}",
        started.elapsed()
    );
    Ok(())
}
