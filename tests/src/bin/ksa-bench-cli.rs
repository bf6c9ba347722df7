//! Times `ksa` as an operator runs it, for `cargo xtask bench`: `ksa --help`
//! and `ksa update credentials ksa-signing-key status` against a local real
//! API server. Prints one JSON object of medians in milliseconds.
//!
//! Usage: ksa-bench-cli PATH_TO_KSA RUNS

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ksa_core::KeyVersion;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::KeySpec;
use ksa_core::rotation::RotationState;
use ksa_kube::api::{KSASigningKeyRotation, RotationSpec, RotationStatus};
use ksa_tests::{ApiServerKeys, ControlPlane, Installation};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

fn median_ms(runs: usize, mut once: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        once()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn run_quietly(command: &mut Command) -> Result<()> {
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let ksa = args
        .next()
        .context("usage: ksa-bench-cli PATH_TO_KSA RUNS")?;
    let runs: usize = args.next().unwrap_or_else(|| "30".into()).parse()?;

    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    let client = plane.client().await?;
    Installation::install(
        &client,
        "user-cluster-1",
        "user-cluster-1",
        &key,
        plane.dir(),
    )
    .await?;
    let api: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), "user-cluster-1");
    let resource = KSASigningKeyRotation {
        metadata: ObjectMeta {
            name: Some("user-cluster-1".into()),
            ..ObjectMeta::default()
        },
        spec: RotationSpec {
            key_version: 1,
            issuer: None,
            cluster: None,
            key: Default::default(),
            rollout: Default::default(),
            token_refresh: Default::default(),
            trust_lead_time_seconds: 0,
            publish: Default::default(),
        },
        status: None,
    };
    api.create(&PostParams::default(), &resource).await?;
    let status = RotationStatus::of(
        &RotationState::settled(KeyVersion::FIRST),
        None,
        None,
        Some(1),
        jiff::Timestamp::now(),
    );
    api.patch_status(
        "user-cluster-1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": status})),
    )
    .await?;
    let config = plane.dir().join("user-cluster.yaml");
    std::fs::write(&config, "name: user-cluster-1\n")?;

    let help = median_ms(runs, || run_quietly(Command::new(&ksa).arg("--help")))?;
    let status = median_ms(runs, || {
        run_quietly(
            Command::new(&ksa)
                .args([
                    "update",
                    "credentials",
                    "ksa-signing-key",
                    "status",
                    "--config",
                ])
                .arg(&config)
                .arg("--kubeconfig")
                .arg(plane.kubeconfig_path()),
        )
    })?;
    println!(
        "{}",
        serde_json::json!({"help_ms": help, "status_ms": status, "runs": runs})
    );
    Ok(())
}
