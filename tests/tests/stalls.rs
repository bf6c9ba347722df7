//! A refresh that cannot progress is named, not called "rolling out"
//! (issue 32): under `restart-pods`, on nodes kwok simulates, two
//! Deployments whose rollout the cluster stops after ksa restarts their
//! templates, as an operator would meet them. One lives in a namespace
//! whose ResourceQuota is full, so its ReplicaSet cannot create the surge
//! pod (`FailedCreate`); the other selects nodes by a label no node
//! carries any more, so its replacement pod cannot be scheduled. Each is
//! named blocked, with the cluster's reason and message, in
//! `status.blockedHolders`, `status.waitingFor`, the CLI's status and a
//! `RefreshBlocked` Event; once the test fixes each as an operator would
//! (raises the quota, labels a node), the rotation goes on by itself and
//! completes, and no valid token was rejected meanwhile.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{Event, Node, ResourceQuota};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ksa_core::rotation::Step;
use ksa_kube::api::{KSASigningKeyRotation, RotationStatus};
use ksa_tests::cluster::{create_namespace, create_service_account};
use ksa_tests::scenario::{CLUSTER, NAMESPACE, Scenario};
use ksa_tests::wait::eventually;
use ksa_tests::workload;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

/// The namespace whose ResourceQuota is full, and its Deployment.
const QUOTA: &str = "quota";
const FULL: &str = "full";
/// The namespace of the Deployment that selects nodes by [`POOL`].
const PINNED: &str = "pinned";
/// The node label the pinned Deployment's pods select, and its node.
const POOL: &str = "ksa.dev/pool";
const POOL_NODE: &str = "kwok-node-1";
const NODES: usize = 2;

/// How long a rotation may take to reach RefreshTokens, or to finish once
/// nothing holds it (it restarts the API server at Trust and Sign).
const STEP_WITHIN: Duration = Duration::from_secs(300);
/// How long the controller may take to see what the cluster says (it
/// looks again every few seconds at RefreshTokens; a ReplicaSet retries a
/// refused create with a growing back-off).
const SEEN_WITHIN: Duration = Duration::from_secs(180);

/// A Deployment of one pod that keeps it available through a rollout: the
/// replacement is created (and must run) before the old pod goes.
fn deployment(name: &str, node_selector: Option<(&str, &str)>) -> Deployment {
    let strategy = DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    };
    let mut deployment = workload::deployment(name, "robot", 1, Some(strategy));
    if let Some((key, value)) = node_selector
        && let Some(spec) = deployment
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
    {
        spec.node_selector = Some([(key.to_owned(), value.to_owned())].into());
    }
    deployment
}

async fn create(client: &kube::Client, namespace: &str, deployment: &Deployment) -> Result<()> {
    create_namespace(client, namespace).await?;
    create_service_account(client, namespace, "robot").await?;
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), deployment)
        .await?;
    Ok(())
}

/// Waits until the Deployment has its pod available.
async fn available(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("{namespace}/{name} available"),
        SEEN_WITHIN,
        || async {
            let status = api.get(name).await?.status.unwrap_or_default();
            ensure!(
                status.available_replicas == Some(1),
                "available: {:?}",
                status.available_replicas
            );
            Ok(())
        },
    )
    .await
}

/// Sets (or, `None`, removes) the pool label of the pool node.
async fn label_pool_node(client: &kube::Client, value: Option<&str>) -> Result<()> {
    Api::<Node>::all(client.clone())
        .patch(
            POOL_NODE,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {POOL: value}}})),
        )
        .await?;
    Ok(())
}

/// Sets the quota's `pods` and waits until the quota controller has
/// counted the namespace's pods against it: until then, quota admission
/// refuses every pod of the namespace.
async fn set_quota(client: &kube::Client, pods: u32) -> Result<()> {
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), QUOTA);
    let quota = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "pods"},
        "spec": {"hard": {"pods": pods.to_string()}},
    });
    api.patch(
        "pods",
        &PatchParams::apply("ksa-tests").force(),
        &Patch::Apply(&quota),
    )
    .await?;
    eventually("the quota counted", SEEN_WITHIN, || async {
        let status = api.get("pods").await?.status.unwrap_or_default();
        let hard = status.hard.unwrap_or_default();
        let used = status.used.unwrap_or_default();
        ensure!(
            hard.get("pods").map(|q| q.0.as_str()) == Some(pods.to_string().as_str())
                && used.contains_key("pods"),
            "hard {hard:?}, used {used:?}"
        );
        Ok(())
    })
    .await
}

async fn status(api: &Api<KSASigningKeyRotation>) -> Result<RotationStatus> {
    api.get(CLUSTER).await?.status.context("no status yet")
}

/// The messages of the Events with `reason` about the rotation.
async fn notes(client: &kube::Client, reason: &str) -> Result<Vec<String>> {
    Ok(Api::<Event>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect())
}

/// The blocked holder of `namespace` the status names, if any.
fn blocked_in<'a>(status: &'a RotationStatus, namespace: &str) -> Option<&'a String> {
    status
        .blocked_holders
        .iter()
        .find(|h| h.starts_with(&format!("{namespace}/")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_the_cluster_stops_is_named_blocked_and_goes_on_once_fixed() -> Result<()> {
    let scenario = Scenario::start().await?;
    let client = scenario.client.clone();
    let log = || scenario.installation.controller_log();
    scenario
        .plane
        .lock()
        .await
        .simulate_nodes(NODES, &[])
        .await?;
    label_pool_node(&client, Some("pinned")).await?;

    create(&client, QUOTA, &deployment(FULL, None)).await?;
    create(&client, PINNED, &deployment(PINNED, Some((POOL, "pinned")))).await?;
    available(&client, QUOTA, FULL).await?;
    available(&client, PINNED, PINNED).await?;
    // The quota is full with the one pod; the pool node loses its label
    // (its pod keeps running there).
    set_quota(&client, 1).await?;
    label_pool_node(&client, None).await?;

    let rotate = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
    ])?;
    ensure!(
        rotate.status.success(),
        "rotate: {}",
        String::from_utf8_lossy(&rotate.stderr)
    );

    // Both named blocked, each with what the cluster says.
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    let blocked = eventually(
        "both Deployments named blocked",
        STEP_WITHIN + SEEN_WITHIN,
        || async {
            let status = status(&rotations).await?;
            if status.step == Step::RefreshTokens
                && blocked_in(&status, QUOTA).is_some()
                && blocked_in(&status, PINNED).is_some()
            {
                Ok(status)
            } else {
                bail!(
                    "at {:?}: blocked {:?}; waiting for {:?}",
                    status.step,
                    status.blocked_holders,
                    status.waiting_for
                )
            }
        },
    )
    .await
    .with_context(log)?;
    eprintln!("named blocked after {:.1?}", started.elapsed());
    let quota = blocked_in(&blocked, QUOTA).context("quota")?.clone();
    let pinned = blocked_in(&blocked, PINNED).context("pinned")?.clone();
    eprintln!("blocked, quota: {quota}");
    eprintln!("blocked, unschedulable: {pinned}");
    ensure!(
        quota.contains(&format!(
            "(Deployment {FULL}: rollout blocked, its ReplicaSet cannot create pods (FailedCreate): pods \"{FULL}-"
        )) && quota.contains("is forbidden: exceeded quota: pods"),
        "{quota}"
    );
    ensure!(
        pinned.contains(&format!(
            "(Deployment {PINNED}: rollout blocked, replacement pod {PINNED}-"
        )) && pinned.contains("cannot be scheduled (Unschedulable): 0/2 nodes are available")
            && pinned.contains("didn't match Pod's node affinity/selector"),
        "{pinned}"
    );
    let waiting = blocked.waiting_for.clone().unwrap_or_default();
    eprintln!("waiting for: {waiting}");
    ensure!(
        waiting.contains("bound-token holders to refresh: ")
            && waiting.contains("2 blocked")
            && waiting.contains(&quota)
            && waiting.contains(&pinned),
        "{waiting}"
    );
    let warned = eventually("a RefreshBlocked Event names both", SEEN_WITHIN, || async {
        let found = notes(&client, "RefreshBlocked").await?;
        found
            .iter()
            .find(|n| {
                n.contains(&format!("Deployment {FULL}: rollout blocked"))
                    && n.contains(&format!("Deployment {PINNED}: rollout blocked"))
            })
            .cloned()
            .with_context(|| format!("{found:?}"))
    })
    .await?;
    eprintln!("RefreshBlocked: {warned}");
    // The CLI says it too.
    let cli = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "status",
        "-o",
        "json",
    ])?;
    ensure!(
        cli.status.success(),
        "status: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&cli.stdout)?;
    let cli_waiting = printed["waitingFor"].as_str().unwrap_or_default();
    ensure!(
        cli_waiting.contains("rollout blocked, its ReplicaSet cannot create pods"),
        "status -o json: {printed}"
    );

    // The operator raises the quota: that rollout goes on, the other is
    // still named.
    let fixed = Instant::now();
    set_quota(&client, 4).await?;
    let after_quota = eventually(
        "the quota's Deployment no longer blocked",
        SEEN_WITHIN,
        || async {
            let status = status(&rotations).await?;
            if blocked_in(&status, QUOTA).is_none() {
                Ok(status)
            } else {
                bail!("blocked {:?}", status.blocked_holders)
            }
        },
    )
    .await
    .with_context(log)?;
    eprintln!(
        "quota raised: unblocked after {:.1?}; step {:?}, blocked {:?}",
        fixed.elapsed(),
        after_quota.step,
        after_quota.blocked_holders
    );
    available(&client, QUOTA, FULL).await?;
    let still = status(&rotations).await?;
    ensure!(
        still.step == Step::RefreshTokens && blocked_in(&still, PINNED).is_some(),
        "the pinned Deployment is still named: {still:?}"
    );

    // The operator labels a node: the rotation completes by itself.
    let fixed = Instant::now();
    label_pool_node(&client, Some("pinned")).await?;
    let done = eventually(
        "the rotation completes once both were fixed",
        STEP_WITHIN,
        || async {
            let status = status(&rotations).await?;
            if status.step == Step::Completed {
                Ok(status)
            } else {
                bail!(
                    "at {:?}: blocked {:?}; waiting for {:?}",
                    status.step,
                    status.blocked_holders,
                    status.waiting_for
                )
            }
        },
    )
    .await
    .with_context(log)?;
    eprintln!("node labelled: completed after {:.1?}", fixed.elapsed());
    ensure!(done.blocked_holders.is_empty(), "{done:?}");
    ensure!(
        !notes(&client, "RefreshUnblocked").await?.is_empty(),
        "no RefreshUnblocked Event once nothing was blocked"
    );

    let stats = scenario.prober.stats().await;
    eprintln!("prober: {stats:?}");
    ensure!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens were rejected: {:?}",
        stats.wrongly_rejected
    );
    ensure!(
        stats.reviews > 10,
        "the prober reviewed too little: {stats:?}"
    );
    Ok(())
}
