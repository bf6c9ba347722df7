//! `cargo xtask demo`: a local real control plane, ksa installed, one full
//! rotation through the CLI with its status lines, and proof that tokens
//! issued before and after verify.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use ksa_tests::ksa_binary;
use ksa_tests::scenario::{APPS, Scenario};
use kube::api::{Api, PostParams};

async fn token(client: &kube::Client) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), APPS);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let response = api
        .create_token_request("app", &PostParams::default(), &request)
        .await?;
    Ok(response.status.context("no token")?.token)
}

async fn accepted(client: &kube::Client, token: &str) -> Result<bool> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            ..TokenReviewSpec::default()
        },
        ..TokenReview::default()
    };
    let status = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?
        .status;
    Ok(status.and_then(|s| s.authenticated) == Some(true))
}

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
    let client = scenario.client.clone();
    println!(
        "    ready in {:.1?}; admin kubeconfig: {}",
        started.elapsed(),
        scenario.kubeconfig.display()
    );

    let before = token(&client).await?;
    let legacy_before = scenario.legacy_token().await?;
    println!(
        "==> before: a bound token (kid {}) and the legacy Secret token (kid {}), both accepted: {} {}",
        kid(&before),
        kid(&legacy_before),
        accepted(&client, &before).await?,
        accepted(&client, &legacy_before).await?
    );

    println!(
        "==> ksa update credentials ksa-signing-key rotate --config user-cluster.yaml --kubeconfig admin.kubeconfig --skip-prompt --wait"
    );
    let status = Command::new(ksa_binary("ksa")?)
        .args([
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--skip-prompt",
            "--wait",
            "--timeout",
            "5m",
        ])
        .arg("--config")
        .arg(&scenario.config)
        .arg("--kubeconfig")
        .arg(&scenario.kubeconfig)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()?;
    if !status.success() {
        bail!(
            "rotate failed ({status}); controller log:\n{}",
            scenario.installation.controller_log()
        );
    }

    let after = token(&client).await?;
    let legacy_after = scenario.legacy_token().await?;
    println!(
        "==> after: a new bound token (kid {}) accepted: {}",
        kid(&after),
        accepted(&client, &after).await?
    );
    println!(
        "    the legacy Secret token, re-minted (kid {}), accepted: {}",
        kid(&legacy_after),
        accepted(&client, &legacy_after).await?
    );
    println!(
        "    the bound token from before, held by no pod so not refreshed, accepted: {} (expected false once key 1 is retired)",
        accepted(&client, &before).await?
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
