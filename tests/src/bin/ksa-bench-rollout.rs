//! Bound token refresh at scale, for `cargo xtask bench`: on one real
//! control plane (kube-controller-manager and kube-scheduler included) with
//! nodes and pods simulated by kwok, for each size (cumulative: the
//! Deployments of a size stay for the next), it creates Deployments up to
//! that size (one pod each, default rolling update) and waits until every
//! pod is Running and Ready, then:
//!
//! - times a bare restart of every Deployment (`kubectl rollout restart`,
//!   as many at a time as the controller) until every one has rolled out:
//!   the cluster's own limit;
//! - runs a full rotation with the real `ksa-controller` under the
//!   restart-pods policy and measures how long its RefreshTokens step took
//!   (from its log), the API requests it made (the audit log), per
//!   workload, and its peak memory and CPU;
//! - checks that every Deployment was restarted for the new key and rolled
//!   out.
//!
//! With `--zoo`, the workloads are the zoo's mix instead
//! (`ksa_tests::zoo::mix`: Deployments, StatefulSets and DaemonSets with
//! either update strategy, bare ReplicaSets, ReplicationControllers,
//! completed Jobs, pods without tokens), and the bare restart restarts
//! what a rotation refreshes (templates, and deletes the pods of the rest)
//! with no pacing; the check is that no running pod still holds a token
//! from before RefreshTokens.
//!
//! Prints one JSON object. Usage: ksa-bench-rollout [--zoo] SIZE...

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use ksa_core::rotation::Step;
use ksa_kube::refresh::RESTART_ANNOTATION;
use ksa_tests::bench::{RotationBench, patch_each};
use ksa_tests::cluster::{create_namespace, create_service_account};
use ksa_tests::workload;
use ksa_tests::zoo::mix;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const FLEET: &str = "fleet";
/// Simulated nodes; kwok gives each room for a million pods.
const NODES: usize = 10;
/// `kubectl rollout restart`'s annotation, which the bare restart sets.
const BARE_RESTART: &str = "kubectl.kubernetes.io/restartedAt";
/// Client rate limits of kube-controller-manager and kube-scheduler (their
/// defaults, 20 and 50 requests/s, are raised on clusters of this size).
const COMPONENT_FLAGS: [&str; 2] = ["--kube-api-qps=100", "--kube-api-burst=200"];

/// Creates Deployments `app-{from}`..`app-{to - 1}`.
async fn create_deployments(client: &kube::Client, from: usize, to: usize) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), FLEET);
    futures::stream::iter(from..to)
        .map(|i| {
            let api = api.clone();
            async move {
                let deployment = workload::deployment(&format!("app-{i}"), "robot", 1, None);
                api.create(&PostParams::default(), &deployment).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// How many Deployments have rolled out their current template: seen by
/// the deployment controller, the one pod updated and available, no old
/// pod left.
fn rolled_out(deployments: &[Deployment]) -> usize {
    deployments
        .iter()
        .filter(|d| {
            let generation = d.metadata.generation.unwrap_or_default();
            d.status.as_ref().is_some_and(|s| {
                s.observed_generation.unwrap_or_default() >= generation
                    && s.updated_replicas == Some(1)
                    && s.available_replicas == Some(1)
                    && s.replicas == Some(1)
            })
        })
        .count()
}

/// Waits until all `size` Deployments have rolled out and every pod is
/// Running; returns when that was seen.
async fn wait_rolled_out(client: &kube::Client, size: usize, within: Duration) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), FLEET);
    let pods: Api<Pod> = Api::namespaced(client.clone(), FLEET);
    let started = Instant::now();
    loop {
        let done = rolled_out(&deployments.list(&ListParams::default()).await?.items);
        if done == size {
            let running = pods
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            if running == size {
                return Ok(());
            }
        }
        if started.elapsed() > within {
            bail!("{done} of {size} Deployments rolled out in {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Restarts every Deployment as `kubectl rollout restart` does, as many
/// at a time as the controller does, and waits until all have rolled out.
/// Returns the seconds taken.
async fn bare_restart(client: &kube::Client, size: usize, round: usize) -> Result<f64> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), FLEET);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {BARE_RESTART: round.to_string()}}}}});
    let started = Instant::now();
    patch_each(&api, (0..size).map(|i| format!("app-{i}")), &patch).await?;
    wait_rolled_out(client, size, Duration::from_secs(1800)).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Checks that every Deployment's template says it was restarted for key
/// version `version`.
async fn check_restarted_for(client: &kube::Client, size: usize, version: u64) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), FLEET);
    let version = version.to_string();
    let restarted = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|d| {
            d.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(RESTART_ANNOTATION))
                == Some(&version)
        })
        .count();
    ensure!(
        restarted == size,
        "{restarted} of {size} Deployments were restarted for key version {version}"
    );
    Ok(())
}

/// Waits until the first `size` workloads of the zoo's mix have settled
/// (every pod running and ready, or completed) and, with `since`, no
/// running pod holds a token created before it.
async fn wait_mix_settled(
    client: &kube::Client,
    size: usize,
    since: Option<jiff::Timestamp>,
    within: Duration,
) -> Result<()> {
    let (running, completed) = mix::expected(size, NODES);
    let started = Instant::now();
    loop {
        let census = mix::census(client, since).await?;
        if census == [running, completed, 0, 0] {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!(
                "the zoo mix of {size} did not settle in {within:?}: [running, completed, other, stale] = {census:?}, want [{running}, {completed}, 0, 0]"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One size of the zoo's mix: settle, time a bare restart, rotate.
async fn zoo_round(
    bench: &mut RotationBench,
    created: usize,
    size: usize,
    round: usize,
    to: u64,
) -> Result<serde_json::Value> {
    let client = bench.client.clone();
    let started = Instant::now();
    mix::create(&client, created, size).await?;
    wait_mix_settled(&client, size, None, Duration::from_secs(1800)).await?;
    eprintln!(
        "{size} workloads of the zoo mix running on {NODES} kwok nodes in {:.1?}",
        started.elapsed()
    );
    let bare_began = jiff::Timestamp::now();
    // Creation times have one-second precision.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let bare = Instant::now();
    mix::bare_restart(&client, size, round).await?;
    wait_mix_settled(&client, size, Some(bare_began), Duration::from_secs(1800)).await?;
    let bare_seconds = bare.elapsed().as_secs_f64();
    eprintln!("bare restart: the zoo mix of {size} refreshed in {bare_seconds:.1} s");
    let run = bench.rotate(to).await?;
    let refresh_began = run.entered(Step::RefreshTokens)?;
    let refreshed = run.entered(Step::Retire)?;
    wait_mix_settled(&client, size, Some(refresh_began), Duration::from_secs(60)).await?;
    let refresh_seconds = refreshed.duration_since(refresh_began).as_secs_f64();
    Ok(json!({
        "workloads": size,
        "mix": "zoo",
        "nodes": NODES,
        "bare_seconds": bare_seconds,
        "refresh_seconds": refresh_seconds,
        "rotation_seconds": run.seconds,
        "rotation_api_requests": run.api_requests.len(),
        "refresh_api_requests": run.api_requests_between(refresh_began, refreshed),
        "api_requests_per_workload": run.api_requests.len() as f64 / size as f64,
        "controller_peak_rss_mib": run.controller_peak_rss_mib,
        "controller_cpu_seconds": run.controller_cpu_seconds,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let zoo = args.first().map(String::as_str) == Some("--zoo");
    if zoo {
        args.remove(0);
    }
    let sizes: Vec<usize> = args
        .iter()
        .map(|s| {
            s.parse()
                .context("usage: ksa-bench-rollout [--zoo] SIZE...")
        })
        .collect::<Result<_>>()?;
    ensure!(
        !sizes.is_empty() && sizes.windows(2).all(|w| w[0] < w[1]),
        "sizes ascending, at least one"
    );
    let mut bench = RotationBench::start(async |plane| {
        plane.start_controller_manager_with_flags(&COMPONENT_FLAGS)?;
        plane.simulate_nodes(NODES, &COMPONENT_FLAGS).await
    })
    .await?;
    let client = bench.client.clone();
    let mut rows = Vec::new();
    let mut created = 0;
    if zoo {
        mix::prepare(&client).await?;
        for (round, (to, size)) in (2u64..).zip(sizes).enumerate() {
            let row = zoo_round(&mut bench, created, size, round, to).await?;
            created = size;
            eprintln!("{row}");
            rows.push(row);
        }
        println!("{}", json!({ "sizes": rows }));
        return Ok(());
    }
    create_namespace(&client, FLEET).await?;
    create_service_account(&client, FLEET, "robot").await?;
    for (round, (to, size)) in (2u64..).zip(sizes).enumerate() {
        let started = Instant::now();
        create_deployments(&client, created, size).await?;
        created = size;
        wait_rolled_out(&client, size, Duration::from_secs(1800)).await?;
        eprintln!(
            "{size} Deployments running on {NODES} kwok nodes in {:.1?}",
            started.elapsed()
        );
        let bare_seconds = bare_restart(&client, size, round).await?;
        eprintln!("bare restart: {size} Deployments rolled out in {bare_seconds:.1} s");
        let run = bench.rotate(to).await?;
        check_restarted_for(&client, size, to).await?;
        wait_rolled_out(&client, size, Duration::from_secs(60)).await?;
        let refresh_began = run.entered(Step::RefreshTokens)?;
        let refreshed = run.entered(Step::Retire)?;
        let refresh_seconds = refreshed.duration_since(refresh_began).as_secs_f64();
        let refresh_requests = run.api_requests_between(refresh_began, refreshed);
        let row = json!({
            "deployments": size,
            "workloads": size,
            "nodes": NODES,
            "bare_seconds": bare_seconds,
            "refresh_seconds": refresh_seconds,
            "rotation_seconds": run.seconds,
            "rotation_api_requests": run.api_requests.len(),
            "refresh_api_requests": refresh_requests,
            "api_requests_per_workload": run.api_requests.len() as f64 / size as f64,
            "controller_peak_rss_mib": run.controller_peak_rss_mib,
            "controller_cpu_seconds": run.controller_cpu_seconds,
        });
        eprintln!("{row}");
        rows.push(row);
    }
    println!("{}", json!({ "sizes": rows }));
    Ok(())
}
