//! The restart-pods policy on a cluster whose nodes kwok simulates: pods are
//! placed by kube-scheduler, rolled out by kube-controller-manager and made
//! Running and Ready by kwok, so workloads roll out as on a real cluster. A
//! rotation restarts every Deployment, StatefulSet and DaemonSet and evicts
//! bare pods; Deployments that allow no unavailable pod keep every replica
//! available throughout; when it completes, every pod comes from a template
//! restarted for the new key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ksa_kube::refresh::RESTART_ANNOTATION;
use ksa_tests::bench::RotationBench;
use ksa_tests::cluster::{QuickBackoff, create_namespace, create_service_account};
use ksa_tests::workload::{self, labels, meta, pod_spec, selector, template};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};

const FLEET: &str = "fleet";
const NODES: usize = 3;
const DEPLOYMENTS: usize = 12;
const REPLICAS: i32 = 2;
const STATEFUL_REPLICAS: i32 = 2;
/// The Deployments' pods, the StatefulSet's, the DaemonSet's (one a node)
/// and one bare pod.
const PODS: usize = DEPLOYMENTS * REPLICAS as usize + STATEFUL_REPLICAS as usize + NODES + 1;

/// A Deployment that may never have fewer than `REPLICAS` available pods:
/// a new pod must be Ready before an old one goes.
fn deployment(name: &str) -> Deployment {
    let strategy = DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    };
    workload::deployment(name, "robot", REPLICAS, Some(strategy))
}

async fn create_fleet(client: &kube::Client) -> Result<()> {
    create_namespace(client, FLEET).await?;
    create_service_account(client, FLEET, "robot").await?;
    let params = PostParams::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), FLEET);
    for i in 0..DEPLOYMENTS {
        deployments
            .create(&params, &deployment(&format!("web-{i}")))
            .await?;
    }
    let stateful = StatefulSet {
        metadata: meta("db"),
        spec: Some(StatefulSetSpec {
            replicas: Some(STATEFUL_REPLICAS),
            selector: selector("db"),
            service_name: Some("db".into()),
            template: template("db", "robot"),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    Api::<StatefulSet>::namespaced(client.clone(), FLEET)
        .create(&params, &stateful)
        .await?;
    let daemon = DaemonSet {
        metadata: meta("agent"),
        spec: Some(DaemonSetSpec {
            selector: selector("agent"),
            template: template("agent", "robot"),
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    };
    Api::<DaemonSet>::namespaced(client.clone(), FLEET)
        .create(&params, &daemon)
        .await?;
    let bare = Pod {
        metadata: ObjectMeta {
            labels: Some(labels("bare")),
            ..meta("bare")
        },
        spec: Some(pod_spec("robot")),
        ..Pod::default()
    };
    Api::<Pod>::namespaced(client.clone(), FLEET)
        .create(&params, &bare)
        .await?;
    Ok(())
}

fn running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Waits until `count` pods of the fleet run and every Deployment says all
/// its replicas are available; returns the pods.
async fn wait_running(client: &kube::Client, count: usize) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), FLEET);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), FLEET);
    let started = Instant::now();
    loop {
        let pods = api.list(&ListParams::default()).await?.items;
        let live: Vec<Pod> = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let available = deployments
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .all(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(REPLICAS));
        if live.len() == count && live.iter().all(running) && available {
            return Ok(live);
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "{} of {count} fleet pods running after 2 minutes ({} pods)",
                live.iter().filter(|p| running(p)).count(),
                live.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The fewest available replicas any Deployment reported from now on (the
/// first list included), kept up to date by a watch.
fn watch_availability(client: &kube::Client) -> (Arc<Mutex<i32>>, tokio::task::JoinHandle<()>) {
    let fewest = Arc::new(Mutex::new(i32::MAX));
    let shared = fewest.clone();
    let api: Api<Deployment> = Api::namespaced(client.clone(), FLEET);
    let task = tokio::spawn(async move {
        let events = watcher(api, watcher::Config::default())
            .backoff(QuickBackoff)
            .applied_objects();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if let Ok(deployment) = event {
                let available = deployment
                    .status
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0);
                if let Ok(mut fewest) = shared.lock() {
                    *fewest = (*fewest).min(available);
                }
            }
        }
    });
    (fewest, task)
}

fn restarted_for(template: Option<&ObjectMeta>) -> Option<&String> {
    template?.annotations.as_ref()?.get(RESTART_ANNOTATION)
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_pods_rolls_every_workload_out_and_keeps_them_available() -> Result<()> {
    let mut cluster = RotationBench::start(async |plane| {
        plane.start_controller_manager()?;
        plane.simulate_nodes(NODES, &[]).await
    })
    .await?;
    let client = cluster.client.clone();
    create_fleet(&client).await?;
    let before = wait_running(&client, PODS).await?;
    let (fewest_available, watch) = watch_availability(&client);

    let run = cluster.rotate(2).await;
    watch.abort();
    run?;

    // The bare pod was evicted, and nothing brings it back.
    let after = wait_running(&client, PODS - 1).await?;
    let version = "2".to_owned();
    for pod in &after {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        ensure!(
            restarted_for(Some(&pod.metadata)) == Some(&version),
            "pod {name} does not come from a template restarted for key version 2"
        );
        ensure!(
            !before.iter().any(|b| b.metadata.uid == pod.metadata.uid),
            "pod {name} predates the rotation"
        );
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), FLEET)
        .list(&ListParams::default())
        .await?
        .items;
    let stateful = Api::<StatefulSet>::namespaced(client.clone(), FLEET)
        .list(&ListParams::default())
        .await?
        .items;
    let daemons = Api::<DaemonSet>::namespaced(client.clone(), FLEET)
        .list(&ListParams::default())
        .await?
        .items;
    let templates = deployments
        .iter()
        .map(|d| d.spec.as_ref().map(|s| &s.template))
        .chain(
            stateful
                .iter()
                .map(|s| s.spec.as_ref().map(|s| &s.template)),
        )
        .chain(daemons.iter().map(|d| d.spec.as_ref().map(|s| &s.template)));
    let mut workloads = 0;
    for template in templates {
        workloads += 1;
        ensure!(
            restarted_for(template.and_then(|t| t.metadata.as_ref())) == Some(&version),
            "a workload's pod template was not restarted for key version 2"
        );
    }
    ensure!(workloads == DEPLOYMENTS + 2, "{workloads} workloads");
    let fewest = *fewest_available
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    ensure!(
        fewest == REPLICAS,
        "a Deployment had {fewest} of {REPLICAS} replicas available during the rotation"
    );
    Ok(())
}
