//! The harness playing kubelet for a kubeadm control plane: it watches the
//! kube-apiserver static pod manifest and, when it changes, restarts
//! kube-apiserver (and kube-controller-manager) with the key files its
//! `--service-account-key-file` and `--service-account-signing-key-file`
//! flags name and the issuer flags it carries (`--service-account-issuer`,
//! one line per accepted issuer, the signing one first, and
//! `--api-audiences`), as kubelet restarts a static pod whose manifest
//! changed. Of
//! several instances (one per control-plane node, the manifest the same on
//! each), one at a time, each ready before the next, the manifest read
//! again before each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ksa_core::key::parse_pem;
use tokio::sync::Mutex;

use crate::control_plane::IssuerFlags;
use crate::{ApiServerKeys, ControlPlane};

/// A running kubelet stand-in; stops when dropped.
#[derive(Debug)]
pub struct StaticPods {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StaticPods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The values of `--flag=` in a manifest's command list, in order.
fn flag_values(manifest: &str, flag: &str) -> Vec<PathBuf> {
    let prefix = format!("- --{flag}=");
    manifest
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&prefix).map(PathBuf::from))
        .collect()
}

/// The issuer flags a kube-apiserver manifest carries; `None` when it
/// names no issuer (the issuer flags then stay as they are).
pub fn manifest_issuer_flags(manifest: &str) -> Option<IssuerFlags> {
    let args: Vec<&str> = manifest
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .collect();
    IssuerFlags::parse(args)
}

/// The keys a kube-apiserver manifest names.
pub fn manifest_keys(manifest: &str) -> Result<ApiServerKeys> {
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let signing_file = flag_values(manifest, "service-account-signing-key-file")
        .pop()
        .context("no --service-account-signing-key-file")?;
    let signing = parse_pem(&read(&signing_file)?)?
        .private_keys()
        .next()
        .cloned()
        .context("no private key in the signing key file")?;
    let mut public = Vec::new();
    for file in flag_values(manifest, "service-account-key-file") {
        public.extend(parse_pem(&read(&file)?)?.public_keys().cloned());
    }
    Ok(ApiServerKeys { signing, public })
}

/// kubeadm's manifests of kube-apiserver and kube-controller-manager, as
/// `kubeadm init` writes them (trimmed to what a test control plane needs
/// to say), naming keys in `pki`, with issuer [`crate::ISSUER`].
pub fn kubeadm_manifests(pki: &Path) -> (String, String) {
    let pki = pki.display();
    let issuer = crate::ISSUER;
    let apiserver = format!(
        "apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 127.0.0.1:6443
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=127.0.0.1
    - --authorization-mode=Node,RBAC
    - --client-ca-file={pki}/ca.crt
    - --service-account-issuer={issuer}
    - --service-account-key-file={pki}/sa.pub
    - --service-account-signing-key-file={pki}/sa.key
    - --service-cluster-ip-range=10.96.0.0/12
    image: registry.k8s.io/kube-apiserver:v1.36.3
    name: kube-apiserver
    volumeMounts:
    - mountPath: {pki}
      name: k8s-certs
      readOnly: true
  hostNetwork: true
  volumes:
  - hostPath:
      path: {pki}
      type: DirectoryOrCreate
    name: k8s-certs
"
    );
    let controller_manager = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: kube-controller-manager
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-controller-manager
    - --root-ca-file={pki}/ca.crt
    - --service-account-private-key-file={pki}/sa.key
    - --use-service-account-credentials=true
    image: registry.k8s.io/kube-controller-manager:v1.36.3
    name: kube-controller-manager
"
    );
    (apiserver, controller_manager)
}

impl StaticPods {
    /// Watches `manifests/kube-apiserver.yaml` every 250 ms.
    pub fn spawn(plane: Arc<Mutex<ControlPlane>>, manifests: &Path) -> StaticPods {
        let manifest = manifests.join("kube-apiserver.yaml");
        let task = tokio::spawn(async move {
            let mut last = std::fs::read_to_string(&manifest).ok();
            let mut keys: Option<ApiServerKeys> = None;
            let mut flags: Option<IssuerFlags> = None;
            let mut rolling = false;
            loop {
                if !rolling {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                rolling = false;
                let Ok(now) = std::fs::read_to_string(&manifest) else {
                    continue;
                };
                if last.as_deref() != Some(now.as_str()) {
                    last = Some(now.clone());
                    match manifest_keys(&now) {
                        Ok(named) => keys = Some(named),
                        Err(error) => eprintln!("static pods: bad manifest: {error:#}"),
                    }
                    flags = manifest_issuer_flags(&now);
                }
                let Some(keys) = &keys else {
                    continue;
                };
                let mut plane = plane.lock().await;
                let spec = plane
                    .spec()
                    .with_issuer_flags(flags.as_ref())
                    .with_keys(keys);
                match plane.roll_one_to(&spec).await {
                    Ok(restarted) => rolling = restarted,
                    Err(error) => eprintln!("static pods: restart failed: {error:#}"),
                }
            }
        });
        StaticPods { task }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_names_its_issuers_in_order_and_its_audiences() {
        let manifest = "spec:
  containers:
  - command:
    - kube-apiserver
    - --api-audiences=https://a.example
    - --service-account-issuer=https://b.example
    - --service-account-issuer=https://a.example
    - --service-account-key-file=/pki/sa.pub
";
        assert_eq!(
            manifest_issuer_flags(manifest),
            Some(IssuerFlags {
                issuers: vec!["https://b.example".into(), "https://a.example".into()],
                api_audiences: Some("https://a.example".into()),
            })
        );
        assert_eq!(manifest_issuer_flags("- --v=2\n"), None);
    }
}
