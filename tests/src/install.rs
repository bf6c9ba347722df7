//! Installing ksa into a test control plane: the CRD, the cluster's current
//! key imported as version 1, and `ksa-controller` as a real process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use ksa_core::KeyVersion;
use ksa_core::key::PrivateKey;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::KeyStore;
use kube::CustomResourceExt as _;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// A built binary of this workspace (`ksa`, `ksa-controller`), found beside
/// the test executable.
pub fn ksa_binary(name: &str) -> Result<PathBuf> {
    // Test executables live in target/<profile>/deps, binaries one up.
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is not built; run the end-to-end tests with `cargo xtask e2e`, which builds it \
             (or `cargo build -p ksa-cli -p ksa-controller` first)",
            path.display()
        );
    }
    Ok(path)
}

/// The identity of the controller replica a test starts first.
pub const FIRST_REPLICA: &str = "ksa-controller-0";

/// ksa installed in a test cluster; the controller processes are killed
/// when this is dropped.
#[derive(Debug)]
pub struct Installation {
    replicas: Vec<Replica>,
    kubeconfig: Option<PathBuf>,
    log: PathBuf,
    /// Where the first replica serves metrics, health and the JWKS.
    pub http_addr: std::net::SocketAddr,
    /// The leader-election Lease duration the replicas are started with.
    pub lease_seconds: u64,
    /// More `ksa-controller run` arguments for every replica started after
    /// they are set (the OIDC endpoint's, say).
    pub extra_args: Vec<String>,
}

/// One running `ksa-controller run` process.
#[derive(Debug)]
struct Replica {
    identity: String,
    child: Child,
}

impl Installation {
    /// Installs the CRD, creates `namespace`, and imports `current` as key
    /// version 1 of rotation `name` (the key store and the API server key
    /// Secret), as an operator does once before the first rotation.
    pub async fn install(
        client: &kube::Client,
        namespace: &str,
        name: &str,
        current: &PrivateKey,
        log_dir: &Path,
    ) -> Result<Installation> {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.patch(
            "ksasigningkeyrotations.ksa.dev",
            &PatchParams::apply("ksa-e2e").force(),
            &Patch::Apply(KSASigningKeyRotation::crd()),
        )
        .await?;
        let started = Instant::now();
        loop {
            let crd = crds.get("ksasigningkeyrotations.ksa.dev").await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the CRD did not become established");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        crate::cluster::create_namespace(client, namespace).await?;
        grant_controller(client, namespace).await?;
        let store = KeyStore::new(client.clone(), namespace, name);
        store.create(KeyVersion::FIRST, current).await?;
        store
            .publish(
                &format!("{name}-apiserver-keys"),
                KeyVersion::FIRST,
                &[KeyVersion::FIRST],
            )
            .await?;
        Ok(Installation {
            replicas: Vec::new(),
            kubeconfig: None,
            log: log_dir.join("ksa-controller.log"),
            http_addr: loopback_addr()?,
            lease_seconds: 15,
            extra_args: Vec::new(),
        })
    }

    /// Starts `ksa-controller run` ([`FIRST_REPLICA`], serving on
    /// `http_addr`) against the cluster, with the kubeconfig of a user that
    /// has only the controller's ClusterRole.
    pub fn start_controller(&mut self, kubeconfig: &Path) -> Result<()> {
        self.kubeconfig = Some(kubeconfig.to_owned());
        self.start_replica(FIRST_REPLICA, self.http_addr)
    }

    /// Starts another replica of the controller (or restarts a killed one:
    /// the same identity, as a container restarted in its pod keeps its pod
    /// name). Every replica logs to the same file.
    pub fn start_replica(&mut self, identity: &str, http_addr: std::net::SocketAddr) -> Result<()> {
        let kubeconfig = self
            .kubeconfig
            .as_ref()
            .context("start_controller first: it names the kubeconfig")?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(ksa_binary("ksa-controller")?)
            .args(["run", "--leader-namespace", "default"])
            .arg(format!("--lease-seconds={}", self.lease_seconds))
            .arg(format!("--identity={identity}"))
            .arg(format!("--http-addr={http_addr}"))
            .args(&self.extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting ksa-controller")?;
        self.replicas.push(Replica {
            identity: identity.to_owned(),
            child,
        });
        Ok(())
    }

    /// SIGKILLs the replica with this identity and reaps it: no shutdown
    /// handler runs, the Lease is not released.
    pub fn kill_replica(&mut self, identity: &str) -> Result<()> {
        let index = self
            .replicas
            .iter()
            .position(|r| r.identity == identity)
            .with_context(|| format!("no running controller replica {identity}"))?;
        let mut replica = self.replicas.remove(index);
        replica.child.kill()?;
        replica.child.wait()?;
        Ok(())
    }

    /// The process id of the running replica with this identity.
    pub fn replica_pid(&self, identity: &str) -> Option<u32> {
        self.replicas
            .iter()
            .find(|r| r.identity == identity)
            .map(|r| r.child.id())
    }

    /// The identity holding the controller's leader-election Lease.
    pub async fn leader(client: &kube::Client) -> Result<Option<String>> {
        let lease = Api::<Lease>::namespaced(client.clone(), "default")
            .get_opt(ksa_controller::run::LEADER_LEASE)
            .await?;
        Ok(lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty()))
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
        if std::thread::panicking() {
            let log = self.controller_log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "----- last lines of ksa-controller ({}) -----\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// The controller's permissions, exactly as deploy/ grants them, to the
/// user its client certificate names: the ClusterRoles every rotation needs
/// and the restart-pods policy's (the default, which the tests use), bound
/// cluster-wide; the rotation role in `namespace`, labelled as a namespace
/// that holds rotations; the leases role in the leader namespace (`default`
/// here) and the probe role in kube-system; and the admission guards for
/// that user. Returns once the RBAC authorizer has seen the bindings; the
/// admission guards may take a moment more to be in force.
async fn grant_controller(client: &kube::Client, namespace: &str) -> Result<()> {
    use ksa_controller::manifests::{
        LEASES_ROLE, LEGACY_TOKENS_ROLE, PROBE_ROLE, RESTART_PODS_ROLE, ROTATION_ROLE,
        cluster_role, cluster_role_binding, leases_role, legacy_tokens_role, probe_role,
        recreate_nodes_role, restart_pods_role, role_binding, rotation_role,
    };
    let apply = PatchParams::apply("ksa-e2e").force();
    let roles: Api<ClusterRole> = Api::all(client.clone());
    for role in [
        cluster_role(),
        legacy_tokens_role(),
        restart_pods_role(),
        recreate_nodes_role(),
        rotation_role(),
        leases_role(),
        probe_role(),
    ] {
        let name = role.metadata.name.clone().unwrap_or_default();
        roles.patch(&name, &apply, &Patch::Apply(role)).await?;
    }
    let user = controller_subject();
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for role in ["ksa-controller", LEGACY_TOKENS_ROLE, RESTART_PODS_ROLE] {
        bindings
            .patch(
                role,
                &apply,
                &Patch::Apply(cluster_role_binding(role, user.clone())),
            )
            .await?;
    }
    for (role, place) in [
        (ROTATION_ROLE, namespace),
        (LEASES_ROLE, "default"),
        (PROBE_ROLE, "kube-system"),
    ] {
        Api::<RoleBinding>::namespaced(client.clone(), place)
            .patch(
                role,
                &apply,
                &Patch::Apply(role_binding(role, place, user.clone())),
            )
            .await?;
    }
    // The RBAC authorizer sees bindings through an informer: a request of
    // each binding's, allowed, says they are all in force.
    wait_controller_allowed(
        client,
        &[
            ("watch", "ksa.dev", "ksasigningkeyrotations", "", ""),
            ("list", "", "secrets", "", ""),
            ("patch", "apps", "deployments", "", ""),
            ("create", "", "secrets", namespace, ""),
            (
                "update",
                "coordination.k8s.io",
                "leases",
                "default",
                ksa_controller::run::LEADER_LEASE,
            ),
            (
                "create",
                "",
                "serviceaccounts/token",
                "kube-system",
                "ksa-rotation-probe",
            ),
        ],
    )
    .await?;
    label_rotation_namespace(client, namespace).await?;
    install_admission_guards(client, CONTROLLER_USER).await
}

/// One request of the controller's user: verb, API group, resource (with
/// `/subresource`), namespace ("" for all) and name ("" for any).
pub type Request<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

/// Whether the API server's authorizer lets the controller's user make
/// `request`, asked with a SubjectAccessReview.
pub async fn controller_allowed(
    client: &kube::Client,
    (verb, group, resource, namespace, name): Request<'_>,
) -> Result<bool> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_owned())),
        None => (resource, None),
    };
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(CONTROLLER_USER.to_owned()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                namespace: some(namespace),
                name: some(name),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Waits until the authorizer allows the controller's user every one of
/// `requests`: it sees RBAC bindings through an informer, a moment after
/// they are written. Fails after [`OBSERVED_WITHIN`](crate::OBSERVED_WITHIN)
/// naming the requests still denied.
pub async fn wait_controller_allowed(
    client: &kube::Client,
    requests: &[Request<'_>],
) -> Result<()> {
    crate::eventually(
        "the controller's RBAC grants in force",
        crate::OBSERVED_WITHIN,
        || async {
            let mut denied = Vec::new();
            for &request in requests {
                if !controller_allowed(client, request).await? {
                    denied.push(format!("{request:?}"));
                }
            }
            ensure!(
                denied.is_empty(),
                "the RBAC authorizer still denies {CONTROLLER_USER}: {}",
                denied.join(", ")
            );
            Ok(())
        },
    )
    .await
}

/// The controller's user as an RBAC subject.
pub fn controller_subject() -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: CONTROLLER_USER.into(),
        ..Subject::default()
    }
}

/// Binds the recreate-nodes policy's ClusterRole to the controller, as an
/// operator does for a rotation with that policy; returns once the
/// authorizer has seen the binding.
pub async fn grant_recreate_nodes(client: &kube::Client) -> Result<()> {
    use ksa_controller::manifests::{RECREATE_NODES_ROLE, cluster_role_binding};
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            RECREATE_NODES_ROLE,
            &PatchParams::apply("ksa-e2e").force(),
            &Patch::Apply(cluster_role_binding(
                RECREATE_NODES_ROLE,
                controller_subject(),
            )),
        )
        .await?;
    wait_controller_allowed(client, &[("patch", "", "nodes", "", "")]).await
}

/// Marks `namespace` as one that holds rotations, where the admission
/// guards leave the controller's own objects to it.
async fn label_rotation_namespace(client: &kube::Client, namespace: &str) -> Result<()> {
    let label = serde_json::json!({"metadata": {"labels": {
        ksa_controller::admission::ROTATION_NAMESPACE_LABEL: "enabled"
    }}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&label))
        .await?;
    Ok(())
}

/// The admission guards of `deploy/admission-policies.yaml`, for the user
/// the controller authenticates as.
pub async fn install_admission_guards(client: &kube::Client, user: &str) -> Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let apply = PatchParams::apply("ksa-e2e").force();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    for guard in ksa_controller::admission::guards(user) {
        let name = guard.policy.metadata.name.clone().unwrap_or_default();
        policies
            .patch(&name, &apply, &Patch::Apply(&guard.policy))
            .await
            .with_context(|| format!("installing admission policy {name}"))?;
        bindings
            .patch(&name, &apply, &Patch::Apply(&guard.binding))
            .await
            .with_context(|| format!("installing admission policy binding {name}"))?;
    }
    Ok(())
}

/// The user name in the controller's client certificate.
pub const CONTROLLER_USER: &str = "ksa-controller";

/// A free loopback address for a controller replica to serve on.
pub fn loopback_addr() -> Result<std::net::SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}
