//! The KEP-740 external signer end to end: a user cluster whose three
//! kube-apiserver instances have no key file and sign through one
//! `ksa-controller signer`, which follows the key Secret the controller
//! publishes in the admin cluster. A full rotation must take effect with no
//! API server restart while TokenRequest and TokenReview pairs run
//! throughout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use ksa_controller::manifests::SIGNER;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::parse_jwks;
use ksa_core::key::KeySpec;
use ksa_core::keyset::KeySet;
use ksa_core::token::{self, Expectations};
use ksa_core::{KeyId, KeyVersion};
use ksa_kube::keystore::KeyStore;
use ksa_tests::cluster::{create_namespace, create_service_account, request_token, review_token};
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{CLUSTER, NAMESPACE};
use ksa_tests::signer::SignerProcess;
use ksa_tests::{ApiServerKeys, ControlPlane, ISSUER, Installation, ksa_binary};
use kube::api::{Api, ObjectMeta, PostParams};

/// The signer's Role from `deploy/signer-rbac.yaml` (its key Secret only),
/// in the cluster's namespace, bound to the user its client certificate
/// names.
async fn grant_signer(admin: &kube::Client) -> Result<()> {
    let role = ksa_controller::manifests::signer_role(&format!("{CLUSTER}-apiserver-keys"));
    Api::<Role>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(SIGNER.into()),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: SIGNER.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: SIGNER.into(),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

async fn served_kids(client: &kube::Client) -> Result<Vec<KeyId>> {
    let text = client
        .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new())?)
        .await?;
    Ok(parse_jwks(&text)?.into_iter().map(|k| k.kid).collect())
}

/// TokenRequest + TokenReview pairs, one after another on each of `workers`
/// tasks, until stopped; counts pairs and failures.
#[derive(Default)]
struct Load {
    pairs: AtomicU64,
    failures: AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

async fn run_load(client: kube::Client, load: Arc<Load>) {
    while !load.stop.load(Ordering::Relaxed) {
        let outcome = async {
            let token = request_token(&client, "apps", "web", vec![], 600).await?;
            let user = review_token(&client, &token).await?;
            anyhow::ensure!(
                user.as_ref().map(|u| u.username.as_str())
                    == Some("system:serviceaccount:apps:web"),
                "a fresh token was not accepted: {user:?}"
            );
            anyhow::Ok(())
        }
        .await;
        load.pairs.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = outcome {
            load.failures.fetch_add(1, Ordering::Relaxed);
            eprintln!("load: {error:#}");
        }
    }
}

#[tokio::test]
async fn the_external_signer_serves_tokens_and_rotates_with_no_api_server_restart() -> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let aws = AwsLc::new();
    // The admin cluster: the rotation resource, the key store, the controller.
    let admin = ControlPlane::start(ApiServerKeys::single(aws.generate(KeySpec::Rsa2048)?)).await?;
    let admin_client = admin.client().await?;
    let first = aws.generate(KeySpec::Rsa2048)?;
    let mut installation =
        Installation::install(&admin_client, NAMESPACE, CLUSTER, &first, admin.dir()).await?;
    grant_signer(&admin_client).await?;
    let socket = admin.dir().join("signer.sock");
    let _signer = SignerProcess::from_secret(
        &socket,
        &format!("{NAMESPACE}/{CLUSTER}-apiserver-keys"),
        &admin.signer_kubeconfig_path(),
        &admin.dir().join("signer.log"),
    )?;

    // The user cluster: kube-apiserver instances with no key file.
    let user = ControlPlane::start_ha_with_external_signer(&socket).await?;
    let user_client = user.client().await?;
    create_namespace(&user_client, "apps").await?;
    create_service_account(&user_client, "apps", "web").await?;

    // TokenRequest tokens carry our kid and verify with ksa-core.
    let jwt = request_token(&user_client, "apps", "web", vec!["vault".into()], 600).await?;
    let decoded = token::decode(&jwt)?;
    assert_eq!(decoded.header.kid.as_deref(), Some(first.kid().as_str()));
    assert_eq!(decoded.header.typ.as_deref(), Some("JWT"));
    let served = user_client
        .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new())?)
        .await?;
    let keys = KeySet::new(parse_jwks(&served)?, &aws)?;
    let now = jiff::Timestamp::now().as_second();
    let verified = token::verify(
        &jwt,
        &keys,
        &Expectations {
            issuers: vec![ISSUER.into()],
            audiences: vec!["vault".into()],
            at: now,
            leeway_seconds: 60,
        },
    )?;
    assert_eq!(verified.kid, *first.kid());

    // The controller reaches the user cluster through a kubeconfig Secret.
    let kubeconfig = std::fs::read(user.kubeconfig_path())?;
    Api::<Secret>::namespaced(admin_client.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("user-cluster-kubeconfig".into()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([("value".into(), ByteString(kubeconfig))])),
                ..Secret::default()
            },
        )
        .await?;
    installation.start_controller(&admin.controller_kubeconfig_path())?;

    // Load and a JWKS watcher on the user cluster, throughout.
    let load = Arc::new(Load::default());
    let workers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(run_load(user_client.clone(), load.clone())))
        .collect();
    let jwks_history = tokio::spawn({
        let client = user_client.clone();
        let load = load.clone();
        async move {
            let mut history: Vec<Vec<KeyId>> = Vec::new();
            while !load.stop.load(Ordering::Relaxed) {
                if let Ok(kids) = served_kids(&client).await
                    && history.last() != Some(&kids)
                {
                    history.push(kids);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            history
        }
    });

    let config = admin.dir().join("user-cluster.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: UserCluster\nname: {CLUSTER}\nenableAdvancedCluster: false\n\
             ksaSigningKeyRotation:\n  kubeconfigSecret: user-cluster-kubeconfig\n  rollout: external-signer\n"
        ),
    )?;
    let started = Instant::now();
    let rotate = tokio::process::Command::new(ksa_binary("ksa")?)
        .args([
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--skip-prompt",
            "--wait",
        ])
        .args(["--timeout", "90s"])
        .arg("--config")
        .arg(&config)
        .arg("--kubeconfig")
        .arg(admin.kubeconfig_path())
        .output()
        .await?;
    let elapsed = started.elapsed();
    load.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await?;
    }
    let history = jwks_history.await?;
    let stdout = String::from_utf8_lossy(&rotate.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&rotate.stderr));
    if !rotate.status.success() {
        bail!(
            "the rotation failed ({}); /openid/v1/jwks went through {history:?}\n\
             controller log:\n{}\nsigner log:\n{}",
            rotate.status,
            installation.controller_log(),
            std::fs::read_to_string(admin.dir().join("signer.log")).unwrap_or_default()
        );
    }
    assert!(stdout.contains("status: True, reason: KSASigningKeyRotationCompleted"));

    let second = KeyStore::new(admin_client.clone(), NAMESPACE, CLUSTER)
        .public_keys()
        .await?
        .remove(&KeyVersion::new(2))
        .context("key version 2 in the store")?;
    let (one, two) = (first.kid().clone(), second.kid().clone());
    assert_eq!(
        history,
        [vec![one.clone()], vec![one, two.clone()], vec![two.clone()]],
        "/openid/v1/jwks went from [1] to [1,2] to [2]"
    );
    let pairs = load.pairs.load(Ordering::Relaxed);
    let failures = load.failures.load(Ordering::Relaxed);
    let rate = pairs as f64 / elapsed.as_secs_f64();
    eprintln!(
        "rotation in {elapsed:.1?}: {pairs} TokenRequest+TokenReview pairs ({rate:.0}/s), {failures} failed"
    );
    assert_eq!(failures, 0, "no TokenRequest or TokenReview failed");
    assert!(rate >= 20.0, "the load ran at {rate:.1} pairs/s, below 20");
    assert_eq!(
        user.apiserver_starts, 1,
        "kube-apiserver was never restarted"
    );
    let jwt = request_token(&user_client, "apps", "web", vec![], 600).await?;
    assert_eq!(
        token::decode(&jwt)?.header.kid.as_deref(),
        Some(two.as_str())
    );
    Ok(())
}
