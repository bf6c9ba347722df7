//! The first rotation cannot go wrong: the traps a newcomer meets on the
//! way to it, each on the real control plane with the real CLI.
//!
//! - Forgetting `ksa keys import`: `rotate` used to start a rotation whose
//!   every controller pass failed on the missing key while `status` kept
//!   printing the last completed line. It now refuses before it changes
//!   anything, with the command that fixes it.
//! - `status: True` that meant nothing: a rotation asked for and not
//!   started is reported as requested (or refused), not completed.

use anyhow::{Context as _, Result, ensure};
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

/// Onboarding by hand: install used to ask for `keys import`, then a
/// `kubectl create secret` and a `kubectl label` of the API server key
/// Secret. `keys import` now does it all, and only for the key every API
/// server instance signs with and lists today: another key, or an API
/// server key Secret holding another key, is refused with nothing written.
#[tokio::test]
async fn keys_import_onboards_the_cluster_key_in_one_command_and_refuses_any_other() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    use ksa_core::crypto::{AwsLc, SigningBackend as _};
    use ksa_core::key::{KeySpec, parse_pem};

    let scenario = Scenario::start().await?;
    let dir = scenario
        .config
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let current = dir.join("current-sa.key");
    std::fs::write(&current, scenario.first_key.to_pem())?;
    let stranger = dir.join("stranger-sa.key");
    std::fs::write(&stranger, AwsLc::new().generate(KeySpec::Rsa2048)?.to_pem())?;
    let kubeconfig = scenario.kubeconfig.to_string_lossy().into_owned();
    let import = |rotation: &str, key: &std::path::Path| {
        scenario.ksa(&[
            "keys",
            "import",
            "--rotation",
            rotation,
            "-n",
            NAMESPACE,
            "--key",
            &key.to_string_lossy(),
            "--kubeconfig",
            &kubeconfig,
        ])
    };
    let secrets = Api::<Secret>::namespaced(scenario.client.clone(), NAMESPACE);
    let held_key = |secret: &Secret, entry: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(entry))
            .and_then(|pem| parse_pem(&pem.0).ok())
            .and_then(|keys| keys.private_keys().next().map(|k| k.kid().to_string()))
    };
    let kid = scenario.first_key.kid().to_string();

    // The cluster's key: both Secrets, checked on the one instance.
    let output = import("onboarded", &current)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status.code()
    );
    ensure!(
        stdout.contains("wrote Secret ")
            && stdout
                .contains("onboarded-apiserver-keys (sa.key, sa.pub), which the API servers mount")
            && stdout.contains("checked on 1 API server instance(s)"),
        "{stdout}"
    );
    let mounted = secrets.get("onboarded-apiserver-keys").await?;
    ensure!(
        held_key(&mounted, "sa.key").as_deref() == Some(kid.as_str()),
        "sa.key is not the imported key"
    );
    let labels = mounted.metadata.labels.clone().unwrap_or_default();
    ensure!(
        labels.get("ksa.dev/rotation").map(String::as_str) == Some("onboarded")
            && labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some("ksa"),
        "labels {labels:?}"
    );
    let stored = secrets.get("onboarded-signing-key-v1").await?;
    ensure!(
        held_key(&stored, "key.pem").as_deref() == Some(kid.as_str()),
        "the key Secret holds another key"
    );
    // Again: nothing changes.
    let again = import("onboarded", &current)?;
    ensure!(again.status.success(), "a repeated import failed");
    ensure!(
        String::from_utf8_lossy(&again.stdout).contains("already holds this key"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // A key the cluster does not sign with: refused, nothing written.
    let output = import("stranger", &stranger)?;
    refused(
        &output,
        &[
            "is not the key the cluster at ",
            "signs with and accepts today",
            "nothing was changed",
        ],
    )?;
    for name in ["stranger-signing-key-v1", "stranger-apiserver-keys"] {
        ensure!(
            secrets.get_opt(name).await?.is_none(),
            "{name} was written for a key not in use"
        );
    }

    // A rotation whose writer names the Secret the API servers mount
    // (spec.rollout.keySecret), which nobody made: the import never creates
    // a Secret under a name the resource's writer chose (hostile read of
    // issue 33), and a --kubeconfig-secret the rotation does not name is
    // refused.
    let tenant: KSASigningKeyRotation = serde_json::from_value(serde_json::json!({
        "apiVersion": "ksa.dev/v1alpha1",
        "kind": "KSASigningKeyRotation",
        "metadata": {"name": "tenant"},
        "spec": {"keyVersion": 1, "rollout": {"keySecret": "tenant-chosen"}},
    }))?;
    Api::<KSASigningKeyRotation>::namespaced(scenario.client.clone(), NAMESPACE)
        .create(&Default::default(), &tenant)
        .await?;
    let output = import("tenant", &current)?;
    refused(
        &output,
        &[
            "names Secret tenant-chosen (spec.rollout.keySecret)",
            "nothing was changed",
        ],
    )?;
    ensure!(
        secrets.get_opt("tenant-chosen").await?.is_none(),
        "the import created a Secret under the name the rotation's writer chose"
    );
    let output = scenario.ksa(&[
        "keys",
        "import",
        "--rotation",
        "tenant",
        "-n",
        NAMESPACE,
        "--key",
        &current.to_string_lossy(),
        "--kubeconfig-secret",
        "elsewhere",
        "--kubeconfig",
        &kubeconfig,
    ])?;
    refused(&output, &["names no user cluster"])?;

    // A key Secret of version 1 that holds another key: refused, and the
    // API server key Secret is not written.
    let stranger_key = parse_pem(&std::fs::read(&stranger)?)?
        .private_keys()
        .next()
        .cloned()
        .context("the stranger's key")?;
    ksa_kube::keystore::KeyStore::new(scenario.client.clone(), NAMESPACE, "rival")
        .create(ksa_core::KeyVersion::FIRST, &stranger_key)
        .await?;
    let output = import("rival", &current)?;
    refused(
        &output,
        &[
            "rival-signing-key-v1 already holds a different key",
            "nothing was changed",
        ],
    )?;
    ensure!(
        secrets.get_opt("rival-apiserver-keys").await?.is_none(),
        "the API server key Secret was written although the import was refused"
    );

    // An API server key Secret that holds another key: refused before the
    // key Secret is written.
    let planted = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("planted-apiserver-keys".into()),
            ..Default::default()
        },
        string_data: Some(std::collections::BTreeMap::from([(
            "sa.key".to_owned(),
            std::fs::read_to_string(&stranger)?,
        )])),
        ..Secret::default()
    };
    secrets.create(&Default::default(), &planted).await?;
    let output = import("planted", &current)?;
    refused(
        &output,
        &[
            "planted-apiserver-keys, which the API servers mount, holds kid",
            "nothing was changed",
        ],
    )?;
    ensure!(
        secrets.get_opt("planted-signing-key-v1").await?.is_none(),
        "the key Secret was written although the import was refused"
    );

    // One that holds the imported key, and in its sa.pub another public
    // key the API servers would accept too: refused alike.
    let current_key = parse_pem(&std::fs::read(&current)?)?
        .private_keys()
        .next()
        .cloned()
        .context("the current key")?;
    let trusting = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("trusting-apiserver-keys".into()),
            ..Default::default()
        },
        string_data: Some(std::collections::BTreeMap::from([
            ("sa.key".to_owned(), current_key.to_pem().to_string()),
            (
                "sa.pub".to_owned(),
                ksa_core::key::public_keys_to_pem([
                    current_key.public_key(),
                    stranger_key.public_key(),
                ]),
            ),
        ])),
        ..Secret::default()
    };
    secrets.create(&Default::default(), &trusting).await?;
    let output = import("trusting", &current)?;
    refused(
        &output,
        &[
            "trusting-apiserver-keys, which the API servers mount, holds kid",
            "also holds 1 other public key(s)",
            "nothing was changed",
        ],
    )?;
    ensure!(
        secrets.get_opt("trusting-signing-key-v1").await?.is_none(),
        "the key Secret was written although the import was refused"
    );
    Ok(())
}

/// The sample session of docs/development.md, run: each `$` command of its
/// block, in a directory holding `user-cluster.yaml` and
/// `admin.kubeconfig`, prints exactly the lines the block shows under it
/// (the step a rotation is at and the times, which depend on timing,
/// named aside).
// Multi-threaded: `ksa ... --wait` blocks this thread while the harness's
// roll-out player runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_session_prints_what_the_docs_show() -> Result<()> {
    let page = std::fs::read_to_string(ksa_tests::readme::workspace().join("docs/development.md"))?;
    let block = page
        .split("```\n")
        .find(|b| b.starts_with("$ ksa "))
        .context("docs/development.md has no block of `$ ksa` commands")?;
    // (command, the lines it prints)
    let mut session: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match (line.strip_prefix("$ "), session.last_mut()) {
            (Some(command), _) => session.push((command.to_owned(), Vec::new())),
            (None, Some((_, printed))) => printed.push(line.to_owned()),
            (None, None) => {}
        }
    }
    ensure!(
        session.len() >= 3,
        "the session has too few commands: {session:?}"
    );

    let scenario = Scenario::start().await?;
    // The session begins after a first rotation, to key version 2.
    let first = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
        "--wait",
    ])?;
    ensure!(
        first.status.success(),
        "the first rotation: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let dir = scenario
        .config
        .parent()
        .map(std::path::Path::to_path_buf)
        .context("the config's directory")?;
    ensure!(
        dir.join("admin.kubeconfig").is_file(),
        "no admin.kubeconfig beside the config"
    );
    let ksa_dir = ksa_tests::ksa_binary("ksa")?
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(ksa_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let rotations = Api::<KSASigningKeyRotation>::namespaced(scenario.client.clone(), NAMESPACE);
    for (command, expected) in &session {
        let output = std::process::Command::new("bash")
            .args(["-c", &format!("exec 2>&1\n{command}")])
            .current_dir(&dir)
            .env("PATH", &path)
            .env("HOME", &dir)
            .stdin(std::process::Stdio::null())
            .output()?;
        let printed = String::from_utf8_lossy(&output.stdout);
        let printed: Vec<String> = printed.lines().map(step_aside).collect();
        let expected: Vec<String> = expected.iter().map(|l| step_aside(l)).collect();
        ensure!(
            printed == expected,
            "`{command}` printed\n{}\nwhere docs/development.md shows\n{}",
            printed.join("\n"),
            expected.join("\n")
        );
        // A started rotation is taken up by the controller before the
        // next command, as in the session the block was copied from.
        if command.contains(" rotate ") && output.status.success() {
            ksa_tests::eventually(
                "the controller takes the rotation up",
                std::time::Duration::from_secs(60),
                || async {
                    let line = rotations
                        .get(CLUSTER)
                        .await?
                        .status
                        .map(|s| s.status_line)
                        .unwrap_or_default();
                    ensure!(line.contains("ProcessedReason"), "{line}");
                    Ok(())
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// `line` with the word after each `step ` replaced by `S`, and the time
/// of a `step: STEP since TIME (AGE)` line left out.
fn step_aside(line: &str) -> String {
    if line.starts_with("step: ") {
        return line.split(" since ").next().unwrap_or_default().to_owned();
    }
    let mut parts = line.split("step ");
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        let word = part
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(part.len());
        out.push_str("step S");
        out.push_str(&part[word..]);
    }
    out
}

/// `output` is a refusal (exit 2) whose stderr says each of `says`.
fn refused(output: &std::process::Output, says: &[&str]) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(2),
        "exit {:?}: {stderr}",
        output.status.code()
    );
    for said in says {
        ensure!(stderr.contains(said), "{stderr}");
    }
    Ok(())
}
