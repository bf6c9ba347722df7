//! Building the zoo: its objects, made from JSON, the admission policy by
//! which the harness decides how Job pods end, the Widget custom resource,
//! and [`Zoo::create`], which waits until every pod is where it should be.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::players::{play_kubelet, play_widget_controller};
use super::{
    FINISH, GUARDED_PDB, KUBELET_POLICY, KWOK_NODES, OUTCOME, Untouchable, WIDGET_PODS, ZOO, Zoo,
    job_condition, label, poisoned,
};
use crate::ControlPlane;
use crate::cluster::{create_namespace, create_service_account};

pub(super) fn object<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).context("a zoo object")
}

/// A pod template of app `app` running as the zoo's account, with `spec`
/// merged into its spec.
pub(super) fn template(app: &str, spec: Value) -> Value {
    let mut base = json!({
        "serviceAccountName": ZOO,
        "containers": [{"name": "app", "image": "registry.example/app:1"}],
    });
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), spec) {
        base.extend(extra);
    }
    json!({"metadata": {"labels": {"app": app}}, "spec": base})
}

pub(super) fn selector(app: &str) -> Value {
    json!({"matchLabels": {"app": app}})
}

pub(super) fn job(name: &str, outcome: Option<&str>, backoff: i32) -> Value {
    let mut template = template(name, json!({}));
    if let Some(outcome) = outcome {
        template["metadata"]["labels"][OUTCOME] = json!(outcome);
    }
    template["spec"]["restartPolicy"] = json!("Never");
    json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": backoff, "template": template},
    })
}

pub(super) async fn create<K>(client: &kube::Client, value: Value) -> Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = object(value)?;
    Ok(Api::<K>::namespaced(client.clone(), ZOO)
        .create(&PostParams::default(), &object)
        .await?)
}

/// A node for kwok to manage, as the harness's own simulated nodes are.
pub fn kwok_node(name: &str) -> Result<Node> {
    object(json!({
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
        },
    }))
}

/// Creates kwok node `name` and lifts the not-ready taint the API server
/// puts on a new node (no node lifecycle controller runs to lift it).
pub async fn add_kwok_node(client: &kube::Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&PostParams::default(), &kwok_node(name)?)
        .await?;
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": null}})),
        )
        .await?;
    Ok(())
}

impl Zoo {
    /// Simulates [`KWOK_NODES`] nodes on `plane`, creates the zoo, waits
    /// until every pod of it is where it should be (running, completed or
    /// failed), and starts the harness's part of the kubelet and the custom
    /// resource's controller.
    pub async fn create(
        plane: &tokio::sync::Mutex<ControlPlane>,
        client: &kube::Client,
    ) -> Result<Zoo> {
        let started = Instant::now();
        plane.lock().await.simulate_nodes(KWOK_NODES, &[]).await?;
        create_namespace(client, ZOO).await?;
        create_service_account(client, ZOO, ZOO).await?;
        install_kubelet_policy(client).await?;
        let widget_uid = install_widget(client).await?;
        let mut zoo = Zoo {
            client: client.clone(),
            untouchable: Arc::default(),
            seen: Arc::default(),
            tasks: vec![
                tokio::spawn(play_kubelet(client.clone())),
                tokio::spawn(play_widget_controller(client.clone(), widget_uid)),
            ],
        };
        zoo.create_workloads().await?;
        zoo.wait_settled().await?;
        zoo.record_untouchables().await?;
        eprintln!("zoo ready in {:.1?}", started.elapsed());
        Ok(zoo)
    }

    async fn create_workloads(&mut self) -> Result<()> {
        let client = &self.client;
        let no_token = json!({"automountServiceAccountToken": false});
        let deployment = |name: &str, replicas: i32, strategy: Value, spec: Value| {
            json!({
                "metadata": {"name": name},
                "spec": {
                    "replicas": replicas,
                    "selector": selector(name),
                    "strategy": strategy,
                    "template": template(name, spec),
                },
            })
        };
        create::<Deployment>(
            client,
            deployment(
                "rolling",
                2,
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
                json!({}),
            ),
        )
        .await?;
        create::<Deployment>(
            client,
            deployment("recreate", 1, json!({"type": "Recreate"}), json!({})),
        )
        .await?;
        create::<Deployment>(
            client,
            deployment("no-token", 1, json!({"type": "Recreate"}), no_token.clone()),
        )
        .await?;
        let audiences: Vec<Value> = [
            (600, "vault"),
            (3600, "sts.example.com"),
            (7200, "https://mesh.example"),
            (86_400, "warehouse"),
        ]
        .iter()
        .map(|(seconds, audience)| {
            json!({"serviceAccountToken": {
                "audience": audience,
                "expirationSeconds": seconds,
                "path": format!("token-{seconds}"),
            }})
        })
        .collect();
        create::<Deployment>(
            client,
            deployment(
                "audiences",
                1,
                json!({"type": "Recreate"}),
                json!({
                    "automountServiceAccountToken": false,
                    "volumes": [{"name": "tokens", "projected": {"sources": audiences}}],
                }),
            ),
        )
        .await?;
        for (name, strategy) in [
            ("ordered", json!({"type": "RollingUpdate"})),
            ("manual", json!({"type": "OnDelete"})),
        ] {
            create::<StatefulSet>(
                client,
                json!({
                    "metadata": {"name": name},
                    "spec": {
                        "replicas": 2,
                        "serviceName": name,
                        "selector": selector(name),
                        "updateStrategy": strategy,
                        "template": template(name, json!({})),
                    },
                }),
            )
            .await?;
        }
        for (name, strategy) in [
            ("agent", json!({"type": "RollingUpdate"})),
            ("agent-manual", json!({"type": "OnDelete"})),
        ] {
            create::<DaemonSet>(
                client,
                json!({
                    "metadata": {"name": name},
                    "spec": {
                        "selector": selector(name),
                        "updateStrategy": strategy,
                        "template": template(name, json!({})),
                    },
                }),
            )
            .await?;
        }
        for (name, replicas) in [("bare-rs", 2), ("guarded", 1)] {
            create::<ReplicaSet>(
                client,
                json!({
                    "metadata": {"name": name},
                    "spec": {
                        "replicas": replicas,
                        "selector": selector(name),
                        "template": template(name, json!({})),
                    },
                }),
            )
            .await?;
        }
        create::<PodDisruptionBudget>(
            client,
            json!({
                "metadata": {"name": GUARDED_PDB},
                "spec": {"minAvailable": 1, "selector": selector("guarded")},
            }),
        )
        .await?;
        create::<ReplicationController>(
            client,
            json!({
                "metadata": {"name": "legacy-rc"},
                "spec": {
                    "replicas": 1,
                    "selector": {"app": "legacy-rc"},
                    "template": template("legacy-rc", json!({})),
                },
            }),
        )
        .await?;
        create::<Job>(client, job("done", None, 6)).await?;
        create::<Job>(client, job("running-1", Some("run"), 0)).await?;
        create::<Job>(client, job("failed", Some("fail"), 0)).await?;
        // A Job made from a CronJob, as `kubectl create job --from=cronjob/`
        // makes one: the CronJob is suspended, so its controller makes no
        // other.
        let cronjob: CronJob = create(
            client,
            json!({
                "metadata": {"name": "nightly"},
                "spec": {
                    "schedule": "0 3 * * *",
                    "suspend": true,
                    "jobTemplate": {"spec": job("nightly", None, 6)["spec"]},
                },
            }),
        )
        .await?;
        let mut made = job("nightly-manual", None, 6);
        made["metadata"]["annotations"] = json!({"cronjob.kubernetes.io/instantiate": "manual"});
        made["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": "nightly",
            "uid": cronjob.metadata.uid.clone().unwrap_or_default(),
            "controller": true,
        }]);
        create::<Job>(client, made).await?;
        create::<Pod>(
            client,
            json!({"metadata": {"name": "loner", "labels": {"app": "loner"}}, "spec": template("loner", json!({}))["spec"]}),
        )
        .await?;
        // A static pod's mirror, as kubelet makes one: the annotation, an
        // owner reference to its node, and no service account (the API
        // server refuses one).
        let node = Api::<Node>::all(client.clone()).get("kwok-node-0").await?;
        create::<Pod>(
            client,
            json!({
                "metadata": {
                    "name": "static-web-kwok-node-0",
                    "labels": {"app": "static-web"},
                    "annotations": {
                        "kubernetes.io/config.mirror": "3a1f0c",
                        "kubernetes.io/config.source": "file",
                    },
                    "ownerReferences": [{
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": "kwok-node-0",
                        "uid": node.metadata.uid.clone().unwrap_or_default(),
                        "controller": true,
                    }],
                },
                "spec": {
                    "nodeName": "kwok-node-0",
                    "containers": [{"name": "web", "image": "registry.example/static:1"}],
                },
            }),
        )
        .await?;
        Ok(())
    }

    /// Waits until every workload of the zoo has its pods where they
    /// should be.
    async fn wait_settled(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let missing = self.unsettled().await?;
            if missing.is_empty() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!("the zoo did not settle: {missing:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn unsettled(&self) -> Result<Vec<String>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ZOO)
            .list(&ListParams::default())
            .await?;
        let phase_of = |app: &str, phase: &str| {
            pods.iter()
                .filter(|p| label(p, "app") == Some(app))
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase))
                .count()
        };
        let mut missing = Vec::new();
        let daemons = KWOK_NODES;
        for (app, phase, want) in [
            ("rolling", "Running", 2),
            ("recreate", "Running", 1),
            ("no-token", "Running", 1),
            ("audiences", "Running", 1),
            ("ordered", "Running", 2),
            ("manual", "Running", 2),
            ("agent", "Running", daemons),
            ("agent-manual", "Running", daemons),
            ("bare-rs", "Running", 2),
            ("guarded", "Running", 1),
            ("legacy-rc", "Running", 1),
            ("done", "Succeeded", 1),
            ("nightly-manual", "Succeeded", 1),
            ("running-1", "Running", 1),
            ("failed", "Failed", 1),
            ("loner", "Running", 1),
            ("static-web", "Running", 1),
            ("gizmo", "Running", WIDGET_PODS),
        ] {
            let have = phase_of(app, phase);
            if have != want {
                let phases: Vec<String> = pods
                    .iter()
                    .filter(|p| label(p, "app") == Some(app))
                    .map(|p| {
                        format!(
                            "{} {:?}{}",
                            p.metadata.name.as_deref().unwrap_or_default(),
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            if p.metadata.deletion_timestamp.is_some() {
                                " deleting"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect();
                missing.push(format!(
                    "{app}: {have}/{want} {phase} ({})",
                    phases.join(", ")
                ));
            }
        }
        let pdb = Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ZOO)
            .get(GUARDED_PDB)
            .await?;
        let blocking = pdb.status.as_ref().is_some_and(|s| {
            s.disruptions_allowed == 0
                && s.current_healthy == 1
                && s.observed_generation >= pdb.metadata.generation
        });
        if !blocking {
            missing.push(format!("{GUARDED_PDB} not blocking: {:?}", pdb.status));
        }
        let jobs = Api::<Job>::namespaced(self.client.clone(), ZOO)
            .list(&ListParams::default())
            .await?;
        for (name, condition) in [
            ("done", "Complete"),
            ("nightly-manual", "Complete"),
            ("failed", "Failed"),
        ] {
            let met = jobs
                .iter()
                .any(|j| j.metadata.name.as_deref() == Some(name) && job_condition(j, condition));
            if !met {
                missing.push(format!("Job {name} not {condition}"));
            }
        }
        Ok(missing)
    }

    /// Pods that hold no live token (completed and failed Jobs', those
    /// that project none, the static pod's mirror): never to be touched.
    async fn record_untouchables(&self) -> Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ZOO)
            .list(&ListParams::default())
            .await?;
        let mut untouchable = self.untouchable.lock().map_err(poisoned)?;
        for pod in pods {
            let app = label(&pod, "app").unwrap_or_default();
            if ["done", "nightly-manual", "failed", "no-token", "static-web"].contains(&app) {
                untouchable.push(Untouchable {
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                    until: None,
                });
            }
        }
        ensure!(untouchable.len() == 5, "untouchables: {untouchable:?}");
        Ok(())
    }
}

/// The policy by which kwok cannot end a Job pod of the zoo that the
/// harness decides on: no `Succeeded` for a pod labelled [`OUTCOME`]
/// unless it is labelled `run` and already annotated [`FINISH`].
async fn install_kubelet_policy(client: &kube::Client) -> Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let policy: ValidatingAdmissionPolicy = object(json!({
        "metadata": {"name": KUBELET_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ZOO}},
                "resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["UPDATE"], "resources": ["pods/status"],
                }],
            },
            "validations": [{
                "expression": format!(
                    "!has(object.metadata.labels) || !('{OUTCOME}' in object.metadata.labels) \
                     || !has(object.status.phase) || object.status.phase != 'Succeeded' \
                     || (object.metadata.labels['{OUTCOME}'] == 'run' \
                         && has(oldObject.metadata.annotations) \
                         && '{FINISH}' in oldObject.metadata.annotations)"
                ),
                "message": "the harness, as the pod's kubelet, decides how this Job pod ends",
            }],
        },
    }))?;
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    let binding: ValidatingAdmissionPolicyBinding = object(json!({
        "metadata": {"name": KUBELET_POLICY},
        "spec": {"policyName": KUBELET_POLICY, "validationActions": ["Deny"]},
    }))?;
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    // The policy holds once the API server has loaded it: a pod labelled
    // to fail must not be let succeed.
    let started = Instant::now();
    let probe: Pod = object(json!({
        "metadata": {"name": "policy-probe", "labels": {OUTCOME: "fail"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}], "automountServiceAccountToken": false, "serviceAccountName": ZOO},
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ZOO);
    pods.create(&PostParams::default(), &probe).await?;
    loop {
        let denied = pods
            .patch_status(
                "policy-probe",
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": "Succeeded"}})),
            )
            .await
            .is_err();
        if denied {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{KUBELET_POLICY} is not enforced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pods.delete("policy-probe", &DeleteParams::default().grace_period(0))
        .await?;
    Ok(())
}

fn widget_resource() -> ApiResource {
    ApiResource {
        group: "zoo.ksa.dev".into(),
        version: "v1".into(),
        api_version: "zoo.ksa.dev/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    }
}

/// Installs the Widget CRD and creates widget `gizmo`; returns its UID.
async fn install_widget(client: &kube::Client) -> Result<String> {
    let crd: CustomResourceDefinition = object(json!({
        "metadata": {"name": "widgets.zoo.ksa.dev"},
        "spec": {
            "group": "zoo.ksa.dev",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await?;
    let started = Instant::now();
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ZOO, &widget_resource());
    let gizmo: DynamicObject = object(json!({
        "apiVersion": "zoo.ksa.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "gizmo"},
        "spec": {"pods": WIDGET_PODS},
    }))?;
    loop {
        // Created once the CRD is established.
        match widgets.create(&PostParams::default(), &gizmo).await {
            Ok(created) => return Ok(created.metadata.uid.unwrap_or_default()),
            Err(error) if started.elapsed() > Duration::from_secs(30) => {
                bail!("widget gizmo: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
