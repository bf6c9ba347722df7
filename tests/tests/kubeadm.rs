//! A kubeadm control plane rotated by `ksa ... rotate --pki-dir`, with no
//! controller: the harness plays kubelet (it restarts the three
//! kube-apiserver instances one at a time, then kube-controller-manager,
//! from the keys the static pod manifests name when the manifests change)
//! while the prober reviews tokens on every instance throughout. The CLI
//! is run without --wait, killed mid-rotation with --wait, raced by a second
//! run, and run again without --wait until done: it resumes and completes.
//! kubeadm's `sa.pub` holds a second public key besides the signing key's:
//! a token signed by it is accepted until Retire, and rejected after.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey, parse_pem, public_keys_to_pem};
use ksa_core::rotation::Step;
use ksa_core::token::{self, BoundToken, ObjectRef};
use ksa_tests::cluster::{request_token, review_token};
use ksa_tests::kubeadm;
use ksa_tests::kubelet::{StaticPods, kubeadm_manifests as manifests};
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{APPS, create_workload};
use ksa_tests::{
    ApiServerKeys, ControlPlane, ISSUER, ProbeTarget, Prober, RotationSource, write_private,
};
use tokio::sync::Mutex;

fn ksa(args: &[&str], pki: &Path, manifests: &Path, kubeconfig: &Path) -> Result<Command> {
    kubeadm::command("ksa-signing-key", args, pki, manifests, kubeconfig)
}

/// Runs `ksa` to its end without blocking the runtime: the harness playing
/// kubelet runs on it meanwhile.
async fn run(command: Command) -> Result<Output> {
    Ok(tokio::process::Command::from(command).output().await?)
}

/// Every file under `dirs`, with its contents.
fn directory_contents(dirs: &[&Path]) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_file() {
                files.push((path.clone(), std::fs::read(&path)?));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A bound token for service account `app`, signed by `key`, as an API
/// server that signs with it would issue.
async fn token_signed_by(client: &kube::Client, key: &PrivateKey) -> Result<String> {
    let account =
        kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), APPS)
            .get("app")
            .await?;
    let claims = BoundToken {
        issuer: ISSUER.into(),
        audiences: vec![ISSUER.into()],
        namespace: APPS.into(),
        service_account: ObjectRef {
            name: "app".into(),
            uid: account.metadata.uid.context("service account uid")?,
        },
        pod: None,
        node: None,
        secret: None,
        issued_at: jiff::Timestamp::now().as_second(),
        lifetime_seconds: 24 * 3600,
        jti: "token-of-the-extra-key".into(),
    }
    .claims()?;
    Ok(token::mint(
        &claims,
        AwsLc::new().signing_key(key)?.as_ref(),
    )?)
}

/// Whether the API server authenticates `token`, asked until it answers
/// (kubelet restarts it at every step).
async fn accepted(client: &kube::Client, token: &str) -> Result<bool> {
    let started = Instant::now();
    loop {
        match review_token(client, token).await {
            Ok(user) => return Ok(user.is_some()),
            Err(error) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("TokenReview: {error}; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[tokio::test]
async fn a_kubeadm_control_plane_rotates_through_its_manifests_and_resumes() -> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let first = AwsLc::new().generate(KeySpec::Rsa2048)?;
    // A key kube-apiserver trusts besides its own: kubeadm's sa.pub holds
    // both (an earlier signing key, say).
    let extra = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let mut plane = ControlPlane::start_ha(ApiServerKeys {
        signing: first.clone(),
        public: vec![first.public_key().clone(), extra.public_key().clone()],
    })
    .await?;
    plane.start_controller_manager()?;
    let client = plane.client().await?;
    let kubeconfig = plane.kubeconfig_path();
    let root = plane.dir().join("etc-kubernetes");
    let (pki, manifests_dir) = (root.join("pki"), root.join("manifests"));
    std::fs::create_dir_all(&pki)?;
    std::fs::create_dir_all(&manifests_dir)?;
    write_private(&pki.join("sa.key"), first.to_pem().as_bytes())?;
    std::fs::write(
        pki.join("sa.pub"),
        public_keys_to_pem([first.public_key(), extra.public_key()]),
    )?;
    let (apiserver, controller_manager) = manifests(&pki);
    std::fs::write(manifests_dir.join("kube-apiserver.yaml"), &apiserver)?;
    std::fs::write(
        manifests_dir.join("kube-controller-manager.yaml"),
        &controller_manager,
    )?;
    create_workload(&client).await?;
    let plane = Arc::new(Mutex::new(plane));
    let _kubelet = StaticPods::spawn(plane.clone(), &manifests_dir);
    let prober = Prober::spawn(
        client.clone(),
        plane.lock().await.instance_clients().await?,
        ProbeTarget {
            namespace: APPS.into(),
            service_account: "app".into(),
            legacy_secret: "app-token".into(),
            rotation: RotationSource::StateFile {
                pki_dir: pki.clone(),
            },
        },
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let extra_token = token_signed_by(&client, &extra).await?;
    assert!(
        accepted(&client, &extra_token).await?,
        "before the rotation"
    );

    // A dry run: the plan from the live cluster, and nothing written (no
    // state file, no imported key, the manifests as they were).
    let files_before = directory_contents(&[&pki, &manifests_dir])?;
    let dry = run(ksa(
        &["rotate", "--dry-run", "-o", "json"],
        &pki,
        &manifests_dir,
        &kubeconfig,
    )?)
    .await?;
    assert!(dry.status.success(), "{}", text(&dry));
    let plan: serde_json::Value = serde_json::from_slice(&dry.stdout)?;
    assert_eq!(plan["keyVersion"], 2, "{plan}");
    assert_eq!(
        plan["apiServers"].as_array().map(Vec::len),
        Some(ksa_tests::HA_INSTANCES),
        "{plan}"
    );
    // The workload's pod projects a token (no node runs it here, so it
    // holds none yet); its legacy token Secret is mounted.
    assert!(
        plan["boundTokens"]["projectedTokens"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["owner"] == "Deployment web")),
        "{plan}"
    );
    assert_eq!(plan["legacyTokens"]["mounted"], 1, "{plan}");
    assert_eq!(
        directory_contents(&[&pki, &manifests_dir])?,
        files_before,
        "the dry run wrote a file"
    );

    // Without --wait: as far as it goes without waiting on the API servers.
    let once = run(ksa(&["rotate"], &pki, &manifests_dir, &kubeconfig)?).await?;
    assert!(once.status.success(), "{}", text(&once));
    assert!(
        text(&once).contains("run the same command again"),
        "{}",
        text(&once)
    );
    let stopped_at = kubeadm::state(&pki).map(|s| s.step());
    assert!(
        stopped_at.is_some_and(|step| step >= Step::Trust && step < Step::Completed),
        "stopped mid-rotation, at {stopped_at:?}"
    );
    assert!(
        accepted(&client, &extra_token).await?,
        "the extra key of sa.pub is trusted until Retire (at {stopped_at:?})"
    );

    // With --wait, killed once it reaches RefreshTokens; a second run
    // meanwhile is refused.
    let mut running = ksa(&["rotate", "--wait"], &pki, &manifests_dir, &kubeconfig)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while kubeadm::state(&pki).is_none_or(|s| s.step() < Step::RefreshTokens) {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = running.kill();
            let output = running.wait_with_output()?;
            bail!(
                "the rotation did not reach RefreshTokens; state {:?}; ksa said:\n{}",
                kubeadm::state(&pki),
                text(&output)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raced = run(ksa(
        &["rotate", "--wait"],
        &pki,
        &manifests_dir,
        &kubeconfig,
    )?)
    .await?;
    assert_eq!(raced.status.code(), Some(3), "{}", text(&raced));
    assert!(
        text(&raced).contains("another ksa holds"),
        "{}",
        text(&raced)
    );
    running.kill()?;
    running.wait()?;
    let at = kubeadm::state(&pki).map(|s| s.step());
    if at.is_some_and(|step| step < Step::Retire) {
        assert!(
            accepted(&client, &extra_token).await?,
            "the extra key of sa.pub is trusted until Retire (at {at:?})"
        );
    }

    // Run again, without --wait, as often as it says: it resumes and
    // completes.
    let mut resumed_text = String::new();
    for _ in 0..60 {
        let resumed = run(ksa(&["rotate"], &pki, &manifests_dir, &kubeconfig)?).await?;
        resumed_text.push_str(&text(&resumed));
        assert!(resumed.status.success(), "{resumed_text}");
        if kubeadm::state(&pki).is_some_and(|s| s.is_completed()) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("{resumed_text}");
    assert!(resumed_text.contains("resuming the rotation (key version 2)"));
    let completed = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: True, reason: KSASigningKeyRotationCompleted, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}"#;
    assert!(resumed_text.contains(completed), "{resumed_text}");
    let status = run(ksa(&["status"], &pki, &manifests_dir, &kubeconfig)?).await?;
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), completed);

    // The files: key 1 gone, sa.key is key 2, the manifests changed only
    // in the key flags.
    let second = parse_pem(&std::fs::read(pki.join("sa-v2.key"))?)?
        .private_keys()
        .next()
        .cloned()
        .context("key 2")?;
    assert!(!pki.join("sa-v1.key").exists() && !pki.join("sa-v1.pub").exists());
    let kubeadm_key = parse_pem(&std::fs::read(pki.join("sa.key"))?)?;
    assert_eq!(
        kubeadm_key.private_keys().next().map(|k| k.kid()),
        Some(second.kid())
    );
    let edited = std::fs::read_to_string(manifests_dir.join("kube-apiserver.yaml"))?;
    let v2 = |suffix: &str| format!("{}/sa-v2.{suffix}", pki.display());
    assert_eq!(
        edited,
        apiserver
            .replace(&format!("{}/sa.pub", pki.display()), &v2("pub"))
            .replace(&format!("{}/sa.key", pki.display()), &v2("key")),
        "only the key flags changed"
    );
    let edited = std::fs::read_to_string(manifests_dir.join("kube-controller-manager.yaml"))?;
    assert_eq!(
        edited,
        controller_manager.replace(&format!("{}/sa.key", pki.display()), &v2("key"))
    );

    // Every private key ksa wrote is readable by its owner only.
    for entry in std::fs::read_dir(&pki)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        }
    }
    assert!(pki.join("sa-v2.key").exists(), "the new key was checked");

    // The extra key left with key 1.
    assert!(
        !accepted(&client, &extra_token).await?,
        "the extra key of sa.pub is retired with key 1"
    );

    // Tokens: fresh ones from key 2; no valid token was ever rejected.
    let fresh = request_token(&client, APPS, "app", vec![], 600).await?;
    let kid = ksa_core::token::decode(&fresh)?.header.kid;
    assert_eq!(kid.as_deref(), Some(second.kid().as_str()));
    let stats = prober.stats().await;
    eprintln!(
        "prober: {} tokens issued, {} reviews, {} unavailable",
        stats.tokens_issued, stats.reviews, stats.unavailable
    );
    assert!(stats.reviews > 0);
    assert_eq!(stats.wrongly_rejected, Vec::<String>::new());
    let plane = plane.lock().await;
    assert!(
        plane.apiserver_starts >= 4,
        "kube-apiserver restarted at Trust, Sign and Retire"
    );
    let rolls = plane.roll_log();
    eprintln!("roll-outs:\n{}", rolls.history.join("\n"));
    assert_eq!(rolls.violations(), [] as [String; 0]);
    assert_eq!(
        rolls.asks(),
        9,
        "three key sets rolled out to three instances"
    );
    Ok(())
}
