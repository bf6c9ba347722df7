//! The harness's own issuer tests (SPEC section 10) on a real control
//! plane of three kube-apiserver instances: with no ksa at all, they roll
//! issuer flags by hand through the players (the API server workload's
//! args, as the controller will rewrite them) and check, on every
//! instance, what SPEC section 10 says each step does; so that the
//! product's issuer tests (`issuer_controller.rs`, `issuer_kubeadm.rs`,
//! `issuer_signer.rs`) stand on a player known to work.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey, public_keys_to_pem};
use ksa_tests::cluster::{create_namespace, create_service_account, request_token};
use ksa_tests::hosted::{
    UNRELATED_ARGS, container_args, create_apiserver_deployment, other_args, rewrite_issuer_args,
    set_container_args,
};
use ksa_tests::issuer::{
    A, APP, B, discovery_issuers, issued_issuers, mint_token, token_audiences, token_issuer,
    verdicts,
};
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::APPS;
use ksa_tests::signer::{SignerProcess, write_key_dir};
use ksa_tests::{
    ApiServerKeys, ApiServerWorkload, ControlPlane, HA_INSTANCES, HostedApiServer, InstanceClient,
    ProbeTarget, Prober, RotationSource,
};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::Mutex;

/// Where the harness's tests keep the key Secret and the API server
/// workload, as a rotation's namespace in the admin cluster holds them.
const HOSTED: &str = "hosted";
/// The rotation the API server workload is labelled for.
const ROTATION: &str = "harness";
const KEY_SECRET: &str = "apiserver-keys";

/// How long one roll-out of three instances may take.
const ROLL_TIMEOUT: Duration = Duration::from_secs(300);

/// What every instance must do at one stage of a rotation from A to B.
struct Stage {
    /// What the workload's issuer args are set to; `None`: left alone.
    issuers: Option<&'static [&'static str]>,
    /// The rotation's step, as the state file says (read by the prober).
    step: &'static str,
    accepts_a: bool,
    accepts_b: bool,
    /// The issuer of tokens issued, and of the discovery document.
    signs: &'static str,
}

const STAGES: [Stage; 5] = [
    Stage {
        issuers: Some(&[A, B]),
        step: "Trust",
        accepts_a: true,
        accepts_b: true,
        signs: A,
    },
    Stage {
        issuers: Some(&[B, A]),
        step: "Sign",
        accepts_a: true,
        accepts_b: true,
        signs: B,
    },
    Stage {
        issuers: None,
        step: "RefreshTokens",
        accepts_a: true,
        accepts_b: true,
        signs: B,
    },
    Stage {
        issuers: Some(&[B]),
        step: "Retire",
        accepts_a: false,
        accepts_b: true,
        signs: B,
    },
    Stage {
        issuers: None,
        step: "Completed",
        accepts_a: false,
        accepts_b: true,
        signs: B,
    },
];

/// Writes the rotation state the prober reads (as a kubeadm control
/// plane's `ksa-rotation.json`): an issuer rotation from A to B at `step`
/// that keeps key 1; `None`: a cluster at rest that never changed issuer.
fn write_state(pki: &Path, step: Option<&str>) -> Result<()> {
    let state = match step {
        Some(step) => serde_json::json!({
            "keyVersion": 1,
            "step": step,
            "issuer": {"from": A, "to": B},
            "changesKey": false,
        }),
        None => serde_json::json!({"keyVersion": 1, "step": "Completed"}),
    };
    // Through the core's own type, which checks the state.
    let state: ksa_core::rotation::RotationState = serde_json::from_value(state)?;
    std::fs::write(pki.join("ksa-rotation.json"), serde_json::to_vec(&state)?)?;
    Ok(())
}

/// Waits until every instance runs with issuers `issuers` and
/// api-audiences `audiences`.
async fn wait_issuer_flags(
    plane: &Mutex<ControlPlane>,
    issuers: &[&str],
    audiences: Option<&str>,
) -> Result<()> {
    let started = Instant::now();
    loop {
        {
            let plane = plane.lock().await;
            let running = plane.running();
            if running
                .iter()
                .all(|s| s.issuers == issuers && s.api_audiences.as_deref() == audiences)
            {
                return Ok(());
            }
            if started.elapsed() > ROLL_TIMEOUT {
                let flags: Vec<_> = running
                    .iter()
                    .map(|s| (s.issuers.clone(), s.api_audiences.clone()))
                    .collect();
                bail!(
                    "the instances do not run issuers {issuers:?}, api-audiences {audiences:?} \
                     after {ROLL_TIMEOUT:?}: {flags:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets the workload's issuer args to `issuers` as the controller rewrites
/// them, and waits until the player has rolled them out.
async fn roll_issuers(
    plane: &Mutex<ControlPlane>,
    client: &kube::Client,
    workload: &ApiServerWorkload,
    issuers: &[&str],
) -> Result<()> {
    let args = container_args(client, HOSTED, workload).await?;
    let rewritten = rewrite_issuer_args(&args, issuers);
    set_container_args(client, HOSTED, workload, &rewritten).await?;
    // The first rewrite pins the default audience to the issuer before it.
    wait_issuer_flags(plane, issuers, Some(A)).await
}

/// Checks what every instance accepts, issues and advertises.
async fn check_instances(
    client: &kube::Client,
    instances: &[InstanceClient],
    key: &PrivateKey,
    accepts: &[(&str, bool)],
    signs: &str,
    what: &str,
) -> Result<()> {
    for (issuer, accepted) in accepts {
        let minted = mint_token(client, APPS, APP, issuer, &[A], key).await?;
        let verdicts = verdicts(instances, &minted).await?;
        ensure!(
            verdicts.iter().all(|v| v == accepted),
            "{what}: a token of issuer {issuer} is accepted by {verdicts:?} of the instances, \
             not by {} of them",
            if *accepted { "all" } else { "none" }
        );
    }
    let discovered = discovery_issuers(instances).await?;
    ensure!(
        discovered.iter().all(|i| i == signs),
        "{what}: the discovery documents name {discovered:?}, not {signs}"
    );
    let issued = issued_issuers(instances, APPS, APP).await?;
    ensure!(
        issued.iter().all(|i| i == signs),
        "{what}: the instances issue tokens of {issued:?}, not {signs}"
    );
    Ok(())
}

async fn create_key_secret(client: &kube::Client, key: &PrivateKey) -> Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(KEY_SECRET.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            (
                "sa.key".into(),
                ByteString(key.to_pem().as_bytes().to_vec()),
            ),
            (
                "sa.pub".into(),
                ByteString(public_keys_to_pem([key.public_key()]).into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), HOSTED)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_harness_rolls_issuer_flags_one_instance_at_a_time() -> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let plane = ControlPlane::start_ha(ApiServerKeys::single(key.clone())).await?;
    let client = plane.client().await?;
    let instances = plane.instance_clients().await?;
    create_namespace(&client, HOSTED).await?;
    create_key_secret(&client, &key).await?;
    let workload = ApiServerWorkload::deployment("kube-apiserver");
    create_apiserver_deployment(&client, HOSTED, ROTATION, &workload).await?;
    create_namespace(&client, APPS).await?;
    create_service_account(&client, APPS, APP).await?;
    // The prober reads the rotation's state and the key's kid as on a
    // kubeadm control plane.
    let pki = plane.dir().join("prober-pki");
    std::fs::create_dir_all(&pki)?;
    std::fs::write(
        pki.join("sa-v1.pub"),
        public_keys_to_pem([key.public_key()]),
    )?;
    write_state(&pki, None)?;
    let plane = Arc::new(Mutex::new(plane));
    let _hosted = HostedApiServer::spawn(
        plane.clone(),
        client.clone(),
        HOSTED,
        KEY_SECRET,
        Some(workload.clone()),
    );
    let prober = Prober::spawn(
        client.clone(),
        instances.clone(),
        ProbeTarget {
            namespace: APPS.into(),
            service_account: APP.into(),
            // None: no legacy token to probe.
            legacy_secret: "none".into(),
            rotation: RotationSource::StateFile {
                pki_dir: pki.clone(),
            },
        },
    );

    // Before: one issuer, A, and the default audience is A.
    let early = request_token(&client, APPS, APP, Vec::new(), 3600).await?;
    assert_eq!(token_issuer(&early)?, A);
    assert_eq!(token_audiences(&early)?, [A]);
    check_instances(
        &client,
        &instances,
        &key,
        &[(A, true), (B, false)],
        A,
        "before",
    )
    .await?;
    let mut signed_by_b: Option<String> = None;
    for stage in &STAGES {
        write_state(&pki, Some(stage.step))?;
        if let Some(issuers) = stage.issuers {
            roll_issuers(&plane, &client, &workload, issuers).await?;
        }
        let what = stage.step;
        check_instances(
            &client,
            &instances,
            &key,
            &[(A, stage.accepts_a), (B, stage.accepts_b)],
            stage.signs,
            what,
        )
        .await?;
        // The token taken before the rotation carries A and the pinned
        // default audience: accepted until A is retired.
        let early_verdicts = verdicts(&instances, &early).await?;
        assert!(
            early_verdicts.iter().all(|v| *v == stage.accepts_a),
            "{what}: the token taken before is accepted by {early_verdicts:?}"
        );
        if let Some(token) = &signed_by_b {
            let verdicts = verdicts(&instances, token).await?;
            assert!(
                verdicts.iter().all(|v| *v),
                "{what}: a token issued under B is accepted by {verdicts:?}"
            );
        }
        if stage.signs == B && signed_by_b.is_none() {
            // Issued under B, of the default audience, still A (pinned).
            let token = request_token(&client, APPS, APP, Vec::new(), 3600).await?;
            assert_eq!(token_audiences(&token)?, [A]);
            signed_by_b = Some(token);
        }
        eprintln!("{what}: every instance does what SPEC section 10 says");
    }

    // The rewrite kept every other arg, byte for byte and in order.
    let args = container_args(&client, HOSTED, &workload).await?;
    assert_eq!(other_args(&args), UNRELATED_ARGS);
    let plane = plane.lock().await;
    let asks = plane.roll_log().check()?;
    assert_eq!(
        asks,
        3 * HA_INSTANCES,
        "three issuer steps rolled out to each instance"
    );
    assert_eq!(plane.apiserver_starts, 4, "the start and three roll-outs");
    let stats = prober.stats().await;
    eprintln!("prober: {stats:?}");
    assert_eq!(stats.wrongly_rejected, Vec::<String>::new());
    assert!(
        stats.reviews > 30,
        "the prober reviewed too little to mean anything: {stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_harness_rolls_issuer_flags_of_instances_that_sign_through_the_signer() -> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let keys_dir = tempfile::tempdir()?;
    write_key_dir(keys_dir.path(), &key, &[&key])?;
    let socket = keys_dir.path().join("signer.sock");
    let _signer = SignerProcess::from_dir(
        &socket,
        keys_dir.path(),
        &keys_dir.path().join("signer.log"),
    )?;
    let plane = ControlPlane::start_ha_with_external_signer(&socket).await?;
    let client = plane.client().await?;
    let instances = plane.instance_clients().await?;
    create_namespace(&client, HOSTED).await?;
    let workload = ApiServerWorkload::deployment("kube-apiserver");
    create_apiserver_deployment(&client, HOSTED, ROTATION, &workload).await?;
    create_namespace(&client, APPS).await?;
    create_service_account(&client, APPS, APP).await?;
    let plane = Arc::new(Mutex::new(plane));
    let _hosted = HostedApiServer::spawn_issuer_flags(
        plane.clone(),
        client.clone(),
        HOSTED,
        workload.clone(),
    );

    for stage in &STAGES[..2] {
        if let Some(issuers) = stage.issuers {
            roll_issuers(&plane, &client, &workload, issuers).await?;
        }
        check_instances(
            &client,
            &instances,
            &key,
            &[(A, stage.accepts_a), (B, stage.accepts_b)],
            stage.signs,
            stage.step,
        )
        .await?;
    }
    // Still signed by the signer's key: no key file came in.
    let jwt = request_token(&client, APPS, APP, Vec::new(), 3600).await?;
    assert_eq!(
        ksa_core::token::decode(&jwt)?.header.kid.as_deref(),
        Some(key.kid().as_str())
    );
    let plane = plane.lock().await;
    assert!(plane.keys().is_none(), "the instances have no key file");
    assert_eq!(plane.roll_log().check()?, 2 * HA_INSTANCES);
    Ok(())
}
