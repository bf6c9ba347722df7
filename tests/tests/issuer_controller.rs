//! The product's issuer rotation (SPEC section 10) end to end on a hosted
//! control plane: `ksa` and `ksa-controller` on three kube-apiserver
//! instances, with the prober reviewing tokens on every instance
//! throughout and the order of the roll-outs checked at the end: A -> B
//! keeping the key, then B -> C with a new key, refusals in between.

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use ksa_core::KeyVersion;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::KeyStore;
use ksa_tests::hosted::{UNRELATED_ARGS, container_args};
use ksa_tests::issuer::follow::{
    Confirmations, check_wait_output, controller_report, rotate_and_follow, run, stderr,
    stdout_lines,
};
use ksa_tests::issuer::{
    A, APP, B, C, COMPLETED_B, args_signing, ensure_all, ensure_signing, interleaved, issuer_lines,
    issuer_rotation, key_line, key_lines, mint_token, retrying, token_audiences, token_issuer,
    user_cluster_config, verdicts_of, wait_lines,
};
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{APPS, CLUSTER, NAMESPACE, Scenario};
use ksa_tests::{ApiServerWorkload, ksa_binary};
use kube::api::{Api, ListParams};
use tokio::sync::Mutex;

/// The hosted test's `trustLeadTimeSeconds`: Sign waits that long after
/// every instance was seen to accept the new issuer (and key), for outside
/// verifiers to fetch B's discovery document.
const TRUST_LEAD: Duration = Duration::from_secs(5);

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

/// `ksa update credentials COMMAND rotate --issuer URL` is refused as a
/// usage error (exit 2) whose message names `says`.
async fn refused_issuer(scenario: &Scenario, command: &str, url: &str, says: &str) -> Result<()> {
    let output = refused(
        scenario,
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
    assert!(stderr(&output).contains(says), "{url}: {}", stderr(&output));
    Ok(())
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
            refused_issuer(&scenario, command, url, "--issuer").await?;
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
        refused_issuer(
            &scenario,
            command,
            B,
            &format!("already signs with issuer {B}"),
        )
        .await?;
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
    ensure_signing(&instances, &kid2, C).await?;
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
