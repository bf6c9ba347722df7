//! The workload zoo: one of each kind of pod a cluster runs, on nodes kwok
//! simulates, for the suites that rotate (rotation, faults,
//! recreate-nodes) to refresh tokens on.
//!
//! In namespace [`ZOO`]: Deployments (RollingUpdate, Recreate), StatefulSets
//! and DaemonSets (RollingUpdate, OnDelete), a bare ReplicaSet, a
//! ReplicationController, a completed, a running and a failed Job, a Job
//! made from a CronJob, pods of a custom resource (the CRD is installed
//! here and the harness plays its controller), a bare pod, a static pod's
//! mirror, a Deployment whose pods hold no token, one whose pods project
//! tokens of 600, 3600, 7200 and 86400 seconds for other audiences, and a
//! ReplicaSet behind a PodDisruptionBudget that allows no disruption.
//!
//! kwok completes a Job's pod as soon as it runs. The harness decides how
//! the zoo's Job pods end instead, as their kubelet would: a
//! ValidatingAdmissionPolicy ([`KUBELET_POLICY`]) refuses to mark one
//! succeeded until the harness has annotated it to finish, and the harness
//! fails the one labelled to fail. So one Job runs until the operator
//! finishes it, and one fails.
//!
//! [`Zoo::operate`] plays the operator during rotations: it relaxes the
//! PodDisruptionBudget once the status has named the pod it blocks for a
//! while, finishes the running Job once the status names it, creates a pod
//! after RefreshTokens began (it must be left alone), and records what it
//! saw for [`Zoo::check`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use ksa_core::rotation::Step;
use ksa_kube::api::KSASigningKeyRotation;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::ControlPlane;
use crate::cluster::{create_namespace, create_service_account};

/// The zoo's namespace, and the service account its pods run as.
pub const ZOO: &str = "zoo";
/// The ValidatingAdmissionPolicy by which the harness, not kwok, decides
/// how the zoo's Job pods end.
pub const KUBELET_POLICY: &str = "zoo-job-pods-end-as-the-harness-says";
/// How many nodes kwok simulates.
pub const KWOK_NODES: usize = 3;
/// The PodDisruptionBudget that blocks the `guarded` ReplicaSet's pod.
pub const GUARDED_PDB: &str = "guarded-pdb";
/// How long the operator leaves the guarded pod blocked, once named.
const BLOCKED_FOR: Duration = Duration::from_secs(6);
/// How a Job pod of the zoo ends: `run` (until annotated [`FINISH`]) or
/// `fail`.
const OUTCOME: &str = "zoo.ksa.dev/outcome";
/// The annotation that lets a running pod of the zoo succeed.
const FINISH: &str = "zoo.ksa.dev/finish";
const WIDGET_LABEL: &str = "zoo.ksa.dev/widget";
const WIDGET_PODS: usize = 2;
const TICK: Duration = Duration::from_millis(250);

/// What the operator saw of each rotation, by key version.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// When RefreshTokens began.
    pub refresh_began: BTreeMap<u64, Timestamp>,
    /// How many statuses named the guarded pod as blocked by its budget
    /// before the budget was relaxed.
    pub guarded_named: BTreeMap<u64, u32>,
    /// Statuses at RefreshTokens, after the guarded pod was first named and
    /// before its budget was relaxed, that did not name it.
    pub unnamed: Vec<String>,
    /// Rotations in which the budget was relaxed.
    pub relaxed: BTreeSet<u64>,
    /// Rotations whose status named the running Job's pod.
    pub running_job_named: BTreeSet<u64>,
    /// The fewest available pods of Deployment `rolling` (two replicas, no
    /// unavailable allowed) seen during RefreshTokens.
    pub rolling_available_min: Option<i32>,
    /// Every distinct "waiting for" text at RefreshTokens (the first 50).
    pub waiting: Vec<String>,
}

/// A pod that must never be touched: by name, its UID, and until which
/// rotation (none: for good).
#[derive(Clone, Debug)]
struct Untouchable {
    name: String,
    uid: String,
    until: Option<u64>,
}

#[allow(missing_debug_implementations, reason = "holds tasks")]
pub struct Zoo {
    client: kube::Client,
    untouchable: Arc<Mutex<Vec<Untouchable>>>,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Zoo {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn object<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).context("a zoo object")
}

/// A pod template of app `app` running as the zoo's account, with `spec`
/// merged into its spec.
fn template(app: &str, spec: Value) -> Value {
    let mut base = json!({
        "serviceAccountName": ZOO,
        "containers": [{"name": "app", "image": "registry.example/app:1"}],
    });
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), spec) {
        base.extend(extra);
    }
    json!({"metadata": {"labels": {"app": app}}, "spec": base})
}

fn selector(app: &str) -> Value {
    json!({"matchLabels": {"app": app}})
}

fn job(name: &str, outcome: Option<&str>, backoff: i32) -> Value {
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

async fn create<K>(client: &kube::Client, value: Value) -> Result<K>
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

    /// Plays the operator during the rotations of `rotation` (namespace,
    /// name), until the zoo is dropped: see the module's documentation.
    pub fn operate(&mut self, namespace: &str, name: &str) {
        let operator = Operator {
            client: self.client.clone(),
            rotations: Api::namespaced(self.client.clone(), namespace),
            name: name.to_owned(),
            untouchable: self.untouchable.clone(),
            seen: self.seen.clone(),
        };
        self.tasks.push(tokio::spawn(operator.run()));
    }

    /// What the operator saw so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// After the rotation to `version` completed under `restart-pods`:
    /// every pod that held no live token or a fresh one is the same pod
    /// (UID) as before, and Deployment `no-token` was not restarted; no
    /// pod of the zoo still holds a token from before RefreshTokens;
    /// Deployment `rolling` never lost a pod; and [`Zoo::check_named`].
    pub async fn check(&self, version: u64) -> Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ZOO)
            .list(&ListParams::default())
            .await?;
        let uids: BTreeMap<String, String> = pods
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.uid.clone().unwrap_or_default(),
                )
            })
            .collect();
        {
            let mut untouchable = self.untouchable.lock().map_err(poisoned)?;
            let touched: Vec<String> = untouchable
                .iter()
                .filter(|u| uids.get(&u.name) != Some(&u.uid))
                .map(|u| u.name.clone())
                .collect();
            ensure!(
                touched.is_empty(),
                "pods that held no stale token were replaced or deleted: {touched:?}"
            );
            ensure!(
                untouchable.iter().any(|u| u.until == Some(version)),
                "no pod was created after RefreshTokens of {version} began"
            );
            // A pod fresh in this rotation is stale in the next.
            untouchable.retain(|u| u.until.is_none_or(|until| until > version));
        }
        self.check_named(version).await?;
        let seen = self.seen();
        ensure!(
            seen.rolling_available_min.is_none_or(|n| n >= 2),
            "Deployment rolling dropped to {:?} available pods",
            seen.rolling_available_min
        );
        let since = seen.refresh_began[&version];
        // Creation times have one-second precision: a pod created in the
        // second the step began is new if its template was restarted for
        // this rotation.
        let restarted_now = |p: &Pod| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ksa_kube::refresh::RESTART_ANNOTATION))
                == Some(&version.to_string())
        };
        let stale: Vec<String> = pods
            .iter()
            .filter(|p| holds_token(p))
            .filter(|p| {
                p.metadata.creation_timestamp.as_ref().is_none_or(|t| {
                    t.0.as_second() < since.as_second()
                        || (t.0.as_second() == since.as_second() && !restarted_now(p))
                })
            })
            .map(|p| {
                format!(
                    "{} (created {:?}, restarted for {:?})",
                    p.metadata.name.as_deref().unwrap_or_default(),
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ksa_kube::refresh::RESTART_ANNOTATION)),
                )
            })
            .collect();
        ensure!(
            stale.is_empty(),
            "pods still hold tokens from before RefreshTokens of {version} (began {since}): {stale:?}"
        );
        let no_token = Api::<Deployment>::namespaced(self.client.clone(), ZOO)
            .get("no-token")
            .await?;
        let restarted = no_token
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .is_some_and(|a| a.contains_key(ksa_kube::refresh::RESTART_ANNOTATION));
        ensure!(
            !restarted,
            "Deployment no-token was restarted; it holds no token"
        );
        Ok(())
    }

    /// After the rotation to `version` completed, under either policy: no
    /// Job failed but the one made to fail; the status named the pod the
    /// budget blocks in every look until the budget was relaxed, and named
    /// the running Job's pod.
    /// After the rotation to `version`, before the next one starts: waits
    /// until the operator has armed the zoo again (it does on completion:
    /// the budget allows no disruption, a new Job runs) and that Job's pod
    /// is running, so the next rotation finds it holding a stale token. (A
    /// pod created after the next rotation's Sign would hold a fresh token
    /// and never be named.)
    pub async fn ready_for_next(&self, version: u64) -> Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ZOO);
        let job = ListParams::default().labels(&format!("job-name=running-{}", version + 1));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let running =
                pods.list(&job).await?.items.iter().any(|pod| {
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                });
            if running {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the pod of Job running-{} is not running after 90 s",
                version + 1
            );
            tokio::time::sleep(TICK).await;
        }
    }

    pub async fn check_named(&self, version: u64) -> Result<()> {
        let failed = self.failed_jobs().await?;
        ensure!(failed == ["failed"], "Jobs failed: {failed:?}");
        let seen = self.seen();
        ensure!(
            seen.refresh_began.contains_key(&version),
            "RefreshTokens of {version} was not seen"
        );
        ensure!(
            seen.unnamed.is_empty(),
            "statuses did not name the blocked pod before its budget was relaxed: {:?}",
            seen.unnamed
        );
        ensure!(
            seen.guarded_named.get(&version).copied().unwrap_or(0) >= 2
                && seen.relaxed.contains(&version),
            "the pod {GUARDED_PDB} blocks was not named while blocked in rotation {version}: {seen:#?}"
        );
        ensure!(
            seen.running_job_named.contains(&version),
            "the running Job's pod was not named in rotation {version}: {seen:#?}"
        );
        Ok(())
    }

    /// The Jobs of the zoo that failed.
    pub async fn failed_jobs(&self) -> Result<Vec<String>> {
        Ok(Api::<Job>::namespaced(self.client.clone(), ZOO)
            .list(&ListParams::default())
            .await?
            .iter()
            .filter(|j| job_condition(j, "Failed"))
            .filter_map(|j| j.metadata.name.clone())
            .collect())
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> anyhow::Error {
    anyhow::anyhow!("a zoo task panicked")
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn job_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether a pod runs and projects a service-account token.
fn holds_token(pod: &Pod) -> bool {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let projected = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| {
            v.iter().any(|v| {
                v.projected.as_ref().is_some_and(|p| {
                    p.sources
                        .iter()
                        .flatten()
                        .any(|s| s.service_account_token.is_some())
                })
            })
        });
    running && projected && pod.metadata.deletion_timestamp.is_none()
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

/// The Widget controller: keeps [`WIDGET_PODS`] pods of gizmo, replacing
/// any that is deleted (evicted).
async fn play_widget_controller(client: kube::Client, uid: String) {
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
async fn play_kubelet(client: kube::Client) {
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

fn finished(phase: &str, exit_code: i32) -> Value {
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

struct Operator {
    client: kube::Client,
    rotations: Api<KSASigningKeyRotation>,
    name: String,
    untouchable: Arc<Mutex<Vec<Untouchable>>>,
    seen: Arc<Mutex<Seen>>,
}

/// What the operator keeps between looks, per rotation.
#[derive(Default)]
struct Progress {
    guarded_first_named: Option<Instant>,
    latecomer: bool,
    armed_for: u64,
}

impl Operator {
    async fn run(self) {
        let mut progress: BTreeMap<u64, Progress> = BTreeMap::new();
        loop {
            tokio::time::sleep(TICK).await;
            let Ok(rotation) = self.rotations.get(&self.name).await else {
                continue;
            };
            let Some(status) = rotation.status else {
                continue;
            };
            let Ok(state) = status.state() else { continue };
            let version = state.key_version().get();
            let here = progress.entry(version).or_default();
            match state.step() {
                Step::RefreshTokens => {
                    let waiting = status.waiting_for.clone().unwrap_or_default();
                    let began = state.step_started_at();
                    let _ = self.at_refresh(version, &waiting, began, here).await;
                }
                // Ready for the next rotation: the budget blocks again, and
                // another Job runs.
                Step::Completed
                    if here.armed_for < version
                        && state.completed_at().is_some()
                        && self.arm(version).await.is_ok() =>
                {
                    here.armed_for = version;
                }
                _ => {}
            }
        }
    }

    fn note(&self, update: impl FnOnce(&mut Seen)) {
        if let Ok(mut seen) = self.seen.lock() {
            update(&mut seen);
        }
    }

    async fn at_refresh(
        &self,
        version: u64,
        waiting: &str,
        began: Option<Timestamp>,
        progress: &mut Progress,
    ) -> Result<()> {
        let relaxed = self
            .seen
            .lock()
            .map_err(poisoned)?
            .relaxed
            .contains(&version);
        self.note(|seen| {
            if let Some(began) = began {
                seen.refresh_began.insert(version, began);
            }
            if !waiting.is_empty()
                && seen.waiting.len() < 50
                && !seen.waiting.iter().any(|w| w == waiting)
            {
                seen.waiting.push(waiting.to_owned());
            }
        });
        let counted = waiting.contains("bound-token holders to refresh:");
        let names_guarded = waiting.contains(&format!("{ZOO}/guarded-"))
            && waiting.contains(&format!("PDB {GUARDED_PDB} allows 0 disruptions"));
        if !relaxed && counted {
            if names_guarded {
                progress
                    .guarded_first_named
                    .get_or_insert_with(Instant::now);
                self.note(|seen| *seen.guarded_named.entry(version).or_insert(0) += 1);
            } else if progress.guarded_first_named.is_some() {
                self.note(|seen| seen.unnamed.push(waiting.to_owned()));
            }
            if progress
                .guarded_first_named
                .is_some_and(|at| at.elapsed() >= BLOCKED_FOR)
            {
                self.set_budget(0).await?;
                self.note(|seen| {
                    seen.relaxed.insert(version);
                });
            }
        }
        if waiting.contains(&format!("{ZOO}/running-")) && waiting.contains("running Job pod") {
            self.finish_running_jobs().await?;
            self.note(|seen| {
                seen.running_job_named.insert(version);
            });
        }
        if !progress.latecomer
            && let Some(began) = began
            && Timestamp::now().as_second() >= began.as_second() + 2
        {
            let name = format!("latecomer-{version}");
            let pod: Pod = create(
                &self.client,
                json!({"metadata": {"name": name, "labels": {"app": "latecomer"}}, "spec": template("latecomer", json!({}))["spec"]}),
            )
            .await?;
            progress.latecomer = true;
            self.untouchable
                .lock()
                .map_err(poisoned)?
                .push(Untouchable {
                    name,
                    uid: pod.metadata.uid.unwrap_or_default(),
                    until: Some(version),
                });
        }
        let rolling = Api::<Deployment>::namespaced(self.client.clone(), ZOO)
            .get("rolling")
            .await?;
        let available = rolling
            .status
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        self.note(|seen| {
            seen.rolling_available_min = Some(
                seen.rolling_available_min
                    .map_or(available, |m| m.min(available)),
            );
        });
        Ok(())
    }

    async fn set_budget(&self, min_available: i32) -> Result<()> {
        Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ZOO)
            .patch(
                GUARDED_PDB,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"minAvailable": min_available}})),
            )
            .await?;
        Ok(())
    }

    /// Finishes (succeeds) every running Job pod of the zoo labelled to
    /// run: annotated to finish, then marked succeeded, as its kubelet
    /// would once its containers exit 0.
    async fn finish_running_jobs(&self) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ZOO);
        let running = ListParams::default().labels(&format!("{OUTCOME}=run"));
        for pod in pods.list(&running).await? {
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            pods.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {FINISH: "true"}}})),
            )
            .await?;
            pods.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&finished("Succeeded", 0)),
            )
            .await?;
        }
        Ok(())
    }

    /// After the rotation to `version`: the budget allows no disruption
    /// again, and a new Job runs.
    async fn arm(&self, version: u64) -> Result<()> {
        self.set_budget(1).await?;
        let name = format!("running-{}", version + 1);
        match create::<Job>(&self.client, job(&name, Some("run"), 0)).await {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .downcast_ref::<kube::Error>()
                    .is_some_and(|e| matches!(e, kube::Error::Api(s) if s.code == 409)) =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
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

/// The zoo's mix at scale, for the benchmarks: of every ten workloads in
/// [`ZOO`] (one pod each), three Deployments with the default rolling
/// update, one with Recreate, one whose pods hold no token, a StatefulSet
/// with a rolling update, one with OnDelete, a bare ReplicaSet, a
/// ReplicationController and a completed Job; and two DaemonSets (rolling
/// update, OnDelete) on every node. What a template restart refreshes,
/// what only an eviction does, and what holds no token to refresh.
pub mod mix {
    use super::*;

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
            super::create::<DaemonSet>(
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
                        super::create::<Deployment>(client, value).await.map(drop)
                    }
                    Kind::StatefulSet | Kind::StatefulSetOnDelete => {
                        super::create::<StatefulSet>(client, value).await.map(drop)
                    }
                    Kind::ReplicaSet => super::create::<ReplicaSet>(client, value).await.map(drop),
                    Kind::ReplicationController => {
                        super::create::<ReplicationController>(client, value)
                            .await
                            .map(drop)
                    }
                    Kind::Job => super::create::<Job>(client, value).await.map(drop),
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

    /// Whether a pod projects a service-account token.
    pub fn holds_token(pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| {
                v.iter().any(|v| {
                    v.projected.as_ref().is_some_and(|p| {
                        p.sources
                            .iter()
                            .flatten()
                            .any(|s| s.service_account_token.is_some())
                    })
                })
            })
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
            if phase == Some("Running") && holds_token(pod) && old {
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
}
