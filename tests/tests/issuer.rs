//! Issuer rotation (SPEC section 10) on a real control plane of three
//! kube-apiserver instances.
//!
//! The harness's own tests come first: with no ksa at all, they roll issuer
//! flags by hand through the players (the API server workload's args, as
//! the controller will rewrite them) and check, on every instance, what
//! SPEC section 10 says each step does; so that the product's issuer tests
//! stand on a player known to work.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use ksa_core::KeyVersion;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey, public_keys_to_pem};
use ksa_core::rotation::{RotationState, Step};
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::KeyStore;
use ksa_tests::cluster::{create_namespace, create_service_account, request_token};
use ksa_tests::hosted::{
    APISERVER_CONTAINER, UNRELATED_ARGS, container_args, create_apiserver_deployment, other_args,
    rewrite_issuer_args, set_container_args,
};
use ksa_tests::issuer::{
    discovery_issuers, issued_issuers, issuer_lines, issuer_rotation, key_line, key_lines,
    mint_token, retrying, token_audiences, token_issuer, verdicts, wait_lines,
};
use ksa_tests::kubelet::{StaticPods, kubeadm_manifests, manifest_issuer_flags};
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{APISERVER_DEPLOYMENT, CLUSTER, NAMESPACE, Scenario, create_workload};
use ksa_tests::signer::{SignerProcess, write_key_dir};
use ksa_tests::{
    ApiServerKeys, ApiServerWorkload, ControlPlane, HA_INSTANCES, HostedApiServer, ISSUER,
    Installation, InstanceClient, IssuerFlags, ProbeTarget, Prober, RotationSource, ksa_binary,
    write_private,
};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use tokio::sync::Mutex;

/// The issuer every test control plane starts with.
const A: &str = ISSUER;
/// The issuer rotated to.
const B: &str = "https://issuer-b.example";
/// Where the harness's tests keep the key Secret and the API server
/// workload, as a rotation's namespace in the admin cluster holds them.
const HOSTED: &str = "hosted";
/// The rotation the API server workload is labelled for.
const ROTATION: &str = "harness";
const KEY_SECRET: &str = "apiserver-keys";
/// The service account whose tokens are minted, issued and probed.
const APPS: &str = "apps";
const APP: &str = "app";

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

// The product's issuer rotation, end to end: `ksa` and `ksa-controller`
// on three kube-apiserver instances, with the prober reviewing tokens on
// every instance throughout and the order of the roll-outs checked at the
// end of each test.

/// The issuer of the key and issuer rotation that follows A -> B.
const C: &str = "https://issuer-c.example";
/// SPEC section 10's completed line of the rotation to B, written out.
const COMPLETED_B: &str = r#"State of KSAIssuerRotation with KSAIssuer https://issuer-b.example is - status: True, reason: KSAIssuerRotationCompleted, message:{"tokenIssuer":"https://issuer-b.example","signingIssuer":"https://issuer-b.example","acceptedIssuers":["https://issuer-b.example"]}"#;
/// How long one rotation may take (`--timeout` and the test's own wait).
const ROTATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a command to its end without blocking the runtime: the harness's
/// players (the roll-out, the prober) run on it meanwhile.
async fn run(command: std::process::Command) -> Result<Output> {
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(command.output().await?)
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A user cluster config naming the API server workload (and the roll-out
/// kind, when given), as a hosted control plane's operator writes it.
fn user_cluster_config(rollout: Option<&str>, trust_lead_seconds: u64) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: UserCluster\nname: {CLUSTER}\ngkeOnPremVersion: 1.16.0-gke.669\n\
         enableAdvancedCluster: false\nksaSigningKeyRotation:\n  apiServerWorkload: \
         {{kind: Deployment, name: {APISERVER_DEPLOYMENT}, container: {APISERVER_CONTAINER}}}\n"
    );
    if let Some(rollout) = rollout {
        text.push_str(&format!("  rollout: {rollout}\n"));
    }
    text.push_str(&format!("  trustLeadTimeSeconds: {trust_lead_seconds}\n"));
    text
}

/// The hosted test's `trustLeadTimeSeconds`: Sign waits that long after
/// every instance was seen to accept the new issuer (and key), for outside
/// verifiers to fetch B's discovery document.
const TRUST_LEAD: Duration = Duration::from_secs(5);

/// The API server container's args after a rotation to `issuer`: the
/// issuer flag where it stood, the default audience pinned to A after it
/// (the first rewrite added it), every other arg byte for byte.
fn args_signing(issuer: &str) -> Vec<String> {
    [
        format!("--service-account-issuer={issuer}"),
        format!("--api-audiences={A}"),
    ]
    .into_iter()
    .chain(UNRELATED_ARGS.iter().map(|a| (*a).to_owned()))
    .collect()
}

/// Each instance's verdict on `token`, asked until every instance answers:
/// when a rotation completes, the last instance of the last roll-out may
/// still be restarting (a step is confirmed on the instances the
/// `kubernetes` EndpointSlice lists, and one shutting down has left it).
async fn verdicts_of(instances: &[InstanceClient], token: &str) -> Result<Vec<bool>> {
    retrying("TokenReview", || verdicts(instances, token)).await
}

/// The `iss` of a fresh token from each instance, asked until every
/// instance answers.
async fn issuers_issued(instances: &[InstanceClient]) -> Result<Vec<String>> {
    retrying("TokenRequest", || issued_issuers(instances, APPS, APP)).await
}

/// The issuer each instance's discovery document names, asked until every
/// instance answers.
async fn issuers_discovered(instances: &[InstanceClient]) -> Result<Vec<String>> {
    retrying("discovery", || discovery_issuers(instances)).await
}

/// `want` from every instance, in order, `what` of it.
fn ensure_all<T: PartialEq + std::fmt::Debug>(got: &[T], want: &T, what: &str) -> Result<()> {
    ensure!(
        !got.is_empty() && got.iter().all(|g| g == want),
        "{what}: the instances answer {got:?}, not {want:?} each"
    );
    Ok(())
}

/// What every instance must do once a step of an issuer rotation from
/// `from` to `to` is confirmed (SPEC section 10), asked of each instance on
/// its own.
#[derive(Clone)]
struct Confirmations {
    client: kube::Client,
    instances: Vec<InstanceClient>,
    from: &'static str,
    to: &'static str,
    /// The key every instance trusts until Retire: tokens minted up to
    /// then are signed with it, so a verdict depends on the issuer alone.
    old_key: PrivateKey,
    /// The key version the cluster signs with after Retire (the same as
    /// the old key's when the rotation keeps the key).
    new_version: KeyVersion,
    /// A token of `from` with the default audience, taken before the
    /// rotation.
    early: String,
}

impl Confirmations {
    /// Each instance's verdict on a token of `issuer` signed with `key`, of
    /// the audience the instances take as their own (pinned to A).
    async fn minted_verdicts(&self, issuer: &str, key: &PrivateKey) -> Result<Vec<bool>> {
        retrying(&format!("TokenReview of a token of {issuer}"), || async {
            let token = mint_token(&self.client, APPS, APP, issuer, &[A], key).await?;
            verdicts(&self.instances, &token).await
        })
        .await
    }

    async fn early_verdicts(&self) -> Result<Vec<bool>> {
        retrying("TokenReview of the early token", || {
            verdicts(&self.instances, &self.early)
        })
        .await
    }

    /// Checks on every instance what the confirmation of `step` says;
    /// returns what held.
    async fn check(&self, step: Step) -> Result<String> {
        let (from, to) = (self.from, self.to);
        match step {
            Step::Trust => {
                // From Trust on every instance accepts `to`; until Retire
                // `from` too (Sign, the next roll-out, keeps it).
                let accepts_to = self.minted_verdicts(to, &self.old_key).await?;
                ensure_all(&accepts_to, &true, &format!("Trust: a token of {to}"))?;
                let accepts_from = self.minted_verdicts(from, &self.old_key).await?;
                ensure_all(&accepts_from, &true, &format!("Trust: a token of {from}"))?;
                let early = self.early_verdicts().await?;
                ensure_all(&early, &true, "Trust: the token taken before the rotation")?;
                Ok(format!(
                    "each instance accepts {to}, {from} and the token taken before"
                ))
            }
            Step::Sign => {
                let issued = retrying("TokenRequest", || {
                    issued_issuers(&self.instances, APPS, APP)
                })
                .await?;
                ensure_all(&issued, &to.to_owned(), "Sign: the iss of a fresh token")?;
                let discovered =
                    retrying("discovery", || discovery_issuers(&self.instances)).await?;
                ensure_all(&discovered, &to.to_owned(), "Sign: the discovery document")?;
                Ok(format!(
                    "each instance issues iss {to} and its discovery document names it"
                ))
            }
            Step::Retire => {
                let store = KeyStore::new(self.client.clone(), NAMESPACE, CLUSTER);
                let key = retrying("the new key", || async {
                    Ok(store.private_key(self.new_version).await?)
                })
                .await?;
                let accepts_from = self.minted_verdicts(from, &key).await?;
                ensure_all(&accepts_from, &false, &format!("Retire: a token of {from}"))?;
                // The same key with the issuer kept: rejected for the
                // issuer alone.
                let accepts_to = self.minted_verdicts(to, &key).await?;
                ensure_all(&accepts_to, &true, &format!("Retire: a token of {to}"))?;
                let early = self.early_verdicts().await?;
                ensure_all(
                    &early,
                    &false,
                    "Retire: the token taken before the rotation",
                )?;
                Ok(format!(
                    "each instance rejects {from} (and the token taken before) and accepts {to}"
                ))
            }
            _ => Ok(String::new()),
        }
    }
}

/// Steps seen, in order, each with when it was entered
/// (`stepStartedAt`).
type StepsSeen = Vec<(Step, Option<jiff::Timestamp>)>;

/// What the test saw of a rotation while the CLI ran it.
#[derive(Debug, Default)]
struct Followed {
    /// Each step seen, in order, with when the controller entered it
    /// (`status.stepStartedAt`).
    steps: StepsSeen,
    started_at: Option<jiff::Timestamp>,
    completed_at: Option<jiff::Timestamp>,
    /// When every instance was first seen to accept the new issuer (and
    /// key) at Trust (`status.confirmedAt`), as last seen at Trust.
    trust_confirmed_at: Option<jiff::Timestamp>,
    /// Each confirmation checked on every instance.
    checked: Vec<String>,
}

impl Followed {
    /// How long each step seen took, from `status.stepStartedAt` to the
    /// next step seen's (a step never seen is inside the one before it).
    fn durations(&self) -> String {
        let mut parts = Vec::new();
        for pair in self.steps.windows(2) {
            let [(step, entered), (_, next)] = pair else {
                continue;
            };
            if let (Some(entered), Some(next)) = (entered, next) {
                let seconds = next.duration_since(*entered).as_secs_f64();
                parts.push(format!("{step} {seconds:.1} s"));
            }
        }
        if let (Some(started), Some(completed)) = (self.started_at, self.completed_at) {
            let seconds = completed.duration_since(started).as_secs_f64();
            parts.push(format!("in all {seconds:.1} s"));
        }
        parts.join(", ")
    }

    /// Checks that Sign began no sooner than `lead` after every instance
    /// was seen to accept at Trust, in this rotation. The core counts the
    /// lead time in whole seconds of the clock (`elapsed_since`), so Sign
    /// may begin up to a second short of it; a lead time not waited out
    /// at all (or run from another rotation's confirmation) is far
    /// shorter.
    fn check_trust_lead(&self, lead: Duration) -> Result<()> {
        let confirmed = self
            .trust_confirmed_at
            .context("status.confirmedAt was never seen at Trust")?;
        let sign = self
            .steps
            .iter()
            .find(|(step, _)| *step == Step::Sign)
            .and_then(|(_, at)| *at)
            .context("Sign was never seen")?;
        let waited = sign.duration_since(confirmed).as_secs_f64();
        eprintln!("Sign began {waited:.1} s after Trust was confirmed at {confirmed}");
        ensure!(
            waited >= lead.as_secs_f64() - 1.0,
            "Sign began {waited:.1} s after every instance was seen to accept at Trust ({confirmed}), \
             before trustLeadTimeSeconds ({lead:?})"
        );
        Ok(())
    }

    fn print(&self, what: &str) {
        let steps: Vec<String> = self.steps.iter().map(|(s, _)| s.to_string()).collect();
        eprintln!("{what}: steps seen {}", steps.join(" -> "));
        eprintln!(
            "{what}: step durations (status.stepStartedAt): {}",
            self.durations()
        );
        for check in &self.checked {
            eprintln!("{what}: {check}");
        }
    }
}

/// Follows the rotation `rotation` is a state of on the resource until it
/// completes, and checks on every instance the confirmation of each of its
/// Trust, Sign and Retire steps as soon as the step after it is seen (each
/// confirmation holds from then to the end of the rotation).
async fn follow(
    client: kube::Client,
    rotation: RotationState,
    confirmations: Confirmations,
) -> Result<Followed> {
    let api: Api<KSASigningKeyRotation> = Api::namespaced(client, NAMESPACE);
    let (sender, mut confirmed) = tokio::sync::mpsc::unbounded_channel::<(Step, Step)>();
    // Checks run beside the polling, which must not miss a step.
    let checker = tokio::spawn(async move {
        let mut checked = Vec::new();
        while let Some((step, seen_at)) = confirmed.recv().await {
            let held = confirmations
                .check(step)
                .await
                .with_context(|| format!("{step} confirmed (the rotation at {seen_at})"))?;
            checked.push(format!(
                "{step} confirmed (the rotation seen at {seen_at}): {held}"
            ));
        }
        anyhow::Ok(checked)
    });
    let mut followed = Followed::default();
    let mut sent = BTreeSet::new();
    let started = Instant::now();
    loop {
        ensure!(
            started.elapsed() < ROTATION_TIMEOUT,
            "the rotation did not complete in {ROTATION_TIMEOUT:?}; seen: {:?}",
            followed.steps
        );
        // The kubeconfig's instance restarts too: a failed read is retried;
        // a status that does not load fails at once.
        let state = match api.get_opt(CLUSTER).await {
            Ok(Some(resource)) => Some(
                resource
                    .state()
                    .with_context(|| format!("the rotation's status: {:?}", resource.status))?,
            ),
            _ => None,
        };
        if let Some(state) = state
            && rotation.same_rotation(&state)
        {
            let step = state.step();
            if followed.steps.last().map(|(s, _)| *s) != Some(step) {
                followed.steps.push((step, state.step_started_at()));
            }
            followed.started_at = state.started_at();
            if step == Step::Trust
                && let Some(confirmed) = state.confirmed_at()
            {
                // Confirmed in this rotation, not left from the one before.
                ensure!(
                    state
                        .started_at()
                        .is_some_and(|started| confirmed >= started),
                    "at Trust, status.confirmedAt is {confirmed}, from before this rotation \
                     started ({:?}): the lead time would run from a confirmation of another \
                     rotation",
                    state.started_at()
                );
                followed.trust_confirmed_at = Some(confirmed);
            }
            for done in [Step::Trust, Step::Sign, Step::Retire] {
                if done < step && sent.insert(done) {
                    sender.send((done, step))?;
                }
            }
            if state.is_completed() {
                followed.completed_at = state.completed_at();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sender);
    followed.checked = checker.await??;
    Ok(followed)
}

/// What happened to Deployment apps/web while a rotation ran: the values
/// of its restart annotation, in order, and every pod of it seen.
#[derive(Debug, Default, Clone)]
struct WebSeen {
    annotations: Vec<Option<String>>,
    pods: BTreeSet<String>,
}

/// Watches Deployment apps/web (polling: a watch would miss pods while an
/// API server restarts); stops when dropped.
struct WebHistory {
    seen: Arc<Mutex<WebSeen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The restart annotation ksa sets on a workload's pod template.
const RESTARTED: &str = "ksa.dev/restarted-for-key-version";

fn restart_annotation(web: &Deployment) -> Option<String> {
    web.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(RESTARTED)
        .cloned()
}

impl WebHistory {
    /// Starts watching, and returns once the first look is recorded.
    async fn start(client: &kube::Client) -> Result<WebHistory> {
        let seen = Arc::new(Mutex::new(WebSeen::default()));
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), APPS);
        let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(web) = deployments.get("web").await {
                    let annotation = restart_annotation(&web);
                    let mut seen = shared.lock().await;
                    if seen.annotations.last() != Some(&annotation) {
                        seen.annotations.push(annotation);
                    }
                }
                if let Ok(list) = pods.list(&ListParams::default().labels("app=web")).await {
                    let mut seen = shared.lock().await;
                    seen.pods
                        .extend(list.items.into_iter().filter_map(|p| p.metadata.uid));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let started = Instant::now();
        while seen.lock().await.annotations.is_empty() || seen.lock().await.pods.is_empty() {
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "could not read Deployment apps/web and its pods"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(WebHistory { seen, task })
    }

    async fn seen(&self) -> WebSeen {
        self.seen.lock().await.clone()
    }
}

/// The uid of the one running pod of Deployment apps/web, once it runs
/// (on a kwok node: scheduled, so it holds a bound token).
async fn web_pod_running(client: &kube::Client) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);
    retrying("the running pod of apps/web", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        let running: Vec<String> = list
            .items
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        match running.as_slice() {
            [uid] if list.items.len() == 1 => Ok(uid.clone()),
            _ => bail!(
                "{} pods of apps/web, {} of them running",
                list.items.len(),
                running.len()
            ),
        }
    })
    .await
}

/// How many ReplicaSets Deployment apps/web has had (one per template).
async fn web_replica_sets(client: &kube::Client) -> Result<usize> {
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), APPS);
    retrying("the ReplicaSets of apps/web", || async {
        Ok(sets
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items
            .len())
    })
    .await
}

/// The controller's log, and whether its process still runs (a process
/// that exited and was not reaped yet is a zombie, `Z`).
fn controller_report(installation: &Installation) -> String {
    let process = match installation.replica_pid(ksa_tests::FIRST_REPLICA) {
        Some(pid) => match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').next())
                    .unwrap_or("?");
                format!("pid {pid}, state {state}")
            }
            Err(error) => format!("pid {pid}: {error}"),
        },
        None => "not running".to_owned(),
    };
    format!(
        "controller process: {process}\ncontroller log:\n{}",
        installation.controller_log()
    )
}

/// Checks that a rotation refreshed Deployment apps/web once: its restart
/// annotation changed once, to a value `marker` accepts; one new
/// ReplicaSet; its pod replaced once (two pods seen, the new one running).
async fn check_one_refresh(
    client: &kube::Client,
    history: &WebHistory,
    replica_sets_before: usize,
    pod_before: &str,
    marker: impl Fn(&str) -> bool,
    what: &str,
) -> Result<String> {
    let pod_after = web_pod_running(client).await?;
    let seen = history.seen().await;
    let replica_sets = web_replica_sets(client).await?;
    eprintln!(
        "{what}: apps/web's restart annotation went {:?}; pods seen {:?}; ReplicaSets {replica_sets_before} -> {replica_sets}",
        seen.annotations, seen.pods
    );
    ensure!(
        seen.annotations.len() == 2 && seen.annotations[1].as_deref().is_some_and(&marker),
        "{what}: apps/web was not restarted exactly once: its restart annotation went {:?}",
        seen.annotations
    );
    ensure!(
        replica_sets == replica_sets_before + 1,
        "{what}: apps/web went from {replica_sets_before} to {replica_sets} ReplicaSets, not one more"
    );
    ensure!(
        pod_after != pod_before && seen.pods.len() == 2 && seen.pods.contains(pod_before),
        "{what}: apps/web's pod was not replaced exactly once: {pod_before} before, {pod_after} after, {:?} seen",
        seen.pods
    );
    Ok(pod_after)
}

/// Runs a `rotate` that must be refused, again while it fails for want of
/// an API server (exit 1: the one its kubeconfig names may be restarting).
async fn refused(scenario: &Scenario, args: &[&str]) -> Result<Output> {
    let mut attempts = 0;
    loop {
        let output = run(scenario.ksa_command(args)?).await?;
        attempts += 1;
        if output.status.code() == Some(1) && attempts < 10 {
            eprintln!(
                "{args:?} could not reach the API server (exit 1; asking again): {}",
                stderr(&output)
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        return Ok(output);
    }
}

/// What a refused `rotate` must leave as it was: the rotation resource
/// (its resourceVersion: no write at all) and the API server container's
/// args.
async fn untouched(
    client: &kube::Client,
    workload: &ApiServerWorkload,
) -> Result<(Option<String>, Vec<String>)> {
    let api: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    let version = retrying("the rotation resource", || async {
        Ok(api.get(CLUSTER).await?.metadata.resource_version)
    })
    .await?;
    let args = retrying("the API server args", || {
        container_args(client, NAMESPACE, workload)
    })
    .await?;
    Ok((version, args))
}

/// The kid each instance serves at `/openid/v1/jwks`, in order.
async fn served_kids(instances: &[InstanceClient]) -> Result<Vec<Vec<String>>> {
    retrying("/openid/v1/jwks", || async {
        let mut all = Vec::new();
        for instance in instances {
            let request = http::Request::get("/openid/v1/jwks").body(Vec::new())?;
            let text = instance.client.request_text(request).await?;
            all.push(
                ksa_core::jwk::parse_jwks(&text)?
                    .into_iter()
                    .map(|k| k.kid.as_str().to_owned())
                    .collect(),
            );
        }
        Ok(all)
    })
    .await
}

/// Runs `rotate ... --wait` beside the follower; returns its output, how
/// long it took, and what the follower saw. Before it returns, while the
/// rotation is in progress, `during` runs.
async fn rotate_and_follow<F, Fut>(
    command: std::process::Command,
    client: &kube::Client,
    rotation: &RotationState,
    confirmations: Confirmations,
    during: F,
) -> Result<(Output, Duration, Followed)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let follower = tokio::spawn(follow(client.clone(), rotation.clone(), confirmations));
    let clock = Instant::now();
    let cli = tokio::spawn(run(command));
    // Until the controller has picked it up. A status that does not load
    // is no passing state: it fails at once.
    let api: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    let waiting = Instant::now();
    loop {
        let resource = retrying("the rotation resource", || async {
            Ok(api.get(CLUSTER).await?)
        })
        .await?;
        let state = resource
            .state()
            .with_context(|| format!("the rotation's status: {:?}", resource.status))?;
        if rotation.same_rotation(&state) && !state.is_completed() {
            break;
        }
        ensure!(
            waiting.elapsed() < Duration::from_secs(60),
            "the controller did not start the rotation in 60 s; it stands at {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    during().await?;
    let output = cli.await??;
    let elapsed = clock.elapsed();
    if !output.status.success() {
        follower.abort();
        let status = api
            .get(CLUSTER)
            .await
            .map(|r| format!("{:#?}", r.status))
            .unwrap_or_else(|e| format!("(could not read it: {e})"));
        bail!(
            "rotate exited {:?} after {elapsed:.1?}\nstdout:\n{}\nstderr:\n{}\nthe rotation's status now: {status}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        );
    }
    let followed = follower.await??;
    Ok((output, elapsed, followed))
}

/// Prints what `rotate --wait` said and checks its lines: exactly
/// `expected`, each once and in order.
fn check_wait_output(output: &Output, expected: &[String], what: &str) {
    let lines = stdout_lines(output);
    eprintln!("{what}: rotate --wait printed:");
    for line in &lines {
        eprintln!("  {line}");
    }
    let err = stderr(output);
    let reconstructed = err
        .lines()
        .filter(|l| l.starts_with("(not observed:"))
        .count();
    eprintln!("{what}: {reconstructed} of the lines reconstructed (not observed by the watch)");
    assert_eq!(
        lines, expected,
        "{what}: rotate --wait printed other lines than SPEC's, once each and in order\nstderr:\n{err}"
    );
}

/// The key line and issuer lines interleaved: at each step, the key line,
/// then the issuer line.
fn interleaved(keys: &[String; 5], issuers: &[String; 5]) -> Vec<String> {
    keys.iter()
        .zip(issuers)
        .flat_map(|(key, issuer)| [key.clone(), issuer.clone()])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_rotates_the_issuer_then_the_key_and_the_issuer_together() -> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    let scenario = Scenario::start_ha_with_apiserver_workload().await?;
    std::fs::write(
        &scenario.config,
        user_cluster_config(None, TRUST_LEAD.as_secs()),
    )?;
    // A node, so that web's pod is scheduled, runs and holds a bound
    // token: the refresh restarts it.
    scenario.plane.lock().await.simulate_nodes(1, &[]).await?;
    let client = scenario.client.clone();
    let instances = scenario.plane.lock().await.instance_clients().await?;
    let workload = scenario
        .apiserver_workload
        .clone()
        .context("the scenario has an API server workload")?;
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    let mut pod = web_pod_running(&client).await?;
    assert_eq!(
        container_args(&client, NAMESPACE, &workload).await?,
        std::iter::once(format!("--service-account-issuer={A}"))
            .chain(UNRELATED_ARGS.iter().map(|a| (*a).to_owned()))
            .collect::<Vec<_>>()
    );
    eprintln!("cluster ready in {:.1?}", clock.elapsed());

    // 1. A -> B, the key kept.
    let early = scenario.bound_token().await?;
    assert_eq!(token_issuer(&early)?, A);
    assert_eq!(token_audiences(&early)?, [A], "the default audience is A");
    let to_b = issuer_rotation(1, A, B, false)?;
    let expected = wait_lines(&to_b);
    assert_eq!(expected, issuer_lines(A, B), "the core's lines are SPEC's");
    assert_eq!(expected[4], COMPLETED_B);
    let history = WebHistory::start(&client).await?;
    let replica_sets = web_replica_sets(&client).await?;
    let confirmations = Confirmations {
        client: client.clone(),
        instances: instances.clone(),
        from: A,
        to: B,
        old_key: scenario.first_key.clone(),
        new_version: KeyVersion::FIRST,
        early: early.clone(),
    };
    let (output, elapsed, followed) = rotate_and_follow(
        scenario.ksa_command(&[
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
        ])?,
        &client,
        &to_b,
        confirmations,
        || async {
            // A rotation of either kind while this one runs: exit 3, the
            // rotation's spec untouched (its status moves on meanwhile).
            let spec_before = retrying("the rotation resource", || async {
                Ok(rotations.get(CLUSTER).await?)
            })
            .await?;
            for args in [
                &[
                    "update",
                    "credentials",
                    "ksa-issuer",
                    "rotate",
                    "--issuer",
                    C,
                    "--skip-prompt",
                ][..],
                &[
                    "update",
                    "credentials",
                    "ksa-signing-key",
                    "rotate",
                    "--skip-prompt",
                ],
                &[
                    "update",
                    "credentials",
                    "ksa-signing-key",
                    "rotate",
                    "--issuer",
                    C,
                    "--skip-prompt",
                ],
            ] {
                let output = refused(&scenario, args).await?;
                eprintln!(
                    "while A -> B runs, {args:?}: exit {:?}: {}",
                    output.status.code(),
                    stderr(&output).trim()
                );
                assert_eq!(
                    output.status.code(),
                    Some(3),
                    "{args:?}: {}",
                    stderr(&output)
                );
                assert!(
                    stderr(&output).contains("already in progress"),
                    "{}",
                    stderr(&output)
                );
            }
            let spec_after = retrying("the rotation resource", || async {
                Ok(rotations.get(CLUSTER).await?)
            })
            .await?;
            assert_eq!(
                spec_after.spec, spec_before.spec,
                "a refused rotate changed the spec"
            );
            assert_eq!(
                spec_after.metadata.generation,
                spec_before.metadata.generation
            );
            Ok(())
        },
    )
    .await
    .with_context(|| controller_report(&scenario.installation))?;
    eprintln!("A -> B: ksa-issuer rotate --wait took {elapsed:.1?}");
    followed.print("A -> B");
    check_wait_output(&output, &expected, "A -> B");
    followed.check_trust_lead(TRUST_LEAD)?;
    assert_eq!(
        followed.checked.len(),
        3,
        "Trust, Sign and Retire were each checked"
    );

    // After: A is retired everywhere, tokens of the default audience keep
    // it, legacy tokens are untouched, the args kept every other byte.
    let key = &scenario.first_key;
    let minted_a = mint_token(&client, APPS, APP, A, &[A], key).await?;
    ensure_all(
        &verdicts_of(&instances, &minted_a).await?,
        &false,
        "a token of A no pod holds",
    )?;
    ensure_all(
        &verdicts_of(&instances, &early).await?,
        &false,
        "the token taken before",
    )?;
    let fresh = scenario.bound_token().await?;
    assert_eq!(token_issuer(&fresh)?, B);
    assert_eq!(
        token_audiences(&fresh)?,
        [A],
        "the default audience stayed A"
    );
    ensure_all(
        &verdicts_of(&instances, &fresh).await?,
        &true,
        "a fresh token",
    )?;
    let legacy = scenario.legacy_token().await?;
    ensure_all(
        &verdicts_of(&instances, &legacy).await?,
        &true,
        "the legacy token",
    )?;
    assert_eq!(
        container_args(&client, NAMESPACE, &workload).await?,
        args_signing(B)
    );
    let status =
        run(scenario.ksa_command(&["update", "credentials", "ksa-issuer", "status"])?).await?;
    assert_eq!(stdout_lines(&status), [COMPLETED_B], "{}", stderr(&status));
    let json = run(scenario.ksa_command(&[
        "update",
        "credentials",
        "ksa-issuer",
        "status",
        "-o",
        "json",
    ])?)
    .await?;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout)
        .with_context(|| format!("ksa-issuer status -o json: {}", stderr(&json)))?;
    assert_eq!(json["step"], "Completed", "{json:#}");
    assert_eq!(json["issuer"], B, "{json:#}");
    assert_eq!(json["targetIssuer"], B, "{json:#}");
    assert_eq!(json["signingIssuer"], B, "{json:#}");
    assert_eq!(json["tokenIssuer"], B, "{json:#}");
    assert_eq!(json["acceptedIssuers"], serde_json::json!([B]), "{json:#}");
    assert_eq!(json["statusLine"], COMPLETED_B, "{json:#}");
    assert_eq!(json["condition"]["type"], "KSAIssuerRotation", "{json:#}");
    assert_eq!(json["condition"]["status"], "True", "{json:#}");
    assert_eq!(
        json["condition"]["reason"], "KSAIssuerRotationCompleted",
        "{json:#}"
    );
    let key_status =
        run(scenario.ksa_command(&["update", "credentials", "ksa-signing-key", "status"])?).await?;
    assert_eq!(
        stdout_lines(&key_status),
        [key_line(1, true, 1, 1, &[1])],
        "the key stayed 1"
    );
    pod = check_one_refresh(
        &client,
        &history,
        replica_sets,
        &pod,
        |marker| marker.starts_with("1@"),
        "A -> B",
    )
    .await?;
    drop(history);
    scenario.check_roll_outs().await?;
    let stats = scenario.prober.stats().await;
    eprintln!("A -> B: prober: {stats:?}");
    assert_eq!(stats.wrongly_rejected, Vec::<String>::new());

    // Refused with nothing changed: a URL that cannot be an issuer, the
    // issuer the cluster signs with.
    let before = untouched(&client, &workload).await?;
    for url in [
        "http://issuer-c.example",
        "https://",
        "https://issuer-c.example/?cluster=1",
        "https://issuer-c.example/#cluster",
        "https://user:secret@issuer-c.example",
        "issuer-c.example",
    ] {
        for command in ["ksa-issuer", "ksa-signing-key"] {
            let output = refused(
                &scenario,
                &[
                    "update",
                    "credentials",
                    command,
                    "rotate",
                    "--issuer",
                    url,
                    "--skip-prompt",
                ],
            )
            .await?;
            eprintln!(
                "{command} rotate --issuer {url}: exit {:?}: {}",
                output.status.code(),
                stderr(&output).trim()
            );
            assert_eq!(output.status.code(), Some(2), "{url}: {}", stderr(&output));
            assert!(
                stderr(&output).contains("--issuer"),
                "{url}: {}",
                stderr(&output)
            );
        }
    }
    // Before anything is read: with no config or cluster at all.
    let output = run({
        let mut command = std::process::Command::new(ksa_binary("ksa")?);
        command.args([
            "update",
            "credentials",
            "ksa-issuer",
            "rotate",
            "--issuer",
            "http://issuer-c.example",
            "--skip-prompt",
            "--config",
            "/nonexistent/user-cluster.yaml",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ]);
        command
    })
    .await?;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--issuer") && !stderr(&output).contains("nonexistent"),
        "{}",
        stderr(&output)
    );
    for command in ["ksa-issuer", "ksa-signing-key"] {
        let output = refused(
            &scenario,
            &[
                "update",
                "credentials",
                command,
                "rotate",
                "--issuer",
                B,
                "--skip-prompt",
            ],
        )
        .await?;
        eprintln!(
            "{command} rotate --issuer B (signing already): exit {:?}: {}",
            output.status.code(),
            stderr(&output).trim()
        );
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(
            stderr(&output).contains(&format!("already signs with issuer {B}")),
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(
        untouched(&client, &workload).await?,
        before,
        "a refused rotate changed something"
    );

    // 2. B -> C and key 1 -> 2 together: one Trust, one Sign, one refresh,
    // one Retire for both.
    let early = scenario.bound_token().await?;
    assert_eq!(token_issuer(&early)?, B);
    let to_c = issuer_rotation(2, B, C, true)?;
    let expected = wait_lines(&to_c);
    assert_eq!(
        expected,
        interleaved(&key_lines(1), &issuer_lines(B, C)),
        "the core's lines are SPEC's"
    );
    let history = WebHistory::start(&client).await?;
    let replica_sets = web_replica_sets(&client).await?;
    let confirmations = Confirmations {
        client: client.clone(),
        instances: instances.clone(),
        from: B,
        to: C,
        old_key: scenario.first_key.clone(),
        new_version: KeyVersion::new(2),
        early: early.clone(),
    };
    let (output, elapsed, followed) = rotate_and_follow(
        scenario.ksa_command(&[
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--issuer",
            C,
            "--skip-prompt",
            "--wait",
            "--timeout",
            "5m",
        ])?,
        &client,
        &to_c,
        confirmations,
        || async { Ok(()) },
    )
    .await
    .with_context(|| controller_report(&scenario.installation))?;
    eprintln!("B -> C with key 2: ksa-signing-key rotate --issuer --wait took {elapsed:.1?}");
    followed.print("B -> C with key 2");
    check_wait_output(&output, &expected, "B -> C with key 2");
    followed.check_trust_lead(TRUST_LEAD)?;
    assert_eq!(
        followed.checked.len(),
        3,
        "Trust, Sign and Retire were each checked"
    );
    check_one_refresh(
        &client,
        &history,
        replica_sets,
        &pod,
        |marker| marker == "2",
        "B -> C with key 2",
    )
    .await?;
    drop(history);
    let second = KeyStore::new(client.clone(), NAMESPACE, CLUSTER)
        .private_key(KeyVersion::new(2))
        .await?;
    let kid2 = second.kid().as_str().to_owned();
    assert_eq!(
        served_kids(&instances).await?,
        vec![vec![kid2.clone()]; HA_INSTANCES]
    );
    for instance in &instances {
        let jwt = retrying("TokenRequest", || {
            request_token(&instance.client, APPS, APP, Vec::new(), 3600)
        })
        .await?;
        let decoded = ksa_core::token::decode(&jwt)?;
        assert_eq!(
            decoded.header.kid.as_deref(),
            Some(kid2.as_str()),
            "{}",
            instance.url
        );
        assert_eq!(decoded.claims.iss.as_deref(), Some(C), "{}", instance.url);
    }
    let legacy = scenario.legacy_token().await?;
    assert_eq!(
        ksa_core::token::decode(&legacy)?.header.kid.as_deref(),
        Some(kid2.as_str())
    );
    ensure_all(
        &verdicts_of(&instances, &legacy).await?,
        &true,
        "the re-minted legacy token",
    )?;
    assert_eq!(
        container_args(&client, NAMESPACE, &workload).await?,
        args_signing(C)
    );
    let status =
        run(scenario.ksa_command(&["update", "credentials", "ksa-issuer", "status"])?).await?;
    assert_eq!(stdout_lines(&status), [issuer_lines(B, C)[4].clone()]);
    let status =
        run(scenario.ksa_command(&["update", "credentials", "ksa-signing-key", "status"])?).await?;
    assert_eq!(stdout_lines(&status), [key_lines(1)[4].clone()]);

    let asks = scenario.check_roll_outs().await?;
    eprintln!("roll-outs: {asks} asks of the instances");
    let stats = scenario.prober.stats().await;
    eprintln!("B -> C with key 2: prober: {stats:?}");
    assert_eq!(stats.wrongly_rejected, Vec::<String>::new());
    assert!(
        stats.reviews > 100,
        "the prober reviewed too little to mean anything: {stats:?}"
    );
    eprintln!("the test took {:.1?}", clock.elapsed());
    Ok(())
}

/// The issuer state a kubeadm control plane's `ksa-rotation.json` records.
fn state_file(pki: &Path) -> Option<RotationState> {
    serde_json::from_slice(&std::fs::read(pki.join("ksa-rotation.json")).ok()?).ok()
}

/// `ksa update credentials ksa-issuer ARGS --pki-dir ...` (and, to rotate,
/// the manifests, the kubeconfig and --skip-prompt).
fn kubeadm_issuer(
    args: &[&str],
    pki: &Path,
    manifests: &Path,
    kubeconfig: &Path,
) -> Result<std::process::Command> {
    let mut command = std::process::Command::new(ksa_binary("ksa")?);
    command
        .args(["update", "credentials", "ksa-issuer"])
        .args(args)
        .arg("--pki-dir")
        .arg(pki);
    if args.first() == Some(&"rotate") {
        command
            .arg("--manifests-dir")
            .arg(manifests)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--skip-prompt");
    }
    Ok(command)
}

/// Records each step the state file goes through, with its
/// `stepStartedAt`; stops when dropped.
struct StateFileSteps {
    steps: Arc<Mutex<StepsSeen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StateFileSteps {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StateFileSteps {
    fn spawn(pki: &Path) -> StateFileSteps {
        let steps = Arc::new(Mutex::new(Vec::new()));
        let (shared, pki) = (steps.clone(), pki.to_owned());
        let task = tokio::spawn(async move {
            loop {
                if let Some(state) = state_file(&pki).filter(|s| s.issuer().is_some()) {
                    let mut steps = shared.lock().await;
                    let entry = (state.step(), state.step_started_at());
                    if steps.last() != Some(&entry) {
                        steps.push(entry);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        StateFileSteps { steps, task }
    }

    async fn followed(&self, completed_at: Option<jiff::Timestamp>) -> Followed {
        let steps = self.steps.lock().await.clone();
        Followed {
            started_at: steps.first().and_then(|(_, at)| *at),
            steps,
            completed_at,
            trust_confirmed_at: None,
            checked: Vec::new(),
        }
    }
}

#[tokio::test]
async fn a_kubeadm_control_plane_changes_its_issuer_through_its_manifest_and_resumes_after_sigkill()
-> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    let first = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let mut plane = ControlPlane::start_ha(ApiServerKeys::single(first.clone())).await?;
    plane.start_controller_manager()?;
    let client = plane.client().await?;
    let instances = plane.instance_clients().await?;
    let kubeconfig = plane.kubeconfig_path();
    let root = plane.dir().join("etc-kubernetes");
    let (pki, manifests_dir) = (root.join("pki"), root.join("manifests"));
    std::fs::create_dir_all(&pki)?;
    std::fs::create_dir_all(&manifests_dir)?;
    write_private(&pki.join("sa.key"), first.to_pem().as_bytes())?;
    std::fs::write(pki.join("sa.pub"), public_keys_to_pem([first.public_key()]))?;
    let (apiserver, controller_manager) = kubeadm_manifests(&pki);
    std::fs::write(manifests_dir.join("kube-apiserver.yaml"), &apiserver)?;
    std::fs::write(
        manifests_dir.join("kube-controller-manager.yaml"),
        &controller_manager,
    )?;
    create_workload(&client).await?;
    let plane = Arc::new(Mutex::new(plane));
    let _kubelet = StaticPods::spawn(plane.clone(), &manifests_dir);
    let prober = Prober::spawn(
        client.clone(),
        instances.clone(),
        ProbeTarget {
            namespace: APPS.into(),
            service_account: APP.into(),
            legacy_secret: "app-token".into(),
            rotation: RotationSource::StateFile {
                pki_dir: pki.clone(),
            },
        },
    );
    let early = request_token(&client, APPS, APP, Vec::new(), 3600).await?;
    assert_eq!(token_issuer(&early)?, A);
    let steps = StateFileSteps::spawn(&pki);
    eprintln!("control plane ready in {:.1?}", clock.elapsed());

    // Without --wait, again and again, as the CLI says to; every run that
    // sees a step begin (the state file moves) is SIGKILLed at once, the
    // first three times: the next run resumes.
    let started = Instant::now();
    let (mut runs, mut kills) = (0, 0);
    let mut printed: Vec<String> = Vec::new();
    while !state_file(&pki).is_some_and(|s| s.is_completed() && s.issuer().is_some()) {
        ensure!(
            runs < 80 && started.elapsed() < ROTATION_TIMEOUT,
            "not completed after {runs} runs: {:?}",
            state_file(&pki)
        );
        runs += 1;
        let before = state_file(&pki).map(|s| s.step());
        let mut child = tokio::process::Command::from(kubeadm_issuer(
            &["rotate", "--issuer", B],
            &pki,
            &manifests_dir,
            &kubeconfig,
        )?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
        let mut killed_at = None;
        while child.try_wait()?.is_none() {
            // The child is killed on drop, when this fails.
            ensure!(
                started.elapsed() < ROTATION_TIMEOUT,
                "run {runs} did not exit in {ROTATION_TIMEOUT:?} from the start; the state file: {:?}",
                state_file(&pki)
            );
            let now = state_file(&pki).map(|s| s.step());
            if kills < 3 && runs > 1 && now != before {
                child.start_kill()?;
                killed_at = now;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let output = child.wait_with_output().await?;
        match killed_at {
            Some(step) => {
                kills += 1;
                eprintln!(
                    "run {runs}: SIGKILLed as step {step} began ({:?})",
                    output.status
                );
            }
            None => {
                eprintln!(
                    "run {runs}: exit {:?}, at {:?}\n{}",
                    output.status.code(),
                    state_file(&pki).map(|s| s.step()),
                    stderr(&output).trim()
                );
                assert_eq!(
                    output.status.code(),
                    Some(0),
                    "run {runs}: {}",
                    stderr(&output)
                );
            }
        }
        printed.extend(stdout_lines(&output));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = started.elapsed();
    let state = state_file(&pki).context("the state file")?;
    let followed = steps.followed(state.completed_at()).await;
    drop(steps);
    eprintln!("kubeadm A -> B: {runs} runs, {kills} SIGKILLed, {elapsed:.1?}");
    followed.print("kubeadm A -> B");
    assert!(kills >= 1, "no run was killed mid-step");

    // What the runs printed: the issuer line of every step, in order (a
    // run prints where it stands when it starts, so lines repeat across
    // runs); the key line, if any, only ever key 1's.
    let mut issuer_printed: Vec<String> = Vec::new();
    for line in &printed {
        if line.starts_with("State of KSAIssuerRotation") && issuer_printed.last() != Some(line) {
            issuer_printed.push(line.clone());
        }
    }
    eprintln!("kubeadm A -> B: the runs printed (repeats across runs dropped):");
    for line in &issuer_printed {
        eprintln!("  {line}");
    }
    assert_eq!(issuer_printed, issuer_lines(A, B));
    let others: BTreeSet<&String> = printed
        .iter()
        .filter(|l| !l.starts_with("State of KSAIssuerRotation"))
        .collect();
    eprintln!("kubeadm A -> B: other lines printed: {others:?}");
    assert!(
        others.iter().all(|l| **l == key_line(1, true, 1, 1, &[1])),
        "the key stayed at version 1: {others:?}"
    );
    let status = run(kubeadm_issuer(
        &["status"],
        &pki,
        &manifests_dir,
        &kubeconfig,
    )?)
    .await?;
    assert_eq!(stdout_lines(&status), [COMPLETED_B], "{}", stderr(&status));

    // The manifest's issuer flags: B alone, the default audience pinned
    // to A (the bytes of the rest are checked last).
    let edited = std::fs::read_to_string(manifests_dir.join("kube-apiserver.yaml"))?;
    assert_eq!(
        manifest_issuer_flags(&edited),
        Some(IssuerFlags {
            issuers: vec![B.to_owned()],
            api_audiences: Some(A.to_owned()),
        })
    );
    assert_eq!(
        std::fs::read(pki.join("sa.key"))?,
        first.to_pem().as_bytes(),
        "the key stayed"
    );

    // The instances: A retired, B signs, the default audience stayed.
    ensure_all(
        &verdicts_of(&instances, &early).await?,
        &false,
        "the token taken before",
    )?;
    let minted_a = mint_token(&client, APPS, APP, A, &[A], &first).await?;
    ensure_all(
        &verdicts_of(&instances, &minted_a).await?,
        &false,
        "a token of A",
    )?;
    let minted_b = mint_token(&client, APPS, APP, B, &[A], &first).await?;
    ensure_all(
        &verdicts_of(&instances, &minted_b).await?,
        &true,
        "a token of B",
    )?;
    ensure_all(
        &issuers_issued(&instances).await?,
        &B.to_owned(),
        "fresh tokens",
    )?;
    ensure_all(
        &issuers_discovered(&instances).await?,
        &B.to_owned(),
        "discovery",
    )?;
    let fresh = request_token(&client, APPS, APP, Vec::new(), 3600).await?;
    assert_eq!(
        token_audiences(&fresh)?,
        [A],
        "the default audience stayed A"
    );
    let legacy = Api::<Secret>::namespaced(client.clone(), APPS)
        .get("app-token")
        .await?
        .data
        .and_then(|d| d.get("token").cloned())
        .context("the legacy token")?;
    let legacy = String::from_utf8(legacy.0)?;
    ensure_all(
        &verdicts_of(&instances, &legacy).await?,
        &true,
        "the legacy token",
    )?;

    let stats = prober.stats().await;
    eprintln!("kubeadm A -> B: prober: {stats:?}");
    assert_eq!(stats.wrongly_rejected, Vec::<String>::new());
    assert!(
        stats.reviews > 100,
        "the prober reviewed too little: {stats:?}"
    );
    let plane = plane.lock().await;
    assert_eq!(
        plane.roll_log().check()?,
        3 * HA_INSTANCES,
        "three issuer flag roll-outs (Trust, Sign, Retire), each to every instance"
    );
    assert_eq!(plane.apiserver_starts, 4, "the start and three roll-outs");
    drop(plane);

    // Last, every byte of the manifests: the issuer line now B with the
    // default audience pinned to A after it, everything else as kubeadm
    // wrote it (README: "On kubeadm, the --service-account-issuer lines of
    // kube-apiserver.yaml, one per accepted issuer, every other byte
    // kept"); kube-controller-manager's manifest untouched (kubelet would
    // restart it for nothing).
    let edited = std::fs::read_to_string(manifests_dir.join("kube-apiserver.yaml"))?;
    let issuer_line = format!("    - --service-account-issuer={A}\n");
    assert!(apiserver.contains(&issuer_line));
    let expected = apiserver.replace(
        &issuer_line,
        &format!("    - --service-account-issuer={B}\n    - --api-audiences={A}\n"),
    );
    assert!(
        edited == expected,
        "kube-apiserver.yaml changed beyond its issuer lines:\n{}",
        line_diff(&expected, &edited)
    );
    let edited = std::fs::read_to_string(manifests_dir.join("kube-controller-manager.yaml"))?;
    assert!(
        edited == controller_manager,
        "an issuer rotation changed kube-controller-manager.yaml:\n{}",
        line_diff(&controller_manager, &edited)
    );
    eprintln!("the test took {:.1?}", clock.elapsed());
    Ok(())
}

/// The lines of `expected` and `got` that differ, in order, each marked
/// `-` (expected) or `+` (got).
fn line_diff(expected: &str, got: &str) -> String {
    let (expected, got): (Vec<&str>, Vec<&str>) =
        (expected.lines().collect(), got.lines().collect());
    let mut out = Vec::new();
    for index in 0..expected.len().max(got.len()) {
        let (want, have) = (expected.get(index), got.get(index));
        if want != have {
            out.extend(want.map(|l| format!("- {l}")));
            out.extend(have.map(|l| format!("+ {l}")));
        }
    }
    out.join("\n")
}

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
    assert_eq!(
        served_kids(&instances).await?,
        vec![vec![kid.clone()]; HA_INSTANCES]
    );
    for instance in &instances {
        let jwt = retrying("TokenRequest", || {
            request_token(&instance.client, APPS, APP, Vec::new(), 3600)
        })
        .await?;
        let decoded = ksa_core::token::decode(&jwt)?;
        assert_eq!(
            decoded.header.kid.as_deref(),
            Some(kid.as_str()),
            "{}",
            instance.url
        );
        assert_eq!(decoded.claims.iss.as_deref(), Some(B), "{}", instance.url);
    }
    let minted_a = mint_token(&client, APPS, APP, A, &[A], &first).await?;
    ensure_all(
        &verdicts_of(&instances, &minted_a).await?,
        &false,
        "a token of A",
    )?;
    let legacy = Api::<Secret>::namespaced(client.clone(), APPS)
        .get("app-token")
        .await?
        .data
        .and_then(|d| d.get("token").cloned())
        .context("the legacy token")?;
    let legacy = String::from_utf8(legacy.0)?;
    ensure_all(
        &verdicts_of(&instances, &legacy).await?,
        &true,
        "the legacy token",
    )?;
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
