//! The zoo's mix at scale, for the benchmarks: of every ten workloads in
//! [`ZOO`] (one pod each), three Deployments with the default rolling
//! update, one with Recreate, one whose pods hold no token, a StatefulSet
//! with a rolling update, one with OnDelete, a bare ReplicaSet, a
//! ReplicationController and a completed Job; and two DaemonSets (rolling
//! update, OnDelete) on every node. What a template restart refreshes,
//! what only an eviction does, and what holds no token to refresh.

use anyhow::Result;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::build::{self, job, selector, template};
use super::{ZOO, label, projects_token};
use crate::cluster::{create_namespace, create_service_account};

/// The kind of workload `i` of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rolling,
    Recreate,
    NoToken,
    StatefulSet,
    StatefulSetOnDelete,
    ReplicaSet,
    ReplicationController,
    Job,
}

pub fn kind(i: usize) -> Kind {
    match i % 10 {
        0..=2 => Kind::Rolling,
        3 => Kind::Recreate,
        4 => Kind::NoToken,
        5 => Kind::StatefulSet,
        6 => Kind::StatefulSetOnDelete,
        7 => Kind::ReplicaSet,
        8 => Kind::ReplicationController,
        _ => Kind::Job,
    }
}

pub fn name(i: usize) -> String {
    format!("app-{i}")
}

/// The namespace, its service account, and the two DaemonSets.
pub async fn prepare(client: &kube::Client) -> Result<()> {
    create_namespace(client, ZOO).await?;
    create_service_account(client, ZOO, ZOO).await?;
    for (name, strategy) in [("agent", "RollingUpdate"), ("agent-manual", "OnDelete")] {
        build::create::<DaemonSet>(
            client,
            json!({
                "metadata": {"name": name},
                "spec": {
                    "selector": selector(name),
                    "updateStrategy": {"type": strategy},
                    "template": template(name, json!({})),
                },
            }),
        )
        .await?;
    }
    Ok(())
}

fn workload(i: usize) -> (Kind, Value) {
    let name = name(i);
    let kind = kind(i);
    let deployment = |strategy: Value, spec: Value| {
        json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": selector(&name),
                "strategy": strategy,
                "template": template(&name, spec),
            },
        })
    };
    let statefulset = |strategy: &str| {
        json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "serviceName": name,
                "selector": selector(&name),
                "updateStrategy": {"type": strategy},
                "template": template(&name, json!({})),
            },
        })
    };
    let value = match kind {
        Kind::Rolling => deployment(json!({"type": "RollingUpdate"}), json!({})),
        Kind::Recreate => deployment(json!({"type": "Recreate"}), json!({})),
        Kind::NoToken => deployment(
            json!({"type": "RollingUpdate"}),
            json!({"automountServiceAccountToken": false}),
        ),
        Kind::StatefulSet => statefulset("RollingUpdate"),
        Kind::StatefulSetOnDelete => statefulset("OnDelete"),
        Kind::ReplicaSet => json!({
            "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": selector(&name), "template": template(&name, json!({}))},
        }),
        Kind::ReplicationController => json!({
            "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"app": name}, "template": template(&name, json!({}))},
        }),
        Kind::Job => job(&name, None, 6),
    };
    (kind, value)
}

/// Creates workloads `from`..`to` of the mix, 16 at a time.
pub async fn create(client: &kube::Client, from: usize, to: usize) -> Result<()> {
    use futures::{StreamExt as _, TryStreamExt as _};
    futures::stream::iter(from..to)
        .map(|i| async move {
            let (kind, value) = workload(i);
            match kind {
                Kind::Rolling | Kind::Recreate | Kind::NoToken => {
                    build::create::<Deployment>(client, value).await.map(drop)
                }
                Kind::StatefulSet | Kind::StatefulSetOnDelete => {
                    build::create::<StatefulSet>(client, value).await.map(drop)
                }
                Kind::ReplicaSet => build::create::<ReplicaSet>(client, value).await.map(drop),
                Kind::ReplicationController => {
                    build::create::<ReplicationController>(client, value)
                        .await
                        .map(drop)
                }
                Kind::Job => build::create::<Job>(client, value).await.map(drop),
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// How many pods of the first `size` workloads and the DaemonSets on
/// `nodes` nodes run, and how many Jobs completed, once settled.
pub fn expected(size: usize, nodes: usize) -> (usize, usize) {
    let jobs = (0..size).filter(|i| kind(*i) == Kind::Job).count();
    (size - jobs + 2 * nodes, jobs)
}

/// What the mix's pods are doing: (running and ready, succeeded, other
/// (pending or being deleted), running pods with a token created
/// before `since`).
pub async fn census(client: &kube::Client, since: Option<Timestamp>) -> Result<[usize; 4]> {
    let pods = Api::<Pod>::namespaced(client.clone(), ZOO)
        .list(&ListParams::default())
        .await?;
    let mut counts = [0; 4];
    for pod in &pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let deleting = pod.metadata.deletion_timestamp.is_some();
        match phase {
            Some("Running") if ready && !deleting => counts[0] += 1,
            Some("Succeeded") => counts[1] += 1,
            _ => counts[2] += 1,
        }
        // Created in a second before `since` (one created in that
        // second may be after it).
        let old = since.is_some_and(|since| {
            pod.metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|t| t.0.as_second() < since.as_second())
        });
        if phase == Some("Running") && projects_token(pod) && old {
            counts[3] += 1;
        }
    }
    Ok(counts)
}

/// Restarts what a rotation refreshes, as bare `kubectl` would, with no
/// pacing: the templates of the rolling and Recreate Deployments,
/// the rolling StatefulSets and DaemonSet (`kubectl rollout restart`),
/// and deletes the pods of the rest (OnDelete, bare ReplicaSets,
/// ReplicationControllers), 16 at a time.
pub async fn bare_restart(client: &kube::Client, size: usize, round: usize) -> Result<()> {
    use futures::{StreamExt as _, TryStreamExt as _};
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": round.to_string()
    }}}}});
    let patch = &patch;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ZOO);
    let params = PatchParams::default();
    Api::<DaemonSet>::namespaced(client.clone(), ZOO)
        .patch("agent", &params, &Patch::Merge(patch))
        .await?;
    let mut evicted = vec!["agent-manual".to_owned()];
    for i in 0..size {
        if matches!(
            kind(i),
            Kind::StatefulSetOnDelete | Kind::ReplicaSet | Kind::ReplicationController
        ) {
            evicted.push(name(i));
        }
    }
    let evicted = &evicted;
    futures::stream::iter(0..size)
        .map(|i| async move {
            let (client, name) = (client.clone(), name(i));
            let params = PatchParams::default();
            match kind(i) {
                Kind::Rolling | Kind::Recreate => Api::<Deployment>::namespaced(client, ZOO)
                    .patch(&name, &params, &Patch::Merge(patch))
                    .await
                    .map(drop),
                Kind::StatefulSet => Api::<StatefulSet>::namespaced(client, ZOO)
                    .patch(&name, &params, &Patch::Merge(patch))
                    .await
                    .map(drop),
                _ => Ok(()),
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let to_delete: Vec<String> = pods
        .list(&ListParams::default())
        .await?
        .iter()
        .filter(|p| label(p, "app").is_some_and(|app| evicted.iter().any(|e| e == app)))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let pods = &pods;
    futures::stream::iter(to_delete)
        .map(|name| async move {
            match pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
