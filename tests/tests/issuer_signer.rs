//! The product's issuer rotation (SPEC section 10) on three
//! kube-apiserver instances that sign through the external signer: the
//! issuer flags roll out as on a hosted control plane, and no key does.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use ksa_core::KeyVersion;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::KeySpec;
use ksa_tests::cluster::request_token;
use ksa_tests::hosted::{container_args, create_apiserver_deployment};
use ksa_tests::issuer::follow::{
    Confirmations, check_wait_output, controller_report, rotate_and_follow, run, stderr,
    stdout_lines,
};
use ksa_tests::issuer::{
    A, APP, B, COMPLETED_B, args_signing, ensure_all, ensure_legacy_token_accepted, ensure_signing,
    issuer_lines, issuer_rotation, mint_token, served_kids, token_issuer, user_cluster_config,
    verdicts_of,
};
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{APISERVER_DEPLOYMENT, APPS, CLUSTER, NAMESPACE, create_workload};
use ksa_tests::signer::{SignerProcess, write_key_dir};
use ksa_tests::{
    ApiServerWorkload, ControlPlane, HA_INSTANCES, HostedApiServer, Installation, ProbeTarget,
    Prober, RotationSource, ksa_binary, write_private,
};
use kube::api::Api;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_issuer_changes_through_the_external_signer_roll_out_with_no_restart_for_keys()
-> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    // The signer serves the key from a directory: the instances sign
    // through it and have no key file. (It cannot follow the key Secret of
    // the cluster it signs for: that cluster needs it to start. An issuer
    // rotation changes no key, so nothing has to follow anything.)
    let first = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let keys_dir = tempfile::tempdir()?;
    write_key_dir(keys_dir.path(), &first, &[&first])?;
    let socket = keys_dir.path().join("signer.sock");
    let _signer = SignerProcess::from_dir(
        &socket,
        keys_dir.path(),
        &keys_dir.path().join("signer.log"),
    )?;
    let mut plane = ControlPlane::start_ha_with_external_signer(&socket).await?;
    // kube-controller-manager signs legacy tokens with a copy of the key.
    write_private(&plane.dir().join("sa.key"), first.to_pem().as_bytes())?;
    plane.start_controller_manager()?;
    let client = plane.client().await?;
    let instances = plane.instance_clients().await?;
    let kubeconfig = plane.kubeconfig_path();
    let mut installation =
        Installation::install(&client, NAMESPACE, CLUSTER, &first, plane.dir()).await?;
    installation.start_controller(&plane.controller_kubeconfig_path())?;
    let config = plane.dir().join("user-cluster.yaml");
    std::fs::write(&config, user_cluster_config(Some("external-signer"), 0))?;
    create_workload(&client).await?;
    let workload = ApiServerWorkload::deployment(APISERVER_DEPLOYMENT);
    create_apiserver_deployment(&client, NAMESPACE, CLUSTER, &workload).await?;
    let plane = Arc::new(Mutex::new(plane));
    let _hosted = HostedApiServer::spawn_issuer_flags(
        plane.clone(),
        client.clone(),
        NAMESPACE,
        workload.clone(),
    );
    let prober = Prober::spawn(
        client.clone(),
        instances.clone(),
        ProbeTarget {
            namespace: APPS.into(),
            service_account: APP.into(),
            legacy_secret: "app-token".into(),
            rotation: RotationSource::Resource {
                namespace: NAMESPACE.into(),
                name: CLUSTER.into(),
            },
        },
    );
    let kid = first.kid().as_str().to_owned();
    assert_eq!(
        served_kids(&instances).await?,
        vec![vec![kid.clone()]; HA_INSTANCES]
    );
    let early = request_token(&client, APPS, APP, Vec::new(), 3600).await?;
    assert_eq!(token_issuer(&early)?, A);
    eprintln!("cluster ready in {:.1?}", clock.elapsed());

    let to_b = issuer_rotation(1, A, B, false)?;
    let confirmations = Confirmations {
        client: client.clone(),
        instances: instances.clone(),
        from: A,
        to: B,
        old_key: first.clone(),
        new_version: KeyVersion::FIRST,
        early: early.clone(),
    };
    let mut command = std::process::Command::new(ksa_binary("ksa")?);
    command
        .args([
            "update",
            "credentials",
            "ksa-issuer",
            "rotate",
            "--issuer",
            B,
            "--skip-prompt",
            "--wait",
            "--timeout",
            "5m",
            "--config",
        ])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(&kubeconfig);
    let (output, elapsed, followed) =
        rotate_and_follow(command, &client, &to_b, confirmations, || async { Ok(()) })
            .await
            .with_context(|| controller_report(&installation))?;
    eprintln!("signer A -> B: ksa-issuer rotate --wait took {elapsed:.1?}");
    followed.print("signer A -> B");
    check_wait_output(&output, &issuer_lines(A, B), "signer A -> B");
    assert_eq!(
        followed.checked.len(),
        3,
        "Trust, Sign and Retire were each checked"
    );

    // The issuer flags changed as on a hosted control plane; no key did:
    // the instances still sign through the signer with its one key, and
    // the workload was never restarted for a key set.
    let args = container_args(&client, NAMESPACE, &workload).await?;
    assert_eq!(args, args_signing(B));
    let deployment = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get(APISERVER_DEPLOYMENT)
        .await?;
    let annotations = deployment
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    assert!(
        !annotations.contains_key("ksa.dev/key-set"),
        "the workload was restarted for a key set: {annotations:?}"
    );
    ensure_signing(&instances, &kid, B).await?;
    let minted_a = mint_token(&client, APPS, APP, A, &[A], &first).await?;
    ensure_all(
        &verdicts_of(&instances, &minted_a).await?,
        &false,
        "a token of A",
    )?;
    ensure_legacy_token_accepted(&client, &instances).await?;
    let mut status = std::process::Command::new(ksa_binary("ksa")?);
    status
        .args(["update", "credentials", "ksa-issuer", "status", "--config"])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(&kubeconfig);
    let status = run(status).await?;
    assert_eq!(stdout_lines(&status), [COMPLETED_B], "{}", stderr(&status));

    let stats = prober.stats().await;
    eprintln!("signer A -> B: prober: {stats:?}");
    assert_eq!(stats.wrongly_rejected, Vec::<String>::new());
    assert!(
        stats.reviews > 100,
        "the prober reviewed too little: {stats:?}"
    );
    let plane = plane.lock().await;
    assert!(plane.keys().is_none(), "the instances have no key file");
    assert_eq!(
        plane.roll_log().check()?,
        3 * HA_INSTANCES,
        "three issuer flag roll-outs (Trust, Sign, Retire), each to every instance, none for keys"
    );
    assert_eq!(plane.apiserver_starts, 4, "the start and three roll-outs");
    eprintln!("the test took {:.1?}", clock.elapsed());
    Ok(())
}
