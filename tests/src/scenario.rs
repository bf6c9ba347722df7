//! A whole cluster to rotate, shared by the end-to-end tests and the demo:
//! the control plane (with kube-controller-manager; one kube-apiserver, or
//! three for the tests), ksa installed with its controller running, the
//! harness playing the hosted API server roll-out (of the key Secret and,
//! when asked, of the API server workload's issuer args), and a workload:
//! a ServiceAccount, its legacy token Secret and a Deployment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Secret, SecretVolumeSource, Volume};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use tokio::sync::Mutex;

use crate::cluster::{create_namespace, create_service_account, request_token, review_token};
use crate::hosted::create_apiserver_deployment;
use crate::workload;
use crate::{
    ApiServerKeys, ApiServerWorkload, ControlPlane, HostedApiServer, Installation, ProbeTarget,
    Prober, RotationSource, ksa_binary,
};

/// The user cluster's name (and the rotation resource's).
pub const CLUSTER: &str = "user-cluster-1";
/// Its namespace in the admin cluster.
pub const NAMESPACE: &str = "user-cluster-1";
/// Where the workload lives.
pub const APPS: &str = "apps";
/// The API server workload's Deployment in [`NAMESPACE`], when the
/// scenario has one ([`Scenario::start_ha_with_apiserver_workload`]).
pub const APISERVER_DEPLOYMENT: &str = "kube-apiserver";

#[allow(missing_debug_implementations, reason = "holds running processes")]
pub struct Scenario {
    pub plane: Arc<Mutex<ControlPlane>>,
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    pub config: PathBuf,
    pub first_key: PrivateKey,
    pub installation: Installation,
    pub prober: Prober,
    /// The API server workload whose issuer args the harness rolls out,
    /// when there is one.
    pub apiserver_workload: Option<ApiServerWorkload>,
    /// The real node the workloads run on, when the scenario has one
    /// ([`Scenario::start_on_a_real_node`]).
    pub real_node: Option<crate::node::RealNode>,
    _hosted: HostedApiServer,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // The node first: its mounts are under the control plane's
        // directory, which goes with the control plane.
        drop(self.real_node.take());
    }
}

/// Where the scenario's control plane runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plane {
    /// One kube-apiserver on loopback.
    Loopback,
    /// [`crate::HA_INSTANCES`] of them, in the test's network namespace.
    Ha,
    /// One, reached by the pods of a real node beside it.
    RealNode,
}

impl Scenario {
    /// On one kube-apiserver.
    pub async fn start() -> Result<Scenario> {
        Scenario::launch(Plane::Loopback, None).await
    }

    /// On one kube-apiserver with kube-scheduler and a real node
    /// ([`crate::node::RealNode`]) that runs the workloads' pods. Only in
    /// namespaces of the test's own ([`crate::node::enter`]).
    pub async fn start_on_a_real_node() -> Result<Scenario> {
        Scenario::launch(Plane::RealNode, None).await
    }

    /// Like [`Scenario::start_on_a_real_node`], with the API server
    /// workload (as [`Scenario::start_ha_with_apiserver_workload`] has it)
    /// whose issuer args the harness rolls out to the one instance, so that
    /// the issuer can be rotated too.
    pub async fn start_on_a_real_node_with_apiserver_workload() -> Result<Scenario> {
        Scenario::launch(
            Plane::RealNode,
            Some(ApiServerWorkload::deployment(APISERVER_DEPLOYMENT)),
        )
        .await
    }

    /// On [`crate::HA_INSTANCES`] kube-apiserver instances, rolled one at a
    /// time. Only in a network namespace of the test's own
    /// ([`crate::netns::enter`]).
    pub async fn start_ha() -> Result<Scenario> {
        Scenario::launch(Plane::Ha, None).await
    }

    /// Like [`Scenario::start_ha`], with the API server workload: Deployment
    /// [`APISERVER_DEPLOYMENT`] in [`NAMESPACE`], labelled for the rotation,
    /// whose container args (`--service-account-issuer=...`) the harness
    /// rolls out to the instances with the key Secret.
    pub async fn start_ha_with_apiserver_workload() -> Result<Scenario> {
        Scenario::launch(
            Plane::Ha,
            Some(ApiServerWorkload::deployment(APISERVER_DEPLOYMENT)),
        )
        .await
    }

    async fn launch(
        where_: Plane,
        apiserver_workload: Option<ApiServerWorkload>,
    ) -> Result<Scenario> {
        let first_key = AwsLc::new().generate(KeySpec::Rsa2048)?;
        let keys = ApiServerKeys::single(first_key.clone());
        let mut plane = match where_ {
            Plane::Ha => ControlPlane::start_ha(keys).await?,
            Plane::Loopback => ControlPlane::start(keys).await?,
            Plane::RealNode => {
                let spec = crate::InstanceSpec::new(crate::Signing::KeyFiles(keys));
                ControlPlane::start_for_nodes(spec, Vec::new()).await?
            }
        };
        plane.start_controller_manager()?;
        let real_node = if where_ == Plane::RealNode {
            plane.start_scheduler(&[])?;
            Some(crate::node::RealNode::start(&plane, 0).await?)
        } else {
            None
        };
        let instances = plane.instance_clients().await?;
        let client = plane.client().await?;
        let kubeconfig = plane.kubeconfig_path();
        let mut installation =
            Installation::install(&client, NAMESPACE, CLUSTER, &first_key, plane.dir()).await?;
        if where_ == Plane::RealNode {
            // The audit webhook endpoint, for rotations that observe their
            // kubelets' refreshes ([`Scenario::mount_audit_webhook`]): over
            // HTTPS with the API server's own certificate (it names
            // 127.0.0.1), which the API server verifies with its CA.
            let addr = crate::loopback_addr()?;
            let d = plane.dir();
            installation.extra_args.extend([
                format!("--audit-addr={addr}"),
                format!("--audit-public-url=https://{addr}/audit"),
                format!(
                    "--audit-tls-cert-file={}",
                    d.join("apiserver.crt").display()
                ),
                format!("--audit-tls-key-file={}", d.join("apiserver.key").display()),
                format!("--audit-ca-file={}", d.join("ca.crt").display()),
            ]);
        }
        installation.start_controller(&plane.controller_kubeconfig_path())?;
        let config = plane.dir().join("user-cluster.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: v1\nkind: UserCluster\nname: {CLUSTER}\ngkeOnPremVersion: 1.16.0-gke.669\nenableAdvancedCluster: false\n"
            ),
        )?;
        create_workload(&client).await?;
        if let Some(workload) = &apiserver_workload {
            create_apiserver_deployment(&client, NAMESPACE, CLUSTER, workload).await?;
        }
        let plane = Arc::new(Mutex::new(plane));
        let hosted = HostedApiServer::spawn(
            plane.clone(),
            client.clone(),
            NAMESPACE,
            &format!("{CLUSTER}-apiserver-keys"),
            apiserver_workload.clone(),
        );
        let prober = Prober::spawn(
            client.clone(),
            instances,
            ProbeTarget {
                namespace: APPS.into(),
                service_account: "app".into(),
                legacy_secret: "app-token".into(),
                rotation: RotationSource::Resource {
                    namespace: NAMESPACE.into(),
                    name: CLUSTER.into(),
                },
            },
        );
        Ok(Scenario {
            plane,
            client,
            kubeconfig,
            config,
            first_key,
            installation,
            prober,
            apiserver_workload,
            real_node,
            _hosted: hosted,
        })
    }

    /// Runs `ksa` with these arguments (config and kubeconfig added for the
    /// rotation commands).
    pub fn ksa(&self, args: &[&str]) -> Result<Output> {
        Ok(self.ksa_process(args)?.wait_with_output()?)
    }

    /// Starts `ksa` with these arguments, output captured.
    pub fn ksa_process(&self, args: &[&str]) -> Result<std::process::Child> {
        Ok(self
            .ksa_command(args)?
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?)
    }

    /// The `ksa` command line, with `--config` and `--kubeconfig` added for
    /// the rotation commands.
    pub fn ksa_command(&self, args: &[&str]) -> Result<Command> {
        let mut command = Command::new(ksa_binary("ksa")?);
        command.args(args);
        if args.first() == Some(&"update") {
            if !args.contains(&"--config") {
                command.arg("--config").arg(&self.config);
            }
            command.arg("--kubeconfig").arg(&self.kubeconfig);
        }
        Ok(command)
    }

    /// A user cluster config file with other contents.
    pub fn config_with(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.config.with_file_name(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// A fresh bound token of the workload's service account.
    pub async fn bound_token(&self) -> Result<String> {
        request_token(&self.client, APPS, "app", Vec::new(), 3600).await
    }

    /// Whether the API server authenticates a token (TokenReview).
    pub async fn accepted(&self, token: &str) -> Result<bool> {
        Ok(review_token(&self.client, token).await?.is_some())
    }

    /// The configurations (key sets and issuer flags) the roll-outs asked
    /// of the API server instances, each checked: an error names every one
    /// asked before every instance served the step before it; otherwise,
    /// how many were asked.
    pub async fn check_roll_outs(&self) -> Result<usize> {
        self.plane.lock().await.roll_log().check()
    }

    /// Gives the API server the audit webhook Secret the controller wrote
    /// for the rotation (`tokenRefresh.observe: AuditWebhook`), as an
    /// operator mounts it: waits for the Secret, writes its policy and
    /// kubeconfig beside the API server's files, and rolls the API server
    /// out with `--audit-policy-file`, `--audit-webhook-config-file` and
    /// `--audit-webhook-batch-max-wait=1s` (docs/rotation.md). The flags
    /// stay in every later roll-out.
    pub async fn mount_audit_webhook(&self, within: Duration) -> Result<()> {
        let secrets = Api::<Secret>::namespaced(self.client.clone(), NAMESPACE);
        let name = ksa_kube::api::audit_webhook_secret(CLUSTER);
        let data = crate::wait::eventually("the audit webhook Secret", within, || async {
            let secret = secrets.get_opt(&name).await?.context("not written yet")?;
            secret.data.context("no data")
        })
        .await?;
        let mut plane = self.plane.lock().await;
        let dir = plane.dir().join("audit");
        std::fs::create_dir_all(&dir)?;
        let mut flags = Vec::new();
        for (key, flag) in [
            ("audit-policy.yaml", "--audit-policy-file"),
            ("audit-webhook.kubeconfig", "--audit-webhook-config-file"),
        ] {
            let value = data
                .get(key)
                .with_context(|| format!("the audit webhook Secret has no {key}"))?;
            let path = dir.join(key);
            crate::write_private(&path, &value.0)?;
            flags.push(format!("{flag}={}", path.display()));
        }
        flags.push("--audit-webhook-batch-max-wait=1s".to_owned());
        let spec = plane.spec().with_extra_flags(&flags);
        plane.roll_out(&spec).await
    }

    /// The legacy token currently in the workload's Secret.
    pub async fn legacy_token(&self) -> Result<String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), APPS)
            .get("app-token")
            .await?;
        let token = secret
            .data
            .and_then(|d| d.get("token").cloned())
            .context("no token yet")?;
        Ok(String::from_utf8(token.0)?)
    }
}

/// The workload every rotation test refreshes: namespace `apps`, service
/// account `app` with a legacy token Secret `app-token`, Deployment `web`.
pub async fn create_workload(client: &kube::Client) -> Result<()> {
    create_fleet(client, APPS, "app", &["app-token"], &["web"], 1).await
}

/// A namespace of workloads: a service account, legacy token Secrets of it
/// (filled by kube-controller-manager's token controller before this
/// returns) and Deployments running as it with `replicas` pods each.
pub async fn create_fleet(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    secrets: &[&str],
    deployments: &[&str],
    replicas: i32,
) -> Result<()> {
    create_namespace(client, namespace).await?;
    let account = create_service_account(client, namespace, service_account).await?;
    let uid = account.metadata.uid.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(secrets)
        .map(|name| {
            let secret = legacy_token_secret(name, service_account, &uid);
            let api = api.clone();
            async move { api.create(&PostParams::default(), &secret).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    // kube-controller-manager's token controller fills the Secrets.
    let started = Instant::now();
    loop {
        let filled = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| s.data.as_ref().is_some_and(|d| d.contains_key("token")))
            .count();
        if filled >= secrets.len() {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "kube-controller-manager filled {filled} of {} legacy token Secrets in {namespace}",
                secrets.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    // No kubelet runs in the test cluster, so pods never become ready;
    // Recreate replaces them without waiting.
    let recreate = DeploymentStrategy {
        type_: Some("Recreate".into()),
        ..DeploymentStrategy::default()
    };
    // The workloads mount the legacy tokens, as a workload that uses one
    // does: a token a pod mounts is not "held outside the cluster".
    let volumes: Vec<Volume> = secrets
        .iter()
        .enumerate()
        .map(|(i, name)| Volume {
            name: format!("legacy-token-{i}"),
            secret: Some(SecretVolumeSource {
                secret_name: Some((*name).to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        })
        .collect();
    for name in deployments {
        let mut deployment =
            workload::deployment(name, service_account, replicas, Some(recreate.clone()));
        if let Some(spec) = deployment
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
        {
            spec.volumes = Some(volumes.clone());
        }
        api.create(&PostParams::default(), &deployment).await?;
    }
    Ok(())
}

/// A `kubernetes.io/service-account-token` Secret for the token controller
/// to fill.
fn legacy_token_secret(name: &str, service_account: &str, uid: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(BTreeMap::from([
                (
                    "kubernetes.io/service-account.name".to_owned(),
                    service_account.to_owned(),
                ),
                (
                    "kubernetes.io/service-account.uid".to_owned(),
                    uid.to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/service-account-token".into()),
        ..Secret::default()
    }
}
