//! `cargo xtask demo`: a local real control plane, ksa installed, one full
//! rotation through the CLI with its status lines, and proof that tokens
//! issued before and after verify.

use std::time::Instant;

use anyhow::{Result, bail};
use ksa_tests::scenario::Scenario;

fn kid(token: &str) -> String {
    ksa_core::token::decode(token)
        .ok()
        .and_then(|d| d.header.kid)
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<()> {
    let started = Instant::now();
    println!(
        "==> starting etcd, kube-apiserver and kube-controller-manager on loopback; installing ksa-controller"
    );
    let scenario = Scenario::start().await?;
    println!(
        "    ready in {:.1?}; admin kubeconfig: {}",
        started.elapsed(),
        scenario.kubeconfig.display()
    );

    let before = scenario.bound_token().await?;
    let legacy_before = scenario.legacy_token().await?;
    println!(
        "==> before: a bound token (kid {}) and the legacy Secret token (kid {}), both accepted: {} {}",
        kid(&before),
        kid(&legacy_before),
        scenario.accepted(&before).await?,
        scenario.accepted(&legacy_before).await?
    );

    println!(
        "==> ksa update credentials ksa-signing-key rotate --config user-cluster.yaml --kubeconfig admin.kubeconfig --skip-prompt --wait"
    );
    let status = scenario
        .ksa_command(&[
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--skip-prompt",
            "--wait",
            "--timeout",
            "5m",
        ])?
        .status()?;
    if !status.success() {
        bail!(
            "rotate failed ({status}); controller log:\n{}",
            scenario.installation.controller_log()
        );
    }

    let after = scenario.bound_token().await?;
    let legacy_after = scenario.legacy_token().await?;
    println!(
        "==> after: a new bound token (kid {}) accepted: {}",
        kid(&after),
        scenario.accepted(&after).await?
    );
    println!(
        "    the legacy Secret token, re-minted (kid {}), accepted: {}",
        kid(&legacy_after),
        scenario.accepted(&legacy_after).await?
    );
    println!(
        "    the bound token from before, held by no pod so not refreshed, accepted: {} (key 1 is retired)",
        scenario.accepted(&before).await?
    );
    let stats = scenario.prober.stats().await;
    println!(
        "==> prober: {} tokens issued, {} reviews, {} valid tokens rejected, {} requests during API server restarts",
        stats.tokens_issued,
        stats.reviews,
        stats.wrongly_rejected.len(),
        stats.unavailable
    );
    println!(
        "==> done in {:.1?}; stopping the control plane",
        started.elapsed()
    );
    if !stats.wrongly_rejected.is_empty() {
        bail!("valid tokens were rejected: {:?}", stats.wrongly_rejected);
    }
    Ok(())
}
