//! Installing ksa into a test control plane: the CRD, the cluster's current
//! key imported as version 1, and `ksa-controller` as a real process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use ksa_controller::api::KSASigningKeyRotation;
use ksa_controller::keystore::KeyStore;
use ksa_core::KeyVersion;
use ksa_core::key::PrivateKey;
use kube::CustomResourceExt as _;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

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

/// ksa installed in a test cluster; the controller process is killed when
/// this is dropped.
#[derive(Debug)]
pub struct Installation {
    controller: Option<Child>,
    log: PathBuf,
    /// Where the controller serves metrics, health and the JWKS.
    pub http_addr: std::net::SocketAddr,
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
        // The controller's permissions: exactly the ClusterRole of deploy/,
        // bound to the user its client certificate names.
        let roles: Api<ClusterRole> = Api::all(client.clone());
        roles
            .patch(
                "ksa-controller",
                &PatchParams::apply("ksa-e2e").force(),
                &Patch::Apply(ksa_controller::manifests::cluster_role()),
            )
            .await?;
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some("ksa-controller".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "ksa-controller".into(),
            },
            subjects: Some(vec![Subject {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "User".into(),
                name: "ksa-controller".into(),
                ..Subject::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(
                "ksa-controller",
                &PatchParams::apply("ksa-e2e").force(),
                &Patch::Apply(binding),
            )
            .await?;
        let store = KeyStore::new(client.clone(), namespace, name);
        store.create(KeyVersion::FIRST, current).await?;
        store
            .publish(
                &format!("{name}-apiserver-keys"),
                KeyVersion::FIRST,
                &[KeyVersion::FIRST],
                None,
            )
            .await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Ok(Installation {
            controller: None,
            log: log_dir.join("ksa-controller.log"),
            http_addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// Starts `ksa-controller run` against the cluster, with the kubeconfig
    /// of a user that has only the controller's ClusterRole.
    pub fn start_controller(&mut self, kubeconfig: &Path) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(ksa_binary("ksa-controller")?)
            .args([
                "run",
                "--leader-namespace",
                "default",
                "--lease-seconds",
                "15",
            ])
            .arg(format!("--http-addr={}", self.http_addr))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting ksa-controller")?;
        self.controller = Some(child);
        Ok(())
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        if let Some(child) = self.controller.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
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
