//! The first rotation cannot go wrong: the traps a newcomer meets on the
//! way to it, each on the real control plane with the real CLI.
//!
//! - Forgetting `ksa keys import`: `rotate` used to start a rotation whose
//!   every controller pass failed on the missing key while `status` kept
//!   printing the last completed line. It now refuses before it changes
//!   anything, with the command that fixes it.

use anyhow::{Result, ensure};
use ksa_kube::api::KSASigningKeyRotation;
use ksa_tests::scenario::{NAMESPACE, Scenario};
use kube::api::Api;

#[tokio::test]
async fn rotate_without_the_imported_key_refuses_with_the_import_command() -> Result<()> {
    let scenario = Scenario::start().await?;
    // A second user cluster in the same namespace, whose key nobody
    // imported.
    let config = scenario.config_with(
        "not-imported.yaml",
        &format!(
            "apiVersion: v1\nkind: UserCluster\nname: not-imported\ngkeOnPremVersion: 1.16.0-gke.669\n\
             enableAdvancedCluster: false\nksaSigningKeyRotation:\n  namespace: {NAMESPACE}\n"
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let output = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
        "--config",
        &config,
    ])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    ensure!(
        output.status.code() == Some(2),
        "exit {:?}",
        output.status.code()
    );
    ensure!(
        stderr.contains(&format!(
            "ksa keys import --rotation not-imported -n {NAMESPACE} --key sa.key --key-version 1"
        )) && stderr.contains("nothing was changed"),
        "the refusal names the command that fixes it"
    );
    let created = Api::<KSASigningKeyRotation>::namespaced(scenario.client.clone(), NAMESPACE)
        .get_opt("not-imported")
        .await?;
    ensure!(created.is_none(), "a rotation was created");
    Ok(())
}
