//! The components the zoo's nodes lack, played by the harness: the
//! kubelet's end of Job pods, the Widget controller, and a cloud's machine
//! controller.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::build::{add_kwok_node, object, template};
use super::{KWOK_NODES, OUTCOME, TICK, WIDGET_LABEL, WIDGET_PODS, ZOO};

/// The Widget controller: keeps [`WIDGET_PODS`] pods of gizmo, replacing
/// any that is deleted (evicted).
pub(super) async fn play_widget_controller(client: kube::Client, uid: String) {
    let pods: Api<Pod> = Api::namespaced(client, ZOO);
    loop {
        tokio::time::sleep(TICK).await;
        let Ok(list) = pods
            .list(&ListParams::default().labels(&format!("{WIDGET_LABEL}=gizmo")))
            .await
        else {
            continue;
        };
        let live = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        for _ in live..WIDGET_PODS {
            let Ok(pod) = object::<Pod>(json!({
                "metadata": {
                    "generateName": "gizmo-",
                    "labels": {"app": "gizmo", WIDGET_LABEL: "gizmo"},
                    "ownerReferences": [{
                        "apiVersion": "zoo.ksa.dev/v1",
                        "kind": "Widget",
                        "name": "gizmo",
                        "uid": uid,
                        "controller": true,
                    }],
                },
                "spec": template("gizmo", json!({}))["spec"],
            })) else {
                continue;
            };
            let _ = pods.create(&PostParams::default(), &pod).await;
        }
    }
}

/// The harness's part of the kubelet: fails each running pod of the zoo
/// labelled to fail.
pub(super) async fn play_kubelet(client: kube::Client) {
    let pods: Api<Pod> = Api::namespaced(client, ZOO);
    let to_fail = ListParams::default().labels(&format!("{OUTCOME}=fail"));
    loop {
        tokio::time::sleep(TICK).await;
        let Ok(list) = pods.list(&to_fail).await else {
            continue;
        };
        for pod in list {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase != Some("Running") || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            let _ = pods
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&finished("Failed", 1)),
                )
                .await;
        }
    }
}

pub(super) fn finished(phase: &str, exit_code: i32) -> Value {
    let now = Timestamp::now();
    json!({"status": {
        "phase": phase,
        "startTime": now,
        "conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "lastTransitionTime": now},
        ],
        "containerStatuses": [{
            "name": "app", "image": "registry.example/app:1", "imageID": "",
            "ready": false, "restartCount": 0, "started": false,
            "state": {"terminated": {
                "exitCode": exit_code,
                "reason": if exit_code == 0 { "Completed" } else { "Error" },
                "startedAt": now, "finishedAt": now,
            }},
        }],
    }})
}

/// Plays the machine controller of a cloud: whenever a kwok node is
/// deleted, a new one (a new name) takes its place.
pub fn replace_deleted_nodes(client: kube::Client) -> JoinHandle<()> {
    tokio::spawn(async move {
        let nodes: Api<Node> = Api::all(client.clone());
        let kwok = ListParams::default().labels("type=kwok");
        let mut known: BTreeSet<String> = BTreeSet::new();
        let mut next = KWOK_NODES;
        loop {
            tokio::time::sleep(TICK).await;
            let Ok(list) = nodes.list(&kwok).await else {
                continue;
            };
            let now: BTreeSet<String> = list
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            for _gone in known.difference(&now) {
                let name = format!("kwok-node-{next}");
                next += 1;
                if let Err(error) = add_kwok_node(&client, &name).await {
                    eprintln!("machine controller: adding {name}: {error:#}");
                } else {
                    eprintln!("machine controller: replaced a deleted node with {name}");
                }
            }
            known = now;
        }
    })
}
