//! The first rotation cannot go wrong: the traps a newcomer meets on the
//! way to it, each on the real control plane with the real CLI.
//!
//! - Forgetting `ksa keys import`: `rotate` used to start a rotation whose
//!   every controller pass failed on the missing key while `status` kept
//!   printing the last completed line. It now refuses before it changes
//!   anything, with the command that fixes it.
//! - `status: True` that meant nothing: a rotation asked for and not
//!   started is reported as requested (or refused), not completed.

use anyhow::{Result, ensure};
use ksa_kube::api::KSASigningKeyRotation;
use ksa_tests::scenario::{CLUSTER, NAMESPACE, Scenario};
use kube::api::{Api, Patch, PatchParams};

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

/// `status: True` that meant nothing: a rotation the resource asks for
/// that the controller has not taken up (here: no controller runs) used to
/// print the last rotation's Completed line. It is now reported as
/// requested and not completed, with why on stderr.
// Multi-threaded: `ksa ... --wait` blocks this thread while the harness's
// roll-out player runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_rotation_not_taken_up_is_not_reported_completed() -> Result<()> {
    let mut scenario = Scenario::start().await?;
    let rotations = Api::<KSASigningKeyRotation>::namespaced(scenario.client.clone(), NAMESPACE);
    // A first rotation, to version 2, completed.
    let first = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
        "--wait",
    ])?;
    let first_stderr = String::from_utf8_lossy(&first.stderr);
    ensure!(first.status.success(), "the first rotation: {first_stderr}");
    // Trap 4: each step says how long it took, and the end sums up.
    ensure!(
        first_stderr.contains("Generate took ")
            && first_stderr.contains("completed in ")
            && first_stderr.contains("Retire "),
        "the first rotation's timings: {first_stderr}"
    );
    scenario
        .installation
        .kill_replica(ksa_tests::FIRST_REPLICA)?;
    rotations
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"keyVersion": 3}})),
        )
        .await?;
    let output = scenario.ksa(&["update", "credentials", "ksa-signing-key", "status"])?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    ensure!(output.status.success(), "exit {:?}", output.status.code());
    ensure!(
        stdout.trim_end()
            == r#"State of KSASigningKeyRotation with KSASigningKeyVersion 3 is - status: False, reason: KSASigningKeyRotationRequestedReason, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}"#,
        "the line says requested, not completed"
    );
    ensure!(
        stderr.contains("the controller has not started it yet"),
        "stderr says why"
    );
    let json = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "status",
        "-o",
        "json",
    ])?;
    let value: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    ensure!(
        value["statusLine"]
            .as_str()
            .is_some_and(|l| l.contains("KSASigningKeyRotationRequestedReason")),
        "{value}"
    );
    Ok(())
}

/// `--wait` tells the truth about time: at its timeout the rotation goes
/// on, and the command exits 5 ("still running"), not 1 ("failed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_that_times_out_exits_still_running_and_the_rotation_goes_on() -> Result<()> {
    let scenario = Scenario::start().await?;
    let output = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
        "--wait",
        "--timeout",
        "1s",
    ])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    ensure!(
        output.status.code() == Some(5),
        "exit {:?}",
        output.status.code()
    );
    ensure!(
        stderr.contains("still running"),
        "stderr says still running"
    );
    let rotations = Api::<KSASigningKeyRotation>::namespaced(scenario.client.clone(), NAMESPACE);
    ksa_tests::eventually(
        "the rotation completes by itself",
        std::time::Duration::from_secs(300),
        || async {
            let line = rotations
                .get(CLUSTER)
                .await?
                .status
                .map(|s| s.status_line)
                .unwrap_or_default();
            ensure!(
                line.contains("KSASigningKeyVersion 2 is - status: True"),
                "{line}"
            );
            Ok(())
        },
    )
    .await?;
    Ok(())
}
