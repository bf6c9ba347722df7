//! The harness playing a hosted control plane: the API server "pods" mount
//! the key Secret the controller writes and run with the args of their
//! workload's `kube-apiserver` container, and are restarted when either
//! changes, one at a time, each ready before the next, as a Deployment
//! roll-out would. Like a Deployment it rolls out the newest of both: the
//! Secret and the workload are read again before each instance is
//! restarted.
//!
//! The workload is a Deployment of no replicas (no real pod runs it: the
//! harness plays its pods) that the controller patches for an issuer
//! rotation: it rewrites the container's `--service-account-issuer=URL`
//! args (one per accepted issuer, the signing one first) and, when there
//! was none, adds `--api-audiences=` pinned to what kube-apiserver
//! defaulted it to before the first change (the issuers then), and keeps
//! every other arg
//! ([`rewrite_issuer_args`] writes it the same way, for tests that roll by
//! hand).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Secret};
use ksa_core::key::parse_pem;
use ksa_kube::keystore::LABEL_ROTATION;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::Mutex;

use crate::control_plane::IssuerFlags;
use crate::{ApiServerKeys, ControlPlane, ISSUER, workload};

/// The container of the API server workload that ksa rewrites by default.
pub const APISERVER_CONTAINER: &str = "kube-apiserver";

/// The args of [`create_apiserver_deployment`]'s container besides the
/// issuer: a rewrite must keep them byte for byte, in order.
pub const UNRELATED_ARGS: [&str; 3] = [
    "--v=2",
    "--profiling=false",
    "--tls-cipher-suites=TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384",
];

/// The workload running the API server pods: a Deployment in the
/// rotation's namespace, and the container whose args carry the issuer
/// flags (`spec.rollout.workload` of the rotation resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerWorkload {
    pub deployment: String,
    pub container: String,
}

impl ApiServerWorkload {
    /// Deployment `name`, container [`APISERVER_CONTAINER`].
    pub fn deployment(name: &str) -> ApiServerWorkload {
        ApiServerWorkload {
            deployment: name.to_owned(),
            container: APISERVER_CONTAINER.to_owned(),
        }
    }
}

/// Where the instances' key files come from.
#[derive(Debug, Clone)]
enum KeySource {
    /// This Secret (`sa.key`, `sa.pub`) in the namespace.
    Secret(String),
    /// None: the instances sign as they do (through an external signer,
    /// which follows the Secret itself).
    AsRunning,
}

/// A running roll-out loop; stops when dropped.
#[derive(Debug)]
pub struct HostedApiServer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostedApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostedApiServer {
    /// Watches `namespace/secret` (keys `sa.key`, `sa.pub`) and, when
    /// given, the args of `workload` in `namespace`, and rolls them out to
    /// the kube-apiserver instances whenever they name a different key set
    /// or different issuer flags. Without a workload, or with args that
    /// name no issuer, the issuer flags stay as they are.
    pub fn spawn(
        plane: Arc<Mutex<ControlPlane>>,
        client: kube::Client,
        namespace: &str,
        secret: &str,
        workload: Option<ApiServerWorkload>,
    ) -> HostedApiServer {
        HostedApiServer::run(
            plane,
            client,
            namespace,
            KeySource::Secret(secret.to_owned()),
            workload,
        )
    }

    /// Watches the args of `workload` in `namespace` only, and rolls its
    /// issuer flags out to instances that keep signing as they do: API
    /// servers that sign through an external signer, which follows the key
    /// Secret by itself.
    pub fn spawn_issuer_flags(
        plane: Arc<Mutex<ControlPlane>>,
        client: kube::Client,
        namespace: &str,
        workload: ApiServerWorkload,
    ) -> HostedApiServer {
        HostedApiServer::run(
            plane,
            client,
            namespace,
            KeySource::AsRunning,
            Some(workload),
        )
    }

    fn run(
        plane: Arc<Mutex<ControlPlane>>,
        client: kube::Client,
        namespace: &str,
        keys: KeySource,
        workload: Option<ApiServerWorkload>,
    ) -> HostedApiServer {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let deployments: Api<Deployment> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            let mut rolling = false;
            loop {
                if !rolling {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                rolling = false;
                let keys = match &keys {
                    KeySource::Secret(secret) => {
                        let Ok(Some(found)) = secrets.get_opt(secret).await else {
                            continue;
                        };
                        let Some(keys) = keys_of(&found) else {
                            continue;
                        };
                        Some(keys)
                    }
                    KeySource::AsRunning => None,
                };
                let flags = match &workload {
                    Some(workload) => {
                        let Ok(Some(found)) = deployments.get_opt(&workload.deployment).await
                        else {
                            continue;
                        };
                        let Some(args) = args_of(&found, &workload.container) else {
                            continue;
                        };
                        IssuerFlags::parse(args.iter().map(String::as_str))
                    }
                    None => None,
                };
                let mut plane = plane.lock().await;
                let mut spec = plane.spec().with_issuer_flags(flags.as_ref());
                if let Some(keys) = &keys {
                    spec = spec.with_keys(keys);
                }
                match plane.roll_one_to(&spec).await {
                    Ok(restarted) => rolling = restarted,
                    Err(error) => eprintln!("hosted control plane: restart failed: {error:#}"),
                }
            }
        });
        HostedApiServer { task }
    }
}

fn keys_of(secret: &Secret) -> Option<ApiServerKeys> {
    let data = secret.data.as_ref()?;
    let signing = parse_pem(&data.get("sa.key")?.0)
        .ok()?
        .private_keys()
        .next()?
        .clone();
    let public = parse_pem(&data.get("sa.pub")?.0)
        .ok()?
        .public_keys()
        .cloned()
        .collect();
    Some(ApiServerKeys { signing, public })
}

/// The args of `container` in a Deployment's pod template; `None` when it
/// has no such container.
fn args_of(deployment: &Deployment, container: &str) -> Option<Vec<String>> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)
        .map(|c| c.args.clone().unwrap_or_default())
}

/// Creates the API server workload in `namespace` for rotation
/// `rotation`: a Deployment of no replicas labelled `ksa.dev/rotation:
/// <rotation>`, whose container runs with
/// `--service-account-issuer=<ISSUER>` and [`UNRELATED_ARGS`].
pub async fn create_apiserver_deployment(
    client: &kube::Client,
    namespace: &str,
    rotation: &str,
    workload: &ApiServerWorkload,
) -> Result<Deployment> {
    let name = &workload.deployment;
    let args = std::iter::once(format!("--service-account-issuer={ISSUER}"))
        .chain(UNRELATED_ARGS.iter().map(|a| (*a).to_owned()))
        .collect();
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(
                LABEL_ROTATION.to_owned(),
                rotation.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(0),
            selector: workload::selector(name),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(workload::labels(name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: workload.container.clone(),
                        image: Some("registry.k8s.io/kube-apiserver:v1.36.3".into()),
                        command: Some(vec!["kube-apiserver".into()]),
                        args: Some(args),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .with_context(|| format!("creating Deployment {namespace}/{name}"))
}

/// The args of the workload's container, as stored now.
pub async fn container_args(
    client: &kube::Client,
    namespace: &str,
    workload: &ApiServerWorkload,
) -> Result<Vec<String>> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(&workload.deployment)
        .await?;
    args_of(&deployment, &workload.container).with_context(|| {
        format!(
            "Deployment {namespace}/{} has no container {}",
            workload.deployment, workload.container
        )
    })
}

/// Replaces the args of the workload's container (every other field of
/// the Deployment stays).
pub async fn set_container_args(
    client: &kube::Client,
    namespace: &str,
    workload: &ApiServerWorkload,
    args: &[String],
) -> Result<()> {
    // A strategic merge patch merges containers by name and replaces a
    // container's args as a whole.
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": workload.container, "args": args}
    ]}}}});
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch(
            &workload.deployment,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await?;
    Ok(())
}

/// `args` with the issuer flags set to `issuers` (the signing one first),
/// as the controller rewrites them (`ksa_kube::flags`): the new
/// `--service-account-issuer=` entries replace the old ones where the
/// first of them stood; when there was no `--api-audiences=`, one naming
/// the old issuers (kube-apiserver's default audiences) follows them, so
/// that tokens of the default audience keep their audience; every other
/// arg stays as it was.
pub fn rewrite_issuer_args(args: &[String], issuers: &[&str]) -> Vec<String> {
    let is_issuer = |arg: &str| arg.starts_with("--service-account-issuer=");
    let old = IssuerFlags::parse(args.iter().map(String::as_str));
    let mut new: Vec<String> = issuers
        .iter()
        .map(|issuer| format!("--service-account-issuer={issuer}"))
        .collect();
    if let Some(old) = &old
        && old.api_audiences.is_none()
    {
        new.push(format!("--api-audiences={}", old.issuers.join(",")));
    }
    let at = args.iter().position(|a| is_issuer(a)).unwrap_or(args.len());
    let mut rewritten: Vec<String> = args[..at]
        .iter()
        .filter(|a| !is_issuer(a))
        .cloned()
        .collect();
    rewritten.extend(new);
    rewritten.extend(args[at..].iter().filter(|a| !is_issuer(a)).cloned());
    rewritten
}

/// `args` without the issuer flags: what a rewrite must keep as it was.
pub fn other_args(args: &[String]) -> Vec<String> {
    args.iter()
        .filter(|a| {
            !a.starts_with("--service-account-issuer=") && !a.starts_with("--api-audiences=")
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn a_rewrite_replaces_the_issuers_pins_the_audience_once_and_keeps_the_rest() {
        let start = strings(&[
            "--v=2",
            "--service-account-issuer=https://a",
            "--profiling=false",
        ]);
        let trust = rewrite_issuer_args(&start, &["https://a", "https://b"]);
        assert_eq!(
            trust,
            strings(&[
                "--v=2",
                "--service-account-issuer=https://a",
                "--service-account-issuer=https://b",
                "--api-audiences=https://a",
                "--profiling=false",
            ])
        );
        let sign = rewrite_issuer_args(&trust, &["https://b", "https://a"]);
        let retire = rewrite_issuer_args(&sign, &["https://b"]);
        assert_eq!(
            retire,
            strings(&[
                "--v=2",
                "--service-account-issuer=https://b",
                "--api-audiences=https://a",
                "--profiling=false",
            ])
        );
        assert_eq!(other_args(&retire), other_args(&start));
        let flags = IssuerFlags::parse(retire.iter().map(String::as_str));
        assert_eq!(
            flags,
            Some(IssuerFlags {
                issuers: strings(&["https://b"]),
                api_audiences: Some("https://a".into()),
            })
        );
        assert_eq!(IssuerFlags::parse(["--v=2"]), None);
        // Of several issuers, all were the default audiences.
        let two = strings(&[
            "--service-account-issuer=https://a",
            "--service-account-issuer=https://c",
        ]);
        assert_eq!(
            rewrite_issuer_args(&two, &["https://b"]),
            strings(&[
                "--service-account-issuer=https://b",
                "--api-audiences=https://a,https://c"
            ])
        );
    }
}
