//! A fleet (issue 34): one admin cluster and several hosted user
//! clusters, driven by ONE `ksa-controller` watching the admin cluster.
//!
//! The admin cluster is a control plane of its own (etcd and one
//! kube-apiserver, no workloads) holding, for each user cluster, its
//! namespace (named after the cluster), its `KSASigningKeyRotation`, its
//! key store and API server key Secret (`NAME-apiserver-keys`), and its
//! kubeconfig Secret (`NAME-kubeconfig`, the user cluster's admin
//! credentials, inline), which the rotation names
//! (`spec.cluster.kubeconfigSecret`). Each user cluster is its own control
//! plane (its own etcd and kube-apiserver on loopback, and, when it has
//! workloads, kube-controller-manager) signing with its own key; the
//! harness plays each one's hosted roll-out ([`HostedApiServer`]): it
//! watches that cluster's key Secret in the admin cluster and restarts
//! that cluster's API server. Optionally a [`Prober`] per cluster presents
//! that cluster's tokens to its API server throughout, reading the
//! rotation from the admin cluster.
//!
//! Rotations are started as an operator starts them: `ksa update
//! credentials ksa-signing-key rotate` with each cluster's config (which
//! names its kubeconfig Secret) and the admin cluster's kubeconfig, all at
//! once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey, parse_pem};
use ksa_kube::api::{KSASigningKeyRotation, RotationStatus};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use tokio::sync::Mutex;

use crate::cluster::{create_namespace, create_service_account};
use crate::scenario::{APPS, create_workload};
use crate::{
    ApiServerKeys, ControlPlane, HostedApiServer, Installation, ProbeTarget, Prober,
    RotationSource, ksa_binary, workload,
};

/// The namespace (in a user cluster) of the workload a
/// PodDisruptionBudget guards ([`UserCluster::guard_with_pdb`]).
pub const GUARDED: &str = "guarded";
/// Its bare ReplicaSet (refreshed by eviction under restart-pods).
pub const GUARDED_REPLICA_SET: &str = "guarded";
/// The PodDisruptionBudget that allows no disruption of it.
pub const GUARDED_PDB: &str = "guarded-pdb";

/// What a fleet is made of.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// How many user clusters.
    pub clusters: usize,
    /// Whether each user cluster runs kube-controller-manager and the
    /// scenario's workload (service account `apps/app`, its legacy token
    /// Secret `app-token`, Deployment `web`), for its rotation to refresh.
    pub workloads: bool,
    /// Whether a [`Prober`] per cluster presents its tokens throughout.
    pub probers: bool,
    /// Extra flags of the admin cluster's kube-apiserver (an audit log).
    pub admin_flags: Vec<String>,
    /// How many user clusters start at a time (each kube-apiserver takes
    /// seconds of CPU to start).
    pub start_concurrency: usize,
}

impl FleetOptions {
    /// `clusters` user clusters with workloads and probers.
    pub fn new(clusters: usize) -> FleetOptions {
        FleetOptions {
            clusters,
            workloads: true,
            probers: true,
            admin_flags: Vec::new(),
            start_concurrency: 3,
        }
    }
}

/// One hosted user cluster of the fleet.
#[allow(missing_debug_implementations, reason = "holds running processes")]
pub struct UserCluster {
    /// The cluster's name: its rotation's, and its namespace's in the
    /// admin cluster.
    pub name: String,
    pub plane: Arc<Mutex<ControlPlane>>,
    /// The user cluster's admin client.
    pub client: kube::Client,
    /// The key it signs with before its first rotation.
    pub first_key: PrivateKey,
    /// Its `ksa` config file (names its kubeconfig Secret).
    pub config: PathBuf,
    pub prober: Option<Prober>,
    _hosted: HostedApiServer,
}

/// The admin cluster, its user clusters and the one controller.
#[allow(missing_debug_implementations, reason = "holds running processes")]
pub struct Fleet {
    pub admin: Arc<Mutex<ControlPlane>>,
    pub admin_client: kube::Client,
    /// The admin cluster's admin kubeconfig, which `ksa` is given.
    pub admin_kubeconfig: PathBuf,
    /// The one controller.
    pub installation: Installation,
    pub clusters: Vec<UserCluster>,
}

/// The name of user cluster `index` (from 1): `user-cluster-N`.
pub fn cluster_name(index: usize) -> String {
    format!("user-cluster-{index}")
}

/// The kubeconfig Secret of cluster `name` in its admin namespace.
pub fn kubeconfig_secret(name: &str) -> String {
    format!("{name}-kubeconfig")
}

/// A user cluster's control plane, before it joins the admin cluster.
struct Started {
    name: String,
    plane: ControlPlane,
    client: kube::Client,
    key: PrivateKey,
}

async fn start_user_cluster(name: String, workloads: bool) -> Result<Started> {
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let mut plane = ControlPlane::start(ApiServerKeys::single(key.clone()))
        .await
        .with_context(|| format!("starting user cluster {name}"))?;
    let client = plane.client().await?;
    if workloads {
        plane.start_controller_manager()?;
        create_workload(&client)
            .await
            .with_context(|| format!("the workload of user cluster {name}"))?;
    }
    Ok(Started {
        name,
        plane,
        client,
        key,
    })
}

impl Fleet {
    /// Starts the admin cluster and `options.clusters` user clusters,
    /// installs ksa for each (namespace, grants, key store, key Secret,
    /// kubeconfig Secret, config file), starts the one controller and each
    /// cluster's hosted roll-out (and prober).
    pub async fn start(options: FleetOptions) -> Result<Fleet> {
        ensure!(
            options.clusters > 0,
            "a fleet has at least one user cluster"
        );
        let started = Instant::now();
        let admin_key = AwsLc::new().generate(KeySpec::Rsa2048)?;
        let admin = ControlPlane::start_with_flags(
            ApiServerKeys::single(admin_key),
            options.admin_flags.clone(),
        )
        .await
        .context("starting the admin cluster")?;
        let admin_client = admin.client().await?;
        let admin_kubeconfig = admin.kubeconfig_path();
        let workloads = options.workloads;
        let mut planes: Vec<Started> = futures::stream::iter(1..=options.clusters)
            .map(|i| start_user_cluster(cluster_name(i), workloads))
            .buffer_unordered(options.start_concurrency.max(1))
            .try_collect()
            .await?;
        planes.sort_by_key(|p| {
            p.name
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
        });
        eprintln!(
            "fleet: admin cluster and {} user clusters up in {:.1?}",
            planes.len(),
            started.elapsed()
        );
        let mut installation = None;
        let mut joined = Vec::new();
        for Started {
            name,
            plane,
            client,
            key,
        } in planes
        {
            let installed =
                Installation::install(&admin_client, &name, &name, &key, admin.dir()).await?;
            if installation.is_none() {
                installation = Some(installed);
            }
            let kubeconfig = std::fs::read(plane.kubeconfig_path())?;
            Api::<Secret>::namespaced(admin_client.clone(), &name)
                .create(
                    &PostParams::default(),
                    &Secret {
                        metadata: ObjectMeta {
                            name: Some(kubeconfig_secret(&name)),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([(
                            "value".to_owned(),
                            ByteString(kubeconfig),
                        )])),
                        ..Secret::default()
                    },
                )
                .await
                .with_context(|| format!("the kubeconfig Secret of {name}"))?;
            let config = admin.dir().join(format!("{name}.yaml"));
            std::fs::write(
                &config,
                format!(
                    "apiVersion: v1\nkind: UserCluster\nname: {name}\n\
                     gkeOnPremVersion: 1.16.0-gke.669\nenableAdvancedCluster: false\n\
                     ksaSigningKeyRotation:\n  kubeconfigSecret: {}\n",
                    kubeconfig_secret(&name)
                ),
            )?;
            joined.push((name, plane, client, key, config));
        }
        let mut installation = installation.context("no user cluster")?;
        installation.start_controller(&admin.controller_kubeconfig_path())?;
        let mut clusters = Vec::new();
        for (name, plane, client, first_key, config) in joined {
            let instances = plane.instance_clients().await?;
            let plane = Arc::new(Mutex::new(plane));
            let hosted = HostedApiServer::spawn(
                plane.clone(),
                admin_client.clone(),
                &name,
                &format!("{name}-apiserver-keys"),
                None,
            );
            let prober = (options.probers && options.workloads).then(|| {
                Prober::spawn_with_admin(
                    client.clone(),
                    admin_client.clone(),
                    instances,
                    ProbeTarget {
                        namespace: APPS.into(),
                        service_account: "app".into(),
                        legacy_secret: "app-token".into(),
                        rotation: RotationSource::Resource {
                            namespace: name.clone(),
                            name: name.clone(),
                        },
                    },
                )
            });
            clusters.push(UserCluster {
                name,
                plane,
                client,
                first_key,
                config,
                prober,
                _hosted: hosted,
            });
        }
        eprintln!("fleet: ready in {:.1?}", started.elapsed());
        Ok(Fleet {
            admin: Arc::new(Mutex::new(admin)),
            admin_client,
            admin_kubeconfig,
            installation,
            clusters,
        })
    }

    /// Starts every cluster's rotation at once, as an operator would:
    /// `ksa update credentials ksa-signing-key rotate --skip-prompt` with
    /// each cluster's config, all running together; returns once each has
    /// succeeded, or names those that failed and why.
    pub async fn rotate_all(&self) -> Result<()> {
        let ksa = ksa_binary("ksa")?;
        let runs = self.clusters.iter().map(|cluster| {
            let mut command = tokio::process::Command::new(&ksa);
            command
                .args([
                    "update",
                    "credentials",
                    "ksa-signing-key",
                    "rotate",
                    "--skip-prompt",
                ])
                .arg("--config")
                .arg(&cluster.config)
                .arg("--kubeconfig")
                .arg(&self.admin_kubeconfig)
                .stdin(std::process::Stdio::null());
            async move { (cluster.name.clone(), command.output().await) }
        });
        let mut failed = Vec::new();
        for (name, output) in futures::future::join_all(runs).await {
            match output {
                Ok(output) if output.status.success() => {}
                Ok(output) => failed.push(format!(
                    "{name}: {} {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )),
                Err(error) => failed.push(format!("{name}: {error}")),
            }
        }
        ensure!(
            failed.is_empty(),
            "ksa rotate failed: {}",
            failed.join("; ")
        );
        Ok(())
    }

    /// The rotation resource of cluster `name`.
    pub async fn rotation(&self, name: &str) -> Result<KSASigningKeyRotation> {
        Ok(
            Api::<KSASigningKeyRotation>::namespaced(self.admin_client.clone(), name)
                .get(name)
                .await?,
        )
    }

    /// The status of cluster `name`'s rotation.
    pub async fn status(&self, name: &str) -> Result<RotationStatus> {
        self.rotation(name)
            .await?
            .status
            .with_context(|| format!("{name} has no status yet"))
    }

    /// Every operation lock (`*-operation-lock` Lease) in the admin
    /// cluster: (namespace, name, holder).
    pub async fn locks(&self) -> Result<Vec<(String, String, String)>> {
        Ok(Api::<Lease>::all(self.admin_client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|l| {
                l.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.ends_with("-operation-lock"))
            })
            .map(|l| {
                (
                    l.metadata.namespace.unwrap_or_default(),
                    l.metadata.name.unwrap_or_default(),
                    l.spec.and_then(|s| s.holder_identity).unwrap_or_default(),
                )
            })
            .collect())
    }

    /// The kid of the signing key in cluster `name`'s API server key
    /// Secret (in the admin cluster).
    pub async fn published_signing_kid(&self, name: &str) -> Result<String> {
        let secret = Api::<Secret>::namespaced(self.admin_client.clone(), name)
            .get(&format!("{name}-apiserver-keys"))
            .await?;
        let pem = secret
            .data
            .as_ref()
            .and_then(|d| d.get("sa.key"))
            .context("no sa.key")?;
        let keys = parse_pem(&pem.0)?;
        let key = keys.private_keys().next().context("no private key")?;
        Ok(key.kid().as_str().to_owned())
    }

    /// The controller's log.
    pub fn controller_log(&self) -> String {
        self.installation.controller_log()
    }
}

impl UserCluster {
    /// The kid of the key this cluster's API server signs with now.
    pub async fn running_signing_kid(&self) -> Option<String> {
        self.plane
            .lock()
            .await
            .keys()
            .map(|k| k.signing.kid().as_str().to_owned())
    }

    /// A workload whose refresh a PodDisruptionBudget blocks: on one node
    /// kwok simulates (with kube-scheduler), a bare ReplicaSet of one pod
    /// (restart-pods refreshes it by eviction) in namespace [`GUARDED`],
    /// and a PDB with `minAvailable: 1` over it. Returns once the pod runs
    /// and the disruption controller has counted it (the PDB allows 0
    /// disruptions). Needs the cluster's kube-controller-manager
    /// ([`FleetOptions::workloads`]).
    pub async fn guard_with_pdb(&self) -> Result<()> {
        self.plane.lock().await.simulate_nodes(1, &[]).await?;
        let client = &self.client;
        create_namespace(client, GUARDED).await?;
        create_service_account(client, GUARDED, "robot").await?;
        let replica_set: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": GUARDED_REPLICA_SET},
            "spec": {
                "replicas": 1,
                "selector": workload::selector(GUARDED_REPLICA_SET),
                "template": workload::template(GUARDED_REPLICA_SET, "robot"),
            },
        }))?;
        Api::<ReplicaSet>::namespaced(client.clone(), GUARDED)
            .create(&PostParams::default(), &replica_set)
            .await?;
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": GUARDED_PDB},
            "spec": {"minAvailable": 1, "selector": workload::selector(GUARDED_REPLICA_SET)},
        }))?;
        Api::<PodDisruptionBudget>::namespaced(client.clone(), GUARDED)
            .create(&PostParams::default(), &pdb)
            .await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), GUARDED);
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), GUARDED);
        crate::eventually(
            &format!("{}: the guarded pod runs and its PDB counts it", self.name),
            Duration::from_secs(120),
            || async {
                let running = pods
                    .list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count();
                let status = pdbs.get(GUARDED_PDB).await?.status.unwrap_or_default();
                ensure!(
                    running == 1 && status.current_healthy == 1 && status.disruptions_allowed == 0,
                    "running pods {running}, PDB healthy {} allowing {}",
                    status.current_healthy,
                    status.disruptions_allowed
                );
                Ok(())
            },
        )
        .await
    }

    /// Deletes the PodDisruptionBudget of [`UserCluster::guard_with_pdb`],
    /// as an operator lets the refresh go on.
    pub async fn remove_pdb(&self) -> Result<()> {
        Api::<PodDisruptionBudget>::namespaced(self.client.clone(), GUARDED)
            .delete(GUARDED_PDB, &Default::default())
            .await?;
        Ok(())
    }
}
