//! Outside verifiers (issue 21), end to end: a real kube-apiserver playing
//! a cloud IAM trusts the user cluster's tokens through ksa's HTTPS
//! discovery endpoint, and a verifier reading a real S3 bucket (SeaweedFS)
//! trusts them through the documents ksa publishes there. A prober puts the
//! cluster's tokens to both throughout a key rotation and an issuer
//! rotation: no valid token may be rejected, and a token of the retired key
//! must be rejected afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::discovery::issuer_paths;
use ksa_core::issuer::Issuer;
use ksa_core::key::KeySpec;
use ksa_core::token::{self, Claims};
use ksa_kube::api::KSASigningKeyRotation;
use ksa_tests::bucket_verifier::{BucketVerifier, Verdict};
use ksa_tests::cluster::{create_namespace, create_service_account, request_token};
use ksa_tests::hosted::APISERVER_CONTAINER;
use ksa_tests::netns::{self, Netns};
use ksa_tests::outside::{JwtAuthenticator, OutsideApiServer, Review};
use ksa_tests::outside_prober::{OutsideProbeTarget, OutsideProber};
use ksa_tests::s3::S3Server;
use ksa_tests::scenario::{APISERVER_DEPLOYMENT, CLUSTER, NAMESPACE, Scenario};
use ksa_tests::{FIRST_REPLICA, ISSUER, Pki, loopback_addr, write_private};
use kube::api::{Api, ObjectMeta, PostParams};

/// The issuer rotated to.
const B: &str = "https://issuer-b.example";
/// The audience outside verifiers trust, as a cloud IAM's.
const AUDIENCE: &str = "sts.outside.ksa.test";
const APPS: &str = "outside-apps";
const APP: &str = "federated";
/// What the controller serves and writes as `max-age`: Trust waits it out.
const MAX_AGE_SECONDS: u64 = 15;
/// How long a `rotate --wait --timeout 10m` may run: its own timeout, and
/// a margin for it to say so.
const CLI_DEADLINE: Duration = Duration::from_secs(11 * 60);

/// The user cluster config: the API server workload (for the issuer
/// rotation) and a short lead time.
fn user_cluster_config() -> String {
    format!(
        "apiVersion: v1\nkind: UserCluster\nname: {CLUSTER}\ngkeOnPremVersion: 1.16.0-gke.669\n\
         enableAdvancedCluster: false\nksaSigningKeyRotation:\n  apiServerWorkload: \
         {{kind: Deployment, name: {APISERVER_DEPLOYMENT}, container: {APISERVER_CONTAINER}}}\n  \
         trustLeadTimeSeconds: 2\n"
    )
}

/// A token of an issuer and kid nobody publishes, for the audience: it
/// makes kube-apiserver's JWT authenticator fetch the JWKS again (it does
/// only for a kid it does not know).
fn unknown_kid_token(issuer: &str) -> Result<String> {
    let key = AwsLc::new().generate(KeySpec::EcP256)?;
    let now = jiff::Timestamp::now().as_second();
    let claims = Claims {
        iss: Some(issuer.to_owned()),
        sub: Some("system:serviceaccount:outside-apps:nobody".into()),
        aud: Some(vec![AUDIENCE.to_owned()]),
        iat: Some(now),
        nbf: Some(now),
        exp: Some(now + 600),
        ..Claims::default()
    };
    Ok(token::mint(
        &claims,
        AwsLc::new().signing_key(&key)?.as_ref(),
    )?)
}

/// Runs `ksa` with `args`, polling the rotation's `waitingFor` meanwhile;
/// returns every distinct value seen.
async fn rotate(scenario: &Scenario, args: &[&str]) -> Result<Vec<String>> {
    // The CLI is killed when this returns: at the deadline, too.
    let cli = tokio::process::Command::from(scenario.ksa_command(args)?)
        .kill_on_drop(true)
        .output();
    let mut cli = std::pin::pin!(cli);
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(scenario.client.clone(), NAMESPACE);
    let mut seen: Vec<String> = Vec::new();
    let started = Instant::now();
    let output = loop {
        tokio::select! {
            output = &mut cli => break output?,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        ensure!(
            started.elapsed() < CLI_DEADLINE,
            "ksa {args:?} did not exit in {CLI_DEADLINE:?}; it waited for {seen:#?}\ncontroller log:\n{}",
            scenario.installation.controller_log()
        );
        if let Ok(resource) = rotations.get(CLUSTER).await
            && let Some(waiting) = resource.status.and_then(|s| s.waiting_for)
            && seen.last() != Some(&waiting)
        {
            eprintln!("waiting for: {waiting}");
            seen.push(waiting);
        }
    };
    ensure!(
        output.status.success(),
        "ksa {args:?} exited {:?}\nstdout:\n{}\nstderr:\n{}\ncontroller log:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        scenario.installation.controller_log()
    );
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_verifiers_trust_every_valid_token_through_a_key_and_an_issuer_rotation()
-> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    let mut scenario = Scenario::start_ha_with_apiserver_workload().await?;
    std::fs::write(&scenario.config, user_cluster_config())?;
    let client = scenario.client.clone();
    let s3 = S3Server::start().await?;

    // The controller's OIDC endpoint, over HTTPS with a certificate of a
    // CA of the test's own, allowed to publish to the bucket's host.
    let dir = tempfile::tempdir()?;
    let pki = Pki::generate(&[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)])?;
    let (cert, key, ca) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.crt"),
    );
    std::fs::write(&cert, &pki.server_cert)?;
    write_private(&key, pki.server_key.as_bytes())?;
    std::fs::write(&ca, &pki.ca_cert)?;
    let oidc_addr = loopback_addr()?;
    let public_url = format!("https://{oidc_addr}");
    let s3_host = s3
        .endpoint()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let installation = &mut scenario.installation;
    installation.kill_replica(FIRST_REPLICA)?;
    installation.extra_args = vec![
        format!("--oidc-public-url={public_url}"),
        format!("--oidc-addr={oidc_addr}"),
        format!("--oidc-tls-cert-file={}", cert.display()),
        format!("--oidc-tls-key-file={}", key.display()),
        format!("--oidc-ca-file={}", ca.display()),
        format!("--publish-host={s3_host}"),
        format!("--publish-max-age-seconds={MAX_AGE_SECONDS}"),
    ];
    let http_addr = installation.http_addr;
    installation.start_replica(FIRST_REPLICA, http_addr)?;

    // The rotation resource, at key 1, publishing to the bucket too.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("s3-writer".into()),
                    ..ObjectMeta::default()
                },
                data: Some(
                    [
                        ("accessKeyID", s3.access_key_id()),
                        ("secretAccessKey", s3.secret_access_key()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
                ),
                ..Secret::default()
            },
        )
        .await?;
    let resource: KSASigningKeyRotation = serde_json::from_value(serde_json::json!({
        "apiVersion": "ksa.dev/v1alpha1",
        "kind": "KSASigningKeyRotation",
        "metadata": {"name": CLUSTER, "namespace": NAMESPACE},
        "spec": {
            "keyVersion": 1,
            "rollout": {"workload": {
                "kind": "Deployment", "name": APISERVER_DEPLOYMENT, "container": APISERVER_CONTAINER,
            }},
            "trustLeadTimeSeconds": 2,
            "publish": {"s3": {
                "endpoint": s3.endpoint(),
                "region": s3.region(),
                "bucket": s3.bucket(),
                "credentialsSecret": "s3-writer",
                "caBundle": s3.ca_pem(),
            }},
        },
    }))?;
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    let created = rotations.create(&PostParams::default(), &resource).await?;

    // The outside verifiers: each issuer through the endpoint (the cloud
    // IAM) and through the bucket, laid out as ksa lays them out.
    let endpoint_base = format!("{public_url}/{NAMESPACE}/{CLUSTER}");
    let trust = |base: &str, ca_pem: &str| -> Result<Vec<JwtAuthenticator>> {
        [ISSUER, B]
            .iter()
            .map(|issuer| {
                Ok(JwtAuthenticator {
                    issuer: (*issuer).to_owned(),
                    discovery_url: issuer_paths(base, &Issuer::new(*issuer)?)?.discovery_url,
                    ca_pem: ca_pem.to_owned(),
                    audience: AUDIENCE.to_owned(),
                })
            })
            .collect()
    };
    let outside = Arc::new(OutsideApiServer::start(&trust(&endpoint_base, &pki.ca_cert)?).await?);
    let bucket = Arc::new(BucketVerifier::new(&trust(&s3.public_url(), s3.ca_pem())?)?);
    create_namespace(&client, APPS).await?;
    create_service_account(&client, APPS, APP).await?;
    let token_of_key_1 = request_token(&client, APPS, APP, vec![AUDIENCE.into()], 3600).await?;
    let (username, took) = outside
        .wait_accepts(&token_of_key_1, Duration::from_secs(120))
        .await
        .with_context(|| scenario.installation.controller_log())?;
    eprintln!(
        "the outside API server accepts the cluster's tokens as {username}, after {took:.1?}"
    );
    let started = Instant::now();
    loop {
        match bucket.verify(&token_of_key_1).await {
            Ok(Verdict::Accepted { .. }) => break,
            verdict if started.elapsed() > Duration::from_secs(60) => {
                anyhow::bail!("the bucket's documents do not verify the token: {verdict:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    // The endpoint: an ETag, and 304 for it.
    let reader = ksa_tests::s3::anonymous_client(&pki.ca_cert)?;
    let discovery = issuer_paths(&endpoint_base, &Issuer::new(ISSUER)?)?.discovery_url;
    let first = reader.get(&discovery).send().await?;
    ensure!(first.status() == 200, "GET {discovery}: {}", first.status());
    let etag = first.headers()["etag"].to_str()?.to_owned();
    assert_eq!(
        first.headers()["cache-control"],
        format!("public, max-age={MAX_AGE_SECONDS}").as_str()
    );
    let document: serde_json::Value = serde_json::from_str(&first.text().await?)?;
    assert_eq!(document["issuer"], ISSUER);
    let again = reader
        .get(&discovery)
        .header("if-none-match", &etag)
        .send()
        .await?;
    assert_eq!(again.status(), 304, "a conditional GET with the ETag");
    eprintln!("verifiers ready in {:.1?}", clock.elapsed());

    let prober = OutsideProber::spawn(
        client.clone(),
        outside.clone(),
        bucket.clone(),
        OutsideProbeTarget {
            namespace: APPS.into(),
            service_account: APP.into(),
            audience: AUDIENCE.into(),
        },
        Duration::from_millis(500),
    );

    // 1. The key, 1 -> 2: Trust waits for both locations, then for their
    // max-age.
    let waits = rotate(
        &scenario,
        &[
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--skip-prompt",
            "--wait",
            "--timeout",
            "10m",
        ],
    )
    .await?;
    let saw = |text: &str| waits.iter().any(|w| w.contains(text));
    assert!(
        saw(&format!(
            "outside verifiers seeing key 2 at {endpoint_base}/"
        )) || saw("outside verifiers' caches to expire"),
        "Trust waited for the outside: {waits:#?}"
    );
    assert!(
        saw("outside verifiers' caches to expire"),
        "Trust waited out the max-age: {waits:#?}"
    );
    eprintln!("key rotation done at {:.1?}", clock.elapsed());
    // The endpoint's documents belong to the rotation: they go when it does.
    let documents = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .get(&format!("{CLUSTER}-oidc"))
        .await?;
    let owners = documents.metadata.owner_references.unwrap_or_default();
    ensure!(
        owners.len() == 1
            && owners[0].uid == created.metadata.uid.clone().unwrap_or_default()
            && owners[0].controller == Some(true),
        "the endpoint's ConfigMap is owned by {owners:?}"
    );

    // The retired key: the bucket's verifier drops it once its cached JWKS
    // expires; kube-apiserver's keeps a cached key until a token of a kid
    // it does not know makes it fetch the JWKS again (and only when its
    // copy expires within 30 s).
    tokio::time::sleep(Duration::from_secs(MAX_AGE_SECONDS + 1)).await;
    let _ = outside.review(&unknown_kid_token(ISSUER)?).await?;
    let retired = request_token(&client, APPS, APP, vec![AUDIENCE.into()], 600).await;
    ensure!(retired.is_ok(), "a fresh token after the rotation");
    assert_eq!(
        outside.review(&token_of_key_1).await?,
        Review::Rejected,
        "the outside API server rejects a token of the retired key"
    );
    assert!(
        matches!(
            bucket.verify(&token_of_key_1).await?,
            Verdict::Rejected { .. }
        ),
        "the bucket's verifier rejects a token of the retired key"
    );

    // 2. The issuer, A -> B (the key kept): B's documents are confirmed
    // outside before any token carries B.
    let waits = rotate(
        &scenario,
        &[
            "update",
            "credentials",
            "ksa-issuer",
            "rotate",
            "--issuer",
            B,
            "--skip-prompt",
            "--wait",
            "--timeout",
            "10m",
        ],
    )
    .await?;
    eprintln!(
        "issuer rotation done at {:.1?}: {waits:#?}",
        clock.elapsed()
    );
    let token_of_b = request_token(&client, APPS, APP, vec![AUDIENCE.into()], 600).await?;
    assert!(matches!(
        outside.review(&token_of_b).await?,
        Review::Accepted { .. }
    ));
    assert!(matches!(
        bucket.verify(&token_of_b).await?,
        Verdict::Accepted { .. }
    ));
    // A's documents are withdrawn from the bucket.
    let a_discovery = issuer_paths(&s3.public_url(), &Issuer::new(ISSUER)?)?.discovery_url;
    let gone = s3.anonymous_client()?.get(&a_discovery).send().await?;
    assert!(
        gone.status() == 404 || gone.status() == 403,
        "A's document after Retire: {}",
        gone.status()
    );

    let stats = prober.stats().await;
    eprintln!("outside prober: {}", stats.report());
    assert!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens rejected outside: {:#?}",
        stats.wrongly_rejected
    );
    assert!(
        stats.outside_accepted > 50 && stats.bucket_accepted > 50,
        "{}",
        stats.report()
    );

    // Metrics: when each location was last written and confirmed.
    let metrics = reqwest::get(format!("http://{http_addr}/metrics"))
        .await?
        .text()
        .await?;
    for sink in ["endpoint", "s3"] {
        for metric in [
            "ksa_publish_last_write_timestamp_seconds",
            "ksa_publish_last_confirmation_timestamp_seconds",
        ] {
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(metric) && l.contains(&format!("sink=\"{sink}\""))),
                "{metric} for {sink}:\n{metrics}"
            );
        }
    }
    // The operator's metrics (issue 22): the build, the step as a state
    // set, the key version, the last completion.
    for line in [
        format!(
            r#"ksa_rotation_step{{namespace="{NAMESPACE}",name="{CLUSTER}",step="Completed"}} 1"#
        ),
        format!(r#"ksa_rotation_step{{namespace="{NAMESPACE}",name="{CLUSTER}",step="Trust"}} 0"#),
        format!(r#"ksa_rotation_key_version{{namespace="{NAMESPACE}",name="{CLUSTER}"}} 2"#),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    for metric in [
        "ksa_build_info{",
        "ksa_rotation_last_completion_timestamp_seconds{",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(metric)),
            "{metric}:\n{metrics}"
        );
    }
    // Readiness follows the API server, which the rotation restarted: the
    // controller sees it answer again on its next look.
    ksa_tests::eventually(
        "/readyz ready while the API server answers",
        ksa_tests::OBSERVED_WITHIN,
        || async {
            let ready = reqwest::get(format!("http://{http_addr}/readyz")).await?;
            ensure!(ready.status() == 200, "/readyz answers {}", ready.status());
            Ok(())
        },
    )
    .await?;
    eprintln!("done in {:.1?}", clock.elapsed());
    Ok(())
}
