//! What the kubeadm-mode suites (`kubeadm.rs`, `issuer_kubeadm.rs`,
//! `real_kubeadm.rs`) share: the `ksa` command they run against a control
//! plane's PKI directory and manifests, and the state file it keeps there.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Result;
use ksa_core::rotation::RotationState;

use crate::ksa_binary;

/// The rotation state `ksa --pki-dir` records in the PKI directory
/// (`ksa-rotation.json`), if there is one that parses.
pub fn state(pki: &Path) -> Option<RotationState> {
    serde_json::from_slice(&std::fs::read(pki.join("ksa-rotation.json")).ok()?).ok()
}

/// `ksa update credentials CREDENTIAL ARGS --pki-dir PKI` (`CREDENTIAL` is
/// `ksa-signing-key` or `ksa-issuer`) and, when `ARGS` rotate, the
/// manifests directory, the kubeconfig and `--skip-prompt`; stdin closed.
pub fn command(
    credential: &str,
    args: &[&str],
    pki: &Path,
    manifests: &Path,
    kubeconfig: &Path,
) -> Result<Command> {
    let mut command = Command::new(ksa_binary("ksa")?);
    command
        .args(["update", "credentials", credential])
        .args(args)
        .arg("--pki-dir")
        .arg(pki)
        .stdin(Stdio::null());
    if args.first() == Some(&"rotate") {
        command
            .arg("--manifests-dir")
            .arg(manifests)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--skip-prompt");
    }
    Ok(command)
}
