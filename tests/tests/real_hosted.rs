//! Hosted mode on a real node (issue 31): a user cluster whose
//! kube-apiservers are the two pods of a Deployment of the admin cluster,
//! run by the kubelet of a real node from the control plane's own
//! kube-apiserver binary ([`user_cluster::APISERVER_IMAGE`]), mounting the
//! key Secret `NAME-apiserver-keys` that ksa writes. The admin cluster is
//! the test control plane with kube-controller-manager (its Deployment and
//! ReplicaSet controllers) and kube-scheduler: when ksa's controller
//! restarts the Deployment for a new key set, the roll-out is theirs and
//! the kubelet's; no harness plays it.
//!
//! Each pod has an address of its own on the node's pod network (two
//! replicas on one node cannot share the node's port), which it advertises
//! in the user cluster's `kubernetes` EndpointSlice; the test and ksa reach
//! every pod there, through the node's bridge. The user cluster as a whole
//! is reached as its clients would reach it: through a NodePort Service of
//! the admin cluster (kube-proxy), which the user cluster's kubeconfig
//! Secret names.
//!
//! Throughout the rotation a monitor presents bound tokens of the user
//! cluster (taken before it and during it) to every ready API server pod
//! and through the Service, and asks each pod which key it signs with and
//! which it accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::parse_jwks;
use ksa_core::key::KeySpec;
use ksa_core::rotation::Step;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::{ANNOTATION_KEY_SET, ANNOTATION_KID, LABEL_KEY_VERSION, LABEL_ROTATION};
use ksa_tests::cluster::{create_namespace, create_service_account, request_token};
use ksa_tests::netns::Netns;
use ksa_tests::node::user_cluster::{
    APISERVER_IMAGE, APISERVER_PORT, UserCluster, Verdict, present, subnet_addresses,
};
use ksa_tests::node::{self, RealNode};
use ksa_tests::scenario::{APISERVER_DEPLOYMENT, CLUSTER, NAMESPACE};
use ksa_tests::{
    ApiServerKeys, ControlPlane, Installation, InstanceSpec, Signing, eventually, ksa_binary,
};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

/// The API server pods of the user cluster.
const REPLICAS: usize = 2;
/// The user cluster's issuer.
const USER_ISSUER: &str = "https://user-cluster-1.example";
/// The Secret of the admin cluster holding the user cluster's kubeconfig.
const KUBECONFIG_SECRET: &str = "user-cluster-kubeconfig";
/// Where the user cluster's service account lives.
const USER_APPS: &str = "apps";
/// How long pods may take to start on a loaded machine.
const PODS_WITHIN: Duration = Duration::from_secs(180);

fn key_secret() -> String {
    format!("{CLUSTER}-apiserver-keys")
}

fn certificate_secret() -> String {
    format!("{CLUSTER}-apiserver-certs")
}

/// The user cluster's API server workload: `REPLICAS` pods of the
/// control plane's kube-apiserver, rolled one at a time (a new pod ready
/// before an old one goes), each on the pod network at an address of its
/// own, mounting the key Secret and the certificates' Secret.
fn apiserver_deployment(user: &UserCluster) -> Result<Deployment> {
    let mut args = user.apiserver_args("/etc/kubernetes/pki");
    args.extend([
        "--advertise-address=$(POD_IP)".to_owned(),
        format!("--service-account-issuer={USER_ISSUER}"),
        "--service-account-key-file=/etc/kubernetes/keys/sa.pub".to_owned(),
        "--service-account-signing-key-file=/etc/kubernetes/keys/sa.key".to_owned(),
        "--cert-dir=/tmp/kube-apiserver".to_owned(),
    ]);
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": APISERVER_DEPLOYMENT,
            "labels": {LABEL_ROTATION: CLUSTER},
        },
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": APISERVER_DEPLOYMENT}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": {"app": APISERVER_DEPLOYMENT}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                    },
                    "containers": [{
                        "name": "kube-apiserver",
                        "image": APISERVER_IMAGE,
                        "imagePullPolicy": "Never",
                        "args": args,
                        "env": [{
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        }],
                        "ports": [{"name": "https", "containerPort": APISERVER_PORT}],
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": APISERVER_PORT, "scheme": "HTTPS"},
                            "periodSeconds": 1,
                            "timeoutSeconds": 2,
                            "failureThreshold": 3,
                        },
                        "volumeMounts": [
                            {"name": "keys", "mountPath": "/etc/kubernetes/keys", "readOnly": true},
                            {"name": "pki", "mountPath": "/etc/kubernetes/pki", "readOnly": true},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }],
                    "volumes": [
                        {"name": "keys", "secret": {"secretName": key_secret(), "defaultMode": 0o440}},
                        {"name": "pki", "secret": {"secretName": certificate_secret(), "defaultMode": 0o440}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }))?)
}

/// The Service through which the user cluster's clients reach its API
/// servers: a NodePort of the admin cluster.
fn apiserver_service() -> Result<Service> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": APISERVER_DEPLOYMENT},
        "spec": {
            "type": "NodePort",
            "selector": {"app": APISERVER_DEPLOYMENT},
            "ports": [{"name": "https", "port": 443, "targetPort": APISERVER_PORT}],
        },
    }))?)
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(key, value)| ((*key).to_owned(), ByteString(value.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// An API server pod that is ready and not going away.
#[derive(Debug, Clone)]
struct ReadyPod {
    uid: String,
    name: String,
    /// `https://POD_IP:PORT`.
    url: String,
    replica_set: String,
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn ready_pods(pods: &Api<Pod>) -> Result<Vec<ReadyPod>> {
    let list = pods
        .list(&ListParams::default().labels(&format!("app={APISERVER_DEPLOYMENT}")))
        .await?;
    Ok(list
        .into_iter()
        .filter(is_ready)
        .filter_map(|pod| {
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            let replica_set = pod
                .metadata
                .owner_references
                .as_ref()?
                .iter()
                .find(|o| o.kind == "ReplicaSet")?
                .name
                .clone();
            Some(ReadyPod {
                uid: pod.metadata.uid.clone()?,
                name: pod.metadata.name.clone()?,
                url: format!("https://{ip}:{APISERVER_PORT}"),
                replica_set,
            })
        })
        .collect())
}

/// What one API server pod serves: the kid of a token it issues, and the
/// kids of its `/openid/v1/jwks` (sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Serves {
    name: String,
    replica_set: String,
    signs: String,
    accepts: Vec<String>,
}

async fn serves(user: &UserCluster, pod: &ReadyPod) -> Result<Serves> {
    let client = user.client(&pod.url).await?;
    let token = request_token(&client, USER_APPS, "app", Vec::new(), 600).await?;
    let signs = ksa_core::token::decode(&token)?
        .header
        .kid
        .unwrap_or_default();
    let jwks = client
        .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new())?)
        .await?;
    let mut accepts: Vec<String> = parse_jwks(&jwks)?
        .into_iter()
        .map(|k| k.kid.as_str().to_owned())
        .collect();
    accepts.sort();
    Ok(Serves {
        name: pod.name.clone(),
        replica_set: pod.replica_set.clone(),
        signs,
        accepts,
    })
}

/// The rotation's step (none before it exists) and the key versions whose
/// tokens must be accepted now: the confirmed public key versions, and
/// from Retire on only the signing one (as `ksa_tests::Prober` reckons);
/// before the rotation, key version 1.
async fn protected(rotations: &Api<KSASigningKeyRotation>) -> Result<(Option<Step>, Vec<u64>)> {
    let Some(status) = rotations.get_opt(CLUSTER).await?.and_then(|r| r.status) else {
        return Ok((None, vec![1]));
    };
    let versions = if status.step == Step::Retire {
        vec![status.key_version]
    } else {
        status.public_key_versions.clone()
    };
    Ok((Some(status.step), versions))
}

/// Learns kid -> key version from the key store's Secrets.
async fn learn_kids(secrets: &Api<Secret>, kids: &mut BTreeMap<String, u64>) {
    let Ok(list) = secrets
        .list(&ListParams::default().labels(LABEL_KEY_VERSION))
        .await
    else {
        return;
    };
    for secret in list {
        let version = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_KEY_VERSION))
            .and_then(|v| v.parse().ok());
        let kid = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_KID))
            .cloned();
        if let (Some(version), Some(kid)) = (version, kid) {
            kids.insert(kid, version);
        }
    }
}

/// What the monitor saw.
#[derive(Debug, Default)]
struct Monitored {
    /// Tokens presented, by verdict.
    presentations: u64,
    accepted: u64,
    rejected: u64,
    unavailable: u64,
    /// Of the rejected, those of a key version the rotation no longer
    /// protected when they were presented (key 1 once Retire began).
    rejected_retired: u64,
    /// Rejected tokens that had to be accepted, described.
    wrongly_rejected: Vec<String>,
    tokens_issued: u64,
    /// What each ready pod served, by pod UID (asked once: a pod keeps its
    /// key files for its life).
    pods: BTreeMap<String, Serves>,
    /// Pods that were ready and could not be asked, by UID.
    unasked: BTreeSet<String>,
    /// Each round: the rotation's step and the UIDs of the ready pods.
    rounds: Vec<(Option<Step>, Vec<String>)>,
}

/// One round of the monitor: the ready pods asked what they serve, a
/// fresh token taken through the Service, every token held presented to
/// every ready pod and through the Service.
struct Monitor {
    user: Arc<UserCluster>,
    service_url: String,
    service_client: kube::Client,
    bearer: reqwest::Client,
    pods: Api<Pod>,
    rotations: Api<KSASigningKeyRotation>,
    secrets: Api<Secret>,
    /// Tokens taken before the rotation, presented throughout.
    early: Vec<String>,
}

impl Monitor {
    async fn round(
        &self,
        recent: &mut Vec<String>,
        kids: &mut BTreeMap<String, u64>,
        seen: &Mutex<Monitored>,
    ) -> Result<()> {
        let (step, _) = protected(&self.rotations).await?;
        let ready = ready_pods(&self.pods).await?;
        for pod in &ready {
            let known = seen
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .pods
                .contains_key(&pod.uid);
            if known {
                continue;
            }
            let asked = serves(&self.user, pod).await;
            let mut seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            match asked {
                Ok(serves) => {
                    seen.unasked.remove(&pod.uid);
                    seen.pods.insert(pod.uid.clone(), serves);
                }
                Err(error) => {
                    eprintln!("monitor: {} could not be asked: {error:#}", pod.name);
                    seen.unasked.insert(pod.uid.clone());
                }
            }
        }
        seen.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .rounds
            .push((step, ready.iter().map(|p| p.uid.clone()).collect()));
        match request_token(&self.service_client, USER_APPS, "app", Vec::new(), 3600).await {
            Ok(token) => {
                recent.push(token);
                if recent.len() > 4 {
                    recent.remove(0);
                }
                seen.lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .tokens_issued += 1;
            }
            Err(error) => eprintln!("monitor: TokenRequest through the Service: {error:#}"),
        }
        learn_kids(&self.secrets, kids).await;
        let targets: Vec<String> = ready
            .iter()
            .map(|p| p.url.clone())
            .chain([self.service_url.clone()])
            .collect();
        for token in self.early.iter().chain(recent.iter()) {
            let (_, before) = protected(&self.rotations).await?;
            let kid = ksa_core::token::decode(token)?
                .header
                .kid
                .unwrap_or_default();
            let version = kids.get(&kid).copied();
            let verdicts = futures::future::join_all(
                targets
                    .iter()
                    .map(|target| present(&self.bearer, target, token)),
            )
            .await;
            let rejected_by: Vec<&str> = targets
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| **v == Verdict::Rejected)
                .map(|(t, _)| t.as_str())
                .collect();
            let must_accept = version.is_some_and(|v| before.contains(&v));
            let mut wrongly = None;
            if must_accept && !rejected_by.is_empty() {
                // Still protected once answered: the rotation may have
                // moved on meanwhile.
                let (step, after) = protected(&self.rotations).await?;
                if version.is_some_and(|v| after.contains(&v)) {
                    wrongly = Some(format!(
                        "a token of key version {version:?} rejected by {} at {step:?}, while \
                         versions {after:?} are accepted",
                        rejected_by.join(" and ")
                    ));
                }
            }
            let mut seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            for verdict in verdicts {
                seen.presentations += 1;
                match verdict {
                    Verdict::Accepted => seen.accepted += 1,
                    Verdict::Rejected => {
                        seen.rejected += 1;
                        if !must_accept {
                            seen.rejected_retired += 1;
                        }
                    }
                    Verdict::Unavailable => seen.unavailable += 1,
                }
            }
            if let Some(wrongly) = wrongly {
                eprintln!("monitor: {wrongly}");
                seen.wrongly_rejected.push(wrongly);
            }
        }
        Ok(())
    }

    /// Runs rounds until `stop`.
    fn spawn(
        self,
        seen: Arc<Mutex<Monitored>>,
        stop: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut recent = Vec::new();
            let mut kids = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                if let Err(error) = self.round(&mut recent, &mut kids, &seen).await {
                    eprintln!("monitor: {error:#}");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    }
}

fn lock(seen: &Mutex<Monitored>) -> Result<std::sync::MutexGuard<'_, Monitored>> {
    seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_deployment_controller_and_the_kubelet_roll_a_hosted_api_server_through_a_key_rotation()
-> Result<()> {
    if let Netns::Ran(outcome) = node::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    let aws = AwsLc::new();
    // The admin cluster: one kube-apiserver, kube-controller-manager
    // (Deployments, ReplicaSets), kube-scheduler and a real node.
    let admin_key = aws.generate(KeySpec::Rsa2048)?;
    let spec = InstanceSpec::new(Signing::KeyFiles(ApiServerKeys::single(admin_key)));
    let mut plane = ControlPlane::start_for_nodes(spec, Vec::new()).await?;
    plane.start_controller_manager()?;
    plane.start_scheduler(&[])?;
    let node = RealNode::start(&plane, 0).await?;
    node.import_control_plane_image("kube-apiserver")?;
    let admin = plane.client().await?;

    // The user cluster: its etcd, and certificates that name every address
    // one of its API server pods may have, and the node's.
    let mut addresses = subnet_addresses(&node.pod_cidr)?;
    addresses.push(node.address.into());
    let user = Arc::new(UserCluster::start(plane.dir(), &addresses)?);

    // ksa installed in the admin cluster: the user cluster's key imported
    // as version 1, written into the key Secret its API servers mount.
    let first = aws.generate(KeySpec::Rsa2048)?;
    let mut installation =
        Installation::install(&admin, NAMESPACE, CLUSTER, &first, plane.dir()).await?;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let files = user.certificate_files();
    let data: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(name, pem)| (*name, pem.as_bytes()))
        .collect();
    secrets
        .create(
            &PostParams::default(),
            &secret(&certificate_secret(), &data),
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NAMESPACE);
    deployments
        .create(&PostParams::default(), &apiserver_deployment(&user)?)
        .await?;
    let service = Api::<Service>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &apiserver_service()?)
        .await?;
    let node_port = service
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .context("the Service was given no node port")?;
    let service_url = format!("https://{}:{node_port}", node.address);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    let before = eventually(
        "the user cluster's API server pods ready",
        PODS_WITHIN,
        || async {
            let ready = ready_pods(&pods).await?;
            ensure!(ready.len() == REPLICAS, "{} ready: {ready:?}", ready.len());
            Ok(ready)
        },
    )
    .await?;
    let user_client = user.client(&service_url).await?;
    eventually(
        "the user cluster answers through the Service",
        PODS_WITHIN,
        || async {
            create_namespace(&user_client, USER_APPS).await?;
            Ok(())
        },
    )
    .await?;
    create_service_account(&user_client, USER_APPS, "app").await?;
    eprintln!(
        "the user cluster's {REPLICAS} API server pods ready on {} in {:.1?}: {}",
        node.name,
        clock.elapsed(),
        before
            .iter()
            .map(|p| format!("{} at {}", p.name, p.url))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The controller reaches the user cluster through its kubeconfig
    // Secret, at the Service.
    secrets
        .create(
            &PostParams::default(),
            &secret(
                KUBECONFIG_SECRET,
                &[("value", user.kubeconfig(&service_url).as_bytes())],
            ),
        )
        .await?;
    installation.start_controller(&plane.controller_kubeconfig_path())?;

    // Tokens taken before the rotation (key 1), presented throughout.
    let mut early = Vec::new();
    for _ in 0..2 {
        early.push(request_token(&user_client, USER_APPS, "app", Vec::new(), 3600).await?);
    }
    let seen = Arc::new(Mutex::new(Monitored::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(admin.clone(), NAMESPACE);
    let monitor = Monitor {
        user: user.clone(),
        service_url: service_url.clone(),
        service_client: user_client.clone(),
        bearer: user.bearer_client()?,
        pods: pods.clone(),
        rotations: rotations.clone(),
        secrets: secrets.clone(),
        early,
    }
    .spawn(seen.clone(), stop.clone());

    // The rotation, by the README's command.
    let config = plane.dir().join("user-cluster.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: UserCluster\nname: {CLUSTER}\ngkeOnPremVersion: 1.16.0-gke.669\n\
             enableAdvancedCluster: false\nksaSigningKeyRotation:\n  kubeconfigSecret: \
             {KUBECONFIG_SECRET}\n  apiServerWorkload: {{kind: Deployment, name: \
             {APISERVER_DEPLOYMENT}, container: kube-apiserver}}\n  trustLeadTimeSeconds: 5\n"
        ),
    )?;
    let started = Instant::now();
    let rotate = tokio::process::Command::new(ksa_binary("ksa")?)
        .args(["update", "credentials", "ksa-signing-key", "rotate"])
        .args(["--skip-prompt", "--wait", "--timeout", "10m"])
        .arg("--config")
        .arg(&config)
        .arg("--kubeconfig")
        .arg(plane.kubeconfig_path())
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    let rotation_took = started.elapsed();
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&rotate.stdout),
        String::from_utf8_lossy(&rotate.stderr)
    );
    ensure!(
        rotate.status.success(),
        "the rotation failed ({}); the controller's log:\n{}\nthe user cluster's etcd:\n{}",
        rotate.status,
        installation.controller_log(),
        user.etcd_log()
    );
    let second = rotations.get(CLUSTER).await?.status.context("no status")?;
    ensure!(
        second.step == Step::Completed && second.key_version == 2,
        "{second:?}"
    );
    let mut kids = BTreeMap::new();
    learn_kids(&secrets, &mut kids).await;
    let new_kid = kids
        .iter()
        .find(|(_, v)| **v == 2)
        .map(|(k, _)| k.clone())
        .context("no kid of key version 2")?;
    let old_kid = first.kid().as_str().to_owned();

    // The monitor goes on until it has seen the API servers of the
    // completed rotation.
    eventually(
        "the monitor sees the completed rotation's API servers",
        PODS_WITHIN,
        || async {
            let seen = lock(&seen)?;
            let last = seen.rounds.last().context("no round")?;
            ensure!(
                last.0 == Some(Step::Completed)
                    && last.1.len() == REPLICAS
                    && last.1.iter().all(|uid| seen.pods.contains_key(uid)),
                "last round: {last:?}"
            );
            Ok(())
        },
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    monitor.await?;
    let seen = std::mem::take(&mut *lock(&seen)?);
    eprintln!(
        "presentations: {} ({} accepted, {} rejected ({} of them of the retired key, once \
         Retire began), {} unanswered) of {} tokens taken during the rotation and 2 before, in {} \
         rounds; the rotation took {rotation_took:.1?}, {:.1?} in all",
        seen.presentations,
        seen.accepted,
        seen.rejected,
        seen.rejected_retired,
        seen.unavailable,
        seen.tokens_issued,
        seen.rounds.len(),
        clock.elapsed()
    );
    ensure!(
        seen.wrongly_rejected.is_empty(),
        "valid tokens were rejected: {:#?}",
        seen.wrongly_rejected
    );
    ensure!(seen.presentations > 0 && seen.accepted > 0, "{seen:?}");

    // What each pod served, by the key set it was started with.
    let mut by_set: BTreeMap<(String, Vec<String>), Vec<&Serves>> = BTreeMap::new();
    for serves in seen.pods.values() {
        by_set
            .entry((serves.signs.clone(), serves.accepts.clone()))
            .or_default()
            .push(serves);
    }
    for ((signs, accepts), pods) in &by_set {
        eprintln!(
            "signs {signs}, accepts {accepts:?}: {}",
            pods.iter()
                .map(|p| format!("{} ({})", p.name, p.replica_set))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let both = {
        let mut both = vec![old_kid.clone(), new_kid.clone()];
        both.sort();
        both
    };
    let sets = [
        ("before", &old_kid, vec![old_kid.clone()]),
        ("Trust", &old_kid, both.clone()),
        ("Sign", &new_kid, both.clone()),
        ("Retire", &new_kid, vec![new_kid.clone()]),
    ];
    let mut replica_sets = BTreeSet::new();
    for (step, signs, accepts) in &sets {
        let pods = by_set
            .get(&((*signs).clone(), accepts.clone()))
            .with_context(|| format!("no pod served the key set of {step}: {by_set:?}"))?;
        // Both replicas, from one ReplicaSet of their own.
        ensure!(
            pods.len() >= REPLICAS,
            "{} pods served the key set of {step}: {pods:?}",
            pods.len()
        );
        let of: BTreeSet<&String> = pods.iter().map(|p| &p.replica_set).collect();
        ensure!(of.len() == 1, "the pods of {step} came from {of:?}");
        replica_sets.extend(of);
    }
    ensure!(
        replica_sets.len() == sets.len(),
        "{replica_sets:?}: a ReplicaSet for each key set"
    );
    ensure!(
        by_set.len() == sets.len(),
        "a pod served a key set of no step: {by_set:?}"
    );
    // The ReplicaSets are the Deployment controller's, of the Deployment;
    // the last one's template carries the key set ksa restarted it for.
    let owned: BTreeMap<String, ReplicaSet> =
        Api::<ReplicaSet>::namespaced(admin.clone(), NAMESPACE)
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|rs| {
                rs.metadata.owner_references.as_ref().is_some_and(|o| {
                    o.iter()
                        .any(|o| o.kind == "Deployment" && o.name == APISERVER_DEPLOYMENT)
                })
            })
            .filter_map(|rs| Some((rs.metadata.name.clone()?, rs)))
            .collect();
    for name in &replica_sets {
        ensure!(
            owned.contains_key(*name),
            "ReplicaSet {name} is not the Deployment's"
        );
    }
    let retire_set = &by_set[&(new_kid.clone(), vec![new_kid.clone()])][0].replica_set;
    ensure!(
        owned[retire_set]
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .is_some_and(|a| a.contains_key(ANNOTATION_KEY_SET)),
        "the last ReplicaSet's template has no {ANNOTATION_KEY_SET} annotation"
    );
    // Every pod the rotation ended with is new.
    let last = seen.rounds.last().context("no round")?;
    for uid in &last.1 {
        ensure!(
            !before.iter().any(|p| &p.uid == uid),
            "pod {uid} predates the rotation"
        );
    }

    // From Sign's confirmation on, every ready API server signed with the
    // new key: each served it before Retire began.
    let mut after_sign = 0;
    for (step, ready) in &seen.rounds {
        let Some(step) = step else { continue };
        if *step < Step::RefreshTokens {
            continue;
        }
        for uid in ready {
            if let Some(serves) = seen.pods.get(uid) {
                ensure!(
                    serves.signs == new_kid,
                    "at {step}, {} signed with {}",
                    serves.name,
                    serves.signs
                );
                if *step == Step::Completed {
                    ensure!(
                        serves.accepts == [new_kid.clone()],
                        "once completed, {} accepts {:?}",
                        serves.name,
                        serves.accepts
                    );
                }
            }
        }
        if *step < Step::Completed {
            after_sign += 1;
        }
    }
    ensure!(
        after_sign > 0,
        "the monitor saw no round between Sign's confirmation and the end"
    );
    ensure!(
        seen.unasked.is_empty(),
        "ready pods that could not be asked what they serve: {:?}",
        seen.unasked
    );
    eprintln!(
        "{} API server pods in {} ReplicaSets; {:.1?} in all",
        seen.pods.len(),
        replica_sets.len(),
        clock.elapsed()
    );
    drop(node);
    Ok(())
}
