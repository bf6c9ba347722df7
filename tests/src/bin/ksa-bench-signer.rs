//! The external signer's costs, for `cargo xtask bench`. Prints one JSON
//! object:
//!
//! - `key_files_per_s` and `signer_per_s`: TokenRequests per second through
//!   a real kube-apiserver signing with in-process key files, and through
//!   another signing with `ksa-controller signer`, measured in alternating
//!   rounds in the same run (the best round of each is kept: the machine is
//!   shared).
//! - `sign_p50_ms`, `sign_p99_ms`: Sign RPC latency at a paced 200 calls/s,
//!   straight to the signer's socket, measured before the control planes
//!   start (the RPC involves no API server): the median of three rounds.
//!
//! Usage: ksa-bench-signer SECONDS_PER_ROUND

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ksa_controller::signer::proto::v1;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::KeySpec;
use ksa_tests::cluster::{create_service_account, request_token};
use ksa_tests::signer::{SignerProcess, write_key_dir};
use ksa_tests::{ApiServerKeys, ControlPlane};
use serde_json::json;

const WORKERS: usize = 8;
const ROUNDS: usize = 3;

/// TokenRequests per second with WORKERS requests in flight.
async fn token_requests_per_second(client: &kube::Client, seconds: f64) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let client = client.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    request_token(&client, "default", "bench", vec![], 3600).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let started = Instant::now();
    for worker in workers {
        worker.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Sign latencies (ms) at a paced `rate` calls per second for `seconds`.
async fn sign_latencies(signer: &SignerProcess, rate: f64, seconds: f64) -> Result<Vec<f64>> {
    let client =
        v1::external_jwt_signer_client::ExternalJwtSignerClient::new(signer.channel().await?);
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:default:bench",
               "aud": ["https://kubernetes.default.svc.cluster.local"], "exp": 1_900_000_000, "iat": 1_800_000_000})
        .to_string(),
    );
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let calls = (rate * seconds) as usize;
    let mut pending = Vec::with_capacity(calls);
    for _ in 0..calls {
        ticker.tick().await;
        let mut client = client.clone();
        let claims = claims.clone();
        pending.push(tokio::spawn(async move {
            let started = Instant::now();
            client.sign(v1::SignJwtRequest { claims }).await?;
            anyhow::Ok(started.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::with_capacity(calls);
    for call in pending {
        latencies.push(call.await??);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<()> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .context("usage: ksa-bench-signer SECONDS_PER_ROUND")?
        .parse()?;
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let dir = tempfile::tempdir()?;
    write_key_dir(dir.path(), &key, &[&key])?;
    let signer = SignerProcess::from_dir(
        &dir.path().join("signer.sock"),
        dir.path(),
        &dir.path().join("signer.log"),
    )?;
    // The Sign latency first, alone on the machine (the RPC involves no API
    // server), after a warm-up; three rounds, the median round reported (a
    // shared machine's hiccup moves one round's p99 by milliseconds).
    sign_latencies(&signer, 200.0, 1.0).await?;
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let latencies = sign_latencies(&signer, 200.0, seconds.max(5.0)).await?;
        rounds.push((
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.5),
            latencies.len(),
        ));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (p99, p50, calls) = rounds[rounds.len() / 2];
    let p99_rounds: Vec<f64> = rounds.iter().map(|r| r.0).collect();

    let with_files = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    let with_signer = ControlPlane::start_with_external_signer(&signer.socket).await?;
    let (files_client, signer_client) = (with_files.client().await?, with_signer.client().await?);
    for client in [&files_client, &signer_client] {
        create_service_account(client, "default", "bench").await?;
        token_requests_per_second(client, 1.0).await?; // warm-up
    }
    let (mut files_best, mut signer_best) = (0.0f64, 0.0f64);
    for _ in 0..ROUNDS {
        files_best = files_best.max(token_requests_per_second(&files_client, seconds).await?);
        signer_best = signer_best.max(token_requests_per_second(&signer_client, seconds).await?);
    }
    println!(
        "{}",
        json!({
            "key_files_per_s": files_best,
            "signer_per_s": signer_best,
            "sign_p50_ms": p50,
            "sign_p99_ms": p99,
            "sign_p99_ms_rounds": p99_rounds,
            "sign_calls_per_round": calls,
        })
    );
    Ok(())
}
